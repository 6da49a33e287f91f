//! The engine's TLS 1.3 records against rustls's own client, in memory: a handshake done by
//! rustls, then records both ways, key updates from either side, `close_notify`, and the
//! faults a hostile client can send, each answered with the alert RFC 8446 names.

use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::ClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::ConnectionState;
use rustls::SupportedCipherSuite;

use super::*;
use crate::tls::TlsConfig;

#[allow(deprecated)]
fn suites() -> [SupportedCipherSuite; 3] {
    use rustls::crypto::ring::cipher_suite as s;
    [
        s::TLS13_AES_128_GCM_SHA256,
        s::TLS13_AES_256_GCM_SHA384,
        s::TLS13_CHACHA20_POLY1305_SHA256,
    ]
}

/// A client config offering `suite` alone, trusting the server's certificate.
#[allow(deprecated)]
fn client_config(suite: SupportedCipherSuite, der: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.to_vec().into()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.enable_secret_extraction = true;
    Arc::new(config)
}

/// The engine's server config and the certificate's DER.
fn server_config() -> (Arc<rustls::ServerConfig>, Vec<u8>) {
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = crate::tls::tests::self_signed();
    let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), None).unwrap();
    let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    (tls.server_config(), der.to_vec())
}

/// Drives `server` over what the client sent (`incoming`, consumed as processed), its
/// handshake records to `out`, until it waits for more or can send application data.
fn server_step(server: &mut UnbufferedServerConnection, incoming: &mut Vec<u8>, out: &mut Vec<u8>) {
    loop {
        let status = server.process_tls_records(incoming);
        let discard = status.discard;
        let go_on = match status.state.unwrap() {
            ConnectionState::EncodeTlsData(mut d) => {
                let mut buf = vec![0; 32 * 1024];
                let n = d.encode(&mut buf).unwrap();
                out.extend_from_slice(&buf[..n]);
                true
            }
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                true
            }
            ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => false,
            _ => panic!("unexpected state during the handshake"),
        };
        incoming.drain(..discard);
        if !go_on {
            return;
        }
    }
}

/// A finished handshake: rustls's client and the server's records.
fn connect(suite: SupportedCipherSuite) -> (ClientConnection, Records) {
    let (config, der) = server_config();
    let mut server = UnbufferedServerConnection::new(config).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_config(suite, &der), name).unwrap();
    client.set_buffer_limit(None);
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        server_step(&mut server, &mut to_server, &mut to_client);
        client.read_tls(&mut &to_client[..]).unwrap();
        to_client.clear();
        client.process_new_packets().unwrap();
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
    }
    assert!(!server.is_handshaking() && to_server.is_empty());
    let records = Records::take_over(server).unwrap();
    (client, records)
}

/// What the client has sent, as the server's plaintext (all of it consumed).
fn to_server(client: &mut ClientConnection, records: &mut Records, out: &mut Vec<u8>) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let mut plain = Vec::new();
    let opened = records.open(&mut wire, &mut plain, out).unwrap();
    assert_eq!(opened.used, wire.len(), "whole records");
    plain
}

