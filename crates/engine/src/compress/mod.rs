//! Response compression (gzip, br, zstd) negotiated by `Accept-Encoding`, for full bodies
//! and for streams. A stream is flushed at every chunk (an SSE event, a chunked write), so
//! each decodes on arrival: compression never holds bytes back.
//!
//! ```
//! use rat_engine::compress::{Compression, Encoding};
//! use rat_engine::ServerConfig;
//! let config = ServerConfig::default()
//!     .compression(Compression::new().encodings([Encoding::Gzip, Encoding::Zstd]));
//! ```

use std::io::Write as _;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};

use crate::error::{Error, Result};

mod shared;
pub(crate) use shared::{deflate_blocks, Coding, CrcPart, GzipTally};

/// A content coding the engine can apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `gzip` (RFC 1952), with flate2.
    Gzip,
    /// `br` (RFC 7932), with the brotli crate.
    Br,
    /// `zstd` (RFC 8878), with the zstd crate.
    Zstd,
}

impl Encoding {
    /// The coding's token in `Content-Encoding`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Br => "br",
            Encoding::Zstd => "zstd",
        }
    }

    /// The coding named `name` (`x-gzip` is gzip), in any case.
    pub fn from_name(name: &str) -> Option<Encoding> {
        [Encoding::Gzip, Encoding::Br, Encoding::Zstd]
            .into_iter()
            .find(|e| name.eq_ignore_ascii_case(e.as_str()))
            .or_else(|| {
                name.eq_ignore_ascii_case("x-gzip")
                    .then_some(Encoding::Gzip)
            })
    }

    /// The level used when none is set: cheap enough for streams.
    fn default_level(self) -> u32 {
        match self {
            Encoding::Gzip => 6,
            Encoding::Br => 4,
            Encoding::Zstd => 3,
        }
    }

    /// `level` (or the default) within this coding's range.
    fn level(self, level: Option<u32>) -> u32 {
        let level = level.unwrap_or(self.default_level());
        match self {
            Encoding::Gzip => level.min(9),
            Encoding::Br => level.min(11),
            Encoding::Zstd => level.clamp(1, 22),
        }
    }
}

/// Marks a response whose stream carries a broadcast's frames, the same bytes for many
/// subscribers: it is never given a compressor of its own. The broadcast compresses it
/// with the coding the request was offered (see [`Compression::offered`] and [`shared`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Broadcast;

/// Whether a route's responses are compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RouteCompression {
    /// As the server's [`compression`](crate::ServerConfig::compression) says.
    #[default]
    Inherit,
    /// Never.
    Off,
}

/// How a server compresses responses ([`ServerConfig::compression`]); off by default.
///
/// [`ServerConfig::compression`]: crate::ServerConfig::compression
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compression {
    encodings: Vec<Encoding>,
    threshold: usize,
    level: Option<u32>,
}

impl Default for Compression {
    fn default() -> Self {
        Compression::new()
    }
}

impl Compression {
    /// zstd, br and gzip (preferred in that order when a client accepts several equally),
    /// bodies of 1 KiB and more, each coding's default level.
    pub fn new() -> Compression {
        Compression {
            encodings: vec![Encoding::Zstd, Encoding::Br, Encoding::Gzip],
            threshold: 1024,
            level: None,
        }
    }

    /// The codings offered, in the server's order of preference.
    pub fn encodings(mut self, encodings: impl IntoIterator<Item = Encoding>) -> Self {
        self.encodings = Vec::new();
        for e in encodings {
            if !self.encodings.contains(&e) {
                self.encodings.push(e);
            }
        }
        self
    }

    /// Full bodies smaller than this are sent as they are (streams are always compressed).
    pub fn threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// The level, in each coding's own scale (gzip 0-9, br 0-11, zstd 1-22; clamped).
    pub fn level(mut self, level: u32) -> Self {
        self.level = Some(level);
        self
    }

