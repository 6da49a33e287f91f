//! Static credentials checked by the engine before a handler runs: bearer tokens and API
//! keys per path prefix, so a route (channel routes included) can refuse a client without
//! any JavaScript. A request under a rule's prefix without one of its credentials gets a
//! 401 with `WWW-Authenticate: Bearer`.
//!
//! ```
//! use rat_engine::auth::TokenRule;
//! let rule = TokenRule::new("/admin").bearer(["s3cret"]).api_keys("x-api-key", ["key-1"]).unwrap();
//! assert!(rule.covers("/admin/users") && !rule.covers("/administrator"));
//! ```

use http::header::{self, HeaderMap, HeaderName};

use crate::error::{Error, Result};

/// Credentials required under a path prefix.
#[derive(Debug, Clone)]
pub struct TokenRule {
    prefix: String,
    bearer: Vec<Vec<u8>>,
    key_header: Option<HeaderName>,
    api_keys: Vec<Vec<u8>>,
}

impl TokenRule {
    /// A rule for paths under `prefix` (whole segments: `/api` covers `/api` and `/api/x`,
    /// not `/apix`; `/` covers everything). Add accepted credentials with
    /// [`bearer`](Self::bearer) and [`api_keys`](Self::api_keys).
    pub fn new(prefix: impl Into<String>) -> TokenRule {
        let mut prefix = prefix.into();
        while prefix.len() > 1 && prefix.ends_with('/') {
            prefix.pop();
        }
        TokenRule {
            prefix,
            bearer: Vec::new(),
            key_header: None,
            api_keys: Vec::new(),
        }
    }

    /// Accepts `Authorization: Bearer <token>` with one of `tokens`.
    pub fn bearer<S: AsRef<str>>(mut self, tokens: impl IntoIterator<Item = S>) -> TokenRule {
        self.bearer
            .extend(tokens.into_iter().map(|t| t.as_ref().as_bytes().to_vec()));
        self
    }

    /// Accepts one of `keys` in the request header `header` (e.g. `x-api-key`).
    ///
    /// # Errors
    /// [`Error::is_invalid_argument`] for an invalid header name.
    pub fn api_keys<S: AsRef<str>>(
        mut self,
        header: &str,
        keys: impl IntoIterator<Item = S>,
    ) -> Result<TokenRule> {
        let name = HeaderName::from_bytes(header.as_bytes())
            .map_err(|_| Error::invalid_argument(format!("invalid API key header {header:?}")))?;
        self.key_header = Some(name);
        self.api_keys
            .extend(keys.into_iter().map(|k| k.as_ref().as_bytes().to_vec()));
        Ok(self)
    }

    /// True when `path` is under this rule's prefix.
    pub fn covers(&self, path: &str) -> bool {
        let p = self.prefix.as_str();
        p == "/"
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// True when `headers` carry one of the accepted credentials.
    pub(crate) fn admits(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| {
                let v = v.as_bytes();
                (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer "))
                    .then(|| v[7..].trim_ascii())
            })
            .is_some_and(|given| self.bearer.iter().any(|t| same(t, given)));
        bearer
            || self.key_header.as_ref().is_some_and(|h| {
                headers
                    .get(h)
                    .is_some_and(|v| self.api_keys.iter().any(|k| same(k, v.as_bytes())))
            })
    }
}

/// Compares without returning early on the first differing byte, so that the time taken
/// does not tell how much of a guess was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Whether `path` with `headers` passes every rule that covers it.
pub(crate) fn admitted(rules: &[TokenRule], path: &str, headers: &HeaderMap) -> bool {
    rules
        .iter()
        .filter(|r| r.covers(path))
        .all(|r| r.admits(headers))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn bearer_tokens_and_api_keys_admit_under_the_prefix_only() {
        let rules = [TokenRule::new("/api/")
            .bearer(["t1", "t2"])
            .api_keys("x-api-key", ["k1"])
            .unwrap()];
        assert!(admitted(&rules, "/public", &HeaderMap::new()));
        assert!(!admitted(&rules, "/api", &HeaderMap::new()));
        assert!(!admitted(
            &rules,
            "/api/x",
            &with("authorization", "Bearer t3")
        ));
        assert!(admitted(
            &rules,
            "/api/x",
            &with("authorization", "Bearer t2")
        ));
        assert!(admitted(
            &rules,
            "/api/x",
            &with("authorization", "bearer t1")
        ));
        assert!(!admitted(
            &rules,
            "/api/x",
            &with("authorization", "Basic t1")
        ));
        assert!(admitted(&rules, "/api/x", &with("x-api-key", "k1")));
        assert!(!admitted(&rules, "/api/x", &with("x-api-key", "k")));
        assert!(
            admitted(&rules, "/apix", &HeaderMap::new()),
            "whole segments"
        );
        assert!(TokenRule::new("/").covers("/anything"));
    }
}
