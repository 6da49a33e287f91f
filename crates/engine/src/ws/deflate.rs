//! permessage-deflate (RFC 7692): the negotiation, what the server sends compressed, and
//! the inflating of what clients send.
//!
//! The server always accepts with `server_no_context_takeover`: each message it sends is
//! compressed on its own (a sync flush from a fresh compressor, the thread's), so a socket
//! keeps no compressor, and a channel's event is compressed once for all its WebSocket
//! subscribers, as its frame is encoded once. A message under [`MIN_COMPRESSED`] bytes, or
//! one that compression would not shrink, goes out uncompressed (RSV1 clear), which the
//! extension allows.
//!
//! Clients are asked for `client_no_context_takeover` too (unless the route lets them keep
//! their context, [`WsCompression`](super::WsCompression)), so that a message in one frame
//! is inflated on the thread's inflater and a socket keeps none between messages. Under
//! the client's context takeover, a socket keeps its inflater and window from its first
//! compressed message on.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};
use http::{header, HeaderMap, HeaderValue};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};

/// Messages shorter than this are sent uncompressed.
pub const MIN_COMPRESSED: usize = 64;

/// The compression level of what the server sends (zlib's default).
const LEVEL: u32 = 6;

/// The 4 bytes a sync flush ends with: a sender strips them from each message and a
/// receiver appends them (RFC 7692 §7.2.1-2).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// The extension as accepted for one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflate {
    /// The client resets its compressor for each message: no inflater is kept between them.
    pub(crate) client_no_context_takeover: bool,
    /// The window the server's messages may refer back over (`server_max_window_bits`).
    pub(crate) server_window_bits: u8,
}

/// The first permessage-deflate offer in `headers` the server can accept, and the
/// `Sec-WebSocket-Extensions` value that accepts it (asking for
/// `client_no_context_takeover` unless `client_context_takeover`). Offers with unknown or
/// repeated parameters, or bad values, are declined (RFC 7692 §5); so is one that limits
/// the server's window to 8 bits, which zlib's raw deflate cannot keep to.
pub(crate) fn negotiate(
    headers: &HeaderMap,
    client_context_takeover: bool,
) -> Option<(Deflate, HeaderValue)> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|offer| accept_offer(offer, client_context_takeover))
}

fn accept_offer(offer: &str, client_context_takeover: bool) -> Option<(Deflate, HeaderValue)> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut deflate = Deflate {
        client_no_context_takeover: !client_context_takeover,
        server_window_bits: 15,
    };
    let mut server_bits_asked = false;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let bits = |v: Option<&str>| -> Option<u8> {
            let v = v?;
            if v.starts_with('0') {
                return None;
            }
            v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => {
                deflate.client_no_context_takeover = true;
                1
            }
            "server_max_window_bits" => {
                deflate.server_window_bits = bits(value)?;
                server_bits_asked = true;
                2
            }
            "client_max_window_bits" => {
                if value.is_some() {
                    bits(value)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    if deflate.server_window_bits < 9 {
        return None;
    }
    let mut answer = String::from("permessage-deflate; server_no_context_takeover");
    if deflate.client_no_context_takeover {
        answer.push_str("; client_no_context_takeover");
    }
    if server_bits_asked {
        answer.push_str(&format!(
            "; server_max_window_bits={}",
            deflate.server_window_bits
        ));
    }
    Some((deflate, HeaderValue::from_str(&answer).ok()?))
}

/// `payload` compressed as one message's payload; `None` when under [`MIN_COMPRESSED`]
/// bytes or not made smaller.
fn compress(payload: &[u8], window_bits: u8) -> Option<Vec<u8>> {
    if payload.len() < MIN_COMPRESSED {
        return None;
    }
    let blocks = crate::compress::deflate_blocks(LEVEL, window_bits, payload).ok()?;
    let body = blocks.strip_suffix(&TAIL).unwrap_or(&blocks);
    (body.len() < payload.len()).then(|| body.to_vec())
}

/// `z` (a message's compressed payload) as one final server frame of `kind`, RSV1 set.
fn compressed(z: Vec<u8>, kind: Data) -> Frame {
    let mut f = Frame::message(z, OpCode::Data(kind), true);
    f.header_mut().rsv1 = true;
    f
}

/// Appends `data` to `out` as one final server frame of `kind`: with permessage-deflate's
/// `window_bits`, compressed when [`compress`] shrinks it; as it is otherwise.
pub(crate) fn frame_into(data: Bytes, kind: Data, window_bits: Option<u8>, out: &mut Vec<u8>) {
    let frame = match window_bits.and_then(|bits| compress(&data, bits)) {
        Some(z) => compressed(z, kind),
        None => Frame::message(data, OpCode::Data(kind), true),
    };
    out.reserve(frame.len());
    // Writing to a Vec cannot fail.
    let _ = frame.format(out);
}

/// An encoded server frame (unmasked, whole, as a channel encodes its events) compressed
/// for sockets that negotiated the extension with a 15-bit window; the same bytes when
/// compression would not shrink it.
pub(crate) fn compress_frame(frame: &Bytes) -> Bytes {
    let mut cursor = std::io::Cursor::new(&frame[..]);
    let Ok(Some((header, _))) = FrameHeader::parse(&mut cursor) else {
        return frame.clone();
    };
    let OpCode::Data(kind @ (Data::Text | Data::Binary)) = header.opcode else {
        return frame.clone();
    };
    if !header.is_final || header.mask.is_some() || header.rsv1 {
        return frame.clone();
    }
    match compress(&frame[cursor.position() as usize..], 15) {
        Some(z) => {
            let f = compressed(z, kind);
            let mut out = Vec::with_capacity(f.len());
            // Writing to a Vec cannot fail.
            let _ = f.format(&mut out);
            Bytes::from(out)
        }
        None => frame.clone(),
    }
}

/// Why what a client sent could not be inflated: the socket closes with this code.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) code: u16,
    pub(crate) why: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.why)
    }
}

