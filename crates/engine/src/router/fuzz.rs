//! The router against a matcher written from its documented rules, on random route tables
//! and paths (percent escapes, `..`, `%2F`, `%00`, invalid UTF-8, empty segments, typed
//! values that do and do not parse).
//!
//! The reference matches one pattern against a path segment by segment; the properties:
//! whatever the router answers is right for the pattern it names (its parameters are that
//! pattern's, decoded, of the declared kinds), a route that matches is found (or its path
//! is a 405 for another method), an all-static route that equals the path wins, and the
//! 405's `Allow` lists exactly the methods whose routes match.

use http::Method;
use proptest::prelude::*;

use super::{ParamKind, RouteMatch, Router};
use crate::fuzz::{config, tricky_byte};

/// One segment of a generated pattern.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Static(&'static str),
    Param(ParamKind),
}

/// A generated pattern: segments (a `Path` param only last) and how it is written.
#[derive(Debug, Clone)]
struct Pattern {
    segs: Vec<Seg>,
    /// Seeds the syntax of each parameter (`:x`, `<x>`, `<str:x>`, `{x}`...).
    style: u8,
}

const STATICS: [&str; 5] = ["a", "b", "users", "new", "newer"];

impl Pattern {
    fn render(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.segs.iter().enumerate() {
            out.push('/');
            let name = format!("v{i}");
            let alt = (usize::from(self.style) + i) % 3;
            match seg {
                Seg::Static(s) => out.push_str(s),
                Seg::Param(ParamKind::Str) => out.push_str(&match alt {
                    0 => format!(":{name}"),
                    1 => format!("<{name}>"),
                    _ => format!("{{{name}}}"),
                }),
                Seg::Param(ParamKind::Path) => out.push_str(&match alt {
                    0 => format!("*{name}"),
                    1 => format!("<path:{name}>"),
                    _ => format!("{{*{name}}}"),
                }),
                Seg::Param(kind) => {
                    let t = match kind {
                        ParamKind::Int => "int",
                        ParamKind::Float => "float",
                        _ => "uuid",
                    };
                    out.push_str(&format!("<{t}:{name}>"));
                }
            }
        }
        if out.is_empty() {
            out.push('/');
        }
        out
    }

    /// The reference matcher: the decoded parameters when this pattern matches `path`.
    fn matches(&self, path: &str) -> Option<Vec<(String, String, ParamKind)>> {
        let rest = path.strip_prefix('/')?;
        let parts: Vec<&str> = if rest.is_empty() && self.segs.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let mut params = Vec::new();
        for (i, seg) in self.segs.iter().enumerate() {
            let raw = *parts.get(i)?;
            match seg {
                Seg::Static(s) => {
                    if raw != *s {
                        return None;
                    }
                }
                Seg::Param(ParamKind::Path) => {
                    let tail = parts[i..].join("/");
                    let value = decode(&tail)?;
                    if tail.is_empty() || !tail_ok(&value) {
                        return None;
                    }
                    params.push((format!("v{i}"), value, ParamKind::Path));
                    return Some(params);
                }
                Seg::Param(kind) => {
                    let value = decode(raw)?;
                    if raw.is_empty() || !accepts(*kind, &value) {
                        return None;
                    }
                    params.push((format!("v{i}"), value, *kind));
                }
            }
        }
        (parts.len() == self.segs.len()).then_some(params)
    }

    fn is_static(&self) -> bool {
        self.segs.iter().all(|s| matches!(s, Seg::Static(_)))
    }
}

/// Percent-decoding as RFC 3986 describes it (a `%` not followed by two hex digits is
/// itself), `None` when the bytes are not UTF-8.
fn decode(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A tail the router hands out: no NUL, no `.` or `..` segment.
fn tail_ok(value: &str) -> bool {
    !value.contains('\0') && !value.split('/').any(|s| s == "." || s == "..")
}

fn accepts(kind: ParamKind, v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match kind {
        ParamKind::Str | ParamKind::Path => true,
        ParamKind::Int => {
            let unsigned = v.strip_prefix(['+', '-']).unwrap_or(v);
            digits(unsigned) && v.parse::<i128>().is_ok_and(|n| i64::try_from(n).is_ok())
        }
        ParamKind::Float => {
            // [sign] (digits [. digits?] | . digits) [e [sign] digits], and finite.
            let s = v.strip_prefix(['+', '-']).unwrap_or(v);
            let (mantissa, exp) = match s.find(['e', 'E']) {
                Some(at) => (&s[..at], Some(&s[at + 1..])),
                None => (s, None),
            };
            let mantissa_ok = match mantissa.split_once('.') {
                None => digits(mantissa),
                Some((int, frac)) => {
                    (digits(int) && (frac.is_empty() || digits(frac)))
                        || (int.is_empty() && digits(frac))
                }
            };
            let exp_ok = exp.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
            mantissa_ok && exp_ok && v.parse::<f64>().is_ok_and(f64::is_finite)
        }
        ParamKind::Uuid => {
            let groups: Vec<&str> = v.split('-').collect();
            groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
                && groups
                    .iter()
                    .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
        }
    }
}

fn seg() -> impl Strategy<Value = Seg> {
    prop_oneof![
        3 => prop::sample::select(STATICS.to_vec()).prop_map(Seg::Static),
        2 => Just(Seg::Param(ParamKind::Str)),
        1 => Just(Seg::Param(ParamKind::Int)),
        1 => Just(Seg::Param(ParamKind::Float)),
        1 => Just(Seg::Param(ParamKind::Uuid)),
    ]
}

fn pattern() -> impl Strategy<Value = Pattern> {
    (
        prop::collection::vec(seg(), 0..4),
        any::<bool>(),
        any::<u8>(),
    )
        .prop_map(|(mut segs, tail, style)| {
            if tail {
                segs.push(Seg::Param(ParamKind::Path));
            }
            Pattern { segs, style }
        })
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ])
}

