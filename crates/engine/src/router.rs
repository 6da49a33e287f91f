//! Method + path routing on top of [`matchit`].
//!
//! Patterns accept the Node (Express) style, the Flask style with typed parameters, and
//! braces:
//!
//! | pattern                  | matches                               |
//! |--------------------------|---------------------------------------|
//! | `/users/:id`, `/users/<id>`, `/users/{id}` | one segment, as a string |
//! | `/items/<int:id>`        | one segment that parses as an `i64`   |
//! | `/at/<float:x>`          | one segment that parses as an `f64`   |
//! | `/s/<uuid:id>`           | one segment that is a UUID            |
//! | `/files/<path:rest>`, `/files/*rest` | the rest of the path (last only) |
//!
//! Values are percent-decoded; one that is not UTF-8 then does not match, nor does a tail
//! holding NUL or a `.` or `..` segment (raw or encoded). A typed segment that does not
//! parse does not match, so
//! `/items/<int:id>` and `/items/:slug` can live side by side: `/items/7` goes to the
//! first, `/items/seven` to the second. Static segments win over parameters, which win
//! over tails (matchit's priorities).
//!
//! ```
//! use rat_engine::router::{Router, RouteMatch};
//! use http::Method;
//! let mut r = Router::new();
//! r.insert(Method::GET, "/api/progress/<int:id>", "progress").unwrap();
//! match r.at(&Method::GET, "/api/progress/42") {
//!     RouteMatch::Found(m) => assert_eq!(m.params.get("id"), Some("42")),
//!     _ => unreachable!(),
//! }
//! ```

use std::borrow::Cow;

use http::Method;
use percent_encoding::percent_decode_str;

use crate::error::{Error, Result};

/// The type a path parameter was declared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParamKind {
    /// `<int:x>`: an `i64`.
    Int,
    /// `<uuid:x>`: a UUID (8-4-4-4-12 hex digits).
    Uuid,
    /// `<float:x>`: an `f64`.
    Float,
    /// `:x`, `<x>`, `<str:x>`: any one segment.
    Str,
    /// `<path:x>`, `*x`: the rest of the path.
    Path,
}

impl ParamKind {
    fn accepts(self, value: &str) -> bool {
        match self {
            ParamKind::Str => true,
            // A tail is what handlers turn into file paths: no NUL, no `.` or `..` segment.
            ParamKind::Path => {
                !value.contains('\0') && !value.split('/').any(|s| s == "." || s == "..")
            }
            ParamKind::Int => value.parse::<i64>().is_ok(),
            ParamKind::Float => {
                // Rust also parses "inf"/"NaN"; a URL parameter declared as a number
                // should be a finite decimal.
                value.parse::<f64>().is_ok_and(f64::is_finite)
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
            }
            ParamKind::Uuid => is_uuid(value),
        }
    }
}

fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// One path parameter of a matched route.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// The name given in the pattern.
    pub name: String,
    /// The percent-decoded value.
    pub value: String,
    /// The declared type (the value is known to parse as it).
    pub kind: ParamKind,
}

/// The path parameters of a matched route, in pattern order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params(Vec<Param>);

impl Params {
    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.as_str())
    }
    /// All parameters.
    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.0.iter()
    }
    /// Number of parameters.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when the route has no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed pattern: the matchit form (parameters renamed by position, so differently
/// named or typed parameters at the same place share one matchit route) and the
/// parameters' names and kinds.
#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    normalized: String,
    names: Vec<String>,
    kinds: Vec<ParamKind>,
}

