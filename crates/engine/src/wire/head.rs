//! The head of a response the engine writes itself: how its body is delimited, whether its
//! connection is kept, and the status line and headers.

use std::io::Write as _;
use std::time::SystemTime;

use http::{header, HeaderMap, StatusCode, Version};

/// How a response body is delimited on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Framing {
    /// No body (204, 304).
    None,
    /// `content-length` (a full body).
    Length,
    /// `transfer-encoding: chunked` (a stream on HTTP/1.1).
    Chunked,
    /// HTTP/1.0: the body ends when the connection closes.
    Close,
}

impl Framing {
    /// The framing of a response with `status` whose body streams (or is full), on
    /// `version`.
    pub(crate) fn of(status: StatusCode, streaming: bool, version: Version) -> Framing {
        if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::None
        } else if !streaming {
            Framing::Length
        } else if version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::Close
        }
    }

    /// A body so delimited can be followed by another response on the connection.
    pub(crate) fn allows_keep_alive(self) -> bool {
        self != Framing::Close
    }
}

thread_local! {
    /// The `date` header value and the second it was formatted for.
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// True when the response asks for the connection to close.
pub(crate) fn asks_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// Runs `f` with the current `date` header value, formatted once a second per thread, as
/// hyper does.
pub(crate) fn with_date<R>(f: impl FnOnce(&str) -> R) -> R {
    DATE.with_borrow_mut(|(secs, text)| {
        let now = SystemTime::now();
        let s = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if *secs != s || text.is_empty() {
            *secs = s;
            *text = httpdate::fmt_http_date(now);
        }
        f(text)
    })
}

/// The status line and headers, with `date` (unless given) and the framing header
/// (`content-length: length` or `transfer-encoding: chunked`; any the handler set is
/// replaced, as the engine frames the body itself), and `connection: close` on an HTTP/1.1
/// connection that is not kept.
pub(crate) fn encode(
    version: Version,
    status: StatusCode,
    headers: &HeaderMap,
    (framing, length): (Framing, u64),
    keep_alive: bool,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        96 + headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>(),
    );
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        with_date(|text| out.extend_from_slice(text.as_bytes()));
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length => {
            let _ = write!(out, "content-length: {length}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if !keep_alive && version == Version::HTTP_11 && !headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_follows_status_body_and_version() {
        let v11 = Version::HTTP_11;
        assert_eq!(
            Framing::of(StatusCode::NO_CONTENT, true, v11),
            Framing::None
        );
        assert_eq!(
            Framing::of(StatusCode::NOT_MODIFIED, false, v11),
            Framing::None
        );
        assert_eq!(Framing::of(StatusCode::OK, false, v11), Framing::Length);
        assert_eq!(Framing::of(StatusCode::OK, true, v11), Framing::Chunked);
        assert_eq!(
            Framing::of(StatusCode::OK, true, Version::HTTP_10),
            Framing::Close
        );
        assert!(!Framing::Close.allows_keep_alive());
        assert!(Framing::Chunked.allows_keep_alive());
    }

    #[test]
    fn connection_close_is_found_among_tokens() {
        let mut h = HeaderMap::new();
        assert!(!asks_close(&h));
        h.append(header::CONNECTION, "keep-alive, Close".parse().unwrap());
        assert!(asks_close(&h));
    }

    #[test]
    fn the_engine_frames_the_body_and_adds_date_and_close() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "999".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "gzip".parse().unwrap());
        let head = encode(
            Version::HTTP_11,
            StatusCode::OK,
            &h,
            (Framing::Chunked, 0),
            false,
        );
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ndate: "));
        assert!(text.ends_with("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"));
        assert!(!text.contains("999") && !text.contains("gzip"), "{text}");

        let head = encode(
            Version::HTTP_10,
            StatusCode::NOT_FOUND,
            &HeaderMap::new(),
            (Framing::Length, 12),
            true,
        );
        let text = String::from_utf8(head).unwrap();
        assert!(text.starts_with("HTTP/1.0 404 Not Found\r\ndate: "));
        assert!(text.ends_with("\r\ncontent-length: 12\r\n\r\n"));
    }
}
