//! Graceful shutdown: on Ctrl-C the server stops accepting connections, lets requests in
//! flight finish for up to `GRACE`, then ends the streams still open (an SSE stream ends
//! cleanly, so an `EventSource` reconnects to the next server) and returns.
//!
//! ```sh
//! cargo run -p rat-engine --example graceful_shutdown   # PORT=3000 to change the port
//! curl http://127.0.0.1:8080/slow &   # then press Ctrl-C: the request still completes
//! ```

use std::future::Future;
use std::time::Duration;

use rat_engine::{App, Event, Server, ServerConfig, ServerHandle, Sse};
use tokio_stream::wrappers::IntervalStream;
use tokio_stream::StreamExt as _;

/// How long requests in flight may go on after the signal.
pub const GRACE: Duration = Duration::from_secs(3);

/// How long `/slow` takes to answer.
pub const SLOW: Duration = Duration::from_secs(1);

/// The routes: `/slow` answers after [`SLOW`], `/ticks` streams an event a second.
pub fn app() -> App {
    let mut app = App::new();
    app.get("/slow", |_req| async {
        tokio::time::sleep(SLOW).await;
        "done\n"
    })
    .expect("route");
    app.get("/ticks", |_req| async {
        let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(1)));
        let mut n = 0u64;
        Sse::new(ticks.map(move |_| {
            n += 1;
            Event::new().data(n.to_string())
        }))
    })
    .expect("route");
    app
}

/// Serves until `signal` resolves, then shuts down within [`GRACE`].
pub async fn run(server: ServerHandle, signal: impl Future<Output = ()>) {
    signal.await;
    println!("shutting down: waiting up to {GRACE:?} for requests in flight");
    server.shutdown(GRACE).await;
    println!("all connections closed");
}

#[tokio::main]
async fn main() -> rat_engine::Result<()> {
    let port = std::env::var("PORT").map_or(Ok(8080), |p| p.parse::<u16>());
    let port = port.expect("PORT must be a number from 0 to 65535");
    let server = Server::bind(("127.0.0.1", port), app(), ServerConfig::default()).await?;
    println!("listening on http://{}", server.local_addr());
    run(server, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}
