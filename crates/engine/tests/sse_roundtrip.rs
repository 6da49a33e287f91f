//! `Event::encode` against an independent, spec-conformant SSE parser
//! (`support/sse.rs`, written from the WHATWG "event stream interpretation" rules).
//!
//! The parser is first checked against the specification's own examples, then the
//! properties: whatever the data (any Unicode, CR, LF, CRLF, leading spaces, empty), event
//! name and id, an encoded event parses back to the same event, alone, concatenated with
//! others, split into arbitrary network-sized pieces, sent as a front end's data batch,
//! and read off the wire of a running server.
//!
//! Case counts are CI-sized; `RAT_FUZZ_CASES` and `RAT_FUZZ_WIRE_CASES` (for the one that
//! talks to a server) raise them, as the soak run does.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use rat_engine::Event;
use support::sse::{Dispatched, Parser};
use support::{fuzz_cases, fuzz_wire_cases};

fn ev(event_type: &str, data: &str, id: &str) -> Dispatched {
    Dispatched {
        event_type: event_type.into(),
        data: data.into(),
        last_event_id: id.into(),
    }
}

// ---- the parser against the specification's examples ----

#[test]
fn parser_joins_data_lines_with_lf() {
    let (events, _) = Parser::parse_all(b"data: YHOO\ndata: +2\ndata: 10\n\n");
    assert_eq!(events, vec![ev("message", "YHOO\n+2\n10", "")]);
}

#[test]
fn parser_handles_comments_ids_and_named_events() {
    let stream = b": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n";
    let (events, p) = Parser::parse_all(stream);
    assert_eq!(
        events,
        vec![
            ev("message", "first event", "1"),
            ev("message", "second event", ""),
            ev("message", " third event", ""),
        ]
    );
    assert_eq!(p.comments, vec![" test stream".to_string()]);
}

#[test]
fn parser_dispatches_empty_and_newline_data_and_drops_an_unfinished_event() {
    let (events, _) = Parser::parse_all(b"data\n\ndata\ndata\n\ndata:");
    assert_eq!(events, vec![ev("message", "", ""), ev("message", "\n", "")]);
}

#[test]
fn parser_treats_one_leading_space_as_optional() {
    let (events, _) = Parser::parse_all(b"data:test\n\ndata: test\n\n");
    assert_eq!(
        events,
        vec![ev("message", "test", ""), ev("message", "test", "")]
    );
}

#[test]
fn parser_accepts_every_line_ending_even_split_across_reads() {
    let whole = b"event: a\r\ndata: 1\r\rdata: 2\n\n\xEF\xBB\xBFdata: 3\r\n\r\n";
    let (events, _) = Parser::parse_all(whole);
    // The BOM is only special at the very start of the stream.
    let expected = vec![
        ev("a", "1", ""),
        ev("message", "2", ""),
        ev("message", "3", ""),
    ];
    // A BOM mid-stream makes "\u{FEFF}data" an unknown field: the third event has no data.
    assert_eq!(events, expected[..2]);
    let fixed = b"event: a\r\ndata: 1\r\rdata: 2\n\ndata: 3\r\n\r\n";
    for split in 0..=fixed.len() {
        let mut p = Parser::new();
        let mut got = p.feed(&fixed[..split]);
        got.extend(p.feed(&fixed[split..]));
        assert_eq!(got, expected, "split at {split}");
    }
    let mut with_bom = b"\xEF\xBB\xBF".to_vec();
    with_bom.extend_from_slice(fixed);
    assert_eq!(Parser::parse_all(&with_bom).0, expected);
}

#[test]
fn parser_ignores_ids_with_nul_and_non_numeric_retry() {
    let (events, p) = Parser::parse_all(b"id: 5\nretry: 100\n\nid: a\0b\nretry: 1x\ndata: d\n\n");
    assert_eq!(events, vec![ev("message", "d", "5")]);
    assert_eq!(p.reconnection_time, Some(100));
}

// ---- the engine's encoder through the parser ----

/// Text that often holds the characters SSE framing cares about.
fn tricky_text(max_pieces: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(String::from),
        1 => Just("\n".to_string()),
        1 => Just("\r".to_string()),
        1 => Just("\r\n".to_string()),
        1 => Just(" ".to_string()),
        1 => Just(":".to_string()),
        1 => Just("data: x".to_string()),
        1 => Just("\u{FEFF}".to_string()),
        1 => Just("\0".to_string()),
    ];
    prop::collection::vec(piece, 0..max_pieces).prop_map(|v| v.concat())
}