fn parse_pattern(pattern: &str) -> Result<Pattern> {
    let bad = |why: &str| {
        Error::route(format!(
            "invalid route pattern {pattern:?}: {why} (valid forms: /users/:id, /users/<id>, \
             /items/<int:id>, /at/<float:x>, /s/<uuid:id>, /files/<path:rest>, /files/*rest)"
        ))
    };
    if !pattern.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    let mut normalized = String::with_capacity(pattern.len());
    let mut names: Vec<String> = Vec::new();
    let mut kinds = Vec::new();
    let segments: Vec<&str> = pattern[1..].split('/').collect();
    let last = segments.len() - 1;
    for (i, seg) in segments.iter().enumerate() {
        normalized.push('/');
        let param = if let Some(name) = seg.strip_prefix(':') {
            Some((ParamKind::Str, name))
        } else if let Some(name) = seg.strip_prefix('*') {
            Some((ParamKind::Path, name))
        } else if let Some(inner) = seg.strip_prefix('<').and_then(|s| s.strip_suffix('>')) {
            Some(match inner.split_once(':') {
                None => (ParamKind::Str, inner),
                Some(("int", n)) => (ParamKind::Int, n),
                Some(("float", n)) => (ParamKind::Float, n),
                Some(("uuid", n)) => (ParamKind::Uuid, n),
                Some(("str" | "string", n)) => (ParamKind::Str, n),
                Some(("path", n)) => (ParamKind::Path, n),
                Some((t, _)) => {
                    return Err(bad(&format!(
                        "unknown parameter type {t:?}; use int, float, uuid, str or path"
                    )))
                }
            })
        } else {
            seg.strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .map(|inner| match inner.strip_prefix('*') {
                    Some(n) => (ParamKind::Path, n),
                    None => (ParamKind::Str, inner),
                })
        };
        match param {
            Some((kind, name)) => {
                let valid_name = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid_name {
                    return Err(bad(&format!(
                        "parameter name {name:?} must be a word (letters, digits, _)"
                    )));
                }
                if names.iter().any(|n| n == name) {
                    return Err(bad(&format!("parameter {name:?} appears twice")));
                }
                if kind == ParamKind::Path && i != last {
                    return Err(bad("a tail parameter must be the last segment"));
                }
                let idx = names.len();
                if kind == ParamKind::Path {
                    normalized.push_str(&format!("{{*p{idx}}}"));
                } else {
                    normalized.push_str(&format!("{{p{idx}}}"));
                }
                names.push(name.to_string());
                kinds.push(kind);
            }
            None => {
                if seg.contains(['<', '>', '{', '}', ':', '*']) {
                    return Err(bad(&format!(
                        "segment {seg:?}: a parameter must be a whole path segment"
                    )));
                }
                normalized.push_str(seg);
            }
        }
    }
    Ok(Pattern {
        normalized,
        names,
        kinds,
    })
}

struct MethodRoute<T> {
    method: Method,
    names: Vec<String>,
    pattern: String,
    value: T,
}

/// Routes sharing one parameter-kind signature at one matchit pattern.
struct Candidate<T> {
    kinds: Vec<ParamKind>,
    routes: Vec<MethodRoute<T>>,
}

/// A successful match.
#[derive(Debug)]
pub struct Matched<'a, T> {
    /// The route's value (handler, id...).
    pub value: &'a T,
    /// The pattern the route was registered with.
    pub pattern: &'a str,
    /// The decoded, validated parameters.
    pub params: Params,
    /// True when a HEAD request matched a GET route (send no body).
    pub head_as_get: bool,
}

/// The outcome of [`Router::at`].
#[derive(Debug)]
pub enum RouteMatch<'a, T> {
    /// A route for this method and path.
    Found(Matched<'a, T>),
    /// The path matches but not for this method; these methods would be allowed.
    MethodNotAllowed(Vec<Method>),
    /// No route matches the path.
    NotFound,
}

/// A router from (method, path) to values of type `T`.
pub struct Router<T> {
    matcher: matchit::Router<usize>,
    groups: Vec<Vec<Candidate<T>>>,
    /// Each group's pattern, by segment.
    shapes: Vec<Shape>,
    by_normalized: std::collections::HashMap<String, usize>,
    len: usize,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router {
            matcher: matchit::Router::new(),
            groups: Vec::new(),
            shapes: Vec::new(),
            by_normalized: Default::default(),
            len: 0,
        }
    }
}

impl<T> std::fmt::Debug for Router<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("routes", &self.len).finish()
    }
}

/// Parses a method name such as `"get"` or `"POST"`.
///
/// # Errors
/// [`Error::is_route`] for anything but GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS.
pub fn parse_method(method: &str) -> Result<Method> {
    let m = method.to_ascii_uppercase();
    match m.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => {
            Ok(Method::from_bytes(m.as_bytes()).expect("standard method"))
        }
        _ => Err(Error::route(format!(
            "invalid method {method:?}: use GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS"
        ))),
    }
}

