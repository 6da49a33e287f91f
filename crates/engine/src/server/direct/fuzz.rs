//! `parse`, the direct path's head parser and hand-over decision, on generated request
//! heads (well-formed, smuggling-shaped, malformed) cut at every kind of point, and on
//! mutated ones.
//!
//! A head is served directly only when the rules below say so, computed from how the head
//! was generated rather than from its bytes; whatever `parse` serves directly must also
//! pass an independent reading of its bytes (a GET in origin form, HTTP/1.0 or 1.1, no
//! body framing other than `Content-Length: 0`, no obs-fold or control bytes, one Host).
//! Everything else is handed to hyper with every byte read, so the rest is hyper's.

use std::net::SocketAddr;
use std::sync::Arc;

use http::Method;
use proptest::prelude::*;

use super::{parse, Parse};
use crate::app::{App, RouteOptions};
use crate::fuzz::{config, tricky_byte};
use crate::server::{ServerConfig, Shared};

fn shared() -> Shared {
    let long = RouteOptions {
        long_lived: true,
        ..RouteOptions::default()
    };
    let mut app = App::new();
    let ok = Arc::new(|_req| async { "ok" });
    for path in ["/sse", "/p/<path:rest>", "/n/<int:id>"] {
        app.route_with(Method::GET, path, ok.clone(), long.clone())
            .unwrap();
    }
    app.route_with(Method::GET, "/plain", ok, RouteOptions::default())
        .unwrap();
    Shared::new(app, ServerConfig::default())
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// Request targets, and whether one is served directly (a long-lived GET route).
const TARGETS: &[(&str, bool)] = &[
    ("/sse", true),
    ("/sse?x=1&y", true),
    ("/p/a/b", true),
    ("/p/a%2Fb", true),
    ("/n/12", true),
    ("/n/x", false),
    ("/plain", false),
    ("/nothing", false),
    ("http://127.0.0.1/sse", false),
    ("*", false),
    ("//sse", false),
    ("/p/a/../b", false),
    ("/p/%2e%2e", false),
    ("/p/%00", false),
    ("/p/%FF", false),
    ("/sse%00", false),
];

/// A header line and what it does to the decision.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Effect {
    None,
    Host,
    /// `Connection: close`.
    Close,
    /// Anything that must go to hyper: body framing, expectation.
    HandOver,
    /// `Upgrade: websocket`: served directly with a `Connection: upgrade` on HTTP/1.1.
    UpgradeWs,
    /// Another protocol's `Upgrade`: to hyper.
    UpgradeOther,
    /// `Connection: upgrade`: served directly with `Upgrade: websocket` on HTTP/1.1.
    ConnUpgrade,
    /// Not a valid header line: hyper answers it (400).
    Malformed,
}

const HEADERS: &[(&str, Effect)] = &[
    ("Host: 127.0.0.1", Effect::Host),
    ("hOsT: a", Effect::Host),
    ("Host:", Effect::Host),
    ("Accept: text/event-stream", Effect::None),
    ("Last-Event-ID: abc-1", Effect::None),
    ("X-Obs-Text: caf\u{e9}", Effect::None),
    ("X-Tab: a\tb", Effect::None),
    ("Content-Length: 0", Effect::None),
    ("content-length:  0 ", Effect::None),
    ("Content-Length: 00", Effect::HandOver),
    ("Content-Length: 5", Effect::HandOver),
    ("Content-Length: -0", Effect::HandOver),
    ("Content-Length: 0, 0", Effect::HandOver),
    ("Content-Length: +0", Effect::HandOver),
    ("Transfer-Encoding: chunked", Effect::HandOver),
    ("Transfer-Encoding: chunked, identity", Effect::HandOver),
    ("Transfer-Encoding: identity", Effect::HandOver),
    ("transfer-encoding: ", Effect::HandOver),
    ("Upgrade: websocket", Effect::UpgradeWs),
    ("upgrade: WebSocket", Effect::UpgradeWs),
    ("Upgrade: h2c", Effect::UpgradeOther),
    ("Expect: 100-continue", Effect::HandOver),
    ("Connection: Upgrade", Effect::ConnUpgrade),
    ("Connection: keep-alive, upgrade", Effect::ConnUpgrade),
    ("Connection: close", Effect::Close),
    ("Connection: keep-alive , CLOSE", Effect::Close),
    ("Connection: keep-alive", Effect::None),
    (" folded: continuation", Effect::Malformed),
    ("\tfolded", Effect::Malformed),
    ("X-Nul: a\0b", Effect::Malformed),
    ("X-Cr: a\rb", Effect::Malformed),
    ("X-Del: a\x7fb", Effect::Malformed),
    ("Bad Name: x", Effect::Malformed),
    (": no name", Effect::Malformed),
    ("No-Colon", Effect::Malformed),
    ("X-Esc: \x1b[0m", Effect::Malformed),
];

