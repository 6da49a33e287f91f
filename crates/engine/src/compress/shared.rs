//! Compression shared by many streams: a channel's subscribers get the same compressed bytes
//! for each event, compressed once per coding by the channel's fan-out.
//!
//! Each piece is compressed on its own, so the streams keep no compressor (hundreds of KiB
//! each) and a piece may follow any earlier one:
//! - gzip: one member per stream. Its header goes first; each piece is raw deflate from a
//!   fresh compressor ending in a sync flush (byte-aligned, not final, no reference to
//!   earlier bytes); the end is an empty final block and the trailer. Each stream keeps
//!   only a [`GzipTally`] (the CRC-32 and length of what it was given), advanced by a
//!   [`CrcPart`] per piece in a few nanoseconds. One member matters: Chromium ignores what
//!   follows the first member of a gzip body.
//! - zstd: a frame per piece; a zstd stream may hold any number of frames.
//! - br is not used: brotli streams cannot be assembled from independently compressed parts.

use std::cell::RefCell;
use std::sync::OnceLock;

use bytes::Bytes;
use flate2::{Compress, FlushCompress};

use super::{io_error, Encoding};
use crate::error::{Error, Result};

/// The coding of a stream that shares compressed pieces: gzip or zstd, and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Coding {
    pub(crate) encoding: Encoding,
    pub(crate) level: u8,
}

impl Coding {
    /// `encoding` at `level` (or its default); `None` for br.
    pub(crate) fn new(encoding: Encoding, level: Option<u32>) -> Option<Coding> {
        (encoding != Encoding::Br).then(|| Coding {
            encoding,
            level: encoding.level(level) as u8,
        })
    }

    /// `data` compressed on its own, to follow any earlier pieces of a stream.
    pub(crate) fn compress(self, data: &[u8]) -> Result<Bytes> {
        let level = u32::from(self.level);
        match self.encoding {
            Encoding::Gzip => deflate_blocks(level, 15, data),
            Encoding::Zstd => zstd_frame(level, data),
            Encoding::Br => Err(Error::handler("br cannot compress piece by piece")),
        }
    }

    /// What starts a stream: the gzip header.
    pub(crate) fn header(self) -> Option<Bytes> {
        (self.encoding == Encoding::Gzip).then_some(Bytes::from_static(&GZIP_HEADER))
    }

    /// `bytes` is the header [`header`](Self::header) made (the same static bytes).
    pub(crate) fn is_header(bytes: &Bytes) -> bool {
        bytes.as_ptr() == GZIP_HEADER.as_ptr() && bytes.len() == GZIP_HEADER.len()
    }

    /// The end of a stream that carried `tally`: the gzip trailer; for zstd an empty
    /// frame, so that a stream given nothing is still a valid one (a decoder refuses a
    /// zstd stream without a frame).
    pub(crate) fn trailer(self, tally: &GzipTally) -> Option<Bytes> {
        static ZSTD_EMPTY: OnceLock<Bytes> = OnceLock::new();
        match self.encoding {
            Encoding::Gzip => Some(tally.trailer()),
            Encoding::Zstd => Some(
                ZSTD_EMPTY
                    .get_or_init(|| self.compress(b"").unwrap_or_default())
                    .clone(),
            ),
            Encoding::Br => None,
        }
    }

    /// An SSE heartbeat comment in this coding, made once per coding.
    pub(crate) fn heartbeat(self) -> Bytes {
        static GZIP: OnceLock<Bytes> = OnceLock::new();
        static ZSTD: OnceLock<Bytes> = OnceLock::new();
        let cell = match self.encoding {
            Encoding::Gzip => &GZIP,
            _ => &ZSTD,
        };
        cell.get_or_init(|| {
            let coding = Coding::new(self.encoding, None).unwrap_or(self);
            coding
                .compress(crate::stream::HEARTBEAT)
                .unwrap_or_else(|_| Bytes::from_static(&EMPTY_DEFLATE_BLOCK))
        })
        .clone()
    }
}