/// A raw path segment: the values typed parameters care about, escapes that decode to
/// what paths must not smuggle, and random bytes.
fn raw_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(STATICS.to_vec()).prop_map(String::from),
        1 => prop::sample::select(vec![
            "5", "-7", "+3", "007", "1.5", ".5", "1.", "1e3", "1E+2", "inf", "NaN",
            "9223372036854775807", "9223372036854775808", "-9223372036854775808", "1e999",
            "123e4567-e89b-12d3-a456-426614174000", "123E4567-E89B-12D3-A456-42661417400G",
            "%34%32", "..", ".", "%2E%2E", "a%2Fb", "%2F", "%00", "%FF", "%C3%BC", "%C3",
            "%", "%G1", "%2", "", "a%20b", "\u{e9}", "J%C3%BCrgen",
        ])
        .prop_map(String::from),
        2 => prop::collection::vec(tricky_byte(), 0..8)
            .prop_map(|b| String::from_utf8_lossy(&b).replace(['/', '?', '#'], "")),
    ]
}

fn random_path() -> impl Strategy<Value = String> {
    (prop::collection::vec(raw_segment(), 0..6), any::<bool>()).prop_map(|(segs, slash)| {
        let mut p = format!("/{}", segs.join("/"));
        if slash && !p.ends_with('/') {
            p.push('/');
        }
        p
    })
}