impl std::error::Error for Refused {}

impl Refused {
    fn io(code: u16, why: &'static str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, Refused { code, why })
    }
}

/// The close code and reason of a read error that [`Inflater::inflate`] raised.
pub(crate) fn refused(e: &std::io::Error) -> Option<(u16, &'static str)> {
    e.get_ref()
        .and_then(|e| e.downcast_ref::<Refused>())
        .map(|r| (r.code, r.why))
}

thread_local! {
    /// The inflater of messages in one frame with no context to take over.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A socket's inflating side: the window kept between messages under context takeover
/// (the zlib state is made with the first compressed message), or while a message in
/// fragments is read.
pub(crate) struct Inflater {
    pub(crate) deflate: Deflate,
    z: Option<Box<Decompress>>,
}

impl Inflater {
    pub(crate) fn new(deflate: Deflate) -> Self {
        Inflater { deflate, z: None }
    }

    /// Inflates one frame's `payload` (unmasked) of a compressed message onto `out`:
    /// `first` when it is the message's first frame, `fin` when its last. `io::Error`s
    /// carry a [`Refused`]: 1009 past `room` bytes of output, 1007 for data that is not
    /// deflate.
    pub(crate) fn inflate(
        &mut self,
        payload: &[u8],
        first: bool,
        fin: bool,
        room: usize,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        if first && fin && self.deflate.client_no_context_takeover {
            return INFLATER.with_borrow_mut(|slot| {
                let z = slot.get_or_insert_with(|| Decompress::new_with_window_bits(false, 15));
                z.reset(false);
                feed(z, payload, room, out)?;
                feed(z, &TAIL, room, out)
            });
        }
        let z = self
            .z
            .get_or_insert_with(|| Box::new(Decompress::new_with_window_bits(false, 15)));
        feed(z, payload, room, out)?;
        if fin {
            feed(z, &TAIL, room, out)?;
            if self.deflate.client_no_context_takeover {
                self.z = None;
            }
        }
        Ok(())
    }
}

fn feed(
    z: &mut Decompress,
    mut input: &[u8],
    room: usize,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    let too_big = || Refused::io(1009, "message too big");
    loop {
        if out.len() == out.capacity() {
            if out.len() > room {
                return Err(too_big());
            }
            let want = out.len().max(input.len() * 2).max(256);
            out.reserve_exact(want.min(room + 1 - out.len()));
        }
        let (before, written) = (z.total_in(), out.len());
        let status = z
            .decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| Refused::io(1007, "invalid compressed data"))?;
        let used = (z.total_in() - before) as usize;
        input = &input[used..];
        if used == 0 && out.len() == written && out.len() < out.capacity() && !input.is_empty() {
            // No progress with input and room left: not a stream zlib can go on with.
            return Err(Refused::io(1007, "invalid compressed data"));
        }
        if out.len() > room {
            return Err(too_big());
        }
        match status {
            // A final block: what follows starts a new stream (nothing refers across).
            Status::StreamEnd => z.reset(false),
            Status::Ok | Status::BufError => {}
        }
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer to `v` on a route that lets clients keep their context.
    fn offer(v: &str) -> Option<(Deflate, String)> {
        offer_to(v, true)
    }

    fn offer_to(v: &str, client_context_takeover: bool) -> Option<(Deflate, String)> {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(v).unwrap(),
        );
        negotiate(&h, client_context_takeover).map(|(d, v)| (d, v.to_str().unwrap().to_string()))
    }

    #[test]
    fn offers_are_accepted_or_declined_by_their_parameters() {
        let (d, v) = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(v, "permessage-deflate; server_no_context_takeover");
        assert!(!d.client_no_context_takeover);
        assert_eq!(d.server_window_bits, 15);
        // A route that does not let clients keep their context asks them not to.
        let (d, v) = offer_to("permessage-deflate; client_max_window_bits", false).unwrap();
        assert_eq!(
            v,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert!(d.client_no_context_takeover);

        let (d, v) =
            offer("permessage-deflate; client_no_context_takeover; server_max_window_bits=\"10\"")
                .unwrap();
        assert_eq!(
            v,
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10"
        );
        assert!(d.client_no_context_takeover);
        assert_eq!(d.server_window_bits, 10);

        // Declined: unknown, repeated, or bad parameters; a window the server cannot keep to;
        // another extension.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits=8",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        // The first acceptable offer of several.
        let (d, _) = offer("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover").unwrap();
        assert!(d.client_no_context_takeover);
        assert_eq!(d.server_window_bits, 15);
    }

    /// A client's compressed message: raw deflate with a sync flush, the tail stripped,
    /// from `z` (kept between messages for context takeover).
    fn client_compress(z: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + 64);
        z.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn inflates_messages_with_and_without_context_takeover() {
        let text = b"the same words, the same words, the same words again".repeat(20);
        for no_takeover in [false, true] {
            let mut inflater = Inflater::new(Deflate {
                client_no_context_takeover: no_takeover,
                server_window_bits: 15,
            });
            let mut z = flate2::Compress::new(flate2::Compression::default(), false);
            for _ in 0..3 {
                if no_takeover {
                    z.reset();
                }
                let c = client_compress(&mut z, &text);
                // In two frames, split anywhere.
                let mut out = Vec::new();
                inflater
                    .inflate(&c[..c.len() / 3], true, false, 1 << 20, &mut out)
                    .unwrap();
                assert!(inflater.z.is_some());
                inflater
                    .inflate(&c[c.len() / 3..], false, true, 1 << 20, &mut out)
                    .unwrap();
                assert_eq!(out, text);
                assert_eq!(inflater.z.is_none(), no_takeover);
                // In one frame: without takeover, on the thread's inflater (the socket
                // keeps none).
                if no_takeover {
                    z.reset();
                }
                let c = client_compress(&mut z, &text);
                let mut out = Vec::new();
                inflater.inflate(&c, true, true, 1 << 20, &mut out).unwrap();
                assert_eq!(inflater.z.is_none(), no_takeover);
                assert_eq!(out, text);
            }
        }
    }

    #[test]
    fn refuses_what_inflates_past_its_room_and_what_is_not_deflate() {
        let mut inflater = Inflater::new(Deflate {
            client_no_context_takeover: false,
            server_window_bits: 15,
        });
        let mut z = flate2::Compress::new(flate2::Compression::best(), false);
        // 4 MiB of zeros compress to a few KiB.
        let bomb = client_compress(&mut z, &vec![0; 4 << 20]);
        assert!(bomb.len() < 8 << 10);
        let mut out = Vec::new();
        let e = inflater
            .inflate(&bomb, true, true, 1 << 20, &mut out)
            .unwrap_err();
        assert_eq!(refused(&e), Some((1009, "message too big")));
        assert!(out.capacity() <= (1 << 20) + 1);

        let mut inflater = Inflater::new(Deflate {
            client_no_context_takeover: false,
            server_window_bits: 15,
        });
        let e = inflater
            .inflate(
                &[0xff, 0xff, 0xff, 0xff],
                true,
                true,
                1 << 20,
                &mut Vec::new(),
            )
            .unwrap_err();
        assert_eq!(refused(&e), Some((1007, "invalid compressed data")));
    }

    #[test]
    fn server_messages_are_compressed_when_that_shrinks_them() {
        let data = Bytes::from("hello hello hello hello ".repeat(10));
        let mut out = Vec::new();
        frame_into(data.clone(), Data::Text, Some(15), &mut out);
        let mut cursor = std::io::Cursor::new(&out[..]);
        let (header, len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
        assert!(header.rsv1 && header.is_final && header.mask.is_none());
        let payload = &out[cursor.position() as usize..];
        assert_eq!(payload.len() as u64, len);
        assert!(payload.len() < data.len());
        let mut inflater = Inflater::new(Deflate {
            client_no_context_takeover: true,
            server_window_bits: 15,
        });
        let mut plain = Vec::new();
        inflater
            .inflate(payload, true, true, 1 << 20, &mut plain)
            .unwrap();
        assert_eq!(plain, data);
        // A channel's frame, compressed from its encoded form: the same bytes.
        let encoded = {
            let mut v = Vec::new();
            let _ = Frame::message(data.clone(), OpCode::Data(Data::Text), true).format(&mut v);
            Bytes::from(v)
        };
        assert_eq!(compress_frame(&encoded), Bytes::from(out));

        // Short, or not made smaller: as it is.
        for data in [
            Bytes::from_static(b"hi"),
            Bytes::from((0..=255u8).collect::<Vec<_>>()),
        ] {
            let mut out = Vec::new();
            frame_into(data.clone(), Data::Binary, Some(15), &mut out);
            let mut cursor = std::io::Cursor::new(&out[..]);
            let (header, _) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(!header.rsv1);
            assert_eq!(&out[cursor.position() as usize..], &data[..]);
        }
    }
}
