//! The streaming demo: one page that shows every kind of streaming response live.
//!
//! ```text
//! cargo run -p rat-engine --example streaming_demo          # http://127.0.0.1:8080
//! PORT=3000 HOST=0.0.0.0 cargo run -p rat-engine --example streaming_demo
//! ```
//!
//! | route            | what it streams                                                  |
//! |------------------|------------------------------------------------------------------|
//! | `/`              | the demo page (inline CSS and JS, no other files)                |
//! | `/sse`           | SSE: a `connected` event, then a JSON `update` every second, `done` |
//! | `/chunked`       | chunked text: processing steps ~800 ms apart                     |
//! | `/json-stream`   | NDJSON: one JSON object per line, spaced out                     |
//! | `/text-stream`   | plain text lines, spaced out                                     |
//! | `/binary-stream` | `application/octet-stream` chunks, spaced out                    |
//! | `/metrics`       | the server's counters as JSON (the page polls it)                |
//!
//! Try them with curl too: `curl -N http://127.0.0.1:8080/sse`. Ctrl-C stops the server
//! gracefully (open streams get a few seconds); a second Ctrl-C quits at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{stream, Stream};
use rat_engine::http::Method;
use rat_engine::{
    binary_stream, json_stream, text_stream, App, ChunkedResponse, Event, Html, Json, Request,
    RouteOptions, Server, ServerConfig, SseResponse,
};

/// Number of `update` events `/sse` sends before `done`.
pub const SSE_UPDATES: u64 = 10;
/// Time between two `update` events.
pub const SSE_INTERVAL: Duration = Duration::from_secs(1);
/// Time between two `/chunked` steps.
pub const CHUNK_STEP: Duration = Duration::from_millis(800);
/// Time between two items of `/json-stream`, `/text-stream` and `/binary-stream`.
pub const ITEM_STEP: Duration = Duration::from_millis(400);

/// The steps `/chunked` reports, one per chunk.
pub const CHUNKED_STEPS: [&str; 4] = [
    "🔄 Initializing the processor...",
    "📊 Loading data...",
    "🧮 Running the analysis...",
    "✅ Processing complete!",
];

/// The lines `/text-stream` sends.
pub const TEXT_LINES: [&str; 5] = [
    "The first line of text",
    "The second line of text",
    "The third line: streamed, not buffered",
    "第四行文本 — Unicode works too",
    "The last line",
];

/// The number of chunks `/binary-stream` sends, and the size of each.
pub const BINARY_CHUNKS: usize = 6;
/// Bytes per `/binary-stream` chunk.
pub const BINARY_CHUNK_LEN: usize = 16;

/// The people `/json-stream` sends, one NDJSON line each.
pub fn json_items() -> Vec<serde_json::Value> {
    [
        ("Alice", "engineer"),
        ("Bob", "designer"),
        ("Charlie", "analyst"),
        ("Dana", "operator"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (name, role))| serde_json::json!({ "id": i + 1, "name": name, "role": role }))
    .collect()
}

/// Chunk `i` of `/binary-stream`: bytes `i*16 .. i*16+16` (so the page's hex dump counts up).
pub fn binary_chunk(i: usize) -> Vec<u8> {
    (0..BINARY_CHUNK_LEN)
        .map(|j| ((i * BINARY_CHUNK_LEN + j) % 256) as u8)
        .collect()
}

