//! `rat-floor`: the floor server of the benchmark (see `floor.rs`). Unix only (epoll).

#[cfg(unix)]
mod conn;
#[cfg(unix)]
mod floor;

#[cfg(unix)]
fn main() -> std::io::Result<()> {
    floor::main()
}

#[cfg(not(unix))]
fn main() {
    eprintln!("rat-floor runs on Unix only");
    std::process::exit(2);
}
