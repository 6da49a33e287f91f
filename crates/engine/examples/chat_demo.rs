//! Chat rooms over broadcast channels: every message is published once to its room's
//! channel and fanned out by the engine; a client that reconnects resumes from the room's
//! history with `Last-Event-ID`, so nothing said while it was away is lost.
//!
//! ```text
//! cargo run -p rat-engine --example chat_demo          # http://127.0.0.1:8080
//! ```
//!
//! | route                         | what                                              |
//! |-------------------------------|---------------------------------------------------|
//! | `GET /`                       | the chat page                                     |
//! | `GET /rooms`                  | rooms with their subscriber and message counts    |
//! | `GET /rooms/:room/events`     | SSE: the room's messages (resumes after Last-Event-ID) |
//! | `POST /rooms/:room/messages`  | `{"name": "...", "text": "..."}` → published      |
//!
//! Room names are 1–32 letters, digits, `-` or `_`; messages up to 500 characters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rat_engine::http::{Method, StatusCode};
use rat_engine::{
    response, App, Channel, ChannelOptions, Event, Html, IntoResponse, Json, Request, RouteOptions,
    Server, ServerConfig,
};

/// Messages each room keeps for replay.
pub const ROOM_HISTORY: usize = 200;
/// The longest message accepted.
pub const MAX_TEXT: usize = 500;

/// The rooms, created on first use.
#[derive(Clone, Default)]
pub struct Rooms {
    rooms: Arc<Mutex<BTreeMap<String, Channel>>>,
}

fn valid_room(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Rooms {
    /// The room's channel, created if new.
    pub fn room(&self, name: &str) -> Channel {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        rooms
            .entry(name.to_string())
            .or_insert_with(|| {
                Channel::new(
                    name,
                    ChannelOptions {
                        history: ROOM_HISTORY,
                        ..Default::default()
                    },
                )
            })
            .clone()
    }

    fn list(&self) -> serde_json::Value {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let list: Vec<_> = rooms
            .iter()
            .map(|(name, ch)| {
                let m = ch.metrics();
                serde_json::json!({ "room": name, "subscribers": m.subscribers, "messages": m.published })
            })
            .collect();
        serde_json::json!({ "rooms": list })
    }
}

fn bad(status: StatusCode, msg: &str) -> rat_engine::Response {
    response::error(status, msg)
}

fn post_message(rooms: &Rooms, req: &Request) -> rat_engine::Response {
    let room = req.param("room").unwrap_or_default();
    if !valid_room(room) {
        return bad(
            StatusCode::BAD_REQUEST,
            "room names are 1-32 letters, digits, '-' or '_'",
        );
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(req.body()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            r#"send JSON: {"name": "...", "text": "..."}"#,
        );
    };
    let name = body["name"].as_str().unwrap_or("").trim();
    let text = body["text"].as_str().unwrap_or("").trim();
    if name.is_empty()
        || text.is_empty()
        || name.chars().count() > 40
        || text.chars().count() > MAX_TEXT
    {
        return bad(
            StatusCode::BAD_REQUEST,
            &format!("name (1-40 characters) and text (1-{MAX_TEXT} characters) are required"),
        );
    }
    let msg = serde_json::json!({ "name": name, "text": text, "at": now_ms() });
    match rooms
        .room(room)
        .publish(Event::new().event("message").data(msg.to_string()))
    {
        Ok(id) => (StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response(),
        Err(e) => e.into_response(),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The chat app over `rooms`.
///
/// # Panics
/// Never: the routes are static and valid.
pub fn app(rooms: Rooms) -> App {
    let mut app = App::new();
    let r = rooms.clone();
    app.get("/", |_req| async { Html(PAGE) }).expect("route");
    app.get("/rooms", move |_req| {
        let r = r.clone();
        async move { Json(r.list()) }
    })
    .expect("route");
    let r = rooms.clone();
    // Long-lived: its HTTP/1.1 subscribers are served without hyper's per-connection
    // buffers.
    let events = move |req: Request| {
        let r = r.clone();
        async move {
            let room = req.param("room").unwrap_or_default().to_string();
            if !valid_room(&room) {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "room names are 1-32 letters, digits, '-' or '_'",
                );
            }
            r.room(&room).sse_response(&req)
        }
    };
    app.route_with(
        Method::GET,
        "/rooms/:room/events",
        Arc::new(events),
        RouteOptions {
            long_lived: true,
            ..RouteOptions::default()
        },
    )
    .expect("route");
    app.post("/rooms/:room/messages", move |req: Request| {
        let r = rooms.clone();
        async move { post_message(&r, &req) }
    })
    .expect("route");
    app
}

#[tokio::main]
async fn main() -> rat_engine::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let server = Server::bind(
        (host.as_str(), port),
        app(Rooms::default()),
        ServerConfig::default(),
    )
    .await?;
    println!("chat demo on http://{}", server.local_addr());
    server
        .serve_until(
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
            Duration::from_secs(2),
        )
        .await;
    Ok(())
}

const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rat-engine chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:15px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:12px 20px}header b{color:#7cd4a4}
 main{max-width:760px;margin:20px auto;padding:0 16px}
 .bar{display:flex;gap:8px;margin-bottom:12px}input,button{font:inherit;padding:8px 10px;border:1px solid #c9ced8;border-radius:6px}
 button{background:#2f6fed;color:#fff;border:0;cursor:pointer}#log{background:#fff;border-radius:8px;height:50vh;overflow:auto;padding:12px;box-shadow:0 1px 3px #0002}
 .m{margin:4px 0}.n{font-weight:600;color:#2f6fed}.t{color:#8a91a0;font-size:12px;margin-left:6px}.sys{color:#8a91a0;font-style:italic}
 #status{font-size:13px;color:#8a91a0;margin-top:8px}
</style></head><body>
<header><b>rat-engine</b> chat — rooms over broadcast channels</header>
<main>
 <div class="bar"><input id="room" value="lobby" size="12" aria-label="room"><input id="name" placeholder="your name" size="12" aria-label="name"><button id="join">Join</button></div>
 <div id="log"></div>
 <form class="bar" id="form" style="margin-top:12px"><input id="text" placeholder="message" style="flex:1" aria-label="message" autocomplete="off"><button>Send</button></form>
 <div id="status">not connected</div>
</main>
<script>
let es = null, room = null
const $ = (id) => document.getElementById(id)
function line(html, cls) { const d = document.createElement('div'); d.className = 'm ' + (cls || ''); d.innerHTML = html; $('log').append(d); $('log').scrollTop = 1e9 }
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c])
function join() {
  if (es) es.close()
  room = $('room').value.trim(); $('log').innerHTML = ''
  es = new EventSource('/rooms/' + encodeURIComponent(room) + '/events')
  es.onopen = () => $('status').textContent = 'connected to #' + room
  es.onerror = () => $('status').textContent = 'reconnecting… (will resume where it left off)'
  es.addEventListener('message', (e) => { const m = JSON.parse(e.data); line('<span class="n">' + esc(m.name) + '</span> ' + esc(m.text) + '<span class="t">' + new Date(m.at).toLocaleTimeString() + '</span>') })
  es.addEventListener('missed', () => line('some older messages are no longer available', 'sys'))
}
$('join').onclick = join
$('form').onsubmit = async (e) => {
  e.preventDefault(); if (!room) join()
  const r = await fetch('/rooms/' + encodeURIComponent(room) + '/messages', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: $('name').value || 'anon', text: $('text').value }) })
  if (!r.ok) line(esc((await r.json()).error), 'sys'); else $('text').value = ''
}
join()
</script></body></html>"#;
