//! TLS 1.3 record protection for rustls over ring that keeps a connection's traffic keys
//! as their bytes and expands them for each record.
//!
//! ring's expanded AEAD key (AES round keys and the GHASH table; the type is sized for
//! its largest algorithm) takes 560 bytes, one for each direction of every connection,
//! though an idle subscriber seals a record only when an event comes. Here a direction
//! keeps its key and IV (~64 bytes) and expands them on the stack for each record it
//! seals or opens: a few hundred nanoseconds beside the `send` the record goes out with.
//! The sealing itself is ring's, called as rustls's own ring provider calls it; rustls
//! keeps framing, sequence numbers, padding and key updates.

use ring::aead;
use rustls::crypto::cipher::{
    make_tls13_aad, AeadKey, InboundOpaqueMessage, InboundPlainMessage, Iv, MessageDecrypter,
    MessageEncrypter, Nonce, OutboundOpaqueMessage, OutboundPlainMessage, PrefixedPayload,
    Tls13AeadAlgorithm, UnsupportedOperationError,
};
use rustls::{
    CipherSuiteCommon, ConnectionTrafficSecrets, ContentType, Error, ProtocolVersion,
    SupportedCipherSuite, Tls13CipherSuite,
};

/// One of ring's AEADs, as rustls's TLS 1.3 suites use it.
#[derive(Clone, Copy)]
enum Kind {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Kind {
    fn of(suite: rustls::CipherSuite) -> Option<Kind> {
        match suite {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => Some(Kind::Aes128Gcm),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => Some(Kind::Aes256Gcm),
            rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => Some(Kind::Chacha20Poly1305),
            _ => None,
        }
    }

    fn as_static(self) -> &'static Kind {
        match self {
            Kind::Aes128Gcm => &Kind::Aes128Gcm,
            Kind::Aes256Gcm => &Kind::Aes256Gcm,
            Kind::Chacha20Poly1305 => &Kind::Chacha20Poly1305,
        }
    }

    fn algorithm(self) -> &'static aead::Algorithm {
        match self {
            Kind::Aes128Gcm => &aead::AES_128_GCM,
            Kind::Aes256Gcm => &aead::AES_256_GCM,
            Kind::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
}

/// `suites` with each TLS 1.3 suite's record protection replaced by one that keeps its keys
/// unexpanded; the rest (TLS 1.2 suites, the suites' hashes and HKDF) as given. Each
/// replacement suite is made once for the process.
pub(super) fn lean(suites: Vec<SupportedCipherSuite>) -> Vec<SupportedCipherSuite> {
    use std::sync::OnceLock;
    static MADE: OnceLock<std::sync::Mutex<Vec<&'static Tls13CipherSuite>>> = OnceLock::new();
    let made = MADE.get_or_init(Default::default);
    suites
        .into_iter()
        .map(|suite| {
            let SupportedCipherSuite::Tls13(tls13) = suite else {
                return suite;
            };
            let Some(kind) = Kind::of(tls13.common.suite) else {
                return suite;
            };
            let mut made = made.lock().unwrap_or_else(|p| p.into_inner());
            let found = made
                .iter()
                .find(|s| s.common.suite == tls13.common.suite)
                .copied();
            let lean = found.unwrap_or_else(|| {
                let s: &'static Tls13CipherSuite = Box::leak(Box::new(Tls13CipherSuite {
                    common: CipherSuiteCommon {
                        suite: tls13.common.suite,
                        hash_provider: tls13.common.hash_provider,
                        confidentiality_limit: tls13.common.confidentiality_limit,
                    },
                    hkdf_provider: tls13.hkdf_provider,
                    aead_alg: kind.as_static(),
                    quic: tls13.quic,
                }));
                made.push(s);
                s
            });
            SupportedCipherSuite::Tls13(lean)
        })
        .collect()
}

impl Tls13AeadAlgorithm for Kind {
    fn encrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageEncrypter> {
        Box::new(Keys {
            kind: *self,
            key,
            iv,
        })
    }

    fn decrypter(&self, key: AeadKey, iv: Iv) -> Box<dyn MessageDecrypter> {
        Box::new(Keys {
            kind: *self,
            key,
            iv,
        })
    }

    fn key_len(&self) -> usize {
        self.algorithm().key_len()
    }

    fn extract_keys(
        &self,
        key: AeadKey,
        iv: Iv,
    ) -> Result<ConnectionTrafficSecrets, UnsupportedOperationError> {
        Ok(match self {
            Kind::Aes128Gcm => ConnectionTrafficSecrets::Aes128Gcm { key, iv },
            Kind::Aes256Gcm => ConnectionTrafficSecrets::Aes256Gcm { key, iv },
            Kind::Chacha20Poly1305 => ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv },
        })
    }
}

/// One direction's traffic key and IV (`AeadKey` clears its bytes when dropped).
struct Keys {
    kind: Kind,
    key: AeadKey,
    iv: Iv,
}

impl Keys {
    /// The key expanded for one record, and that record's nonce.
    fn expand(&self, seq: u64) -> Result<(aead::LessSafeKey, aead::Nonce), Error> {
        let key = aead::UnboundKey::new(self.kind.algorithm(), self.key.as_ref())
            .map_err(|_| Error::General("TLS traffic key of the wrong length".into()))?;
        let nonce = aead::Nonce::assume_unique_for_key(Nonce::new(&self.iv, seq).0);
        Ok((aead::LessSafeKey::new(key), nonce))
    }

