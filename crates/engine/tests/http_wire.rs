//! HTTP semantics over the wire: engine-made errors (404, 405, 413), OPTIONS and HEAD,
//! parameters and query strings reaching handlers, repeated response headers, and h2c.
//! Each test runs on both writers of the wire (`hyper::…`: every route on hyper;
//! `direct::…`: plain GETs on the direct path, the rest handed to hyper).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rat_engine::{App, Body, Event, Json, ServerConfig, SseResponse, SseSender};
use support::{fetch, get, open_sse_on, request, serve_with, within, RawConn, SseReader, Wire};
use tokio::sync::mpsc;
use tokio::time::Instant;

const BODY_LIMIT: usize = 64;

fn app(wire: Wire, senders: mpsc::UnboundedSender<SseSender>) -> App {
    let mut app = App::new();
    wire.get(&mut app, "/hello", |_req| async { "hello" })
        .unwrap();
    wire.get(&mut app, "/thing", |_req| async { "got" })
        .unwrap();
    app.post("/thing", |_req| async { "posted" }).unwrap();
    app.post("/echo", |req: rat_engine::Request| async move {
        req.body().clone()
    })
    .unwrap();
    wire.get(
        &mut app,
        "/users/:name",
        |req: rat_engine::Request| async move { format!("name={}", req.param("name").unwrap()) },
    )
    .unwrap();
    wire.get(
        &mut app,
        "/items/<int:id>",
        |req: rat_engine::Request| async move {
            let id: i64 = req.param("id").unwrap().parse().unwrap();
            format!("int {id}")
        },
    )
    .unwrap();
    wire.get(
        &mut app,
        "/items/<uuid:id>",
        |req: rat_engine::Request| async move { format!("uuid {}", req.param("id").unwrap()) },
    )
    .unwrap();
    wire.get(
        &mut app,
        "/items/:slug",
        |req: rat_engine::Request| async move { format!("slug {}", req.param("slug").unwrap()) },
    )
    .unwrap();
    wire.get(
        &mut app,
        "/files/<path:rest>",
        |req: rat_engine::Request| async move { format!("rest {}", req.param("rest").unwrap()) },
    )
    .unwrap();
    wire.get(&mut app, "/query", |req: rat_engine::Request| async move {
        let pairs: Vec<serde_json::Value> = req
            .query()
            .into_iter()
            .map(|(k, v)| serde_json::json!([k, v]))
            .collect();
        Json(serde_json::Value::Array(pairs))
    })
    .unwrap();
    wire.get(&mut app, "/cookies", |_req| async {
        http::Response::builder()
            .header("set-cookie", "a=1; Path=/")
            .header("set-cookie", "b=2; HttpOnly")
            .header("content-type", "text/plain")
            .body(Body::from("cookies"))
            .unwrap()
    })
    .unwrap();
    wire.get(&mut app, "/events", move |_req| {
        let senders = senders.clone();
        async move {
            let sse = SseResponse::new();
            sse.send_event("hello", "first").unwrap();
            let tx = sse.sender();
            let _ = senders.send(tx.clone());
            tokio::spawn(async move {
                for i in 0..5 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if tx.send(&Event::data_only(format!("n{i}"))).await.is_err() {
                        return;
                    }
                }
                tx.end();
            });
            sse
        }
    })
    .unwrap();
    app
}

async fn start(wire: Wire) -> (rat_engine::ServerHandle, mpsc::UnboundedReceiver<SseSender>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let server = serve_with(
        app(wire, tx),
        ServerConfig::default().max_body_bytes(BODY_LIMIT),
    )
    .await;
    (server, rx)
}

async fn an_unknown_path_is_a_404_with_a_json_body(wire: Wire) {
    let (server, _) = start(wire).await;
    let res = get(server.local_addr(), "/nope?x=1").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("content-type"), Some("application/json"));
    let v = res.json();
    assert_eq!(v["status"], 404);
    assert_eq!(v["error"], "no route for GET /nope");
    assert_eq!(server.metrics().snapshot().rejected_requests, 1);
}

async fn a_wrong_method_is_a_405_listing_the_allowed_ones(wire: Wire) {
    let (server, _) = start(wire).await;
    let res = fetch(
        server.local_addr(),
        request("DELETE", server.local_addr(), "/thing", ""),
    )
    .await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("allow"), Some("GET, HEAD, POST"));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.json()["status"], 405);
    // The routes themselves still answer their methods.
    let res = fetch(
        server.local_addr(),
        request("POST", server.local_addr(), "/thing", ""),
    )
    .await;
    assert_eq!((res.status, res.text().as_str()), (200, "posted"));
}

async fn options_is_a_204_with_allow_and_404_for_unknown_paths(wire: Wire) {
    let (server, _) = start(wire).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    let (head, body) = conn.roundtrip("OPTIONS", "/thing", &[], b"").await;
    assert_eq!(head.status, 204);
    assert_eq!(head.get("allow"), Some("GET, HEAD, POST"));
    assert!(body.is_empty());
    assert!(
        head.get("transfer-encoding").is_none(),
        "a 204 has no body framing: {head:?}"
    );
    let (head, _) = conn.roundtrip("OPTIONS", "/hello", &[], b"").await;
    assert_eq!((head.status, head.get("allow")), (204, Some("GET, HEAD")));
    let (head, _) = conn.roundtrip("OPTIONS", "/nope", &[], b"").await;
    assert_eq!(head.status, 404);
}

