//! Hello world: a text route, a route with a path parameter, and a JSON route.
//!
//! ```sh
//! cargo run -p rat-engine --example hello        # PORT=3000 to change the port
//! curl http://127.0.0.1:8080/hello/rat
//! ```

use rat_engine::{App, Json, Request, Server, ServerConfig};
use serde::Serialize;

#[derive(Serialize)]
struct Greeting {
    greeting: String,
    length: usize,
}

/// The routes.
pub fn app() -> App {
    let mut app = App::new();
    app.get("/", |_req| async { "Hello, world!\n" })
        .expect("route");
    app.get("/hello/:name", |req: Request| async move {
        format!("Hello, {}!\n", req.param("name").unwrap_or("stranger"))
    })
    .expect("route");
    app.get("/json/:name", |req: Request| async move {
        let name = req.param("name").unwrap_or_default();
        Json(Greeting {
            greeting: format!("Hello, {name}!"),
            length: name.chars().count(),
        })
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
    server.shutdown(std::time::Duration::from_secs(1)).await;
    Ok(())
}