/// Yields `items`, waiting `every` before each one after the first.
fn paced<T: Send + 'static>(
    items: Vec<T>,
    every: Duration,
) -> impl Stream<Item = T> + Send + 'static {
    stream::unfold(
        (items.into_iter(), true),
        move |(mut items, first)| async move {
            let item = items.next()?;
            if !first {
                tokio::time::sleep(every).await;
            }
            Some((item, (items, false)))
        },
    )
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `GET /sse`: a `connected` event at once, then `update` events every second from a
/// background task, then `done`. A browser that reconnects sends `Last-Event-ID` and
/// resumes after the last update it saw.
async fn sse(req: Request) -> SseResponse {
    let resume_after = req
        .last_event_id()
        .and_then(|id| id.parse::<u64>().ok())
        .unwrap_or(0);
    let sse = SseResponse::new();
    let hello = serde_json::json!({
        "message": "SSE connection established",
        "updates": SSE_UPDATES,
        "resumed_after": resume_after,
    });
    // Queued now, sent as soon as the response starts.
    let _ = sse.send_event("connected", &hello.to_string());
    let tx = sse.sender();
    tokio::spawn(async move {
        for counter in resume_after + 1..=SSE_UPDATES {
            tokio::time::sleep(SSE_INTERVAL).await;
            let data = serde_json::json!({
                "counter": counter,
                "message": format!("Update #{counter}"),
                "timestamp": unix_millis(),
            });
            let event = Event::new()
                .event("update")
                .id(counter.to_string())
                .expect("digits are a valid id")
                .data(data.to_string());
            // `send` waits if the client is slow and fails once it has gone.
            if tx.send(&event).await.is_err() {
                return;
            }
        }
        let done = Event::new()
            .event("done")
            .data(serde_json::json!({ "total": SSE_UPDATES }).to_string());
        let _ = tx.send(&done).await;
        tx.end();
    });
    sse
}

/// `GET /chunked`: one chunk per processing step, ~800 ms apart.
async fn chunked(_req: Request) -> ChunkedResponse {
    let mut response = ChunkedResponse::new();
    for (i, step) in CHUNKED_STEPS.iter().enumerate() {
        if i > 0 {
            response = response.add_delay(CHUNK_STEP);
        }
        response = response.add_chunk(format!("{step}\n"));
    }
    response
}

/// `GET /metrics`: the server's counters.
async fn metrics(req: Request) -> Json {
    let m = req.metrics().snapshot();
    Json(serde_json::json!({
        "active_connections": m.active_connections,
        "total_connections": m.total_connections,
        "total_requests": m.total_requests,
        "active_streams": m.active_streams,
        "total_streams": m.total_streams,
        "events_sent": m.events_sent,
        "bytes_sent": m.bytes_sent,
        "rejected_requests": m.rejected_requests,
    }))
}

/// The demo's routes.
pub fn app() -> App {
    let mut app = App::new();
    app.get("/", |_req| async { Html(PAGE) })
        .and_then(|a| {
            // Long-lived: its HTTP/1.1 clients are served without hyper's per-connection
            // buffers.
            let long_lived = RouteOptions {
                long_lived: true,
                ..RouteOptions::default()
            };
            a.route_with(Method::GET, "/sse", Arc::new(sse), long_lived)
        })
        .and_then(|a| a.get("/chunked", chunked))
        .and_then(|a| {
            a.get("/json-stream", |_req| async {
                json_stream(paced(json_items(), ITEM_STEP))
            })
        })
        .and_then(|a| {
            a.get("/text-stream", |_req| async {
                text_stream(paced(TEXT_LINES.to_vec(), ITEM_STEP))
            })
        })
        .and_then(|a| {
            a.get("/binary-stream", |_req| async {
                binary_stream(paced(
                    (0..BINARY_CHUNKS).map(binary_chunk).collect(),
                    ITEM_STEP,
                ))
            })
        })
        .and_then(|a| a.get("/metrics", metrics))
        .expect("the demo's routes are valid");
    app
}