async fn head_on_a_get_route_sends_the_headers_and_no_body(wire: Wire) {
    let (server, _) = start(wire).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    let (get_head, get_body) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!(get_body, b"hello");
    wire.assert_wrote(&get_head);

    conn.send_request("HEAD", "/hello", &[], b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), get_head.get("content-type"));
    // A HEAD response may omit Content-Length, but must not claim a different one.
    if let Some(n) = head.content_length() {
        assert_eq!(n, 5, "HEAD announced Content-Length {n}, GET sends 5 bytes");
    }
    // Had the server sent a body, it would sit in front of the next response.
    let (next, body) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!((next.status, body.as_slice()), (200, &b"hello"[..]));
}

async fn head_on_an_sse_route_sends_headers_only_and_closes_the_producer(wire: Wire) {
    let (server, mut senders) = start(wire).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    conn.send_request("HEAD", "/events", &[], b"").await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.get("content-type"), Some("text/event-stream"));
    let tx = within(Duration::from_secs(2), "the producer", senders.recv())
        .await
        .unwrap();
    within(
        Duration::from_secs(1),
        "the producer to see the stream closed",
        tx.closed(),
    )
    .await;
    let (next, body) = conn.roundtrip("GET", "/hello", &[], b"").await;
    assert_eq!((next.status, body.as_slice()), (200, &b"hello"[..]));
}

async fn a_body_over_the_limit_with_content_length_is_a_413(wire: Wire) {
    let (server, _) = start(wire).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    let big = vec![b'x'; BODY_LIMIT + 1];
    conn.send_request("POST", "/echo", &[], &big).await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 413);
    let body = conn.read_body(&head).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 413);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains(&BODY_LIMIT.to_string()),
        "{v}"
    );
    // Exactly at the limit is fine.
    let ok = fetch(
        server.local_addr(),
        request("POST", server.local_addr(), "/echo", vec![b'y'; BODY_LIMIT]),
    )
    .await;
    assert_eq!((ok.status, ok.body.len()), (200, BODY_LIMIT));
}

