//! A minimal incremental HTTP/1.1 response decoder for the load client: status line and
//! headers via `httparse`, then the body framed by Content-Length or chunked encoding.
//! Hand-rolled rather than hyper's client so one client core can out-read the servers it
//! measures: body bytes are handed out straight from the read buffer, never copied.

use std::io;

/// A piece of a response, handed to the caller's sink in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Part<'a> {
    /// Status line and headers parsed; carries the status code.
    Head(u16),
    /// Body bytes (already de-chunked).
    Body(&'a [u8]),
    /// The response is complete; the connection may carry the next one.
    End,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Head,
    /// Content-Length body with this many bytes left.
    Length(u64),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// Inside a chunk with this many data bytes left.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkDataEnd,
    /// Trailer lines after the last (zero-size) chunk, up to the empty line.
    Trailer,
}

/// Decodes one response after another from a byte stream.
#[derive(Debug)]
pub struct ResponseDecoder {
    state: State,
}

impl Default for ResponseDecoder {
    fn default() -> Self {
        Self { state: State::Head }
    }
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

impl ResponseDecoder {
    /// Feeds buffered bytes; calls `sink` for each part found. Stops right after a response's
    /// [`Part::End`] so the caller can send the next request. Returns how many bytes were
    /// used and whether a response ended; unused bytes (an incomplete head or chunk-size
    /// line) must be offered again with more data appended.
    pub fn feed(
        &mut self,
        buf: &[u8],
        sink: &mut impl FnMut(Part<'_>),
    ) -> io::Result<(usize, bool)> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            match self.state {
                State::Head => {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut resp = httparse::Response::new(&mut headers);
                    let n = match resp
                        .parse(rest)
                        .map_err(|e| invalid(format!("bad response head: {e}")))?
                    {
                        httparse::Status::Complete(n) => n,
                        httparse::Status::Partial => return Ok((pos, false)),
                    };
                    let status = resp.code.unwrap_or(0);
                    self.state = body_state(resp.headers)?;
                    pos += n;
                    sink(Part::Head(status));
                    if let State::Length(0) = self.state {
                        return Ok(self.finish(pos, sink));
                    }
                }
                State::Length(left) => {
                    if rest.is_empty() {
                        return Ok((pos, false));
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink(Part::Body(&rest[..take]));
                    pos += take;
                    self.state = State::Length(left - take as u64);
                    if left == take as u64 {
                        return Ok(self.finish(pos, sink));
                    }
                }
                State::ChunkSize => {
                    let Some(eol) = find_crlf(rest) else {
                        return Ok((pos, false));
                    };
                    let size = parse_chunk_size(&rest[..eol])?;
                    pos += eol + 2;
                    self.state = if size == 0 {
                        State::Trailer
                    } else {
                        State::ChunkData(size)
                    };
                }
                State::ChunkData(left) => {
                    if rest.is_empty() {
                        return Ok((pos, false));
                    }
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    sink(Part::Body(&rest[..take]));
                    pos += take;
                    self.state = if left == take as u64 {
                        State::ChunkDataEnd
                    } else {
                        State::ChunkData(left - take as u64)
                    };
                }
                State::ChunkDataEnd => {
                    if rest.len() < 2 {
                        return Ok((pos, false));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(invalid("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailer => {
                    let Some(eol) = find_crlf(rest) else {
                        return Ok((pos, false));
                    };
                    pos += eol + 2;
                    if eol == 0 {
                        return Ok(self.finish(pos, sink));
                    }
                }
            }
        }
    }

    fn finish(&mut self, pos: usize, sink: &mut impl FnMut(Part<'_>)) -> (usize, bool) {
        self.state = State::Head;
        sink(Part::End);
        (pos, true)
    }
}

fn body_state(headers: &[httparse::Header<'_>]) -> io::Result<State> {
    let mut state = State::Length(0);
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.eq_ignore_ascii_case(b"chunked") {
                return Ok(State::ChunkSize);
            }
            return Err(invalid("unsupported transfer-encoding"));
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            state = State::Length(len.ok_or_else(|| invalid("bad content-length"))?);
        }
    }
    Ok(state)
}

fn parse_chunk_size(line: &[u8]) -> io::Result<u64> {
    // Chunk extensions (";name=value") are legal and ignored.
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = std::str::from_utf8(hex).map_err(|_| invalid("bad chunk size"))?;
    u64::from_str_radix(hex.trim(), 16).map_err(|_| invalid(format!("bad chunk size {hex:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as reads would deliver it.
    fn decode(input: &[u8], step: usize) -> (Vec<u16>, Vec<u8>, usize) {
        let (mut dec, mut buf) = (ResponseDecoder::default(), Vec::new());
        let (mut heads, mut body, mut ends) = (Vec::new(), Vec::new(), 0);
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                let (used, _) = dec
                    .feed(&buf, &mut |p| match p {
                        Part::Head(s) => heads.push(s),
                        Part::Body(b) => body.extend_from_slice(b),
                        Part::End => ends += 1,
                    })
                    .unwrap();
                buf.drain(..used);
                if used == 0 {
                    break;
                }
            }
        }
        (heads, body, ends)
    }

    #[test]
    fn decodes_length_and_chunked_responses_back_to_back_at_any_split() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello\
HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n\
HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        for step in [1, 2, 7, input.len()] {
            let (heads, body, ends) = decode(input, step);
            assert_eq!(heads, [200, 200, 404], "step {step}");
            assert_eq!(body, b"helloabc0123456789", "step {step}");
            assert_eq!(ends, 3, "step {step}");
        }
    }

    #[test]
    fn rejects_garbage_chunk_sizes() {
        let mut dec = ResponseDecoder::default();
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(dec.feed(input, &mut |_| {}).is_err());
    }
}