/// A single-line field value (no CR/LF), possibly with leading spaces and colons.
fn line_text() -> impl Strategy<Value = String> {
    tricky_text(12).prop_map(|s| s.replace(['\r', '\n'], ""))
}

#[derive(Debug, Clone)]
struct Spec {
    data: String,
    event: Option<String>,
    id: Option<String>,
    retry: Option<u32>,
    comment: Option<String>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        tricky_text(24),
        prop::option::of(line_text()),
        prop::option::of(line_text().prop_map(|s| s.replace('\0', ""))),
        prop::option::of(any::<u32>()),
        prop::option::of(tricky_text(8)),
    )
        .prop_map(|(data, event, id, retry, comment)| Spec {
            data,
            event,
            id,
            retry,
            comment,
        })
}

fn build(s: &Spec) -> Event {
    let mut e = Event::new().data(s.data.clone());
    if let Some(name) = &s.event {
        e = e
            .try_event(name.clone())
            .expect("a name without CR/LF is accepted");
    }
    if let Some(id) = &s.id {
        e = e
            .id(id.clone())
            .expect("an id without CR/LF/NUL is accepted");
    }
    if let Some(r) = s.retry {
        e = e.retry(Duration::from_millis(u64::from(r)));
    }
    if let Some(c) = &s.comment {
        e = e.comment(c.clone());
    }
    e
}

/// What a browser should dispatch for `specs` sent in order: the last event ID persists
/// from one event to the next until another `id` field changes it.
fn expected(specs: &[Spec]) -> Vec<Dispatched> {
    let mut last_id = String::new();
    specs
        .iter()
        .map(|s| {
            if let Some(id) = &s.id {
                last_id = id.clone();
            }
            let event_type = match s.event.as_deref() {
                None | Some("") => "message".to_string(),
                Some(name) => name.to_string(),
            };
            // Every line ending in the data is a line break; the client joins with LF.
            let data = s.data.replace("\r\n", "\n").replace('\r', "\n");
            Dispatched {
                event_type,
                data,
                last_event_id: last_id.clone(),
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(256), ..ProptestConfig::default() })]

    #[test]
    fn one_event_round_trips_through_encode_and_a_spec_parser(s in spec()) {
        let bytes = build(&s).encode();
        let (events, parser) = Parser::parse_all(&bytes);
        prop_assert_eq!(events, expected(std::slice::from_ref(&s)));
        prop_assert_eq!(parser.reconnection_time, s.retry.map(u64::from));
        // A frame always ends with the blank line that dispatches it.
        prop_assert!(bytes.ends_with(b"\n\n"));
    }
}

proptest! {
    // Lists of events: fewer cases, each covers several events.
    #![proptest_config(ProptestConfig { cases: fuzz_cases(128), ..ProptestConfig::default() })]

    #[test]
    fn concatenated_events_parse_back_to_the_same_list(specs in prop::collection::vec(spec(), 0..8)) {
        let mut stream = Vec::new();
        for s in &specs {
            stream.extend_from_slice(&build(s).encode());
        }
        let (events, _) = Parser::parse_all(&stream);
        prop_assert_eq!(events, expected(&specs));
    }

    #[test]
    fn events_split_at_arbitrary_points_parse_the_same(
        specs in prop::collection::vec(spec(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut stream = Vec::new();
        for s in &specs {
            stream.extend_from_slice(&build(s).encode());
        }
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut p = Parser::new();
        let mut events = Vec::new();
        let mut prev = 0;
        for at in points.into_iter().chain([stream.len()]) {
            events.extend(p.feed(&stream[prev..at]));
            prev = at;
        }
        prop_assert_eq!(events, expected(&specs));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(256), ..ProptestConfig::default() })]

    #[test]
    fn names_with_line_breaks_are_rejected_or_turned_into_spaces(name in tricky_text(10), data in line_text()) {
        let breaks = name.contains(['\r', '\n']);
        let tried = Event::new().try_event(name.clone());
        prop_assert_eq!(tried.is_err(), breaks);
        if let Err(e) = tried {
            prop_assert!(e.is_invalid_field());
        }
        // The lenient setter keeps the frame intact: one event, the name with spaces.
        let (events, _) = Parser::parse_all(&Event::new().event(name.clone()).data(data.clone()).encode());
        let sanitized = name.replace(['\r', '\n'], " ");
        let event_type = if sanitized.is_empty() { "message".to_string() } else { sanitized };
        prop_assert_eq!(events, vec![Dispatched { event_type, data, last_event_id: String::new() }]);
    }

    #[test]
    fn ids_with_cr_lf_or_nul_are_rejected(id in tricky_text(10)) {
        let bad = id.contains(['\r', '\n', '\0']);
        let r = Event::new().id(id.clone());
        prop_assert_eq!(r.is_err(), bad);
        if let Ok(e) = r {
            let (events, _) = Parser::parse_all(&e.data("x").encode());
            prop_assert_eq!(events, vec![ev("message", "x", &id)]);
        }
    }
}

