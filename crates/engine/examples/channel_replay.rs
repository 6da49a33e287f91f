//! A broadcast channel with replay: `POST /messages` publishes the body to every
//! subscriber of `GET /events`; a client that reconnects with `Last-Event-ID` (as
//! `EventSource` does) first gets exactly the events it missed from the channel's history.
//!
//! ```sh
//! cargo run -p rat-engine --example channel_replay   # PORT=3000 to change the port
//! curl -N http://127.0.0.1:8080/events &
//! curl -d 'hello' http://127.0.0.1:8080/messages
//! curl -N -H 'Last-Event-ID: <an id seen before>' http://127.0.0.1:8080/events
//! ```

use std::time::Duration;

use rat_engine::http::StatusCode;
use rat_engine::{App, Channel, ChannelOptions, Event, Request, Server, ServerConfig};

/// The routes, over a channel keeping its last 100 events.
pub fn app() -> App {
    let channel = Channel::new(
        "messages",
        ChannelOptions {
            history: 100,
            ..ChannelOptions::default()
        },
    );
    let mut app = App::new();
    let events = channel.clone();
    app.get("/events", move |req: Request| {
        let response = events.sse_response(&req);
        async move { response }
    })
    .expect("route");
    app.post("/messages", move |req: Request| {
        let answer = match std::str::from_utf8(req.body()) {
            Err(_) => (StatusCode::BAD_REQUEST, "UTF-8 text only\n".to_string()),
            Ok(text) => match channel.publish(Event::data_only(text)) {
                Ok(id) => (StatusCode::CREATED, format!("{id}\n")),
                Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            },
        };
        async move { answer }
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