/// A path shaped after `pattern`, with values of the right kind most of the time.
fn path_for(pattern: &Pattern, values: &[String]) -> String {
    let mut out = String::new();
    for (i, seg) in pattern.segs.iter().enumerate() {
        out.push('/');
        let v = &values[i % values.len()];
        match seg {
            Seg::Static(s) => out.push_str(s),
            Seg::Param(ParamKind::Int) if i % 2 == 0 => out.push_str(&(i * 7).to_string()),
            Seg::Param(ParamKind::Uuid) if i % 2 == 0 => {
                out.push_str("123e4567-e89b-12d3-a456-426614174000")
            }
            Seg::Param(ParamKind::Path) => out.push_str(&format!("{v}/{v}")),
            Seg::Param(_) => out.push_str(v),
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[derive(Debug, Clone)]
struct Case {
    routes: Vec<(Method, Pattern)>,
    method: Method,
    path: String,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec((method(), pattern()), 1..8),
        method(),
        random_path(),
        any::<prop::sample::Index>(),
        prop::collection::vec(raw_segment(), 1..4),
        any::<bool>(),
    )
        .prop_map(|(routes, method, random, pick, values, shaped)| {
            let path = if shaped {
                path_for(&pick.get(&routes).1, &values)
            } else {
                random
            };
            Case {
                routes,
                method,
                path,
            }
        })
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let mut router = Router::new();
    // What was inserted (a route may conflict with an earlier one and be refused).
    let mut table: Vec<(Method, Pattern, String)> = Vec::new();
    for (i, (m, p)) in case.routes.iter().enumerate() {
        let text = p.render();
        let before = router.len();
        match router.insert(m.clone(), &text, i) {
            Ok(()) => table.push((m.clone(), p.clone(), text)),
            Err(e) => {
                prop_assert!(e.is_route());
                prop_assert_eq!(router.len(), before, "a refused route is not half added");
            }
        }
    }
    let method = &case.method;
    let path = case.path.as_str();
    let matching: Vec<&(Method, Pattern, String)> = table
        .iter()
        .filter(|(_, p, _)| p.matches(path).is_some())
        .collect();
    match router.at(method, path) {
        RouteMatch::Found(m) => {
            // The route found is the one registered for this method, or GET's for HEAD.
            if m.head_as_get {
                prop_assert_eq!(method, &Method::HEAD);
            }
            let wanted = if m.head_as_get {
                Method::GET
            } else {
                method.clone()
            };
            let (_, pattern, text) = table
                .iter()
                .find(|(rm, _, t)| t == m.pattern && *rm == wanted)
                .expect("a found route was inserted")
                .clone();
            let want = pattern.matches(path);
            prop_assert!(
                want.is_some(),
                "{} matched {} against the rules",
                text,
                path
            );
            let got: Vec<(String, String, ParamKind)> = m
                .params
                .iter()
                .map(|p| (p.name.clone(), p.value.clone(), p.kind))
                .collect();
            prop_assert_eq!(Some(got), want);
            // An all-static route equal to the path wins over parameters.
            if let Some((_, winner, _)) = matching
                .iter()
                .find(|(rm, p, _)| p.is_static() && rm == method)
            {
                prop_assert!(pattern.is_static(), "{:?} lost to {}", winner, text);
            }
        }
        RouteMatch::MethodNotAllowed(allow) => {
            prop_assert!(!allow.is_empty());
            prop_assert!(!allow.contains(method));
            prop_assert!(!(method == Method::HEAD && allow.contains(&Method::GET)));
            for a in &allow {
                let served = matching
                    .iter()
                    .any(|(rm, _, _)| rm == a || (a == Method::HEAD && rm == Method::GET));
                prop_assert!(served, "{} allowed for {} without a route", a, path);
            }
        }
        RouteMatch::NotFound => {
            if let Some((_, _, text)) = matching.first() {
                prop_assert!(
                    false,
                    "{} matches {} but the router found nothing",
                    text,
                    path
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn fuzz_router_answers_agree_with_the_reference_matcher(case in case()) {
        check(&case)?;
    }

    #[test]
    fn fuzz_router_never_panics_on_any_path(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut router = Router::new();
        for (i, p) in ["/", "/a/:x", "/a/<int:n>/b", "/f/<path:rest>", "/u/<uuid:id>", "/x/<float:f>"].iter().enumerate() {
            router.insert(Method::GET, p, i).unwrap();
        }
        let path = format!("/{}", String::from_utf8_lossy(&bytes));
        let _ = router.at(&Method::GET, &path);
        let _ = router.at(&Method::POST, &path);
    }
}

#[test]
fn tails_with_dot_segments_nul_or_invalid_utf8_do_not_match() {
    let mut r = Router::new();
    r.insert(Method::GET, "/f/<path:rest>", "tail").unwrap();
    r.insert(Method::GET, "/s/:name", "seg").unwrap();
    for bad in [
        "/f/a/../b",
        "/f/..",
        "/f/a/./b",
        "/f/a%2F..%2Fb",
        "/f/%2e%2e/x",
        "/f/a%00b",
        "/f/%FF",
        "/s/%FF",
        "/s/%C3",
    ] {
        assert!(
            matches!(r.at(&Method::GET, bad), RouteMatch::NotFound),
            "{bad}"
        );
    }
    for (good, want) in [
        ("/f/a/b..c/.d", "a/b..c/.d"),
        ("/f/a%2Fb", "a/b"),
        ("/f/%C3%BC", "\u{fc}"),
    ] {
        match r.at(&Method::GET, good) {
            RouteMatch::Found(m) => assert_eq!(m.params.get("rest"), Some(want)),
            other => panic!("{good}: {other:?}"),
        }
    }
    // A single segment may hold an encoded slash or dots: it is one value, not a path.
    match r.at(&Method::GET, "/s/..%2F%2E") {
        RouteMatch::Found(m) => assert_eq!(m.params.get("name"), Some("../.")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_typed_segment_that_does_not_parse_falls_through_to_another_shape() {
    // matchit prefers `/{p0}/a` (a static segment after the parameter) for `/x/a`; its
    // float does not parse, so the tail route takes the path.
    let mut r = Router::new();
    r.insert(Method::GET, "/:first/<path:rest>", "tail")
        .unwrap();
    r.insert(Method::GET, "/<float:x>/a", "float").unwrap();
    match r.at(&Method::GET, "/x/a") {
        RouteMatch::Found(m) => {
            assert_eq!(*m.value, "tail");
            assert_eq!(m.params.get("first"), Some("x"));
            assert_eq!(m.params.get("rest"), Some("a"));
        }
        other => panic!("{other:?}"),
    }
    match r.at(&Method::GET, "/1.5/a") {
        RouteMatch::Found(m) => assert_eq!(*m.value, "float"),
        other => panic!("{other:?}"),
    }
    // The shape fallen through to answers for its own methods.
    assert!(matches!(
        r.at(&Method::POST, "/x/a"),
        RouteMatch::MethodNotAllowed(m) if m == [Method::GET, Method::HEAD]
    ));
}
