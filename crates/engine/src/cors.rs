//! CORS, answered by the engine: preflights (`OPTIONS` with `Access-Control-Request-Method`)
//! get a 204 without running any handler, and every response to an allowed origin, streams
//! included, carries `Access-Control-Allow-Origin` and `Vary: Origin`. A disallowed origin
//! gets no CORS headers, so the browser withholds the response from the page.
//!
//! ```
//! use rat_engine::cors::{Cors, Origins};
//! let cors = Cors::new(Origins::list(["https://app.example"])).credentials(true);
//! assert!(cors.allows("https://app.example"));
//! assert!(!cors.allows("https://evil.example"));
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use crate::error::{Error, Result};
use crate::response::Response;
use crate::stream::Body;

/// Which origins may read responses.
#[derive(Debug, Clone)]
pub enum Origins {
    /// Any origin (`*`, or the request's origin when credentials are allowed).
    Any,
    /// These exact origins, and those matching these patterns.
    Some {
        /// Exact origins (`https://app.example`).
        exact: Vec<String>,
        /// Patterns an origin must match in full.
        patterns: Vec<regex::Regex>,
    },
}

impl Origins {
    /// Exactly these origins.
    pub fn list<S: Into<String>>(origins: impl IntoIterator<Item = S>) -> Origins {
        Origins::Some {
            exact: origins.into_iter().map(Into::into).collect(),
            patterns: Vec::new(),
        }
    }

    /// Adds a pattern (regular expression syntax of the `regex` crate) an origin may match
    /// in full.
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] for a pattern that does not compile.
    pub fn pattern(self, pattern: &str) -> Result<Origins> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
            Error::invalid_argument(format!("invalid CORS origin pattern {pattern:?}: {e}"))
        })?;
        Ok(match self {
            Origins::Any => Origins::Any,
            Origins::Some {
                exact,
                mut patterns,
            } => {
                patterns.push(re);
                Origins::Some { exact, patterns }
            }
        })
    }
}

/// Distinct origins whose [check](Cors::check) answer is remembered; past it the memory
/// starts over.
const CHECKED_ORIGINS: usize = 1024;

/// The question a [check](Cors::check) asks about an origin.
type Ask = dyn Fn(&str) -> BoxFuture<'static, bool> + Send + Sync;

/// A decision on an origin the list does not name, made elsewhere (a front end's
/// function), asked once per origin.
#[derive(Clone)]
struct OriginCheck {
    ask: Arc<Ask>,
    answers: Arc<Mutex<HashMap<String, bool>>>,
}

impl std::fmt::Debug for OriginCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OriginCheck")
    }
}

/// A CORS policy: the app's, or a route's own.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    check: Option<OriginCheck>,
    credentials: bool,
    methods: Option<HeaderValue>,
    allowed_headers: Option<HeaderValue>,
    exposed_headers: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
}

impl Cors {
    /// A policy for `origins`: no credentials, the methods of the route asked about, the
    /// headers the preflight asks for, nothing exposed, no max age.
    pub fn new(origins: Origins) -> Cors {
        Cors {
            origins,
            check: None,
            credentials: false,
            methods: None,
            allowed_headers: None,
            exposed_headers: None,
            max_age: None,
        }
    }

    /// Asks `ask` about an origin that `origins` does not allow, once per origin (the
    /// answer is remembered for up to 1,024 origins): for a front end's function, or a
    /// lookup. Requests from an origin not yet answered wait for the answer.
    pub fn check(
        mut self,
        ask: impl Fn(&str) -> BoxFuture<'static, bool> + Send + Sync + 'static,
    ) -> Cors {
        self.check = Some(OriginCheck {
            ask: Arc::new(ask),
            answers: Arc::default(),
        });
        self
    }

