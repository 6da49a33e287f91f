//! Bad input on raw sockets: request smuggling shapes, malformed and oversized heads, paths
//! that try to escape their route, chunked bodies (valid ones fuzzed, broken ones), and
//! pipelined requests of every kind split at random points across the direct path's
//! hand-over to hyper.
//!
//! Every exchange is checked for the status it gets (or that the connection is closed), for
//! no response beyond the ones expected, and for `/smuggled` never being reached: each
//! hostile request carries a second request where a lenient parser would find one. After
//! each the server must still answer.
//!
//! `cargo test -p rat-engine --test hostile_input -- --nocapture bad_input` prints the table
//! in docs/reliability.md.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::Method;
use proptest::prelude::*;
use rat_engine::{App, Event, Request, RouteOptions, SseResponse};
use support::fuzz_wire_cases;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Requests that reached `/smuggled`.
static SMUGGLED: AtomicUsize = AtomicUsize::new(0);

/// `/sse` (long-lived, so served on the direct path when it can be): one event naming the
/// request's `i`, then the end. `/plain` (GET, POST): `<method> <i> <body>`. `/files/<path:
/// rest>` (long-lived): the tail. `/smuggled`: counts.
fn app() -> App {
    let long = RouteOptions {
        long_lived: true,
        ..Default::default()
    };
    let mut app = App::new();
    let sse = |req: Request| async move {
        let i = req.query_param("i").unwrap_or_default();
        let sse = SseResponse::new();
        sse.write(&Event::data_only(format!("sse {i}"))).unwrap();
        sse.sender().end();
        sse
    };
    app.route_with(Method::GET, "/sse", Arc::new(sse), long.clone())
        .unwrap();
    let plain = |req: Request| async move {
        let i = req.query_param("i").unwrap_or_default();
        format!(
            "{} {i} {}",
            req.method(),
            String::from_utf8_lossy(req.body())
        )
    };
    let plain = Arc::new(plain);
    app.route_arc(Method::GET, "/plain", plain.clone()).unwrap();
    app.route_arc(Method::POST, "/plain", plain).unwrap();
    let files = |req: Request| async move { req.param("rest").unwrap_or_default().to_string() };
    app.route_with(Method::GET, "/files/<path:rest>", Arc::new(files), long)
        .unwrap();
    let smuggled = |_req: Request| async {
        SMUGGLED.fetch_add(1, SeqCst);
        "smuggled"
    };
    let smuggled = Arc::new(smuggled);
    app.route_arc(Method::GET, "/smuggled", smuggled.clone())
        .unwrap();
    app.route_arc(Method::POST, "/smuggled", smuggled).unwrap();
    app
}

/// One server for the whole file, on its own runtime (proptest bodies are synchronous).
struct Fixture {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(support::serve(app()));
        let addr = server.local_addr();
        std::mem::forget(server);
        Fixture { rt, addr }
    })
}

/// A response read off the wire.
#[derive(Debug, Clone, PartialEq)]
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// What a connection got: its responses in order, and whether the server closed it.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    responses: Vec<Response>,
    closed: bool,
}

impl Outcome {
    fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }
    /// `400`, `404 404`, `200 closed`, `closed`...
    fn summary(&self) -> String {
        let mut parts: Vec<String> = self.statuses().iter().map(u16::to_string).collect();
        if self.closed {
            parts.push("closed".into());
        }
        parts.join(" ")
    }
}

/// Splits complete responses off `buf` (bodies by content-length or chunked).
fn parse_responses(buf: &[u8]) -> (Vec<Response>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(n)) = res.parse(&buf[at..]) else {
            return (out, at);
        };
        let status = res.code.unwrap_or(0);
        let header = |name: &str| {
            res.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_string())
        };
        let mut pos = at + n;
        let body = if header("transfer-encoding").is_some() {
            let mut body = Vec::new();
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return (out, at);
                };
                let size_line = String::from_utf8_lossy(&buf[pos..pos + eol]).to_string();
                let size = usize::from_str_radix(size_line.trim(), 16).expect("chunk size");
                pos += eol + 2;
                if buf.len() < pos + size + 2 {
                    return (out, at);
                }
                body.extend_from_slice(&buf[pos..pos + size]);
                pos += size + 2;
                if size == 0 {
                    break;
                }
            }
            body
        } else {
            let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
            if buf.len() < pos + len {
                return (out, at);
            }
            pos += len;
            buf[pos - len..pos].to_vec()
        };
        out.push(Response { status, body });
        at = pos;
    }
}

