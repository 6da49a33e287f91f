//! The OS facilities std does not expose: the raw CLOCK_MONOTONIC reading (servers stamp
//! events with it, so the client must read the very same clock), RLIMIT_NOFILE, and the
//! kernel's receive timestamps on a socket (SO_TIMESTAMPNS).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::RawFd;

/// CLOCK_MONOTONIC in nanoseconds: the clock behind Node's `process.hrtime.bigint()`, so a
/// client on the same host can subtract a server's publish stamp from it.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME in nanoseconds: the clock of the kernel's receive timestamps.
pub fn realtime_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// A CLOCK_REALTIME time `at` (a receive timestamp) on CLOCK_MONOTONIC.
///
/// The offset between the clocks is read with the monotonic reading between two realtime
/// ones, and taken from the tightest of a few tries: a thread preempted between two plain
/// readings would put the time earlier by as long as it waited (an arrival before its
/// event was sent, on a loaded machine).
pub fn realtime_to_monotonic(at: u64) -> u64 {
    /// A bracket this narrow is taken at once (clock reads through the vDSO take ~20 ns).
    const TIGHT_NS: u64 = 2_000;
    let mut best: Option<(u64, u64, u64)> = None;
    for _ in 0..4 {
        let r1 = realtime_ns();
        let m = monotonic_ns();
        let r2 = realtime_ns();
        let width = r2.saturating_sub(r1);
        if best.map_or(true, |(w, _, _)| width < w) {
            best = Some((width, r1 + width / 2, m));
        }
        if width <= TIGHT_NS {
            break;
        }
    }
    let (_, real, mono) = best.expect("at least one reading");
    mono.saturating_sub(real.saturating_sub(at))
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and both clocks used here always exist.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime({clock}) failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Asks the kernel to stamp every segment that socket `fd` receives with the time it
/// reached the socket (SO_TIMESTAMPNS); [`recv_stamped`] reads the stamps.
pub fn enable_rx_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `on` is a valid c_int for the option's length given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `recv` on a non-blocking socket with receive timestamps enabled: the bytes read, and the
/// CLOCK_REALTIME time (ns) at which the last segment of them reached the socket (TCP
/// reports the newest segment of a read, so an earlier event in the same read is stamped
/// no earlier than it arrived).
pub fn recv_stamped(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    // Room for one SCM_TIMESTAMPNS message, u64-aligned as cmsghdr needs.
    let mut control = [0u64; 8];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `msg` points at `iov` (covering `buf`) and `control`, all alive for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within
    // `msg_controllen`; an SCM_TIMESTAMPNS message carries one timespec.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// Raises the soft open-file limit to the hard limit (10,000 subscribers need 10,000+
/// sockets) and returns the new soft limit.
pub fn raise_nofile_limit() -> std::io::Result<libc::rlim_t> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: `lim` is a valid rlimit whose soft value does not exceed its hard value.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Moves the calling thread to SCHED_IDLE (it runs only when no other thread wants a CPU)
/// and lets it run on every CPU, whatever the process was pinned to.
pub fn run_when_idle_on_any_cpu() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is valid for SCHED_IDLE (priority 0).
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes within it for indexes below its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // Online CPUs (not `available_parallelism`, which honours the pinning being widened).
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    for cpu in 0..cpus.min(libc::CPU_SETSIZE as usize) {
        // SAFETY: `cpu` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is the calling thread.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_realtime_reading_maps_between_the_monotonic_readings_around_it() {
        // The conversion's own error is half its bracket: a few µs, far under the slack.
        const SLACK_NS: u64 = 1_000_000;
        for _ in 0..1_000 {
            let before = monotonic_ns();
            let at = realtime_ns();
            let after = monotonic_ns();
            let m = realtime_to_monotonic(at);
            assert!(
                m + SLACK_NS >= before && m <= after + SLACK_NS,
                "{at} (realtime) became {m}, read between {before} and {after}"
            );
        }
    }
}