impl<T> Router<T> {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no route was added.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a route.
    ///
    /// # Errors
    /// [`Error::is_route`] for an invalid pattern, a route already registered for this
    /// method and pattern shape, or a pattern matchit cannot combine with existing ones.
    pub fn insert(&mut self, method: Method, pattern: &str, value: T) -> Result<()> {
        let parsed = parse_pattern(pattern)?;
        let group = match self.by_normalized.get(&parsed.normalized) {
            Some(&g) => g,
            None => {
                let g = self.groups.len();
                self.matcher
                    .insert(parsed.normalized.clone(), g)
                    .map_err(|e| {
                        Error::route(format!(
                            "route pattern {pattern:?} conflicts with an existing route: {e}"
                        ))
                    })?;
                self.groups.push(Vec::new());
                self.shapes.push(Shape::new(&parsed.normalized));
                self.by_normalized.insert(parsed.normalized.clone(), g);
                g
            }
        };
        let candidates = &mut self.groups[group];
        let pos = match candidates.iter().position(|c| c.kinds == parsed.kinds) {
            Some(p) => p,
            None => {
                let p = candidates.partition_point(|c| c.kinds < parsed.kinds);
                candidates.insert(
                    p,
                    Candidate {
                        kinds: parsed.kinds.clone(),
                        routes: Vec::new(),
                    },
                );
                p
            }
        };
        let cand = &mut candidates[pos];
        if let Some(existing) = cand.routes.iter().find(|r| r.method == method) {
            return Err(Error::route(format!(
                "duplicate route: {method} {pattern} is already registered (as {:?})",
                existing.pattern
            )));
        }
        cand.routes.push(MethodRoute {
            method,
            names: parsed.names,
            pattern: pattern.to_string(),
            value,
        });
        self.len += 1;
        Ok(())
    }

    /// Finds the route for `method` and `path` (the raw, percent-encoded path without the
    /// query string).
    pub fn at(&self, method: &Method, path: &str) -> RouteMatch<'_, T> {
        let Ok(m) = self.matcher.at(path) else {
            return RouteMatch::NotFound;
        };
        let group = *m.value;
        let mut raw: Vec<(usize, &str)> = m
            .params
            .iter()
            .map(|(k, v)| (k.trim_start_matches('p').parse::<usize>().unwrap_or(0), v))
            .collect();
        raw.sort_unstable_by_key(|(i, _)| *i);
        if let Some(found) = self.resolve(group, raw.iter().map(|(_, v)| *v), method) {
            return found;
        }
        // No route of the shape matchit picked takes these values (a typed segment that
        // does not parse): the other shapes that match the path, in matchit's order.
        let mut others: Vec<(Vec<u8>, usize, Vec<&str>)> = self
            .shapes
            .iter()
            .enumerate()
            .filter(|(g, _)| *g != group)
            .filter_map(|(g, shape)| shape.split(path).map(|(rank, raw)| (rank, g, raw)))
            .collect();
        others.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, g, raw) in others {
            if let Some(found) = self.resolve(g, raw.into_iter(), method) {
                return found;
            }
        }
        RouteMatch::NotFound
    }

    /// The route of `group` for `method` and the raw parameter values: `Found`, a 405 when
    /// routes of the group take the values but not for this method, `None` when none
    /// takes them.
    fn resolve<'r, 'p>(
        &'r self,
        group: usize,
        raw: impl Iterator<Item = &'p str>,
        method: &Method,
    ) -> Option<RouteMatch<'r, T>> {
        // A value that is not UTF-8 once decoded matches nothing (rather than reaching the
        // handler altered).
        let values = raw
            .map(|v| percent_decode_str(v).decode_utf8())
            .collect::<std::result::Result<Vec<Cow<'_, str>>, _>>()
            .ok()?;
        let mut allowed: Vec<Method> = Vec::new();
        for cand in &self.groups[group] {
            if !cand.kinds.iter().zip(&values).all(|(k, v)| k.accepts(v)) {
                continue;
            }
            let exact = cand.routes.iter().find(|r| r.method == method);
            let (route, head_as_get) = match exact {
                Some(r) => (Some(r), false),
                None if method == Method::HEAD => {
                    (cand.routes.iter().find(|r| r.method == Method::GET), true)
                }
                None => (None, false),
            };
            if let Some(r) = route {
                let params = Params(
                    r.names
                        .iter()
                        .zip(&cand.kinds)
                        .zip(&values)
                        .map(|((name, kind), value)| Param {
                            name: name.clone(),
                            value: value.to_string(),
                            kind: *kind,
                        })
                        .collect(),
                );
                return Some(RouteMatch::Found(Matched {
                    value: &r.value,
                    pattern: &r.pattern,
                    params,
                    head_as_get,
                }));
            }
            for r in &cand.routes {
                if !allowed.contains(&r.method) {
                    allowed.push(r.method.clone());
                }
                if r.method == Method::GET && !allowed.contains(&Method::HEAD) {
                    allowed.push(Method::HEAD);
                }
            }
        }
        (!allowed.is_empty()).then_some(RouteMatch::MethodNotAllowed(allowed))
    }
}