/// Writes `pieces` (each after the server had a moment to read the previous one), then
/// reads until the server closes or is quiet for `quiet`.
async fn exchange(addr: SocketAddr, pieces: &[Vec<u8>], quiet: Duration) -> Outcome {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut rd, mut wr) = stream.split();
    let mut buf = Vec::new();
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    let write = async {
        for p in pieces {
            // The server may close before taking everything (a 400 at the head).
            if wr.write_all(p).await.is_err() {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    let read = async {
        let mut tmp = vec![0u8; 64 * 1024];
        while Instant::now() < deadline {
            match timeout(quiet, rd.read(&mut tmp)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => buf.extend_from_slice(&tmp[..n]),
                Err(_) => break,
            }
        }
    };
    tokio::join!(write, read);
    let (responses, _) = parse_responses(&buf);
    Outcome { responses, closed }
}

/// How long a connection the server keeps open may stay quiet before the exchange ends
/// (most end with the server closing it).
const QUIET: Duration = Duration::from_millis(300);

/// A case: its name and its bytes (`{path}` and `{method}` name the route under test, see
/// [`probe`]).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let smuggle = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let c = |name: &'static str, text: String| Case {
        name,
        bytes: text.into_bytes(),
    };
    let big_value = "a".repeat(600 * 1024);
    let long_path = "a".repeat(70 * 1024);
    let many: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    vec![
        c(
            "Content-Length and Transfer-Encoding",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggle}"),
        ),
        c(
            "Transfer-Encoding before Content-Length",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggle}"),
        ),
        c(
            "two different Content-Length",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n{smuggle}"),
        ),
        c(
            "Content-Length: 0, 40 (list)",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 40\r\n\r\n{smuggle}"),
        ),
        c(
            "Content-Length: +40",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nContent-Length: +40\r\n\r\n{smuggle}"),
        ),
        c(
            "Transfer-Encoding: chunked, identity",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggle}"),
        ),
        c(
            "Transfer-Encoding: identity",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n{smuggle}"),
        ),
        c(
            "Transfer-Encoding: xchunked",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n{smuggle}"),
        ),
        c(
            "chunk size not hex",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{smuggle}"),
        ),
        c(
            "chunk size 0x10",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x10\r\n{smuggle}"),
        ),
        c(
            "chunk size -1",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n{smuggle}"),
        ),
        c(
            "chunk size past u64",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n{smuggle}"),
        ),
        c(
            "chunk data longer than its size",
            format!("{{method}} {{path}} HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcd\r\n0\r\n\r\n{smuggle}"),
        ),
        c(
            "GET with a body, then a pipelined GET",
            format!("GET {{path}}?i=1 HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{smuggle}GET /plain?i=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", smuggle.len()),
        ),
        c(
            "obs-fold",
            format!("GET {{path}} HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n{smuggle}"),
        ),
        c(
            "NUL in a header value",
            format!("GET {{path}} HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n{smuggle}"),
        ),
        c(
            "CR in a header value",
            format!("GET {{path}} HTTP/1.1\r\nHost: a\r\nX-A: b\rc\r\n\r\n{smuggle}"),
        ),
        // A bare LF ends a line (RFC 9112 §2.2 lets a recipient take it so, as httparse
        // does): this is a header, a body and a second request, all as the client wrote them.
        c(
            "bare LF in a header value",
            "GET {path} HTTP/1.1\r\nHost: a\r\nX-A: b\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /plain?i=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_string(),
        ),
        c(
            "space before the colon",
            format!("GET {{path}} HTTP/1.1\r\nHost: a\r\nContent-Length : 40\r\n\r\n{smuggle}"),
        ),
        c(
            "600 KiB header",
            format!("GET {{path}} HTTP/1.1\r\nHost: a\r\nX-Big: {big_value}\r\n\r\n{smuggle}"),
        ),
        c(
            "120 headers",
            format!("GET {{path}} HTTP/1.1\r\nHost: a\r\n{many}\r\n{smuggle}"),
        ),
        c(
            "70 KiB URL",
            format!("GET {{path}}?{long_path} HTTP/1.1\r\nHost: a\r\n\r\n{smuggle}"),
        ),
        c(
            "no Host",
            format!("GET {{path}} HTTP/1.1\r\n\r\n{smuggle}"),
        ),
        c(
            "two Host",
            format!("GET {{path}} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{smuggle}"),
        ),
        c(
            "HTTP/1.0, two Host",
            format!("GET {{path}} HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n{smuggle}"),
        ),
        c("request line with 4 parts", format!("GET {{path}} HTTP/1.1 x\r\nHost: a\r\n\r\n{smuggle}")),
        c("HTTP/0.9 request line", format!("GET {{path}}\r\n\r\n{smuggle}")),
        c("HTTP/1.2", format!("GET {{path}} HTTP/1.2\r\nHost: a\r\n\r\n{smuggle}")),
        c("absolute-form target", "GET http://a{path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_string()),
        c("NUL in the target", format!("GET {{path}}\0 HTTP/1.1\r\nHost: a\r\n\r\n{smuggle}")),
        // UTF-8 in the target is taken as it is (no route has it: 404); a pipelined
        // request follows.
        c(
            "raw UTF-8 in the target",
            "GET {path}\u{e9} HTTP/1.1\r\nHost: a\r\n\r\nGET /plain?i=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_string(),
        ),
        Case {
            name: "invalid UTF-8 in the target",
            bytes: [&b"GET {path}\xff HTTP/1.1\r\nHost: a\r\n\r\n"[..], smuggle.as_bytes()].concat(),
        },
    ]
}

