//! A chunked download: a CSV report generated row by row as the client reads it, never
//! held in memory whole. The stream is pulled only as fast as the client takes it.
//!
//! ```sh
//! cargo run -p rat-engine --example chunked_download   # PORT=3000 to change the port
//! curl -OJ 'http://127.0.0.1:8080/report.csv?rows=100000'
//! ```

use std::time::Duration;

use rat_engine::http::{header, HeaderValue};
use rat_engine::{App, Bytes, Request, Server, ServerConfig, StreamingResponse};
use tokio_stream::StreamExt as _;

/// Rows per chunk of the body.
pub const ROWS_PER_CHUNK: u64 = 1000;

/// Row `i` of the report.
pub fn row(i: u64) -> String {
    format!("{i},item-{i},{}\n", i * 7 % 1000)
}

/// The routes. `/report.csv?rows=N` (default 10,000) sends a header line and N rows.
pub fn app() -> App {
    let mut app = App::new();
    app.get("/report.csv", |req: Request| async move {
        let rows: u64 = req
            .query_param("rows")
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let header_line = tokio_stream::once(Bytes::from_static(b"id,name,score\n"));
        let chunks =
            tokio_stream::iter((0..rows).step_by(ROWS_PER_CHUNK as usize)).map(move |start| {
                let end = (start + ROWS_PER_CHUNK).min(rows);
                Bytes::from((start..end).map(row).collect::<String>())
            });
        StreamingResponse::new("text/csv", header_line.chain(chunks).map(Ok)).header(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"report.csv\""),
        )
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