#[tokio::main]
async fn main() -> rat_engine::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_string());
    let port = match std::env::var("PORT") {
        Ok(p) => p.parse::<u16>().map_err(|_| {
            rat_engine::Error::invalid_argument(format!(
                "PORT must be a number from 0 to 65535, got {p:?}"
            ))
        })?,
        Err(_) => 8080,
    };
    let server = Server::bind((host.as_str(), port), app(), ServerConfig::default()).await?;
    let addr = server.local_addr();
    println!("rat-engine streaming demo: open http://{addr}/");
    for (route, what) in [
        ("/sse", "Server-Sent Events"),
        ("/chunked", "chunked transfer"),
        ("/json-stream", "NDJSON"),
        ("/text-stream", "text lines"),
        ("/binary-stream", "binary chunks"),
    ] {
        println!("  curl -N http://{addr}{route:<15} # {what}");
    }
    println!("Ctrl-C to stop.");

    let grace = Duration::from_secs(3);
    let stopping = server.serve_until(
        async {
            let _ = tokio::signal::ctrl_c().await;
            println!(
                "\nshutting down (open streams get up to {grace:?}; Ctrl-C again to quit now)..."
            );
        },
        grace,
    );
    tokio::select! {
        _ = stopping => println!("stopped."),
        _ = async {
            // The first Ctrl-C starts the graceful shutdown above; a second one ends it.
            let _ = tokio::signal::ctrl_c().await;
            let _ = tokio::signal::ctrl_c().await;
        } => println!("stopped without waiting."),
    }
    Ok(())
}