/// Path cases on `/files/<path:rest>`: the request target and what the handler gets.
const PATHS: &[&str] = &[
    "/files/a/b.txt",
    "/files/a/../../etc/passwd",
    "/files/..%2F..%2Fetc%2Fpasswd",
    "/files/%2e%2e/x",
    "/files/a%2Fb",
    "/files/a%00.txt",
    "/files/%FF%FE",
    "/files/%C3%A9t%C3%A9",
    "/files/",
];

/// Replaces every `from` in `bytes` (which may hold NUL and bytes that are not UTF-8).
fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(at) = rest.windows(from.len()).position(|w| w == from.as_bytes()) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to.as_bytes());
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// Sends `bytes` (with `{path}` replaced, and `{method}`: GET for the SSE route, POST for
/// the plain one) and checks that nothing was smuggled and the server still answers.
async fn probe(addr: SocketAddr, bytes: &[u8], path: &str) -> Outcome {
    let method = if path == "/sse" { "GET" } else { "POST" };
    let bytes = replace(&replace(bytes, "{path}", path), "{method}", method);
    let before = SMUGGLED.load(SeqCst);
    let out = exchange(addr, &[bytes], QUIET).await;
    assert_eq!(
        SMUGGLED.load(SeqCst),
        before,
        "a smuggled request was served"
    );
    for r in &out.responses {
        assert_ne!(r.body, b"smuggled");
    }
    let after = exchange(
        addr,
        &[b"GET /plain?i=9 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".to_vec()],
        QUIET,
    )
    .await;
    assert_eq!(after.summary(), "200 closed", "the server still answers");
    out
}

