//! HTTP/1.1 chunked transfer coding (RFC 9112 §7.1): a size line, the data, a CRLF; the
//! last chunk ends the body.

use bytes::BytesMut;

use super::Framing;

/// The last chunk of a chunked body (no trailers).
pub(crate) const LAST: &[u8] = b"0\r\n\r\n";

/// The CRLF that ends a chunk's data.
pub(crate) const CRLF: &[u8] = b"\r\n";

/// The size line of a chunk (`{len:x}\r\n`), formatted without `core::fmt` (a few % of a
/// small write's user time).
#[derive(Clone, Copy)]
pub(crate) struct SizeLine {
    buf: [u8; 18],
    at: u8,
}

impl SizeLine {
    /// No line (a body that is not chunked).
    pub(crate) const NONE: SizeLine = SizeLine {
        buf: [0; 18],
        at: 18,
    };

    /// The size line of a chunk of `len` bytes.
    pub(crate) fn new(len: usize) -> SizeLine {
        let mut buf = [0u8; 18];
        let mut at = 16;
        let mut n = len;
        loop {
            at -= 1;
            buf[at] = b"0123456789abcdef"[n & 15];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        buf[16] = b'\r';
        buf[17] = b'\n';
        SizeLine { buf, at: at as u8 }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[usize::from(self.at)..]
    }
}

/// What goes around `len` bytes of payload under `framing`: the size line before, the CRLF
/// after for a chunk; nothing otherwise.
pub(crate) fn around(framing: Framing, len: usize) -> (SizeLine, &'static [u8]) {
    if framing == Framing::Chunked {
        (SizeLine::new(len), CRLF)
    } else {
        (SizeLine::NONE, b"")
    }
}

/// Appends `parts` as one chunk under `framing` (nothing for no bytes: an empty chunk
/// would end the body).
pub(crate) fn frame_into(buf: &mut BytesMut, parts: &[&[u8]], framing: Framing) {
    let len: usize = parts.iter().map(|c| c.len()).sum();
    if len == 0 {
        return;
    }
    let (size, tail) = around(framing, len);
    buf.reserve(size.as_bytes().len() + len + tail.len());
    buf.extend_from_slice(size.as_bytes());
    parts.iter().for_each(|c| buf.extend_from_slice(c));
    buf.extend_from_slice(tail);
}

/// What follows a chunk's data on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tail {
    None,
    /// The CRLF ending a chunk.
    Crlf,
    /// The last chunk.
    Last,
    /// Both.
    CrlfLast,
}

impl Tail {
    pub(crate) fn bytes(self) -> &'static [u8] {
        match self {
            Tail::None => b"",
            Tail::Crlf => CRLF,
            Tail::Last => LAST,
            Tail::CrlfLast => b"\r\n0\r\n\r\n",
        }
    }

    /// This tail followed by the last chunk.
    pub(crate) fn then_last(self) -> Tail {
        match self {
            Tail::None => Tail::Last,
            Tail::Crlf => Tail::CrlfLast,
            done => done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines_are_lowercase_hex() {
        for (len, line) in [
            (0, "0\r\n"),
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (0xabcdef, "abcdef\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(SizeLine::new(len).as_bytes(), line.as_bytes(), "{len}");
            assert_eq!(format!("{len:x}\r\n"), line);
        }
        assert_eq!(SizeLine::NONE.as_bytes(), b"");
    }

    #[test]
    fn frame_into_writes_one_chunk_or_the_raw_bytes() {
        let mut buf = BytesMut::new();
        frame_into(&mut buf, &[b"hello", b" ", b"world"], Framing::Chunked);
        assert_eq!(&buf[..], b"b\r\nhello world\r\n");
        let mut raw = BytesMut::new();
        frame_into(&mut raw, &[b"hello", b" ", b"world"], Framing::Close);
        assert_eq!(&raw[..], b"hello world");
        let mut none = BytesMut::new();
        frame_into(&mut none, &[b"", b""], Framing::Chunked);
        assert!(
            none.is_empty(),
            "no bytes, no chunk (an empty one ends the body)"
        );
        let big = [7u8; 70_000];
        let mut buf = BytesMut::new();
        frame_into(&mut buf, &[&big[..], b"x"], Framing::Chunked);
        assert_eq!(&buf[..7], b"11171\r\n");
        assert_eq!(buf.len(), 7 + 70_001 + 2);
        assert!(buf.ends_with(b"x\r\n"));
    }

    #[test]
    fn tails_end_a_chunk_and_the_body() {
        assert_eq!(Tail::None.then_last().bytes(), LAST);
        assert_eq!(Tail::Crlf.then_last().bytes(), b"\r\n0\r\n\r\n");
        assert_eq!(Tail::Last.then_last(), Tail::Last);
        assert_eq!(Tail::CrlfLast.then_last(), Tail::CrlfLast);
    }
}