// ---- data batches, and events on the wire ----

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(128), ..ProptestConfig::default() })]

    /// What a front end's batched sends become: one data-only event per item, the same
    /// bytes as encoding each on its own, parsed back to the same data.
    #[test]
    fn a_data_batch_parses_back_to_its_items(items in prop::collection::vec(tricky_text(16), 0..8)) {
        use rat_engine::frontend::{Responder, ResponseKind};
        use rat_engine::{Metrics, QueueLimits};
        let rt = current_thread();
        let body = rt.block_on(async {
            let metrics = std::sync::Arc::new(Metrics::new());
            let (r, p) = Responder::new(ResponseKind::Sse, QueueLimits::default(), metrics);
            r.send_data_batch(items.iter().map(String::as_str)).unwrap();
            r.end();
            http_body_util::BodyExt::collect(p.await.into_body()).await.unwrap().to_bytes()
        });
        let one_by_one: Vec<u8> = items.iter().flat_map(|d| Event::data_only(d.clone()).encode().to_vec()).collect();
        prop_assert_eq!(&body[..], &one_by_one[..]);
        let specs: Vec<Spec> = items
            .iter()
            .map(|d| Spec { data: d.clone(), event: None, id: None, retry: None, comment: None })
            .collect();
        prop_assert_eq!(Parser::parse_all(&body).0, expected(&specs));
    }
}

/// A server whose `/events` (served on the direct path) sends the next queued list of
/// events: the first half before the head goes out, the rest from a task, one at a time,
/// through the socket or the queue, whichever is free.
struct WireServer {
    rt: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    lists: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Vec<Event>>>>,
}

fn wire_server() -> &'static WireServer {
    static SERVER: std::sync::OnceLock<WireServer> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let lists: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Vec<Event>>>> =
            Default::default();
        let queued = lists.clone();
        let mut app = rat_engine::App::new();
        let handler = move |_req| {
            let events = queued.lock().unwrap().pop_front().unwrap_or_default();
            async move {
                let sse = rat_engine::SseResponse::new().heartbeat(None);
                let (now, later) = events.split_at(events.len() / 2);
                for e in now {
                    sse.write(e).unwrap();
                }
                let tx = sse.sender();
                let later = later.to_vec();
                tokio::spawn(async move {
                    for e in &later {
                        tx.send(e).await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    tx.end();
                });
                sse
            }
        };
        let long = rat_engine::RouteOptions {
            long_lived: true,
            ..Default::default()
        };
        app.route_with(
            http::Method::GET,
            "/events",
            std::sync::Arc::new(handler),
            long,
        )
        .unwrap();
        let server = rt.block_on(support::serve(app));
        let addr = server.local_addr();
        std::mem::forget(server);
        WireServer { rt, addr, lists }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_wire_cases(32), ..ProptestConfig::default() })]

    /// Events through the whole server (the direct path's chunked framing, writes straight
    /// to the socket and queued ones) parse back off the wire to what was sent.
    #[test]
    fn events_sent_through_a_server_parse_back_off_the_wire(specs in prop::collection::vec(spec(), 0..8)) {
        let server = wire_server();
        server.lists.lock().unwrap().push_back(specs.iter().map(build).collect());
        let body = server.rt.block_on(async {
            let (mut conn, _) = support::open_sse(server.addr, "/events").await;
            conn.read_chunked_body().await
        });
        prop_assert_eq!(Parser::parse_all(&body).0, expected(&specs));
    }
}
