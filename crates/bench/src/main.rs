//! `rat-bench <scenario> [--option value]...`: drives one server through one scenario and
//! prints the result as one JSON object on stdout. Progress markers (`phase ...`) go to
//! stderr for the runner, which samples the server's CPU and RSS at them.

#[cfg(unix)]
use std::process::ExitCode;

#[cfg(unix)]
use rat_bench::client::{self, Args};

#[cfg(unix)]
const USAGE: &str =
    "usage: rat-bench <hello|broadcast|count|chunked|idle|soak|churn|ws-echo|ws-idle|ws-broadcast> [--option value]...
       rat-bench cert <dir>   (writes a self-signed cert.pem and key.pem for localhost)
common:    --addr 127.0.0.1:3000 --connections N --warmup S --duration S
           (broadcast, idle: --addr a,b,... spreads the subscribers over them in turn)
           --tls http1|h2 (TLS, any certificate, ALPN asking for that protocol only;
           h2 is for broadcast and idle)
hello:     --path /hello --expect hello --header 'name: value|name: value'
broadcast: --path /sse/broadcast --connect-timeout S --connect-concurrency N --header ...
           --streams-per-conn K (with --tls h2: K subscribers per connection, 100)
           --decode gzip (counts bytes as sent, parses events inflated)
idle:      same as broadcast; holds N subscribers for --duration without parsing
count:     --n K --path /sse/count
chunked:   --bytes B --size S --requests R --path /chunked (--duration caps the run)
soak:      --path /soak/channel --stop-path /soak/stop --reconnects-per-s R
           --reconnect-delay-ms M --settle S --seed N (checks every event's sequence)
churn:     --cycles N --concurrency C --paths /a,/b --early-percent P --timeout S
ws-echo:   --path /ws/echo --size B (text messages, one in flight per connection)
ws-idle:   --path /ws/echo --connect-timeout S --connect-concurrency N (holds N sockets;
           --tls http1 for wss)
ws-broadcast: as ws-idle, --path /ws/broadcast; events, gaps, latency on read and arrival";

#[cfg(not(unix))]
fn main() {
    eprintln!("rat-bench runs on Unix only");
    std::process::exit(2);
}

#[cfg(unix)]
fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(scenario) = argv.next().filter(|s| !s.starts_with('-')) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    if scenario == "cert" {
        let Some(dir) = argv.next() else {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        };
        return match rat_bench::tls::write_self_signed(std::path::Path::new(&dir)) {
            Ok((cert, key)) => {
                println!("{}\n{}", cert.display(), key.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rat-bench cert: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match Args::parse(argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rat-bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let nofile = match rat_bench::sys::raise_nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            eprintln!("rat-bench: cannot raise RLIMIT_NOFILE: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread: the runner gives the client exactly one core.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async {
        match scenario.as_str() {
            "hello" => client::hello::run(args).await,
            "broadcast" => client::broadcast::run(args, true).await,
            "idle" => client::broadcast::run(args, false).await,
            "count" => client::count::run(args).await,
            "chunked" => client::chunked::run(args).await,
            "soak" => client::soak::run(args).await,
            "churn" => client::churn::run(args).await,
            "ws-echo" => client::ws_echo::run(args).await,
            "ws-idle" => client::ws_echo::run_idle(args, false).await,
            "ws-broadcast" => client::ws_echo::run_idle(args, true).await,
            other => Err(format!("unknown scenario {other:?}")),
        }
    });
    match result {
        Ok(mut json) => {
            json["scenario"] = scenario.into();
            json["nofile_limit"] = nofile.into();
            println!("{json}");
            // Exit without tearing down thousands of tasks and sockets one by one.
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("rat-bench: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