    /// The coding for a request with this `Accept-Encoding`, if any. Per RFC 9110 §12.5.3:
    /// the highest q-value wins, ties go to the server's order, `*` stands for codings
    /// not named, `q=0` refuses. A missing, unknown or malformed header gives none (the
    /// response goes as it is, which is always allowed: never a 406).
    pub fn choose(&self, accept: Option<&HeaderValue>) -> Option<Encoding> {
        self.choose_among(accept, false)
    }

    /// [`choose`](Self::choose), leaving br out for a broadcast.
    fn choose_among(&self, accept: Option<&HeaderValue>, broadcast: bool) -> Option<Encoding> {
        let accept = accept?.to_str().ok()?;
        let mut named: Vec<(Encoding, u16)> = Vec::new();
        let mut star = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let mut q = Some(1000);
            for param in parts {
                let Some((k, v)) = param.split_once('=') else {
                    q = None;
                    break;
                };
                if k.trim().eq_ignore_ascii_case("q") {
                    q = parse_q(v.trim());
                }
            }
            let Some(q) = q else { continue };
            if name == "*" {
                star = Some(q);
            } else if let Some(e) = Encoding::from_name(name) {
                named.push((e, q));
            }
        }
        let mut best: Option<(Encoding, u16)> = None;
        for &e in &self.encodings {
            if broadcast && e == Encoding::Br {
                continue;
            }
            let q = named
                .iter()
                .find(|(n, _)| *n == e)
                .map(|(_, q)| *q)
                .or(star)
                .unwrap_or(0);
            if q > 0 && best.map_or(true, |(_, b)| q > b) {
                best = Some((e, q));
            }
        }
        best.map(|(e, _)| e)
    }

    /// A response with these headers, streaming or with a full body of `len` bytes, is
    /// one this policy compresses (for some client): a type worth it, not already coded,
    /// not marked `no-transform`, and large enough.
    pub(crate) fn wants(&self, headers: &HeaderMap, streaming: bool, len: u64) -> bool {
        if self.encodings.is_empty()
            || headers.contains_key(header::CONTENT_ENCODING)
            || headers.contains_key(header::CONTENT_RANGE)
        {
            return false;
        }
        let no_transform = headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("no-transform"))
        });
        if no_transform {
            return false;
        }
        let compressible = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(compressible_type);
        compressible && (streaming || len >= self.threshold as u64)
    }

    pub(crate) fn encoder(&self, encoding: Encoding) -> Result<Encoder> {
        Encoder::new(encoding, self.level)
    }

    /// The coding a broadcast's stream would use for a request with this
    /// `Accept-Encoding`: the negotiated one among gzip and zstd.
    pub(crate) fn offered(&self, accept: Option<&HeaderValue>) -> Option<Coding> {
        let encoding = self.choose_among(accept, true)?;
        Coding::new(encoding, self.level)
    }
}

/// `q` values: 0 to 1 with at most three decimals, as thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value = format!("{frac:0<3}").parse::<u16>().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

/// Types worth compressing: text, JSON, NDJSON, SSE, JavaScript, XML, SVG, WebAssembly.
/// Images, audio, video, archives and unknown binary (`application/octet-stream`) are left
/// alone: most are compressed already.
fn compressible_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json"
                | "application/x-ndjson"
                | "application/ndjson"
                | "application/javascript"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
        )
}

/// The compressor of one response. Each chunk given to [`chunk`](Self::chunk) comes out
/// flushed (decodable on its own arrival); [`finish`](Self::finish) ends the stream.
pub(crate) enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encoder::Gzip(_) => "Encoder(gzip)",
            Encoder::Br(_) => "Encoder(br)",
            Encoder::Zstd(_) => "Encoder(zstd)",
        })
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::handler(format!("compression failed: {e}"))
}