/// The demo page: every panel opens its stream and shows data the moment it arrives.
pub const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rat-engine · streaming demo</title>
<style>
  :root {
    --bg: #0f1420; --panel: #171e2e; --panel2: #1d2538; --text: #e6ebf5; --muted: #8d99b3;
    --accent: #7c9cff; --ok: #3ecf8e; --warn: #f5b454; --err: #ff6b6b; --line: #2a3550;
    --mono: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  }
  * { box-sizing: border-box; }
  body { margin: 0; background: var(--bg); color: var(--text);
         font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
  header { padding: 28px 32px 12px; display: flex; flex-wrap: wrap; align-items: end; gap: 16px; }
  header h1 { margin: 0; font-size: 26px; letter-spacing: .2px; }
  header h1 span { color: var(--accent); }
  header p { margin: 4px 0 0; color: var(--muted); max-width: 760px; }
  .spacer { flex: 1; }
  button { background: var(--panel2); color: var(--text); border: 1px solid var(--line);
           border-radius: 8px; padding: 6px 14px; font: inherit; cursor: pointer; }
  button:hover { border-color: var(--accent); }
  button.primary { background: var(--accent); border-color: var(--accent); color: #0b1020; font-weight: 600; }
  .metrics { display: flex; flex-wrap: wrap; gap: 10px; padding: 0 32px 8px; }
  .metric { background: var(--panel); border: 1px solid var(--line); border-radius: 10px;
            padding: 8px 14px; min-width: 130px; }
  .metric b { display: block; font-size: 20px; font-variant-numeric: tabular-nums; }
  .metric small { color: var(--muted); }
  main { display: grid; grid-template-columns: repeat(auto-fill, minmax(400px, 1fr));
         gap: 18px; padding: 16px 32px 40px; }
  .card { background: var(--panel); border: 1px solid var(--line); border-radius: 14px;
          display: flex; flex-direction: column; min-height: 330px; overflow: hidden; }
  .card-head { display: flex; align-items: center; gap: 10px; padding: 14px 16px 6px; }
  .card-head h2 { margin: 0; font-size: 17px; }
  code.route { font-family: var(--mono); font-size: 13px; color: var(--accent);
               background: var(--panel2); padding: 2px 8px; border-radius: 6px; }
  .pill { margin-left: auto; font-size: 12px; padding: 2px 10px; border-radius: 999px;
          border: 1px solid var(--line); color: var(--muted); white-space: nowrap; }
  .pill.streaming { color: var(--warn); border-color: var(--warn); }
  .pill.streaming::before { content: "● "; animation: blink 1s infinite; }
  .pill.done { color: var(--ok); border-color: var(--ok); }
  .pill.error { color: var(--err); border-color: var(--err); }
  @keyframes blink { 50% { opacity: .2; } }
  .desc { margin: 0; padding: 0 16px 8px; color: var(--muted); font-size: 13px; }
  .summary { display: flex; align-items: center; gap: 12px; padding: 4px 16px 8px; }
  .big { font-size: 28px; font-weight: 700; font-variant-numeric: tabular-nums; min-width: 56px; }
  .bar { flex: 1; height: 8px; background: var(--panel2); border-radius: 99px; overflow: hidden; }
  .bar i { display: block; height: 100%; width: 0; background: linear-gradient(90deg, var(--accent), var(--ok));
           transition: width .35s ease; }
  .log { flex: 1; margin: 0 12px; padding: 8px 10px; background: #0b101a; border-radius: 10px;
         font-family: var(--mono); font-size: 12.5px; overflow: auto; max-height: 220px; min-height: 150px; }
  .log div { padding: 2px 0; border-bottom: 1px dashed #1c2436; white-space: pre-wrap; word-break: break-word;
             animation: fadein .4s ease; }
  .log div:last-child { border-bottom: none; }
  .log .t { color: var(--muted); margin-right: 8px; }
  .log .k { color: var(--accent); margin-right: 6px; }
  .log .sys { color: var(--muted); font-style: italic; }
  .log .bad { color: var(--err); }
  @keyframes fadein { from { background: #24304d; } to { background: transparent; } }
  .card-foot { display: flex; align-items: center; gap: 8px; padding: 10px 16px 14px; }
  .card-foot code { font-family: var(--mono); font-size: 12px; color: var(--muted); flex: 1;
                    overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
</style>
</head>
<body>
<header>
  <div>
    <h1><span>rat-engine</span> streaming demo</h1>
    <p>Every panel below reads a streaming response from this server and shows each piece
       the moment it arrives: Server-Sent Events through <code>EventSource</code>, the
       others through <code>fetch()</code> and a <code>ReadableStream</code> reader.</p>
  </div>
  <div class="spacer"></div>
  <button class="primary" id="start-all">Restart all</button>
  <button id="stop-all">Stop all</button>
</header>

<section class="metrics" id="metrics">
  <div class="metric"><b id="m-active_connections">–</b><small>open connections</small></div>
  <div class="metric"><b id="m-active_streams">–</b><small>open streams</small></div>
  <div class="metric"><b id="m-total_requests">–</b><small>requests</small></div>
  <div class="metric"><b id="m-events_sent">–</b><small>SSE events sent</small></div>
  <div class="metric"><b id="m-bytes_sent">–</b><small>stream bytes sent</small></div>
</section>

<main>
  <section class="card" id="sse">
    <div class="card-head"><h2>Server-Sent Events</h2><code class="route">/sse</code><span class="pill">idle</span></div>
    <p class="desc">A <code>connected</code> event, then a JSON <code>update</code> every second from a background task, then <code>done</code>.</p>
    <div class="summary"><span class="big" data-big>0</span><div class="bar"><i data-bar></i></div></div>
    <div class="log"></div>
    <div class="card-foot"><code data-curl>curl -N /sse</code><button data-restart>Restart</button><button data-stop>Stop</button></div>
  </section>

  <section class="card" id="chunked">
    <div class="card-head"><h2>Chunked transfer</h2><code class="route">/chunked</code><span class="pill">idle</span></div>
    <p class="desc">A long job reporting progress: one chunk per step, about 800 ms apart.</p>
    <div class="summary"><span class="big" data-big>0</span><div class="bar"><i data-bar></i></div></div>
    <div class="log"></div>
    <div class="card-foot"><code data-curl>curl -N /chunked</code><button data-restart>Restart</button><button data-stop>Stop</button></div>
  </section>

  <section class="card" id="json">
    <div class="card-head"><h2>JSON stream</h2><code class="route">/json-stream</code><span class="pill">idle</span></div>
    <p class="desc">NDJSON (<code>application/x-ndjson</code>): one JSON object per line, parsed as each line completes.</p>
    <div class="log"></div>
    <div class="card-foot"><code data-curl>curl -N /json-stream</code><button data-restart>Restart</button><button data-stop>Stop</button></div>
  </section>

  <section class="card" id="text">
    <div class="card-head"><h2>Text stream</h2><code class="route">/text-stream</code><span class="pill">idle</span></div>
    <p class="desc">Plain text lines, decoded as UTF-8 across chunk boundaries.</p>
    <div class="log"></div>
    <div class="card-foot"><code data-curl>curl -N /text-stream</code><button data-restart>Restart</button><button data-stop>Stop</button></div>
  </section>

  <section class="card" id="binary">
    <div class="card-head"><h2>Binary stream</h2><code class="route">/binary-stream</code><span class="pill">idle</span></div>
    <p class="desc"><code>application/octet-stream</code> chunks, shown as a hex dump as they arrive.</p>
    <div class="summary"><span class="big" data-big>0</span><small style="color:var(--muted)">bytes received</small></div>
    <div class="log"></div>
    <div class="card-foot"><code data-curl>curl -N /binary-stream | xxd</code><button data-restart>Restart</button><button data-stop>Stop</button></div>
  </section>
</main>

<script>
"use strict";
const origin = location.origin;
const $ = (card, sel) => document.querySelector("#" + card + " " + sel);

// ---- panel helpers ----
const started = {};
function setStatus(card, text, cls) {
  const pill = $(card, ".pill");
  pill.textContent = text;
  pill.className = "pill " + (cls || "");
}
function clear(card) {
  $(card, ".log").innerHTML = "";
  const big = $(card, "[data-big]"); if (big) big.textContent = "0";
  const bar = $(card, "[data-bar]"); if (bar) bar.style.width = "0";
  started[card] = performance.now();
}
function elapsed(card) {
  return "+" + Math.round(performance.now() - started[card]).toString().padStart(5, " ") + " ms";
}
function log(card, text, opts) {
  opts = opts || {};
  const box = $(card, ".log");
  const line = document.createElement("div");
  const t = document.createElement("span"); t.className = "t"; t.textContent = elapsed(card);
  line.appendChild(t);
  if (opts.tag) { const k = document.createElement("span"); k.className = "k"; k.textContent = opts.tag; line.appendChild(k); }
  const body = document.createElement("span"); body.textContent = text;
  if (opts.cls) body.className = opts.cls;
  line.appendChild(body);
  box.appendChild(line);
  box.scrollTop = box.scrollHeight;
}
function progress(card, value, max) {
  $(card, "[data-big]").textContent = max ? value + "/" + max : String(value);
  const bar = $(card, "[data-bar]");
  if (bar && max) bar.style.width = Math.min(100, 100 * value / max) + "%";
}

// ---- /sse with EventSource ----
let source = null;
function startSse() {
  stopSse();
  clear("sse");
  setStatus("sse", "connecting");
  let total = 10;
  source = new EventSource("/sse");
  source.addEventListener("connected", (e) => {
    const d = JSON.parse(e.data);
    total = d.updates || total;
    setStatus("sse", "streaming", "streaming");
    log("sse", d.message, { tag: "connected" });
  });
  source.addEventListener("update", (e) => {
    const d = JSON.parse(e.data);
    progress("sse", d.counter, total);
    log("sse", d.message + "  " + new Date(d.timestamp).toLocaleTimeString(), { tag: "update#" + e.lastEventId });
  });
  source.addEventListener("done", (e) => {
    log("sse", "stream complete: " + e.data, { tag: "done" });
    setStatus("sse", "done", "done");
    source.close();
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) { setStatus("sse", "error", "error"); return; }
    setStatus("sse", "reconnecting", "error");
    log("sse", "connection lost; the browser reconnects and resumes (Last-Event-ID)", { cls: "sys" });
  };
}
function stopSse() {
  if (source) { source.close(); source = null; setStatus("sse", "stopped"); }
}

// ---- fetch + ReadableStream for the others ----
const controllers = {};
async function readStream(card, url, onChunk, onEnd) {
  if (controllers[card]) controllers[card].abort();
  const ctl = new AbortController();
  controllers[card] = ctl;
  clear(card);
  setStatus(card, "connecting");
  try {
    const res = await fetch(url, { signal: ctl.signal, cache: "no-store" });
    log(card, res.status + " " + (res.headers.get("content-type") || ""), { cls: "sys" });
    setStatus(card, "streaming", "streaming");
    const reader = res.body.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onChunk(value);
    }
    if (onEnd) onEnd();
    log(card, "end of stream", { cls: "sys" });
    setStatus(card, "done", "done");
  } catch (err) {
    if (err.name === "AbortError") { setStatus(card, "stopped"); return; }
    log(card, String(err), { cls: "bad" });
    setStatus(card, "error", "error");
  }
}

function textLines(onLine) {
  // Decodes UTF-8 across chunk boundaries and hands over complete lines only.
  const decoder = new TextDecoder();
  let pending = "";
  return {
    chunk(bytes) {
      pending += decoder.decode(bytes, { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        onLine(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
    },
    end() {
      pending += decoder.decode();
      if (pending) onLine(pending);
      pending = "";
    },
  };
}

function startChunked() {
  let n = 0;
  const lines = textLines((line) => { n += 1; progress("chunked", n, 4); log("chunked", line, { tag: "chunk" }); });
  readStream("chunked", "/chunked", lines.chunk, lines.end);
}

function startJson() {
  const lines = textLines((line) => {
    if (!line.trim()) return;
    try {
      const item = JSON.parse(line);
      log("json", item.name + " · " + item.role + "    " + line, { tag: "#" + item.id });
    } catch (e) {
      log("json", "not JSON: " + line, { cls: "bad" });
    }
  });
  readStream("json", "/json-stream", lines.chunk, lines.end);
}

function startText() {
  const lines = textLines((line) => log("text", line));
  readStream("text", "/text-stream", lines.chunk, lines.end);
}

function startBinary() {
  let total = 0;
  readStream("binary", "/binary-stream", (bytes) => {
    const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(" ");
    log("binary", hex, { tag: total.toString(16).padStart(4, "0") });
    total += bytes.length;
    progress("binary", total);
  });
}

const starters = { sse: startSse, chunked: startChunked, json: startJson, text: startText, binary: startBinary };
const stoppers = {
  sse: stopSse,
  chunked: () => controllers.chunked && controllers.chunked.abort(),
  json: () => controllers.json && controllers.json.abort(),
  text: () => controllers.text && controllers.text.abort(),
  binary: () => controllers.binary && controllers.binary.abort(),
};
for (const card of Object.keys(starters)) {
  $(card, "[data-restart]").addEventListener("click", starters[card]);
  $(card, "[data-stop]").addEventListener("click", stoppers[card]);
  const curl = $(card, "[data-curl]");
  curl.textContent = curl.textContent.replace(" /", " " + origin + "/");
}
document.getElementById("start-all").addEventListener("click", () => Object.values(starters).forEach((f) => f()));
document.getElementById("stop-all").addEventListener("click", () => Object.values(stoppers).forEach((f) => f()));

// ---- server metrics, polled ----
async function pollMetrics() {
  try {
    const m = await (await fetch("/metrics", { cache: "no-store" })).json();
    for (const [k, v] of Object.entries(m)) {
      const el = document.getElementById("m-" + k);
      if (el) el.textContent = k === "bytes_sent" ? (v / 1024).toFixed(1) + " KiB" : v;
    }
  } catch (e) { /* server stopped */ }
}
setInterval(pollMetrics, 1000);
pollMetrics();

Object.values(starters).forEach((f) => f());
</script>
</body>
</html>
"##;