    /// Whether `origin` may read responses: [`allows`](Self::allows), else the
    /// [check](Self::check)'s answer. No origin (or one that is not text): no.
    pub(crate) async fn admits(&self, origin: Option<&HeaderValue>) -> bool {
        let Some(origin) = origin.and_then(|o| o.to_str().ok()) else {
            return false;
        };
        if self.allows(origin) {
            return true;
        }
        let Some(check) = &self.check else {
            return false;
        };
        let known = check
            .answers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(origin)
            .copied();
        if let Some(answer) = known {
            return answer;
        }
        let answer = (check.ask)(origin).await;
        let mut answers = check.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.len() >= CHECKED_ORIGINS {
            answers.clear();
        }
        answers.insert(origin.to_string(), answer);
        answer
    }

    /// Allows cookies and authorization (`Access-Control-Allow-Credentials: true`; the
    /// origin is then always named, never `*`).
    pub fn credentials(mut self, on: bool) -> Cors {
        self.credentials = on;
        self
    }

    /// The methods a preflight allows (default: those of the route).
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] for a name that is not a method.
    pub fn methods<S: AsRef<str>>(mut self, methods: impl IntoIterator<Item = S>) -> Result<Cors> {
        let list: Vec<String> = methods
            .into_iter()
            .map(|m| m.as_ref().trim().to_ascii_uppercase())
            .collect();
        for m in &list {
            Method::from_bytes(m.as_bytes())
                .map_err(|_| Error::invalid_argument(format!("invalid CORS method {m:?}")))?;
        }
        self.methods = Some(joined(&list, "methods")?);
        Ok(self)
    }

    /// The request headers a preflight allows (default: those it asks for).
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] for a name that is not a header name.
    pub fn allowed_headers<S: AsRef<str>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Cors> {
        self.allowed_headers = Some(header_names(names)?);
        Ok(self)
    }

    /// Response headers the page may read besides the safelisted ones.
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] for a name that is not a header name.
    pub fn exposed_headers<S: AsRef<str>>(
        mut self,
        names: impl IntoIterator<Item = S>,
    ) -> Result<Cors> {
        self.exposed_headers = Some(header_names(names)?);
        Ok(self)
    }

    /// How long a browser may cache a preflight's answer.
    pub fn max_age(mut self, age: Duration) -> Cors {
        self.max_age = Some(HeaderValue::from(age.as_secs()));
        self
    }

    /// True when `origin` may read responses.
    pub fn allows(&self, origin: &str) -> bool {
        match &self.origins {
            Origins::Any => true,
            Origins::Some { exact, patterns } => {
                exact.iter().any(|o| o == origin) || patterns.iter().any(|p| p.is_match(origin))
            }
        }
    }

    /// The `Access-Control-Allow-Origin` value for an allowed `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if matches!(self.origins, Origins::Any) && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Adds the headers of an actual (not preflight) response to a request from `origin`,
    /// `admitted` or not (see [`admits`](Self::admits)).
    pub(crate) fn decorate(
        &self,
        origin: Option<&HeaderValue>,
        admitted: bool,
        headers: &mut HeaderMap,
    ) {
        let varies = !matches!(self.origins, Origins::Any) || self.credentials;
        if varies {
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        let Some(origin) = origin.filter(|_| admitted) else {
            return;
        };
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(exposed) = &self.exposed_headers {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }

    /// The answer to a preflight from `origin` (`admitted` or not) for a route allowing
    /// `route_methods`.
    pub(crate) fn preflight(
        &self,
        origin: &HeaderValue,
        admitted: bool,
        request_headers: Option<&HeaderValue>,
        route_methods: &[Method],
    ) -> Response {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = StatusCode::NO_CONTENT;
        let h = res.headers_mut();
        h.insert(
            header::VARY,
            HeaderValue::from_static(
                "origin, access-control-request-method, access-control-request-headers",
            ),
        );
        if !admitted {
            return res;
        }
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin(origin),
        );
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let methods = self.methods.clone().or_else(|| {
            let names: Vec<&str> = route_methods.iter().map(Method::as_str).collect();
            HeaderValue::from_str(&names.join(", ")).ok()
        });
        if let Some(m) = methods {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, m);
        }
        if let Some(allowed) = self
            .allowed_headers
            .clone()
            .or_else(|| request_headers.cloned())
        {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        if let Some(age) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        res
    }
}