/// A gzip header (RFC 1952): deflate, no flags, no time, unknown OS.
static GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty stored block, not final: what a sync flush of nothing writes.
const EMPTY_DEFLATE_BLOCK: [u8; 5] = [0, 0, 0, 0xff, 0xff];

thread_local! {
    static DEFLATE: RefCell<Option<(u32, u8, Compress)>> = const { RefCell::new(None) };
    static ZSTD: RefCell<Option<(u32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Raw deflate blocks of `data` alone (a fresh compressor: no reference to earlier bytes),
/// ending in a sync flush: byte-aligned, not final, so they can follow any deflate stream
/// flushed the same way. `window_bits` (9 to 15) bounds how far back they refer.
pub(crate) fn deflate_blocks(level: u32, window_bits: u8, data: &[u8]) -> Result<Bytes> {
    DEFLATE.with_borrow_mut(|slot| {
        let c = match slot {
            Some((l, b, c)) if *l == level && *b == window_bits => {
                c.reset();
                c
            }
            _ => {
                let c = Compress::new_with_window_bits(
                    flate2::Compression::new(level),
                    false,
                    window_bits,
                );
                &mut slot.insert((level, window_bits, c)).2
            }
        };
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let read = c.total_in() as usize;
            if let Err(e) = c.compress_vec(&data[read..], &mut out, FlushCompress::Sync) {
                return Err(Error::handler(format!("compression failed: {e}")));
            }
            // Done once all is read and the flush fitted with room to spare.
            if c.total_in() as usize == data.len() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        Ok(Bytes::from(out))
    })
}

/// A whole zstd frame.
fn zstd_frame(level: u32, data: &[u8]) -> Result<Bytes> {
    ZSTD.with_borrow_mut(|slot| {
        let c = match slot {
            Some((l, c)) if *l == level => c,
            _ => {
                let c = zstd::bulk::Compressor::new(level as i32).map_err(io_error)?;
                &mut slot.insert((level, c)).1
            }
        };
        c.compress(data).map(Bytes::from).map_err(io_error)
    })
}

/// A piece of a gzip stream's plaintext as the trailer's CRC-32 sees it: its CRC, its
/// length, and the operator that moves an earlier CRC past it (x^(8·len) modulo the
/// CRC polynomial), so that a stream's CRC advances past the piece with one
/// multiplication, whatever the piece's size (zlib's `crc32_combine_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CrcPart {
    crc: u32,
    len: u32,
    shift: u32,
}

impl CrcPart {
    /// Nothing: joins any part unchanged.
    pub(crate) const EMPTY: CrcPart = CrcPart {
        crc: 0,
        len: 0,
        shift: ONE,
    };

    pub(crate) fn of(data: &[u8]) -> CrcPart {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        CrcPart {
            crc: crc.sum(),
            len: data.len() as u32,
            shift: x8n_mod_p(data.len() as u64),
        }
    }

    /// This part followed by `next`.
    pub(crate) fn then(self, next: CrcPart) -> CrcPart {
        CrcPart {
            crc: mul_mod_p(next.shift, self.crc) ^ next.crc,
            len: self.len.wrapping_add(next.len),
            shift: mul_mod_p(next.shift, self.shift),
        }
    }
}

/// What a gzip stream's trailer needs of all the plaintext it carried: its CRC-32 and
/// length (modulo 2^32, as RFC 1952's ISIZE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct GzipTally {
    crc: u32,
    len: u32,
}

impl GzipTally {
    pub(crate) fn add(&mut self, part: &CrcPart) {
        self.crc = mul_mod_p(part.shift, self.crc) ^ part.crc;
        self.len = self.len.wrapping_add(part.len);
    }

