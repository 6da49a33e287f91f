//! CORS answered by the engine: preflights without a handler, the headers on plain and
//! streaming responses (direct path and hyper's) for allowed origins only, a route that
//! turns CORS off, and a user's own OPTIONS route still called for non-preflight OPTIONS.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rat_engine::cors::{Cors, Origins, RouteCors};
use rat_engine::{App, Request, RouteOptions, ServerConfig, SseResponse};
use support::{serve_with, RawConn};

async fn start() -> rat_engine::ServerHandle {
    let mut app = App::new();
    app.get("/api/data", |_req| async { "data" }).unwrap();
    app.post("/api/data", |_req| async { "posted" }).unwrap();
    let long = |cors| RouteOptions {
        long_lived: true,
        stream: true,
        cors,
        ..Default::default()
    };
    let events = |_req: Request| async {
        let sse = SseResponse::new();
        sse.send_event("hello", "1").unwrap();
        sse.sender().end();
        sse
    };
    app.route_with(
        Method::GET,
        "/events",
        Arc::new(events),
        long(RouteCors::Inherit),
    )
    .unwrap();
    app.route_with(
        Method::GET,
        "/private",
        Arc::new(events),
        long(RouteCors::Off),
    )
    .unwrap();
    app.route("OPTIONS", "/own", |_req| async { "my options" })
        .unwrap();
    let cors = Cors::new(
        Origins::list(["https://app.example"])
            .pattern(r"https://[a-z0-9-]+\.preview\.example")
            .unwrap(),
    )
    .credentials(true)
    .exposed_headers(["x-total"])
    .unwrap()
    .max_age(Duration::from_secs(600));
    serve_with(app, ServerConfig::default().cors(cors)).await
}

#[tokio::test]
async fn a_preflight_is_answered_without_a_handler() {
    let server = start().await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    let ask = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type, x-token"),
    ];
    let (head, body) = conn.roundtrip("OPTIONS", "/api/data", &ask, b"").await;
    assert_eq!(head.status, 204);
    assert!(body.is_empty());
    assert_eq!(
        head.get("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(head.get("access-control-allow-credentials"), Some("true"));
    assert_eq!(
        head.get("access-control-allow-methods"),
        Some("GET, HEAD, POST")
    );
    assert_eq!(
        head.get("access-control-allow-headers"),
        Some("content-type, x-token")
    );
    assert_eq!(head.get("access-control-max-age"), Some("600"));
    // A pattern origin, and one that is not allowed.
    let ask = [
        ("Origin", "https://pr-1.preview.example"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let (head, _) = conn.roundtrip("OPTIONS", "/api/data", &ask, b"").await;
    assert_eq!(
        head.get("access-control-allow-origin"),
        Some("https://pr-1.preview.example")
    );
    let ask = [
        ("Origin", "https://evil.example"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let (head, _) = conn.roundtrip("OPTIONS", "/api/data", &ask, b"").await;
    assert_eq!(head.status, 204);
    assert_eq!(head.get("access-control-allow-origin"), None);
}

#[tokio::test]
async fn responses_and_streams_carry_the_headers_for_allowed_origins_only() {
    let server = start().await;
    let addr = server.local_addr();
    for (path, want_body) in [
        ("/api/data", "data"),
        ("/events", "event: hello\ndata: 1\n\n"),
    ] {
        let mut conn = RawConn::connect(addr).await;
        let (head, body) = conn
            .roundtrip("GET", path, &[("Origin", "https://app.example")], b"")
            .await;
        assert_eq!(String::from_utf8_lossy(&body), want_body);
        assert_eq!(
            head.get("access-control-allow-origin"),
            Some("https://app.example"),
            "{path}"
        );
        assert_eq!(head.get("access-control-allow-credentials"), Some("true"));
        assert_eq!(head.get("access-control-expose-headers"), Some("x-total"));
        assert_eq!(head.get("vary"), Some("origin"));
        let (head, _) = conn
            .roundtrip("GET", path, &[("Origin", "https://evil.example")], b"")
            .await;
        assert_eq!(head.get("access-control-allow-origin"), None, "{path}");
        assert_eq!(head.get("vary"), Some("origin"));
    }
}

#[tokio::test]
async fn a_route_without_cors_and_a_users_own_options_route() {
    let server = start().await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    let (head, _) = conn
        .roundtrip("GET", "/private", &[("Origin", "https://app.example")], b"")
        .await;
    assert_eq!(head.get("access-control-allow-origin"), None);
    let ask = [
        ("Origin", "https://app.example"),
        ("Access-Control-Request-Method", "GET"),
    ];
    let (head, _) = conn.roundtrip("OPTIONS", "/private", &ask, b"").await;
    assert_eq!(
        head.get("access-control-allow-origin"),
        None,
        "no preflight answer"
    );
    let (head, body) = conn.roundtrip("OPTIONS", "/own", &[], b"").await;
    assert_eq!((head.status, body.as_slice()), (200, &b"my options"[..]));
}

/// An origin the list does not name is decided by the policy's check, asked once per
/// origin, for preflights and actual responses (the direct path's and hyper's).
#[tokio::test]
async fn a_check_decides_other_origins_once_each() {
    let asked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = asked.clone();
    let cors = Cors::new(Origins::list(["https://app.example"])).check(move |origin| {
        log.lock().unwrap().push(origin.to_string());
        let ok = origin.ends_with(".partner.example");
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ok
        })
    });
    let mut app = App::new();
    let long = RouteOptions {
        long_lived: true,
        ..Default::default()
    };
    app.route_with(
        Method::GET,
        "/data",
        Arc::new(|_req: Request| async { "data" }),
        long,
    )
    .unwrap();
    app.post("/data", |_req| async { "posted" }).unwrap();
    let server = serve_with(app, ServerConfig::default().cors(cors)).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    for _ in 0..2 {
        for (origin, allowed) in [
            ("https://a.partner.example", true),
            ("https://evil.example", false),
            ("https://app.example", true),
        ] {
            let (head, body) = conn
                .roundtrip("GET", "/data", &[("origin", origin)], b"")
                .await;
            assert_eq!(body, b"data");
            let acao = head.get("access-control-allow-origin");
            assert_eq!(acao, allowed.then_some(origin), "{origin}");
            let (pre, _) = conn
                .roundtrip(
                    "OPTIONS",
                    "/data",
                    &[
                        ("origin", origin),
                        ("access-control-request-method", "POST"),
                    ],
                    b"",
                )
                .await;
            assert_eq!(pre.status, 204);
            let acao = pre.get("access-control-allow-origin");
            assert_eq!(acao, allowed.then_some(origin), "preflight {origin}");
        }
    }
    assert_eq!(
        *asked.lock().unwrap(),
        ["https://a.partner.example", "https://evil.example"],
        "each unlisted origin asked once"
    );
}