/// What each case gets on `/sse` and on `/plain`.
fn expected(name: &str) -> (&'static str, &'static str) {
    match name {
        // Transfer-Encoding wins, and the connection is closed after (RFC 9112 §6.1).
        "Content-Length and Transfer-Encoding" => ("200 closed", "200 closed"),
        "Transfer-Encoding before Content-Length" => ("200 closed", "200 closed"),
        "two different Content-Length" => ("400 closed", "400 closed"),
        "Content-Length: 0, 40 (list)" => ("400 closed", "400 closed"),
        "Content-Length: +40" => ("400 closed", "400 closed"),
        "Transfer-Encoding: chunked, identity" => ("400 closed", "400 closed"),
        "Transfer-Encoding: identity" => ("400 closed", "400 closed"),
        "Transfer-Encoding: xchunked" => ("400 closed", "400 closed"),
        "chunk size not hex" => ("400 closed", "400 closed"),
        "chunk size 0x10" => ("400 closed", "400 closed"),
        "chunk size -1" => ("400 closed", "400 closed"),
        "chunk size past u64" => ("400 closed", "400 closed"),
        "chunk data longer than its size" => ("400 closed", "400 closed"),
        "GET with a body, then a pipelined GET" => ("200 200 closed", "200 200 closed"),
        "obs-fold" => ("400 closed", "400 closed"),
        "NUL in a header value" => ("400 closed", "400 closed"),
        "CR in a header value" => ("400 closed", "400 closed"),
        "bare LF in a header value" => ("200 200 closed", "200 200 closed"),
        "space before the colon" => ("400 closed", "400 closed"),
        "600 KiB header" => ("431 closed", "431 closed"),
        "120 headers" => ("431 closed", "431 closed"),
        "70 KiB URL" => ("414 closed", "414 closed"),
        "no Host" => ("400 closed", "400 closed"),
        "two Host" => ("400 closed", "400 closed"),
        "HTTP/1.0, two Host" => ("400 closed", "400 closed"),
        "request line with 4 parts" => ("400 closed", "400 closed"),
        "HTTP/0.9 request line" => ("400 closed", "400 closed"),
        "HTTP/1.2" => ("400 closed", "400 closed"),
        "absolute-form target" => ("200 closed", "200 closed"),
        "NUL in the target" => ("400 closed", "400 closed"),
        "raw UTF-8 in the target" => ("404 200 closed", "404 200 closed"),
        "invalid UTF-8 in the target" => ("400 closed", "400 closed"),
        other => panic!("no expectation for {other}"),
    }
}

