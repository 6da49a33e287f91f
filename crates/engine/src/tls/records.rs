//! TLS 1.3 records sealed and opened by the engine once rustls's handshake is done.
//!
//! rustls hands over a finished TLS 1.3 session through its kernel API (the one made for
//! kTLS): the two directions' traffic keys and sequence numbers, and a
//! [`KernelConnection`] that derives the next keys when either side updates them. The
//! session's state machine, its handshake deframer and its record layer are dropped, so
//! an idle connection keeps its two keys (unexpanded: [`Direction`]) and rustls's key schedule:
//! about 1 KiB, where the session took 2 KiB.
//!
//! What is done here is RFC 8446's record layer after the handshake (section 5.2): records
//! of application data, alerts (`close_notify` ends the stream, any other alert is the
//! peer's error) and the one handshake message a client may send then, `KeyUpdate`
//! (section 4.6.3), answered when the client asks. Any other record fails the connection
//! with the alert the RFC names. A `KeyUpdate` must not be split over records (clients send
//! it as one record), and any other handshake message is unexpected: there is no
//! post-handshake client authentication, and a server receives no session tickets.

use std::io;

use ring::aead;
use rustls::crypto::cipher::{AeadKey, Iv, Nonce};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::ConnectionTrafficSecrets;

/// The largest plaintext a record carries (RFC 8446, 5.1).
const MAX_PLAIN: usize = 16 * 1024;
/// The largest ciphertext a record may have: the plaintext, its content type and the most
/// padding and tag an AEAD may add (RFC 8446, 5.2).
const MAX_CIPHERTEXT: usize = MAX_PLAIN + 256;
/// A record's header: type, legacy version, length.
const HEADER: usize = 5;

const CHANGE_CIPHER_SPEC: u8 = 20;
const ALERT: u8 = 21;
const HANDSHAKE: u8 = 22;
const APPLICATION_DATA: u8 = 23;

const KEY_UPDATE: u8 = 24;

const CLOSE_NOTIFY: u8 = 0;
const UNEXPECTED_MESSAGE: u8 = 10;
const BAD_RECORD_MAC: u8 = 20;
const RECORD_OVERFLOW: u8 = 22;
const ILLEGAL_PARAMETER: u8 = 47;
const DECODE_ERROR: u8 = 50;
const INTERNAL_ERROR: u8 = 80;
const USER_CANCELED: u8 = 90;

