//! Server-Sent Events from a stream: `Sse::new(stream)` sends each event the stream
//! yields, ends the response when the stream ends, and drops the stream when the client
//! leaves.
//!
//! ```sh
//! cargo run -p rat-engine --example sse_generator    # PORT=3000 to change the port
//! curl -N 'http://127.0.0.1:8080/countdown?from=5'
//! ```

use std::time::Duration;

use rat_engine::{App, Event, Request, Server, ServerConfig, Sse};
use tokio_stream::StreamExt as _;

/// The routes. `/countdown?from=N&every_ms=M` counts down from N, one event every M ms
/// (defaults: 10 and 1000), then sends `event: liftoff` and ends.
pub fn app() -> App {
    let mut app = App::new();
    app.get("/countdown", |req: Request| async move {
        let number = |name: &str, default: u64| {
            req.query_param(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let from = number("from", 10);
        let every = Duration::from_millis(number("every_ms", 1000).max(1));

        let events = tokio_stream::iter((0..=from).rev())
            .map(|n| match n {
                0 => Event::new().event("liftoff"),
                n => Event::new().data(n.to_string()),
            })
            .throttle(every);
        Sse::new(events)
    })
    .expect("route");
    app
}

#[tokio::main]
async fn main() -> rat_engine::Result<()> {
    let port = std::env::var("PORT").map_or(Ok(8080), |p| p.parse::<u16>());
    let port = port.expect("PORT must be a number from 0 to 65535");
    let server = Server::bind(("127.0.0.1", port), app(), ServerConfig::default()).await?;
    println!("listening on http://{}", server.local_addr());
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