    fn tag_len(&self) -> usize {
        self.kind.algorithm().tag_len()
    }
}

impl MessageEncrypter for Keys {
    fn encrypt(
        &mut self,
        msg: OutboundPlainMessage<'_>,
        seq: u64,
    ) -> Result<OutboundOpaqueMessage, Error> {
        let total = self.encrypted_payload_len(msg.payload.len());
        let mut payload = PrefixedPayload::with_capacity(total);
        payload.extend_from_chunks(&msg.payload);
        payload.extend_from_slice(&msg.typ.to_array());
        let (key, nonce) = self.expand(seq)?;
        key.seal_in_place_append_tag(nonce, aead::Aad::from(make_tls13_aad(total)), &mut payload)
            .map_err(|_| Error::EncryptError)?;
        // TLS 1.3 records carry the legacy type and version (RFC 8446, 5.2).
        Ok(OutboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        ))
    }

    fn encrypted_payload_len(&self, payload_len: usize) -> usize {
        payload_len + 1 + self.tag_len()
    }
}

impl MessageDecrypter for Keys {
    fn decrypt<'a>(
        &mut self,
        mut msg: InboundOpaqueMessage<'a>,
        seq: u64,
    ) -> Result<InboundPlainMessage<'a>, Error> {
        let payload = &mut msg.payload;
        if payload.len() < self.tag_len() {
            return Err(Error::DecryptError);
        }
        let (key, nonce) = self.expand(seq)?;
        let aad = aead::Aad::from(make_tls13_aad(payload.len()));
        let plain = key
            .open_in_place(nonce, aad, payload)
            .map_err(|_| Error::DecryptError)?
            .len();
        payload.truncate(plain);
        msg.into_tls13_unpadded_message()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seals a record with these keys and opens it with rustls's own ring suite's keys,
    /// and the other way round: the same bytes on the wire.
    fn round_trip(suite: SupportedCipherSuite) {
        let SupportedCipherSuite::Tls13(ring_suite) = suite else {
            unreachable!()
        };
        let SupportedCipherSuite::Tls13(ours) = lean(vec![suite])[0] else {
            unreachable!()
        };
        assert_eq!(
            ring_suite.aead_alg.key_len(),
            32,
            "AeadKey::from takes 32 bytes"
        );
        let key = || {
            let mut bytes = [0u8; 32];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = i as u8 * 7 + 1;
            }
            AeadKey::from(bytes)
        };
        let iv = || Iv::new([9; 12]);
        let plain = b"data: hello\n\n";
        let chunks = [&plain[..]];
        let message = || OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_2,
            payload: rustls::crypto::cipher::OutboundChunks::new(&chunks),
        };
        for seq in [0u64, 1, 1 << 40] {
            let mut ours_enc = ours.aead_alg.encrypter(key(), iv());
            let mut ring_enc = ring_suite.aead_alg.encrypter(key(), iv());
            let a = ours_enc.encrypt(message(), seq).unwrap().encode();
            let b = ring_enc.encrypt(message(), seq).unwrap().encode();
            assert_eq!(a, b, "the same record as ring's provider seals");

            let mut ours_dec = ours.aead_alg.decrypter(key(), iv());
            let mut wire = a.clone();
            let opened = ours_dec
                .decrypt(
                    InboundOpaqueMessage::new(
                        ContentType::ApplicationData,
                        ProtocolVersion::TLSv1_2,
                        &mut wire[5..],
                    ),
                    seq,
                )
                .unwrap();
            assert_eq!(opened.payload, plain);
            assert_eq!(opened.typ, ContentType::ApplicationData);

            let mut tampered = a.clone();
            *tampered.last_mut().unwrap() ^= 1;
            let r = ours_dec.decrypt(
                InboundOpaqueMessage::new(
                    ContentType::ApplicationData,
                    ProtocolVersion::TLSv1_2,
                    &mut tampered[5..],
                ),
                seq,
            );
            assert!(
                matches!(r, Err(Error::DecryptError)),
                "a changed tag is refused"
            );
        }
    }

    #[test]
    fn records_are_sealed_and_opened_as_rings_provider_does() {
        round_trip(rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384);
        round_trip(rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256);
    }

    #[test]
    fn a_direction_keeps_its_key_unexpanded() {
        assert!(
            std::mem::size_of::<Keys>() <= 64,
            "{}",
            std::mem::size_of::<Keys>()
        );
    }

    #[test]
    #[allow(deprecated)]
    fn only_tls13_suites_are_replaced_and_each_once() {
        let all = rustls::crypto::ring::default_provider().cipher_suites;
        let a = lean(all.clone());
        let b = lean(all.clone());
        assert_eq!(a.len(), all.len());
        for ((x, y), z) in a.iter().zip(&b).zip(&all) {
            assert_eq!(x.suite(), z.suite());
            match (x, y, z) {
                (
                    SupportedCipherSuite::Tls13(x),
                    SupportedCipherSuite::Tls13(y),
                    SupportedCipherSuite::Tls13(z),
                ) => {
                    assert!(std::ptr::eq(*x, *y), "made once");
                    assert!(!std::ptr::eq(*x, *z), "replaced");
                }
                (SupportedCipherSuite::Tls12(x), _, SupportedCipherSuite::Tls12(z)) => {
                    assert!(std::ptr::eq(*x, *z), "TLS 1.2 suites kept");
                }
                _ => panic!("suite kinds differ"),
            }
        }
    }
}