/// `wire` read by the client: the plaintext it gives.
fn to_client(client: &mut ClientConnection, wire: &[u8]) -> Vec<u8> {
    let mut rest = wire;
    let mut plain = Vec::new();
    loop {
        client.process_new_packets().unwrap();
        match client.reader().read_to_end(&mut plain) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        if rest.is_empty() {
            return plain;
        }
        client.read_tls(&mut rest).unwrap();
    }
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn records_go_both_ways_with_rustls_in_every_tls13_suite() {
    for suite in suites() {
        let (mut client, mut records) = connect(suite);
        for n in [1, 100, 16 * 1024, 16 * 1024 + 1, 70_000] {
            let data = pattern(n);
            client.writer().write_all(&data).unwrap();
            let mut out = Vec::new();
            assert_eq!(to_server(&mut client, &mut records, &mut out), data);
            assert!(out.is_empty(), "nothing owed");

            let mut sealed = Vec::new();
            records.seal(&data, &mut sealed).unwrap();
            assert_eq!(sealed.len(), records.sealed_len(n), "{n} bytes");
            assert_eq!(to_client(&mut client, &sealed), data, "{:?}", suite.suite());
        }
    }
}

#[test]
fn only_whole_records_are_consumed() {
    let (mut client, mut records) = connect(suites()[0]);
    client.writer().write_all(b"first").unwrap();
    client.writer().write_all(b"second").unwrap();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    let first = 5 + 5 + 1 + 16;
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    for cut in [3, first, first + 7] {
        let opened = records.open(&mut wire[..cut].to_vec(), &mut plain, &mut out);
        let used = opened.unwrap().used;
        assert_eq!(used, if cut < first { 0 } else { first }, "cut at {cut}");
        plain.clear();
        // Start over with the same records: rewind the sequence number.
        records.rx.seq -= u64::from(used > 0);
    }
    let opened = records.open(&mut wire, &mut plain, &mut out).unwrap();
    assert_eq!((opened.used, &plain[..]), (wire.len(), &b"firstsecond"[..]));
}

#[test]
fn a_clients_key_update_is_followed_and_answered() {
    for suite in suites() {
        let (mut client, mut records) = connect(suite);
        for round in 0..3 {
            client.refresh_traffic_keys().unwrap();
            client.writer().write_all(b"after the update").unwrap();
            let mut out = Vec::new();
            let plain = to_server(&mut client, &mut records, &mut out);
            assert_eq!(plain, b"after the update", "round {round}");
            assert!(!out.is_empty(), "the server's own KeyUpdate, as asked");
            records.seal(b"reply", &mut out).unwrap();
            assert_eq!(to_client(&mut client, &out), b"reply", "round {round}");
        }
    }
}

#[test]
fn the_server_updates_its_key_at_the_suites_limit() {
    let (mut client, mut records) = connect(suites()[0]);
    assert_eq!(records.limit, 1 << 24, "AES-GCM's limit");
    records.limit = 4;
    let mut wire = Vec::new();
    for i in 0..10u8 {
        records.seal(&[b'a' + i], &mut wire).unwrap();
    }
    assert_eq!(to_client(&mut client, &wire), b"abcdefghij");
    assert!(records.tx.seq < 4, "sealing with a new key");
    client.writer().write_all(b"still there").unwrap();
    assert_eq!(
        to_server(&mut client, &mut records, &mut Vec::new()),
        b"still there"
    );
}

#[test]
fn close_notify_ends_the_stream_and_what_follows_is_ignored() {
    let (mut client, mut records) = connect(suites()[2]);
    client.writer().write_all(b"last words").unwrap();
    client.send_close_notify();
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire.extend_from_slice(b"trailing garbage");
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let opened = records.open(&mut wire, &mut plain, &mut out).unwrap();
    assert_eq!(
        opened,
        Opened {
            used: wire.len(),
            closed: true
        }
    );
    assert_eq!(plain, b"last words");
}

/// A client whose records the test writes itself: the keys of a real handshake's client.
struct Crafted {
    tx: Direction,
    rx: Direction,
    records: Records,
}

#[allow(deprecated)]
fn crafted(suite: SupportedCipherSuite) -> Crafted {
    let (mut client, records) = connect(suite);
    // Session tickets the server sent after the handshake: read before taking the keys.
    let _ = to_client(&mut client, &[]);
    let secrets = client.dangerous_extract_secrets().unwrap();
    Crafted {
        tx: Direction::new(secrets.tx).unwrap(),
        rx: Direction::new(secrets.rx).unwrap(),
        records,
    }
}

impl Crafted {
    fn record(&mut self, typ: u8, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        seal(&mut self.tx, typ, plain, &mut out).unwrap();
        out
    }

    /// Opens `wire` on the server: the error's text and the alert it sent, if any.
    fn refused(&mut self, mut wire: Vec<u8>) -> (String, Option<u8>) {
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let err = self
            .records
            .open(&mut wire, &mut plain, &mut out)
            .unwrap_err();
        (
            err.to_string(),
            (!out.is_empty()).then(|| self.alert(&mut out)),
        )
    }

    /// The description of the fatal alert in `wire`, opened with the client's keys.
    fn alert(&mut self, wire: &mut [u8]) -> u8 {
        let header: [u8; HEADER] = wire[..HEADER].try_into().unwrap();
        let (key, nonce) = self.rx.next().unwrap();
        let plain = key
            .open_in_place(nonce, aead::Aad::from(header), &mut wire[HEADER..])
            .unwrap();
        assert_eq!(plain[..], [2, plain[1], ALERT], "a fatal alert");
        plain[1]
    }
}

#[test]
fn padding_after_the_content_type_is_stripped() {
    let mut c = crafted(suites()[1]);
    let mut wire = c.record(APPLICATION_DATA, b"hello");
    // `record` appends its type byte last: a zero one is padding after the real type.
    let padded = [b"padded".as_slice(), &[APPLICATION_DATA], &[0; 40]].concat();
    wire.extend(c.record(0, &padded));
    let (mut plain, mut out) = (Vec::new(), Vec::new());
    let opened = c.records.open(&mut wire, &mut plain, &mut out).unwrap();
    assert_eq!(
        opened,
        Opened {
            used: wire.len(),
            closed: false
        }
    );
    assert_eq!(plain, b"hellopadded");
}

#[test]
fn faults_close_the_connection_with_the_alert_the_rfc_names() {
    type Case = (&'static str, fn(&mut Crafted) -> Vec<u8>, Option<u8>);
    let cases: [Case; 12] = [
        (
            "a changed tag",
            |c| {
                let mut r = c.record(APPLICATION_DATA, b"x");
                *r.last_mut().unwrap() ^= 1;
                r
            },
            Some(BAD_RECORD_MAC),
        ),
        (
            "a record sealed out of order",
            |c| {
                let _skipped = c.record(APPLICATION_DATA, b"x");
                c.record(APPLICATION_DATA, b"y")
            },
            Some(BAD_RECORD_MAC),
        ),
        (
            "an unprotected change_cipher_spec",
            |_| vec![CHANGE_CIPHER_SPEC, 3, 3, 0, 1, 1],
            Some(UNEXPECTED_MESSAGE),
        ),
        (
            "an unprotected alert",
            |_| vec![ALERT, 3, 3, 0, 2, 2, 40],
            Some(UNEXPECTED_MESSAGE),
        ),
        (
            "an unknown record type",
            |_| vec![99, 3, 3, 0, 1, 0],
            Some(UNEXPECTED_MESSAGE),
        ),
        (
            "a record over the limit",
            |_| {
                let mut r = vec![APPLICATION_DATA, 3, 3];
                r.extend_from_slice(&((MAX_CIPHERTEXT + 1) as u16).to_be_bytes());
                r
            },
            Some(RECORD_OVERFLOW),
        ),
        (
            "a record of padding alone",
            |c| {
                let mut r = c.record(0, &[0; 3]);
                r[0] = APPLICATION_DATA;
                r
            },
            Some(UNEXPECTED_MESSAGE),
        ),
        (
            "a handshake message other than KeyUpdate",
            |c| c.record(HANDSHAKE, &[4, 0, 0, 0]),
            Some(UNEXPECTED_MESSAGE),
        ),
        (
            "a KeyUpdate cut short",
            |c| c.record(HANDSHAKE, &[KEY_UPDATE, 0, 0]),
            Some(DECODE_ERROR),
        ),
        (
            "a KeyUpdate with an unknown request",
            |c| c.record(HANDSHAKE, &[KEY_UPDATE, 0, 0, 1, 2]),
            Some(ILLEGAL_PARAMETER),
        ),
        (
            "records without data, many",
            |c| {
                (0..=MAX_IDLE_RECORDS)
                    .flat_map(|_| c.record(APPLICATION_DATA, b""))
                    .collect()
            },
            Some(UNEXPECTED_MESSAGE),
        ),
        (
            "the peer's fatal alert",
            |c| c.record(ALERT, &[2, 40]),
            None,
        ),
    ];
    for (what, make, alert) in cases {
        let mut c = crafted(suites()[0]);
        let wire = make(&mut c);
        let (err, sent) = c.refused(wire);
        assert_eq!(sent, alert, "{what}: {err}");
        assert!(err.starts_with("TLS: "), "{what}: {err}");
    }
}

#[test]
fn an_idle_record_layer_is_small() {
    // Two directions' unexpanded keys and rustls's key schedule behind one pointer.
    let size = std::mem::size_of::<Records>();
    assert!(size <= 192, "{size} B");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever bytes arrive, opening them returns (records consumed, or an error and the
    /// alert for it) and never panics; valid records after a header of garbage are never
    /// taken as data.
    #[test]
    fn any_bytes_are_refused_or_consumed_without_a_panic(
        mut wire in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        typ in proptest::prelude::any::<bool>(),
    ) {
        let mut c = crafted(suites()[0]);
        if typ && wire.len() >= HEADER {
            // A well-formed header over random bytes: the tag check refuses it.
            wire[0] = APPLICATION_DATA;
            wire[1] = 3;
            let len = (wire.len() - HEADER) as u16;
            wire[3..5].copy_from_slice(&len.to_be_bytes());
        }
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        match c.records.open(&mut wire.clone(), &mut plain, &mut out) {
            Ok(opened) => {
                proptest::prop_assert!(opened.used <= wire.len());
                proptest::prop_assert!(plain.is_empty(), "no data from random bytes");
            }
            Err(_) => proptest::prop_assert!(!out.is_empty(), "an alert says why"),
        }
    }
}