/// A route's CORS: the app's, none, or its own.
#[derive(Debug, Clone, Default)]
pub enum RouteCors {
    /// The server's policy ([`ServerConfig::cors`](crate::ServerConfig::cors)).
    #[default]
    Inherit,
    /// No CORS headers, no preflight answers.
    Off,
    /// This policy instead of the server's.
    Own(Arc<Cors>),
}

impl PartialEq for RouteCors {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (RouteCors::Inherit, RouteCors::Inherit) | (RouteCors::Off, RouteCors::Off) => true,
            (RouteCors::Own(a), RouteCors::Own(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for RouteCors {}

impl RouteCors {
    /// The policy that applies, given the server's.
    pub(crate) fn resolve<'a>(&'a self, server: Option<&'a Arc<Cors>>) -> Option<&'a Arc<Cors>> {
        match self {
            RouteCors::Inherit => server,
            RouteCors::Off => None,
            RouteCors::Own(c) => Some(c),
        }
    }
}

fn joined(list: &[String], what: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&list.join(", "))
        .map_err(|_| Error::invalid_argument(format!("invalid CORS {what}: {list:?}")))
}

fn header_names<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> Result<HeaderValue> {
    let list: Vec<String> = names
        .into_iter()
        .map(|n| n.as_ref().trim().to_ascii_lowercase())
        .collect();
    for n in &list {
        HeaderName::from_bytes(n.as_bytes())
            .map_err(|_| Error::invalid_argument(format!("invalid CORS header name {n:?}")))?;
    }
    joined(&list, "header names")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn origins_match_exactly_or_by_whole_pattern() {
        let o = Origins::list(["https://a.example"])
            .pattern(r"https://[a-z]+\.b\.example")
            .unwrap();
        let c = Cors::new(o);
        assert!(c.allows("https://a.example"));
        assert!(c.allows("https://x.b.example"));
        assert!(!c.allows("https://x.b.example.evil"), "anchored");
        assert!(!c.allows("https://a.example.evil"));
        assert!(Origins::list(["x"]).pattern("(").is_err());
    }

    #[test]
    fn any_origin_is_a_star_unless_credentials_name_it() {
        let mut h = HeaderMap::new();
        Cors::new(Origins::Any).decorate(Some(&v("https://a")), true, &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(header::VARY).is_none());
        let mut h = HeaderMap::new();
        Cors::new(Origins::Any)
            .credentials(true)
            .decorate(Some(&v("https://a")), true, &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[header::VARY], "origin");
    }

    #[test]
    fn a_disallowed_origin_gets_no_cors_headers() {
        let c = Cors::new(Origins::list(["https://a"]));
        let mut h = HeaderMap::new();
        c.decorate(Some(&v("https://evil")), c.allows("https://evil"), &mut h);
        assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(h[header::VARY], "origin");
        let res = c.preflight(&v("https://evil"), false, None, &[Method::GET]);
        assert_eq!(res.status(), 204);
        assert!(res
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .is_none());
    }

    #[test]
    fn a_preflight_names_methods_headers_and_max_age() {
        let c = Cors::new(Origins::list(["https://a"]))
            .max_age(Duration::from_secs(600))
            .exposed_headers(["X-Total"])
            .unwrap();
        let res = c.preflight(
            &v("https://a"),
            true,
            Some(&v("content-type, x-token")),
            &[Method::GET, Method::POST],
        );
        let h = res.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type, x-token"
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        let c = c
            .methods(["get", "put"])
            .unwrap()
            .allowed_headers(["X-Token"])
            .unwrap();
        let res = c.preflight(&v("https://a"), true, Some(&v("x-other")), &[Method::GET]);
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_METHODS],
            "GET, PUT"
        );
        assert_eq!(
            res.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "x-token"
        );
        assert!(Cors::new(Origins::Any).methods(["bad method"]).is_err());
    }
}