#[derive(Debug, Clone)]
struct Head {
    method: &'static str,
    target: usize,
    version: &'static str,
    headers: Vec<usize>,
    /// Lines end with a bare LF instead of CRLF.
    bare_lf: bool,
}

impl Head {
    fn bytes(&self) -> Vec<u8> {
        let eol = if self.bare_lf { "\n" } else { "\r\n" };
        let mut out = format!(
            "{} {} {}{eol}",
            self.method, TARGETS[self.target].0, self.version
        );
        for &h in &self.headers {
            out.push_str(HEADERS[h].0);
            out.push_str(eol);
        }
        out.push_str(eol);
        out.into_bytes()
    }

    /// The rules: `Some(keep_alive)` when served directly.
    fn expected(&self) -> Option<bool> {
        let http11 = match self.version {
            "HTTP/1.1" => true,
            "HTTP/1.0" => false,
            _ => return None,
        };
        if self.method != "GET" || !TARGETS[self.target].1 {
            return None;
        }
        let effects: Vec<Effect> = self.headers.iter().map(|&h| HEADERS[h].1).collect();
        if effects
            .iter()
            .any(|e| matches!(e, Effect::HandOver | Effect::Malformed))
        {
            return None;
        }
        let hosts = effects.iter().filter(|e| **e == Effect::Host).count();
        if (http11 && hosts != 1) || hosts > 1 {
            return None;
        }
        let has = |e| effects.contains(&e);
        let ws = has(Effect::UpgradeWs) && has(Effect::ConnUpgrade);
        let upgrade =
            has(Effect::UpgradeWs) || has(Effect::UpgradeOther) || has(Effect::ConnUpgrade);
        if upgrade && !(ws && http11) {
            return None;
        }
        Some(http11 && !has(Effect::Close))
    }
}

fn head() -> impl Strategy<Value = Head> {
    let served: Vec<usize> = (0..TARGETS.len()).filter(|&i| TARGETS[i].1).collect();
    (
        prop_oneof![
            8 => Just("GET"),
            1 => prop::sample::select(vec!["POST", "HEAD", "get", "PRI", "G\tET"]),
        ],
        prop_oneof![2 => prop::sample::select(served), 1 => 0..TARGETS.len()],
        prop_oneof![
            6 => Just("HTTP/1.1"),
            2 => Just("HTTP/1.0"),
            1 => prop::sample::select(vec!["HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1"]),
        ],
        prop::bool::weighted(0.85),
        any::<prop::sample::Index>(),
        prop::collection::vec(0..HEADERS.len(), 0..4),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(method, target, version, host, at, mut headers, bare_lf)| {
                if host {
                    headers.insert(at.index(headers.len() + 1), 0);
                }
                Head {
                    method,
                    target,
                    version,
                    headers,
                    bare_lf,
                }
            },
        )
}

/// An independent reading of a head `parse` served directly.
fn check_served(head: &[u8], keep_alive: bool) -> Result<(), TestCaseError> {
    // Ends with an empty line (httparse takes LF and CRLF line ends, mixed too).
    prop_assert!(head.ends_with(b"\n\n") || head.ends_with(b"\n\r\n"));
    let text = String::from_utf8_lossy(head);
    // Empty lines before the request line are skipped (RFC 9112 §2.2).
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().unwrap_or_default();
    let parts: Vec<&str> = request_line.split(' ').collect();
    prop_assert_eq!(parts.len(), 3, "{:?}", request_line);
    prop_assert_eq!(parts[0], "GET");
    prop_assert!(parts[1].starts_with('/'));
    prop_assert!(parts[2] == "HTTP/1.1" || parts[2] == "HTTP/1.0");
    let (mut hosts, mut close) = (0, false);
    let (mut any_upgrade, mut upgrade_ws, mut conn_upgrade) = (false, false, false);
    for line in lines.take_while(|l| !l.is_empty()) {
        prop_assert!(!line.starts_with([' ', '\t']), "obs-fold {:?}", line);
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| TestCaseError::fail("no colon"))?;
        prop_assert!(!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()));
        prop_assert!(value
            .bytes()
            .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "host" => hosts += 1,
            "content-length" => prop_assert_eq!(value, "0"),
            "transfer-encoding" | "expect" => {
                return Err(TestCaseError::fail(format!("{name} served directly")))
            }
            "upgrade" => {
                any_upgrade = true;
                upgrade_ws |= value.eq_ignore_ascii_case("websocket");
            }
            "connection" => {
                for t in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
                    conn_upgrade |= t == "upgrade";
                    any_upgrade |= t == "upgrade";
                    close |= t == "close";
                }
            }
            _ => {}
        }
    }
    // A WebSocket upgrade on HTTP/1.1, with both headers, or no upgrade.
    prop_assert!(!any_upgrade || (upgrade_ws && conn_upgrade && parts[2] == "HTTP/1.1"));
    if parts[2] == "HTTP/1.1" {
        prop_assert_eq!(hosts, 1);
        prop_assert_eq!(keep_alive, !close);
    } else {
        prop_assert!(hosts <= 1);
        prop_assert!(!keep_alive);
    }
    Ok(())
}