/// One of ring's AEADs, as TLS 1.3's suites use it.
#[derive(Clone, Copy)]
enum Kind {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Kind {
    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Kind::Aes128Gcm => &aead::AES_128_GCM,
            Kind::Aes256Gcm => &aead::AES_256_GCM,
            Kind::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// One direction's traffic key and IV, kept as their bytes (`AeadKey` clears them when
/// dropped), and the sequence number of its next record. The key is expanded for each
/// record, a few hundred nanoseconds beside the `send` the record goes out with, where
/// ring's expanded key would take 560 bytes for as long as the connection lives.
struct Direction {
    kind: Kind,
    key: AeadKey,
    iv: Iv,
    seq: u64,
}

impl Direction {
    /// The keys rustls hands over, for an AEAD the engine seals with.
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> Option<Direction> {
        let (kind, key, iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (Kind::Aes128Gcm, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (Kind::Aes256Gcm, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (Kind::Chacha20Poly1305, key, iv)
            }
            _ => return None,
        };
        Some(Direction { kind, key, iv, seq })
    }

    fn tag_len(&self) -> usize {
        self.kind.algorithm().tag_len()
    }

    /// The key expanded for the next record and that record's nonce; the sequence number
    /// moves on.
    fn next(&mut self) -> Result<(aead::LessSafeKey, aead::Nonce), u8> {
        let seq = self.seq;
        self.seq = seq.checked_add(1).ok_or(INTERNAL_ERROR)?;
        let key = aead::UnboundKey::new(self.kind.algorithm(), self.key.as_ref())
            .map_err(|_| INTERNAL_ERROR)?;
        let nonce = aead::Nonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0);
        Ok((aead::LessSafeKey::new(key), nonce))
    }
}

/// One record of `typ` carrying `plain` (at most 16 KiB) sealed with `dir`'s next key,
/// appended to `out`.
fn seal(dir: &mut Direction, typ: u8, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let len = plain.len() + 1 + dir.tag_len();
    let start = out.len();
    out.extend_from_slice(&[APPLICATION_DATA, 3, 3]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(plain);
    out.push(typ);
    let sealed = dir.next().and_then(|(key, nonce)| {
        let (header, body) = out[start..].split_at_mut(HEADER);
        let aad = aead::Aad::from(<[u8; HEADER]>::try_from(&*header).unwrap());
        key.seal_in_place_separate_tag(nonce, aad, body)
            .map_err(|_| INTERNAL_ERROR)
    });
    match sealed {
        Ok(tag) => {
            out.extend_from_slice(tag.as_ref());
            Ok(())
        }
        Err(_) => {
            out.truncate(start);
            Err(io::Error::other("TLS: cannot seal a record"))
        }
    }
}

/// A TLS 1.3 server connection's record layer after its handshake.
pub(crate) struct Records {
    tx: Direction,
    rx: Direction,
    /// rustls's key schedule: the next traffic keys, when a side updates them.
    kernel: Box<KernelConnection<ServerConnectionData>>,
    /// Records sealed with one key before it is replaced (the suite's confidentiality
    /// limit: 2^24 for AES-GCM, none for ChaCha20-Poly1305).
    limit: u64,
    /// Records received in a row without application data.
    idle: u8,
}

/// What [`Records::open`] did with the records it was given.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    /// Bytes of whole records consumed: what is left is the start of a record.
    pub(crate) used: usize,
    /// The peer sent `close_notify`: it sends nothing more.
    pub(crate) closed: bool,
}

/// Why a connection failed: the alert to send the peer (none when the peer's own alert
/// ended it) and the error.
type Fault = (Option<u8>, io::Error);

fn fail(alert: u8, what: &str) -> Fault {
    (Some(alert), invalid(what))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {what}"))
}

/// Records in a row that carry no application data (empty ones, key updates, warning
/// alerts) a peer may send: past them it is burning the server's time (rustls and
/// BoringSSL allow as many).
const MAX_IDLE_RECORDS: u8 = 32;

impl Records {
    /// Takes over `conn`, a TLS 1.3 server session whose handshake is done and which has no
    /// handshake bytes left to send; its configuration must allow secret extraction.
    pub(crate) fn take_over(conn: UnbufferedServerConnection) -> Result<Records, rustls::Error> {
        let (secrets, kernel) = conn.dangerous_into_kernel_connection()?;
        if kernel.protocol_version() != rustls::ProtocolVersion::TLSv1_3 {
            return Err(rustls::Error::General("not a TLS 1.3 session".into()));
        }
        let unknown = || rustls::Error::General("an AEAD the engine does not seal".into());
        Ok(Records {
            tx: Direction::new(secrets.tx).ok_or_else(unknown)?,
            rx: Direction::new(secrets.rx).ok_or_else(unknown)?,
            limit: kernel
                .negotiated_cipher_suite()
                .tls13()
                .map_or(u64::MAX, |s| s.common.confidentiality_limit),
            kernel: Box::new(kernel),
            idle: 0,
        })
    }

    /// The bytes `data` takes sealed (it is cut into records of at most 16 KiB).
    fn sealed_len(&self, data: usize) -> usize {
        let records = data.div_ceil(MAX_PLAIN).max(1);
        data + records * (HEADER + 1 + self.tx.tag_len())
    }

    /// Seals `data` as application-data records appended to `out`. An empty `data` seals
    /// nothing.
    pub(crate) fn seal(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        out.reserve(self.sealed_len(data.len()));
        for chunk in data.chunks(MAX_PLAIN) {
            self.seal_record(APPLICATION_DATA, chunk, out)?;
        }
        Ok(())
    }

    /// A `close_notify` alert, appended to `out`.
    pub(crate) fn close_notify(&mut self, out: &mut Vec<u8>) {
        let _ = self.seal_record(ALERT, &[1, CLOSE_NOTIFY], out);
    }

    /// A fatal alert, appended to `out`.
    pub(crate) fn alert(&mut self, description: u8, out: &mut Vec<u8>) {
        let _ = self.seal_record(ALERT, &[2, description], out);
    }

    /// One record of `typ` carrying `plain` (at most 16 KiB), appended to `out`: first a
    /// `KeyUpdate` when the key has sealed as many records as its suite allows.
    fn seal_record(&mut self, typ: u8, plain: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        if self.tx.seq.saturating_add(1) >= self.limit {
            self.update_tx(out)?;
        }
        seal(&mut self.tx, typ, plain, out)
    }

    /// Sends a `KeyUpdate` (not asking the peer for one) under the current key, then
    /// seals with the next.
    fn update_tx(&mut self, out: &mut Vec<u8>) -> io::Result<()> {
        seal(&mut self.tx, HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 0], out)?;
        let next = self.kernel.update_tx_secret().map_err(io::Error::other)?;
        self.tx = Direction::new(next).ok_or_else(|| io::Error::other("TLS: key update"))?;
        Ok(())
    }