fn chunked_upload(total: usize, piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut left = total;
    let mut n = 0u8;
    while left > 0 {
        let len = piece.min(left);
        out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
        out.extend_from_slice(&vec![b'a' + n % 26; len]);
        out.extend_from_slice(b"\r\n");
        left -= len;
        n += 1;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

async fn a_chunked_upload_over_the_limit_is_a_413_and_at_the_limit_is_read(wire: Wire) {
    let (server, _) = start(wire).await;
    let te = [("Transfer-Encoding", "chunked")];

    let mut conn = RawConn::connect(server.local_addr()).await;
    let (head, body) = conn
        .roundtrip("POST", "/echo", &te, &chunked_upload(BODY_LIMIT, 16))
        .await;
    assert_eq!(head.status, 200);
    let expected: Vec<u8> = (0..BODY_LIMIT).map(|i| b'a' + (i / 16) as u8).collect();
    assert_eq!(
        body, expected,
        "the handler saw the reassembled chunked body"
    );

    let mut conn = RawConn::connect(server.local_addr()).await;
    conn.send_request("POST", "/echo", &te, &chunked_upload(BODY_LIMIT + 20, 16))
        .await;
    let head = conn.read_head().await;
    assert_eq!(head.status, 413);
    let body = conn.read_body(&head).await;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 413);
}

async fn path_params_are_typed_and_percent_decoded(wire: Wire) {
    let (server, _) = start(wire).await;
    let addr = server.local_addr();
    let cases = [
        ("/users/alice", "name=alice"),
        ("/users/J%C3%BCrgen%20M", "name=Jürgen M"),
        ("/users/a%2Fb", "name=a/b"),
        ("/items/42", "int 42"),
        ("/items/-7", "int -7"),
        ("/items/%34%32", "int 42"),
        (
            "/items/123e4567-e89b-12d3-a456-426614174000",
            "uuid 123e4567-e89b-12d3-a456-426614174000",
        ),
        ("/items/seven", "slug seven"),
        ("/items/99999999999999999999", "slug 99999999999999999999"),
        ("/files/a/b/c.txt", "rest a/b/c.txt"),
        ("/files/with%20space/x", "rest with space/x"),
    ];
    for (path, want) in cases {
        let res = get(addr, path).await;
        assert_eq!((res.status, res.text()), (200, want.to_string()), "{path}");
    }
    assert_eq!(get(addr, "/files").await.status, 404);
}

async fn repeated_query_keys_reach_the_handler_in_order(wire: Wire) {
    let (server, _) = start(wire).await;
    let res = get(
        server.local_addr(),
        "/query?a=1&b=x%20y&a=2&c&d=%E2%9C%93+ok&a=",
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.json(),
        serde_json::json!([
            ["a", "1"],
            ["b", "x y"],
            ["a", "2"],
            ["c", ""],
            ["d", "✓ ok"],
            ["a", ""]
        ])
    );
}

async fn several_set_cookie_headers_survive(wire: Wire) {
    let (server, _) = start(wire).await;
    let res = get(server.local_addr(), "/cookies").await;
    let cookies: Vec<_> = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(cookies, ["a=1; Path=/", "b=2; HttpOnly"]);
    // On the wire they are separate header lines, not one folded line.
    let mut conn = RawConn::connect(server.local_addr()).await;
    let (head, body) = conn.roundtrip("GET", "/cookies", &[], b"").await;
    assert_eq!(head.get_all("set-cookie"), ["a=1; Path=/", "b=2; HttpOnly"]);
    assert_eq!(body, b"cookies");
    wire.assert_wrote(&head);
}

async fn pipelined_requests_on_one_connection_are_answered_in_order(wire: Wire) {
    let (server, _) = start(wire).await;
    let mut conn = RawConn::connect(server.local_addr()).await;
    let mut both = b"GET /users/one HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    both.extend_from_slice(b"GET /users/two HTTP/1.1\r\nHost: x\r\n\r\n");
    conn.send_raw(&both).await;
    for want in ["name=one", "name=two"] {
        let head = conn.read_head().await;
        assert_eq!(conn.read_body(&head).await, want.as_bytes());
        wire.assert_wrote(&head);
    }
}

// ---- HTTP/2 with prior knowledge (h2c) ----

fn h2_get(path: &str) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .uri(format!("http://127.0.0.1{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn h2c_serves_a_plain_route(wire: Wire) {
    let (server, _) = start(wire).await;
    let mut h2 = support::h2_connect(server.local_addr()).await;
    let res = within(
        Duration::from_secs(5),
        "h2 response",
        h2.send_request(h2_get("/hello")),
    )
    .await
    .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello");
    let res = h2.send_request(h2_get("/nope")).await.unwrap();
    assert_eq!(res.status(), 404);
}

async fn h2c_streams_sse_events_as_they_are_sent_alongside_other_requests(wire: Wire) {
    let (server, _) = start(wire).await;
    let mut h2 = support::h2_connect(server.local_addr()).await;
    let res = within(
        Duration::from_secs(5),
        "h2 SSE head",
        h2.send_request(h2_get("/events")),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut parser = support::sse::Parser::new();
    let mut arrivals = Vec::new();
    let mut plain_done = false;
    while let Some(frame) = within(Duration::from_secs(5), "an h2 data frame", body.frame()).await {
        let Ok(data) = frame.unwrap().into_data() else {
            continue;
        };
        let at = Instant::now();
        for e in parser.feed(&data) {
            arrivals.push((e, at));
        }
        if !plain_done {
            // The same connection serves another request while the stream is open.
            let res = h2.send_request(h2_get("/users/h2")).await.unwrap();
            let text = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(text, "name=h2");
            plain_done = true;
        }
    }
    let data: Vec<_> = arrivals.iter().map(|(e, _)| e.data.as_str()).collect();
    assert_eq!(data, ["first", "n0", "n1", "n2", "n3", "n4"]);
    assert_eq!(arrivals[0].0.event_type, "hello");
    let times: Vec<_> = arrivals.iter().map(|(_, t)| *t).collect();
    let span = support::spread(&times);
    assert!(
        span >= Duration::from_millis(250),
        "h2 events arrived together ({span:?}): not streamed"
    );
}

async fn http1_sse_on_the_same_server_streams_too(wire: Wire) {
    let (server, _) = start(wire).await;
    let (conn, _) = open_sse_on(wire, server.local_addr(), "/events").await;
    let mut reader = SseReader::new(conn);
    let mut n = 0;
    while reader.next_event().await.is_some() {
        n += 1;
    }
    assert_eq!(n, 6);
}

support::on_both_wires! {
    #[tokio::test] an_unknown_path_is_a_404_with_a_json_body,
    #[tokio::test] a_wrong_method_is_a_405_listing_the_allowed_ones,
    #[tokio::test] options_is_a_204_with_allow_and_404_for_unknown_paths,
    #[tokio::test] head_on_a_get_route_sends_the_headers_and_no_body,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] head_on_an_sse_route_sends_headers_only_and_closes_the_producer,
    #[tokio::test] a_body_over_the_limit_with_content_length_is_a_413,
    #[tokio::test] a_chunked_upload_over_the_limit_is_a_413_and_at_the_limit_is_read,
    #[tokio::test] path_params_are_typed_and_percent_decoded,
    #[tokio::test] repeated_query_keys_reach_the_handler_in_order,
    #[tokio::test] several_set_cookie_headers_survive,
    #[tokio::test] pipelined_requests_on_one_connection_are_answered_in_order,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] h2c_serves_a_plain_route,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] h2c_streams_sse_events_as_they_are_sent_alongside_other_requests,
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)] http1_sse_on_the_same_server_streams_too,
}
