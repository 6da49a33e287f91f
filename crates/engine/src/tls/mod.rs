//! TLS for a server: a certificate chain and its key in PEM, served with rustls (the `ring`
//! crypto provider, which builds for every target the npm package ships without cmake or
//! NASM). ALPN offers `h2` and `http/1.1`, so browsers get HTTP/2 and share one connection
//! between all their streams to an origin. The certificate can be swapped while the server
//! runs: connections made afterwards get the new one.
//!
//! ```no_run
//! # async fn run() -> rat_engine::Result<()> {
//! use rat_engine::{App, Server, ServerConfig, TlsConfig};
//! let cert = std::fs::read("cert.pem").unwrap();
//! let key = std::fs::read("key.pem").unwrap();
//! let tls = TlsConfig::from_pem(&cert, &key, None)?;
//! let server = Server::bind("127.0.0.1:8443", App::new(), ServerConfig::default().tls(tls)).await?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, Result};

pub(crate) mod records;

/// A server's TLS settings: cheap to clone (clones share the certificate, so
/// [`set_certificate`](Self::set_certificate) on one applies to all).
#[derive(Clone)]
pub struct TlsConfig {
    resolver: Arc<Swappable>,
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// The certificate every handshake gets, replaced by [`TlsConfig::set_certificate`].
#[derive(Debug)]
struct Swappable {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Swappable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// rustls's `ring` provider: it builds for every target of the npm package with a C
/// compiler alone. (rustls deprecates it for lacking post-quantum key exchange, which its
/// `aws-lc-rs` provider has, at the price of cmake, and NASM on Windows, in every build.)
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsConfig {
    /// TLS from a PEM certificate chain (the server's certificate first, then any
    /// intermediates) and its PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC; an encrypted
    /// PKCS#8 key needs `passphrase`).
    ///
    /// # Errors
    /// [`Error::is_tls`] when the certificate or key cannot be read, or the key is not the
    /// certificate's: the message says which.
    pub fn from_pem(cert: &[u8], key: &[u8], passphrase: Option<&str>) -> Result<TlsConfig> {
        let provider = provider();
        let certified = certified_key(cert, key, passphrase, &provider)?;
        let resolver = Arc::new(Swappable {
            current: RwLock::new(Arc::new(certified)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::tls(format!("cannot configure TLS: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // A TLS 1.3 session's records are the engine's after the handshake (`records`).
        config.enable_secret_extraction = true;
        Ok(TlsConfig {
            resolver,
            config: Arc::new(config),
        })
    }

    /// Replaces the certificate and key for connections made from now on (connections
    /// already open keep theirs).
    ///
    /// # Errors
    /// As [`from_pem`](Self::from_pem); the certificate in use is kept.
    pub fn set_certificate(&self, cert: &[u8], key: &[u8], passphrase: Option<&str>) -> Result<()> {
        let certified = certified_key(cert, key, passphrase, self.config.crypto_provider())?;
        *self
            .resolver
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        Ok(())
    }

    /// rustls's configuration, which each connection's session starts from.
    pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }
}

fn certified_key(
    cert: &[u8],
    key: &[u8],
    passphrase: Option<&str>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::tls(format!("cannot read the certificate: {e}")))?;
    if chain.is_empty() {
        return Err(Error::tls(
            "cannot read the certificate: no PEM CERTIFICATE block found",
        ));
    }
    let key = private_key(key, passphrase)?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            Error::tls("the key does not match the certificate (its public key differs)")
        }
        e => Error::tls(format!("cannot use the key: {e}")),
    })
}

fn private_key(pem: &[u8], passphrase: Option<&str>) -> Result<PrivateKeyDer<'static>> {
    let encrypted =
        std::str::from_utf8(pem).is_ok_and(|s| s.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    if !encrypted {
        return PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
            Error::tls(format!(
                "cannot read the key: {e} (a PEM PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block is needed)"
            ))
        });
    }
    let Some(passphrase) = passphrase else {
        return Err(Error::tls("the key is encrypted: give its passphrase"));
    };
    let (_, der) = pkcs8::der::pem::decode_vec(pem)
        .map_err(|e| Error::tls(format!("cannot read the encrypted key: {e}")))?;
    let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice())
        .map_err(|e| Error::tls(format!("cannot read the encrypted key: {e}")))?;
    let doc = info.decrypt(passphrase).map_err(|_| {
        Error::tls("cannot decrypt the key: wrong passphrase or unsupported cipher")
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        doc.as_bytes().to_vec(),
    )))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate for `localhost` and its key, in PEM.
    pub(crate) fn self_signed() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_pair_is_accepted_and_alpn_offers_h2_first() {
        let (cert, key) = self_signed();
        let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), None).unwrap();
        assert_eq!(tls.config.alpn_protocols[0], b"h2");
        assert_eq!(tls.config.alpn_protocols[1], b"http/1.1");
    }

    #[test]
    fn bad_input_says_which_part_is_wrong() {
        let (cert, key) = self_signed();
        let (other_cert, _) = self_signed();
        let msg = |r: Result<TlsConfig>| {
            let e = r.unwrap_err();
            assert!(e.is_tls(), "{e:?}");
            assert_eq!(e.code(), "ERR_TLS");
            e.message().to_string()
        };
        let m = msg(TlsConfig::from_pem(b"garbage", key.as_bytes(), None));
        assert!(m.contains("certificate"), "{m}");
        let m = msg(TlsConfig::from_pem(cert.as_bytes(), b"garbage", None));
        assert!(m.contains("key"), "{m}");
        let m = msg(TlsConfig::from_pem(
            other_cert.as_bytes(),
            key.as_bytes(),
            None,
        ));
        assert!(m.contains("does not match"), "{m}");
        let tls = TlsConfig::from_pem(cert.as_bytes(), key.as_bytes(), None).unwrap();
        assert!(tls
            .set_certificate(other_cert.as_bytes(), key.as_bytes(), None)
            .unwrap_err()
            .is_tls());
    }
}