impl Encoder {
    fn new(encoding: Encoding, level: Option<u32>) -> Result<Encoder> {
        let level = encoding.level(level);
        Ok(match encoding {
            Encoding::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(level),
            )),
            // A 4 KiB buffer and a 64 KiB window (lgwin 16): a stream's events are small.
            Encoding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                4096,
                level,
                16,
            ))),
            Encoding::Zstd => {
                let mut z = zstd::stream::write::Encoder::new(Vec::new(), level as i32)
                    .map_err(io_error)?;
                // A 128 KiB window at most, whatever the level.
                z.window_log(17).map_err(io_error)?;
                Encoder::Zstd(z)
            }
        })
    }

    fn encoding(&self) -> Encoding {
        match self {
            Encoder::Gzip(_) => Encoding::Gzip,
            Encoder::Br(_) => Encoding::Br,
            Encoder::Zstd(_) => Encoding::Zstd,
        }
    }

    /// `data` compressed and flushed: what the client needs to decode all of it now.
    pub(crate) fn chunk(&mut self, data: &Bytes) -> Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e
                .write_all(data)
                .and_then(|()| e.flush())
                .map(|()| e.get_mut()),
            Encoder::Br(e) => e
                .write_all(data)
                .and_then(|()| e.flush())
                .map(|()| e.get_mut()),
            Encoder::Zstd(e) => e
                .write_all(data)
                .and_then(|()| e.flush())
                .map(|()| e.get_mut()),
        };
        Ok(Bytes::from(std::mem::take(out.map_err(io_error)?)))
    }

    /// The end of the compressed stream (a trailer, the last block).
    pub(crate) fn finish(self) -> Result<Bytes> {
        let out = match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(mut e) => e.flush().map(|()| e.into_inner()),
            Encoder::Zstd(e) => e.finish(),
        };
        out.map(Bytes::from).map_err(io_error)
    }

    /// `data` compressed whole.
    pub(crate) fn whole(mut self, data: &Bytes) -> Result<Bytes> {
        let mut out = self.chunk(data)?.to_vec();
        out.extend_from_slice(&self.finish()?);
        Ok(Bytes::from(out))
    }
}