/// The segments of a matchit pattern, to match a path against it when matchit's first
/// choice takes no route (see [`Router::at`]).
struct Shape(Box<[ShapeSeg]>);

enum ShapeSeg {
    Static(Box<str>),
    Param,
    Tail,
}

impl Shape {
    fn new(normalized: &str) -> Shape {
        let segs = normalized[1..]
            .split('/')
            .map(|s| {
                if s.starts_with("{*") {
                    ShapeSeg::Tail
                } else if s.starts_with('{') {
                    ShapeSeg::Param
                } else {
                    ShapeSeg::Static(s.into())
                }
            })
            .collect();
        Shape(segs)
    }

    /// When `path` has this shape: its rank in matchit's order (per segment, static before
    /// parameter before tail; lower wins) and the raw parameter values.
    fn split<'p>(&self, path: &'p str) -> Option<(Vec<u8>, Vec<&'p str>)> {
        let mut rest = path.strip_prefix('/')?;
        let mut rank = Vec::with_capacity(self.0.len());
        let mut raw = Vec::new();
        for (i, seg) in self.0.iter().enumerate() {
            if let ShapeSeg::Tail = seg {
                if rest.is_empty() {
                    return None;
                }
                rank.push(2);
                raw.push(rest);
                return Some((rank, raw));
            }
            let (part, after) = match rest.split_once('/') {
                Some((part, after)) => (part, Some(after)),
                None => (rest, None),
            };
            match seg {
                ShapeSeg::Static(s) if **s == *part => rank.push(0),
                ShapeSeg::Param if !part.is_empty() => {
                    rank.push(1);
                    raw.push(part);
                }
                _ => return None,
            }
            match after {
                Some(after) if i + 1 < self.0.len() => rest = after,
                None if i + 1 == self.0.len() => return Some((rank, raw)),
                _ => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    fn found(r: &Router<&'static str>, m: Method, p: &str) -> (&'static str, Params, bool) {
        match r.at(&m, p) {
            RouteMatch::Found(x) => (*x.value, x.params, x.head_as_get),
            other => panic!("{m} {p}: expected a match, got {other:?}"),
        }
    }

    #[test]
    fn node_flask_and_brace_styles_bind_params() {
        let mut r = Router::new();
        r.insert(Method::GET, "/api/progress/:session_id", "node")
            .unwrap();
        r.insert(Method::GET, "/api/stream/<session_id>", "flask")
            .unwrap();
        r.insert(Method::GET, "/api/x/{name}/y", "brace").unwrap();
        let (v, p, _) = found(&r, Method::GET, "/api/progress/abc");
        assert_eq!((v, p.get("session_id")), ("node", Some("abc")));
        let (v, p, _) = found(&r, Method::GET, "/api/stream/s1");
        assert_eq!((v, p.get("session_id")), ("flask", Some("s1")));
        let (_, p, _) = found(&r, Method::GET, "/api/x/q/y");
        assert_eq!(p.get("name"), Some("q"));
    }

    #[test]
    fn typed_params_validate_and_fall_through() {
        let mut r = Router::new();
        r.insert(Method::GET, "/items/<int:id>", "int").unwrap();
        r.insert(Method::GET, "/items/<uuid:id>", "uuid").unwrap();
        r.insert(Method::GET, "/items/<float:x>", "float").unwrap();
        r.insert(Method::GET, "/items/:slug", "str").unwrap();
        assert_eq!(found(&r, Method::GET, "/items/42").0, "int");
        assert_eq!(found(&r, Method::GET, "/items/-7").0, "int");
        assert_eq!(found(&r, Method::GET, "/items/1.5").0, "float");
        assert_eq!(
            found(
                &r,
                Method::GET,
                "/items/123e4567-e89b-12d3-a456-426614174000"
            )
            .0,
            "uuid"
        );
        assert_eq!(found(&r, Method::GET, "/items/inf").0, "str");
        let (v, p, _) = found(&r, Method::GET, "/items/seven");
        assert_eq!((v, p.get("slug")), ("str", Some("seven")));
        assert_eq!(p.iter().next().unwrap().kind, ParamKind::Str);
    }

    #[test]
    fn typed_mismatch_without_fallback_is_not_found() {
        let mut r = Router::new();
        r.insert(Method::GET, "/n/<int:id>", "int").unwrap();
        assert!(matches!(r.at(&Method::GET, "/n/abc"), RouteMatch::NotFound));
        assert!(matches!(
            r.at(&Method::GET, "/n/99999999999999999999"),
            RouteMatch::NotFound
        ));
        assert!(matches!(r.at(&Method::GET, "/n/1"), RouteMatch::Found(_)));
    }

    #[test]
    fn values_are_percent_decoded() {
        let mut r = Router::new();
        r.insert(Method::GET, "/u/:name", "u").unwrap();
        r.insert(Method::GET, "/n/<int:id>", "n").unwrap();
        let (_, p, _) = found(&r, Method::GET, "/u/J%C3%BCrgen%20M");
        assert_eq!(p.get("name"), Some("Jürgen M"));
        let (_, p, _) = found(&r, Method::GET, "/u/a%2Fb");
        assert_eq!(p.get("name"), Some("a/b"));
        assert_eq!(found(&r, Method::GET, "/n/%34%32").1.get("id"), Some("42"));
    }

    #[test]
    fn tails_take_the_rest() {
        let mut r = Router::new();
        r.insert(Method::GET, "/files/<path:rest>", "path").unwrap();
        r.insert(Method::GET, "/static/*rest", "star").unwrap();
        assert_eq!(
            found(&r, Method::GET, "/files/a/b/c.txt").1.get("rest"),
            Some("a/b/c.txt")
        );
        assert_eq!(
            found(&r, Method::GET, "/static/x/y").1.get("rest"),
            Some("x/y")
        );
        assert!(matches!(r.at(&Method::GET, "/files"), RouteMatch::NotFound));
    }

    #[test]
    fn static_segments_win_over_params_and_tails() {
        let mut r = Router::new();
        r.insert(Method::GET, "/users/:id", "param").unwrap();
        r.insert(Method::GET, "/users/new", "static").unwrap();
        r.insert(Method::GET, "/users/:id/*rest", "tail").unwrap();
        assert_eq!(found(&r, Method::GET, "/users/new").0, "static");
        assert_eq!(found(&r, Method::GET, "/users/5").0, "param");
        assert_eq!(found(&r, Method::GET, "/users/5/a/b").0, "tail");
    }

    #[test]
    fn wrong_method_is_405_with_allowed_list() {
        let mut r = Router::new();
        r.insert(Method::GET, "/a", "get").unwrap();
        r.insert(Method::POST, "/a", "post").unwrap();
        match r.at(&Method::DELETE, "/a") {
            RouteMatch::MethodNotAllowed(allow) => {
                assert_eq!(allow, vec![Method::GET, Method::HEAD, Method::POST]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(r.at(&Method::GET, "/b"), RouteMatch::NotFound));
    }

    #[test]
    fn head_uses_get_unless_head_is_registered() {
        let mut r = Router::new();
        r.insert(Method::GET, "/a", "get").unwrap();
        r.insert(Method::GET, "/b", "get-b").unwrap();
        r.insert(Method::HEAD, "/b", "head-b").unwrap();
        assert_eq!(
            found(&r, Method::HEAD, "/a"),
            ("get", Params::default(), true)
        );
        assert_eq!(found(&r, Method::HEAD, "/b").0, "head-b");
        assert!(!found(&r, Method::HEAD, "/b").2);
    }

    #[test]
    fn methods_can_differ_in_param_names_at_one_place() {
        let mut r = Router::new();
        r.insert(Method::GET, "/x/:id", "get").unwrap();
        r.insert(Method::DELETE, "/x/<key>", "del").unwrap();
        assert_eq!(found(&r, Method::DELETE, "/x/1").1.get("key"), Some("1"));
        assert_eq!(found(&r, Method::GET, "/x/1").1.get("id"), Some("1"));
    }

    #[test]
    fn duplicates_and_bad_patterns_are_errors_that_explain() {
        let mut r = Router::new();
        r.insert(Method::GET, "/a/:id", "1").unwrap();
        let e = r.insert(Method::GET, "/a/<other>", "2").unwrap_err();
        assert!(
            e.is_route() && e.message().contains("duplicate route"),
            "{e}"
        );
        for bad in [
            "no-slash",
            "/a/<bogus:x>",
            "/a/:",
            "/a/*rest/b",
            "/a/x<id>",
            "/a/:id/:id",
            "/a/:1x",
        ] {
            let e = r.insert(Method::GET, bad, "x").unwrap_err();
            assert!(e.is_route(), "{bad}");
            assert!(e.message().contains("valid forms"), "{bad}: {e}");
        }
        assert!(parse_method("get").is_ok());
        assert!(parse_method("BREW")
            .unwrap_err()
            .message()
            .contains("use GET"));
        assert_eq!(r.len(), 1);
    }
}