    /// The end of the stream: an empty final block, the CRC and the length.
    pub(crate) fn trailer(&self) -> Bytes {
        let mut out = Vec::with_capacity(10);
        out.extend_from_slice(&[0x03, 0x00]);
        out.extend_from_slice(&self.crc.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        Bytes::from(out)
    }
}

// CRC-32 arithmetic in GF(2) modulo its polynomial, bit-reflected as the CRC is (x^0 is
// the top bit), as in zlib's crc32.c.

/// The CRC-32 polynomial, reflected.
const POLY: u32 = 0xedb8_8320;
/// x^0.
const ONE: u32 = 1 << 31;

/// a·b modulo the polynomial.
fn mul_mod_p(a: u32, mut b: u32) -> u32 {
    let mut m = ONE;
    let mut p = 0;
    loop {
        if a & m != 0 {
            p ^= b;
            if a & (m - 1) == 0 {
                return p;
            }
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
}

/// x^(8·n) modulo the polynomial.
fn x8n_mod_p(mut n: u64) -> u32 {
    // x^(2^k) for k = 3.. (x^8, x^16, ...), squared on the way.
    let mut power = 1u32 << (31 - 8);
    let mut p = ONE;
    while n != 0 {
        if n & 1 != 0 {
            p = mul_mod_p(power, p);
        }
        power = mul_mod_p(power, power);
        n >>= 1;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crc(data: &[u8]) -> u32 {
        let mut c = flate2::Crc::new();
        c.update(data);
        c.sum()
    }

    #[test]
    fn a_tally_advanced_part_by_part_is_the_crc_of_the_whole() {
        let pieces: Vec<Vec<u8>> = (0..40)
            .map(|i| (0..(i * 37 % 300)).map(|j| (i * 7 + j) as u8).collect())
            .collect();
        let mut tally = GzipTally::default();
        let mut whole = Vec::new();
        for p in &pieces {
            tally.add(&CrcPart::of(p));
            whole.extend_from_slice(p);
            assert_eq!(tally.crc, crc(&whole));
            assert_eq!(tally.len as usize, whole.len());
        }
        // Parts joined first give the same.
        let joined = pieces
            .iter()
            .map(|p| CrcPart::of(p))
            .fold(CrcPart::EMPTY, CrcPart::then);
        assert_eq!(joined, CrcPart::of(&whole));
        let mut t = GzipTally::default();
        t.add(&CrcPart::of(b"abc"));
        t.add(&joined);
        assert_eq!(t.crc, crc(&[&b"abc"[..], &whole].concat()));
    }

    #[test]
    fn pieces_make_one_gzip_member_whatever_the_stream_started_with() {
        use std::io::Read as _;
        let coding = Coding::new(Encoding::Gzip, None).unwrap();
        let events: Vec<Vec<u8>> = (0..10)
            .map(|i| format!("id: {i}\ndata: {{\"n\":{i},\"t\":\"hello hello\"}}\n\n").into_bytes())
            .collect();
        // Two streams given the same compressed pieces, one joining late and with a
        // heartbeat between.
        let pieces: Vec<Bytes> = events.iter().map(|e| coding.compress(e).unwrap()).collect();
        for (from, beat) in [(0, false), (4, true)] {
            let mut wire = coding.header().unwrap().to_vec();
            let mut tally = GzipTally::default();
            let mut sent = Vec::new();
            for (i, e) in events.iter().enumerate().skip(from) {
                wire.extend_from_slice(&pieces[i]);
                tally.add(&CrcPart::of(e));
                sent.extend_from_slice(e);
                if beat && i == 6 {
                    wire.extend_from_slice(&coding.heartbeat());
                    tally.add(&CrcPart::of(crate::stream::HEARTBEAT));
                    sent.extend_from_slice(crate::stream::HEARTBEAT);
                }
            }
            wire.extend_from_slice(&tally.trailer());
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&wire[..])
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, sent);
        }
        let mut empty = GZIP_HEADER.to_vec();
        empty.extend_from_slice(&GzipTally::default().trailer());
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&empty[..])
            .read_to_end(&mut out)
            .unwrap();
        assert!(out.is_empty());
    }
}