    /// Opens the whole records at the start of `buf` in place: application data is
    /// appended to `plain`; what the session owes the peer (a `KeyUpdate`'s answer) is
    /// sealed into `out`. On a fault the alert that says why is sealed into `out` and the
    /// error returned: the connection is done.
    pub(crate) fn open(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> io::Result<Opened> {
        match self.open_records(buf, plain, out) {
            Ok(opened) => Ok(opened),
            Err((alert, e)) => {
                if let Some(alert) = alert {
                    self.alert(alert, out);
                }
                Err(e)
            }
        }
    }

    fn open_records(
        &mut self,
        buf: &mut [u8],
        plain: &mut Vec<u8>,
        out: &mut Vec<u8>,
    ) -> Result<Opened, Fault> {
        let mut at = 0;
        while buf.len() - at >= HEADER {
            let header: [u8; HEADER] = buf[at..at + HEADER].try_into().unwrap();
            let len = u16::from_be_bytes([header[3], header[4]]) as usize;
            if header[0] != APPLICATION_DATA {
                let what = match header[0] {
                    CHANGE_CIPHER_SPEC | ALERT | HANDSHAKE => {
                        "an unprotected record after the handshake"
                    }
                    _ => "a record of an unknown type",
                };
                return Err(fail(UNEXPECTED_MESSAGE, what));
            }
            if header[1] != 3 {
                return Err(fail(DECODE_ERROR, "a record of another protocol version"));
            }
            if len > MAX_CIPHERTEXT {
                return Err(fail(RECORD_OVERFLOW, "a record over 16 KiB"));
            }
            if buf.len() - at < HEADER + len {
                break;
            }
            let body = &mut buf[at + HEADER..at + HEADER + len];
            at += HEADER + len;
            if len < self.rx.tag_len() {
                return Err(fail(DECODE_ERROR, "a record shorter than its tag"));
            }
            let (key, nonce) = self.rx.next().map_err(|a| fail(a, "sequence number"))?;
            let opened = key
                .open_in_place(nonce, aead::Aad::from(header), body)
                .map_err(|_| fail(BAD_RECORD_MAC, "a record that does not decrypt"))?;
            // The content type is the last byte that is not padding.
            let Some(end) = opened.iter().rposition(|&b| b != 0) else {
                return Err(fail(UNEXPECTED_MESSAGE, "a record with no content type"));
            };
            let (content, typ) = (&opened[..end], opened[end]);
            if content.len() > MAX_PLAIN {
                return Err(fail(RECORD_OVERFLOW, "a plaintext over 16 KiB"));
            }
            if typ == APPLICATION_DATA && !content.is_empty() {
                self.idle = 0;
            } else if self.idle == MAX_IDLE_RECORDS {
                return Err(fail(UNEXPECTED_MESSAGE, "too many records without data"));
            } else {
                self.idle += 1;
            }
            match typ {
                APPLICATION_DATA => plain.extend_from_slice(content),
                ALERT => match content {
                    // Nothing after it counts (RFC 8446, 6.1).
                    [_, CLOSE_NOTIFY] => {
                        return Ok(Opened {
                            used: buf.len(),
                            closed: true,
                        })
                    }
                    [1, USER_CANCELED] => {}
                    [_, d] => return Err((None, invalid(&format!("the peer sent alert {d}")))),
                    _ => return Err(fail(DECODE_ERROR, "a malformed alert")),
                },
                HANDSHAKE => self.handshake(content, out)?,
                _ => return Err(fail(UNEXPECTED_MESSAGE, "an unexpected record type")),
            }
        }
        Ok(Opened {
            used: at,
            closed: false,
        })
    }

    /// A handshake record after the handshake: one `KeyUpdate`, whole.
    fn handshake(&mut self, content: &[u8], out: &mut Vec<u8>) -> Result<(), Fault> {
        let request = match content {
            [KEY_UPDATE, 0, 0, 1, request] => *request,
            [KEY_UPDATE, ..] => return Err(fail(DECODE_ERROR, "a malformed KeyUpdate")),
            [] => return Err(fail(DECODE_ERROR, "an empty handshake record")),
            _ => {
                return Err(fail(
                    UNEXPECTED_MESSAGE,
                    "a handshake message after the handshake",
                ))
            }
        };
        if request > 1 {
            return Err(fail(
                ILLEGAL_PARAMETER,
                "a KeyUpdate with an unknown request",
            ));
        }
        let internal = |e: rustls::Error| fail(INTERNAL_ERROR, &e.to_string());
        let next = self.kernel.update_rx_secret().map_err(internal)?;
        self.rx = Direction::new(next).ok_or_else(|| fail(INTERNAL_ERROR, "key update"))?;
        if request == 1 {
            self.update_tx(out)
                .map_err(|e| fail(INTERNAL_ERROR, &e.to_string()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