/// What `parse` made of `buf`, checked against the invariants every answer keeps.
fn parse_checked(buf: &[u8], shared: &Shared) -> Result<Option<(usize, bool)>, TestCaseError> {
    match parse(buf, peer(), shared) {
        Parse::Partial => Ok(None),
        Parse::Handover => Ok(None),
        // Past the size limits: answered 431/414 and closed, nothing served.
        Parse::Refuse(..) => Ok(None),
        Parse::Direct(req) => {
            prop_assert!(req.head_len <= buf.len());
            check_served(&buf[..req.head_len], req.keep_alive)?;
            prop_assert_eq!(&req.parts.method, &Method::GET);
            Ok(Some((req.head_len, req.keep_alive)))
        }
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn fuzz_direct_parse_serves_exactly_the_heads_the_rules_allow(
        head in head(),
        cut in any::<prop::sample::Index>(),
        after in prop::collection::vec(tricky_byte(), 0..40),
    ) {
        let shared = shared();
        let bytes = head.bytes();
        let want = head.expected();
        // The whole head, then what a pipelining client sent behind it.
        let mut buf = bytes.clone();
        buf.extend_from_slice(&after);
        match (parse(&buf, peer(), &shared), want) {
            (Parse::Direct(req), Some(keep_alive)) => {
                prop_assert_eq!(req.head_len, bytes.len(), "the next request starts after the head");
                prop_assert_eq!(req.keep_alive, keep_alive);
                prop_assert_eq!(req.parts.uri.to_string(), TARGETS[head.target].0);
                check_served(&bytes, keep_alive)?;
            }
            (Parse::Handover, None) => {}
            (Parse::Direct(_), None) => prop_assert!(false, "served directly: {:?}", String::from_utf8_lossy(&bytes)),
            (Parse::Handover, Some(_)) => prop_assert!(false, "handed over: {:?}", String::from_utf8_lossy(&bytes)),
            (Parse::Partial, _) => prop_assert!(false, "a complete head read as partial"),
            (Parse::Refuse(status, _), _) => prop_assert!(false, "a head within the limits refused: {}", status),
        }
        // Any strict prefix is never served; a prefix of a head that will be served is
        // never handed over either (hyper would get a request the direct path owns).
        let at = cut.index(bytes.len());
        match parse(&bytes[..at], peer(), &shared) {
            Parse::Direct(_) => prop_assert!(false, "a prefix of {} bytes was served", at),
            Parse::Handover => prop_assert!(want.is_none(), "prefix of {} bytes handed over", at),
            Parse::Partial => {}
            Parse::Refuse(status, _) => prop_assert!(false, "a prefix refused: {}", status),
        }
    }

    #[test]
    fn fuzz_direct_parse_of_mutated_heads_serves_only_valid_ones(
        head in head(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..3, tricky_byte()), 1..4),
    ) {
        let shared = shared();
        let mut buf = head.bytes();
        for (at, op, byte) in edits {
            let i = at.index(buf.len() + 1);
            match op {
                0 => buf.insert(i, byte),
                1 if i < buf.len() => { buf.remove(i); }
                _ if i < buf.len() => buf[i] = byte,
                _ => buf.push(byte),
            }
        }
        parse_checked(&buf, &shared)?;
    }

    #[test]
    fn fuzz_direct_parse_never_panics_on_any_bytes(buf in prop::collection::vec(any::<u8>(), 0..512)) {
        let shared = shared();
        let mut with_get = b"GET /sse HTTP/1.1\r\n".to_vec();
        with_get.extend_from_slice(&buf);
        parse_checked(&buf, &shared)?;
        parse_checked(&with_get, &shared)?;
    }
}

#[test]
fn a_head_past_the_limit_is_refused_and_one_with_many_headers_handed_over() {
    let shared = shared();
    let mut buf = b"GET /sse HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    buf.resize(shared.config.max_header_bytes + 10, b'a');
    assert!(matches!(
        parse(&buf, peer(), &shared),
        Parse::Refuse(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, _)
    ));
    let mut many = b"GET /sse HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..=super::MAX_HEADERS {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&many, peer(), &shared), Parse::Handover));
}