#[test]
fn bad_input_gets_a_4xx_or_a_closed_connection_and_is_never_smuggled() {
    let f = fixture();
    let mut failures = Vec::new();
    println!("| input | SSE route (direct path) | plain route |");
    println!("|---|---|---|");
    for case in cases() {
        let sse = f.rt.block_on(probe(f.addr, &case.bytes, "/sse"));
        let plain = f.rt.block_on(probe(f.addr, &case.bytes, "/plain"));
        println!(
            "| {} | {} | {} |",
            case.name,
            sse.summary(),
            plain.summary()
        );
        let (want_sse, want_plain) = expected(case.name);
        if sse.summary() != want_sse || plain.summary() != want_plain {
            failures.push(format!(
                "{}: got {} / {}, expected {want_sse} / {want_plain}",
                case.name,
                sse.summary(),
                plain.summary()
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn paths_that_escape_their_route_do_not_reach_it() {
    let f = fixture();
    println!("| `/files/<path:rest>` target | status | `rest` |");
    println!("|---|---|---|");
    let mut got = Vec::new();
    for path in PATHS {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let out = f.rt.block_on(probe(f.addr, req.as_bytes(), ""));
        let r = &out.responses[0];
        let rest = if r.status == 200 {
            format!("`{}`", String::from_utf8_lossy(&r.body))
        } else {
            String::new()
        };
        println!("| `{path}` | {} | {rest} |", r.status);
        got.push((r.status, rest));
    }
    let want: Vec<(u16, String)> = [
        (200, "`a/b.txt`"),
        (404, ""),
        (404, ""),
        (404, ""),
        (200, "`a/b`"),
        (404, ""),
        (404, ""),
        (200, "`été`"),
        (404, ""),
    ]
    .iter()
    .map(|(s, r)| (*s, r.to_string()))
    .collect();
    assert_eq!(got, want);
}

// ---- chunked request bodies ----

/// A chunked encoding of `body`: chunks cut at `cuts`, sizes in mixed case with leading
/// zeros now and then, extensions and trailers.
fn chunked(body: &[u8], cuts: &[usize], style: u8) -> Vec<u8> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
    points.push(body.len());
    points.sort_unstable();
    points.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for (i, at) in points.into_iter().enumerate() {
        if at == prev {
            continue;
        }
        let size = at - prev;
        let line = match (usize::from(style) + i) % 4 {
            0 => format!("{size:x}"),
            1 => format!("{size:X}"),
            2 => format!("00{size:x}"),
            _ => format!("{size:x};ext=\"v\";x"),
        };
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body[prev..at]);
        out.extend_from_slice(b"\r\n");
        prev = at;
    }
    out.extend_from_slice(b"0\r\n");
    if style % 3 == 0 {
        out.extend_from_slice(b"X-Trailer: t\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Ways to break a chunked body.
#[derive(Debug, Clone, Copy)]
enum Break {
    /// A size line that is not hex.
    BadSize,
    /// A size past what fits in 64 bits.
    Overflow,
    /// Data longer than its size (the CRLF missing where it belongs).
    LongData,
    /// A bare LF where a chunk's CRLF belongs.
    BareLf,
}

/// Splits `bytes` into pieces at `cuts` (the writes the client makes).
fn pieces(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for at in points {
        out.push(bytes[prev..at].to_vec());
        prev = at;
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_wire_cases(48), ..ProptestConfig::default() })]

    /// A valid chunked body, however it is chunked and written, arrives whole, and a GET
    /// pipelined behind it is answered next.
    #[test]
    fn fuzz_chunked_bodies_arrive_whole(
        body in prop::collection::vec(any::<u8>(), 0..3000),
        chunk_cuts in prop::collection::vec(any::<usize>(), 0..8),
        write_cuts in prop::collection::vec(any::<usize>(), 0..6),
        style in any::<u8>(),
    ) {
        let f = fixture();
        // The handler echoes the body as text: keep it ASCII.
        let body: Vec<u8> = body.iter().map(|b| b'a' + b % 26).collect();
        let mut req = b"POST /plain?i=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(&chunked(&body, &chunk_cuts, style));
        req.extend_from_slice(b"GET /sse?i=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let out = f.rt.block_on(exchange(f.addr, &pieces(&req, &write_cuts), QUIET));
        prop_assert_eq!(out.summary(), "200 200 closed");
        let mut want = b"POST 1 ".to_vec();
        want.extend_from_slice(&body);
        prop_assert_eq!(&out.responses[0].body, &want);
        prop_assert_eq!(&out.responses[1].body, b"data: sse 2\n\n");
    }

    /// A broken chunked body gets a 400 (or, cut short, no answer) and the connection is
    /// closed; the request behind it is never served.
    #[test]
    fn fuzz_broken_chunked_bodies_are_refused(
        body in prop::collection::vec(b'a'..=b'z', 1..500),
        chunk_cuts in prop::collection::vec(any::<usize>(), 0..4),
        write_cuts in prop::collection::vec(any::<usize>(), 0..4),
        which in any::<prop::sample::Index>(),
        how in prop::sample::select(vec![Break::BadSize, Break::Overflow, Break::LongData, Break::BareLf]),
    ) {
        let f = fixture();
        let good = chunked(&body, &chunk_cuts, 0);
        // The chunks' size lines: where they start and end.
        let mut lines = Vec::new();
        let mut at = 0;
        while at < good.len() {
            let eol = at + good[at..].windows(2).position(|w| w == b"\r\n").unwrap();
            let line = std::str::from_utf8(&good[at..eol]).unwrap();
            let size = usize::from_str_radix(line.split(';').next().unwrap(), 16).unwrap();
            if size == 0 {
                break;
            }
            lines.push((at, eol, size));
            at = eol + 2 + size + 2;
        }
        let (start, eol, size) = *which.get(&lines);
        let mut broken = good[..start].to_vec();
        match how {
            Break::BadSize => broken.extend_from_slice(b"g1"),
            Break::Overflow => broken.extend_from_slice(b"1ffffffffffffffff"),
            Break::LongData => broken.extend_from_slice(format!("{:x}", size.saturating_sub(1).max(1)).as_bytes()),
            Break::BareLf => broken.extend_from_slice(&good[start..eol]),
        }
        let data_end = eol + 2 + size;
        match how {
            Break::BareLf => {
                broken.extend_from_slice(&good[eol..data_end]);
                broken.push(b'\n');
                broken.extend_from_slice(&good[data_end + 2..]);
            }
            Break::LongData if size == 1 => {
                // Size 1 kept: make the data longer instead.
                broken.extend_from_slice(&good[eol..data_end]);
                broken.extend_from_slice(b"zz");
                broken.extend_from_slice(&good[data_end..]);
            }
            _ => broken.extend_from_slice(&good[eol..]),
        }
        let mut req = b"POST /plain?i=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        req.extend_from_slice(&broken);
        req.extend_from_slice(b"POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        let before = SMUGGLED.load(SeqCst);
        let out = f.rt.block_on(exchange(f.addr, &pieces(&req, &write_cuts), QUIET));
        prop_assert_eq!(SMUGGLED.load(SeqCst), before, "smuggled: {:?}", String::from_utf8_lossy(&req));
        let s = out.summary();
        prop_assert!(s == "400 closed" || s.is_empty(), "{} for {:?}", s, String::from_utf8_lossy(&req));
    }
}

// ---- pipelining across the hand-over ----

/// A request of a pipelined sequence, and what its response must be.
#[derive(Debug, Clone)]
enum Piped {
    /// GET /sse (the direct path while the connection is still its own).
    Sse,
    /// GET /plain.
    Get,
    /// POST /plain with a Content-Length body.
    Post(String),
    /// POST /plain with a chunked body.
    PostChunked(String),
    /// HEAD /sse (hyper, no body).
    Head,
    /// GET /nothing (404).
    Missing,
}

impl Piped {
    fn bytes(&self, i: usize) -> Vec<u8> {
        let head = |m: &str, p: &str, extra: &str| {
            format!("{m} {p}?i={i} HTTP/1.1\r\nHost: a\r\n{extra}\r\n")
        };
        match self {
            Piped::Sse => head("GET", "/sse", ""),
            Piped::Get => head("GET", "/plain", ""),
            Piped::Post(b) => {
                head(
                    "POST",
                    "/plain",
                    &format!("Content-Length: {}\r\n", b.len()),
                ) + b
            }
            Piped::PostChunked(b) => {
                head("POST", "/plain", "Transfer-Encoding: chunked\r\n")
                    + &String::from_utf8(chunked(b.as_bytes(), &[b.len() / 2], i as u8)).unwrap()
            }
            Piped::Head => head("HEAD", "/sse", ""),
            Piped::Missing => head("GET", "/nothing", ""),
        }
        .into_bytes()
    }

    fn expected(&self, i: usize) -> Response {
        let ok = |body: String| Response {
            status: 200,
            body: body.into_bytes(),
        };
        match self {
            Piped::Sse => ok(format!("data: sse {i}\n\n")),
            Piped::Get => ok(format!("GET {i} ")),
            Piped::Post(b) | Piped::PostChunked(b) => ok(format!("POST {i} {b}")),
            Piped::Head => Response {
                status: 200,
                body: Vec::new(),
            },
            Piped::Missing => Response {
                status: 404,
                body: br#"{"error":"no route for GET /nothing","status":404}"#.to_vec(),
            },
        }
    }
}

fn piped() -> impl Strategy<Value = Piped> {
    let text = "[a-z0-9 ]{0,40}";
    prop_oneof![
        3 => Just(Piped::Sse),
        2 => Just(Piped::Get),
        1 => text.prop_map(Piped::Post),
        1 => text.prop_map(Piped::PostChunked),
        1 => Just(Piped::Head),
        1 => Just(Piped::Missing),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_wire_cases(48), ..ProptestConfig::default() })]

    /// Pipelined requests of every kind, written in random pieces, are answered in order,
    /// each with its own response, whether the direct path or hyper (after the hand-over,
    /// with the bytes already read replayed) serves it.
    #[test]
    fn fuzz_pipelined_requests_are_answered_in_order_across_the_hand_over(
        reqs in prop::collection::vec(piped(), 1..8),
        write_cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let f = fixture();
        let mut bytes: Vec<u8> = reqs.iter().enumerate().flat_map(|(i, r)| r.bytes(i)).collect();
        // The last asks to close, so the exchange ends when the server is done.
        bytes.extend_from_slice(b"GET /plain?i=99 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        let out = f.rt.block_on(exchange(f.addr, &pieces(&bytes, &write_cuts), QUIET));
        let mut want: Vec<Response> = reqs.iter().enumerate().map(|(i, r)| r.expected(i)).collect();
        want.push(Piped::Get.expected(99));
        prop_assert_eq!(&out.responses, &want);
        prop_assert!(out.closed);
    }
}

#[test]
fn an_oversized_chunked_body_is_a_413_even_split_in_many_chunks() {
    let f = fixture();
    let body = vec![b'a'; (1 << 20) + 10];
    let cuts: Vec<usize> = (1..200).map(|i| i * 5300).collect();
    let mut req = b"POST /plain HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(&chunked(&body, &cuts, 1));
    req.extend_from_slice(b"GET /plain?i=2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let out =
        f.rt.block_on(exchange(f.addr, &[req], Duration::from_secs(1)));
    // The rest of the body is read past and the request behind it answered, or the
    // connection closed.
    let s = out.summary();
    assert!(s == "413 200 closed" || s == "413 closed", "{s}");
}