/// Compresses `res` for a request that sent `accept` (its `Accept-Encoding`), when
/// `policy` wants it: sets `Content-Encoding`, drops `Content-Length` (the engine frames
/// the new body), adds `Vary: Accept-Encoding` to every response it could have compressed.
pub(crate) fn apply(policy: &Compression, accept: Option<&HeaderValue>, res: &mut crate::Response) {
    let body = res.body();
    let streaming = body.is_streaming();
    let len = http_body::Body::size_hint(body).exact().unwrap_or(0);
    if !policy.wants(res.headers(), streaming, len) {
        return;
    }
    let headers = res.headers_mut();
    let varies = headers.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if res.extensions().get::<Broadcast>().is_some() {
        return;
    }
    let Some(encoding) = policy.choose(accept) else {
        return;
    };
    let Ok(encoder) = policy.encoder(encoding) else {
        return;
    };
    let encoding = encoder.encoding();
    let body = std::mem::take(res.body_mut());
    match body.encode(encoder) {
        Ok(body) => {
            *res.body_mut() = body;
            let headers = res.headers_mut();
            headers.remove(header::CONTENT_LENGTH);
            headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(encoding.as_str()),
            );
        }
        Err(body) => *res.body_mut() = body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn choose(accept: &str) -> Option<Encoding> {
        Compression::new().choose(Some(&HeaderValue::from_str(accept).unwrap()))
    }

    #[test]
    fn negotiation_follows_q_values_then_the_server_s_order() {
        assert_eq!(Compression::new().choose(None), None);
        assert_eq!(choose("gzip, deflate, br, zstd"), Some(Encoding::Zstd));
        assert_eq!(choose("gzip"), Some(Encoding::Gzip));
        assert_eq!(choose("x-gzip"), Some(Encoding::Gzip));
        assert_eq!(choose("GZIP;Q=0.5, br;q=0.8"), Some(Encoding::Br));
        assert_eq!(choose("br;q=0, gzip;q=0.001"), Some(Encoding::Gzip));
        assert_eq!(choose("*"), Some(Encoding::Zstd));
        assert_eq!(choose("*;q=0.5, zstd;q=0"), Some(Encoding::Br));
        assert_eq!(choose("identity"), None);
        assert_eq!(choose("identity;q=0"), None, "nothing acceptable: as it is");
        assert_eq!(choose("*;q=0"), None);
        assert_eq!(choose("deflate, compress"), None);
        // Malformed entries are ignored, the rest still counts.
        assert_eq!(choose("br;q=2, gzip"), Some(Encoding::Gzip));
        assert_eq!(choose("br;q=0.1234, gzip;q=abc"), None);
        assert_eq!(choose("br;q, gzip;q=1.0"), Some(Encoding::Gzip));
        assert_eq!(choose(",,;;=, ;q=1"), None);
        let only_gzip = Compression::new().encodings([Encoding::Gzip]);
        let h = HeaderValue::from_static("br, zstd");
        assert_eq!(only_gzip.choose(Some(&h)), None);
    }

    #[test]
    fn types_worth_compressing() {
        for t in [
            "text/plain; charset=utf-8",
            "text/event-stream",
            "application/json",
            "application/x-ndjson",
            "application/problem+json",
            "image/svg+xml",
        ] {
            assert!(compressible_type(t), "{t}");
        }
        for t in [
            "image/png",
            "application/octet-stream",
            "application/zip",
            "video/mp4",
            "",
        ] {
            assert!(!compressible_type(t), "{t}");
        }
    }

    fn decode(encoding: Encoding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Encoding::Gzip => flate2::read::MultiGzDecoder::new(bytes)
                .read_to_end(&mut out)
                .map(|_| ()),
            Encoding::Br => brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .map(|_| ()),
            Encoding::Zstd => zstd::stream::read::Decoder::new(bytes)
                .unwrap()
                .read_to_end(&mut out)
                .map(|_| ()),
        }
        .unwrap();
        out
    }

    /// Decodes as much of `bytes` as has arrived, as a streaming client does.
    fn decode_prefix(encoding: Encoding, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut reader: Box<dyn std::io::Read> = match encoding {
            Encoding::Gzip => Box::new(flate2::read::GzDecoder::new(bytes)),
            Encoding::Br => Box::new(brotli::Decompressor::new(bytes, 4096)),
            Encoding::Zstd => Box::new(zstd::stream::read::Decoder::new(bytes).unwrap()),
        };
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn every_chunk_decodes_on_arrival_and_the_whole_round_trips() {
        for encoding in [Encoding::Gzip, Encoding::Br, Encoding::Zstd] {
            let mut enc = Compression::new().encoder(encoding).unwrap();
            let mut wire = Vec::new();
            let mut sent = Vec::new();
            for i in 0..20 {
                let event = format!("event: tick\ndata: {{\"n\":{i},\"name\":\"row {i}\"}}\n\n");
                wire.extend_from_slice(&enc.chunk(&Bytes::from(event.clone())).unwrap());
                sent.extend_from_slice(event.as_bytes());
                assert_eq!(
                    decode_prefix(encoding, &wire),
                    sent,
                    "{encoding:?} event {i}"
                );
            }
            wire.extend_from_slice(&enc.finish().unwrap());
            assert_eq!(decode(encoding, &wire), sent, "{encoding:?}");
            let whole = Compression::new()
                .encoder(encoding)
                .unwrap()
                .whole(&Bytes::from(sent.clone()))
                .unwrap();
            assert_eq!(decode(encoding, &whole), sent);
            assert!(
                whole.len() * 3 < sent.len(),
                "{encoding:?}: {}",
                whole.len()
            );
        }
    }
}
