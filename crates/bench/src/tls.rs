//! TLS for the load client and the bench's certificate: rustls with the `ring` provider (as
//! the engine), accepting whatever certificate the server shows (every server in the bench
//! gets the one self-signed pair [`write_self_signed`] makes), and ALPN asking for exactly
//! one protocol, so that a server cannot pick another than the scenario measures.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// The protocol a TLS scenario asks for in ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`: one request at a time per connection.
    Http1,
    /// `h2`: many streams per connection.
    H2,
}

impl Alpn {
    /// Reads the `--tls` option's value: `http1` or `h2`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "http1" | "http/1.1" => Ok(Alpn::Http1),
            "h2" => Ok(Alpn::H2),
            other => Err(format!("--tls: {other:?} is not a protocol (http1 or h2)")),
        }
    }

    fn id(self) -> &'static [u8] {
        match self {
            Alpn::Http1 => b"http/1.1",
            Alpn::H2 => b"h2",
        }
    }
}

/// Makes TLS client connections that offer one ALPN protocol and insist on getting it.
#[derive(Clone)]
pub struct TlsClient {
    connector: TlsConnector,
    /// What ALPN asks for.
    pub alpn: Alpn,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("alpn", &self.alpn)
            .finish()
    }
}

impl TlsClient {
    /// A client offering `alpn`, with rustls's default session resumption (a browser
    /// resumes too), that accepts any certificate whose signatures verify. It offers the
    /// key exchange groups in the order browsers and Node do, X25519 first (a server takes
    /// the client's first group it supports). rustls's `ring` provider lists P-384 first,
    /// whose ECDH is generic code in ring: with it a handshake cost our server 1.6 ms of CPU
    /// here, with X25519 0.3–0.4 ms, a cost no browser makes a server pay.
    pub fn new(alpn: Alpn) -> Result<Self, String> {
        use rustls::crypto::ring::kx_group;
        #[allow(deprecated)] // see the engine's tls.rs: `ring` builds everywhere
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1];
        let provider = Arc::new(provider);
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS client: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.id().to_vec()];
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            alpn,
        })
    }

    /// Runs the handshake on `tcp`; fails if the server chose another protocol than ours.
    pub async fn connect<S>(&self, tcp: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from("localhost").expect("a valid DNS name");
        let tls = self.connector.connect(name, tcp).await?;
        let chosen = tls.get_ref().1.alpn_protocol();
        // A server without ALPN speaks HTTP/1.1; one that ignores ours cannot speak h2.
        let ok = match self.alpn {
            Alpn::Http1 => matches!(chosen, None | Some(b"http/1.1")),
            Alpn::H2 => chosen == Some(b"h2"),
        };
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server chose ALPN {:?}, not {:?}",
                    chosen.map(String::from_utf8_lossy),
                    String::from_utf8_lossy(self.alpn.id())
                ),
            ));
        }
        Ok(tls)
    }
}

/// Accepts any certificate chain (the bench's is self-signed) but checks the handshake's
/// signatures as usual, so the server still proves it holds the key.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Writes a self-signed certificate for `localhost` and `127.0.0.1` (ECDSA P-256) and its
/// PKCS#8 key as `cert.pem` and `key.pem` in `dir`; returns their paths.
pub fn write_self_signed(dir: &Path) -> io::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(io::Error::other)?;
    std::fs::create_dir_all(dir)?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem())?;
    std::fs::write(&key, c.signing_key.serialize_pem())?;
    Ok((cert, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_option_values() {
        assert_eq!(Alpn::parse("http1"), Ok(Alpn::Http1));
        assert_eq!(Alpn::parse("http/1.1"), Ok(Alpn::Http1));
        assert_eq!(Alpn::parse("h2"), Ok(Alpn::H2));
        assert!(Alpn::parse("h3").unwrap_err().contains("h3"));
    }

    /// Against a server with rustls's defaults (P-384 listed first), the client's order
    /// decides: X25519, as with a browser.
    #[tokio::test]
    async fn the_key_exchange_is_x25519_as_a_browsers() {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::PrivateKeyDer;
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key = PrivateKeyDer::from_pem_slice(c.signing_key.serialize_pem().as_bytes()).unwrap();
        #[allow(deprecated)]
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![c.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (a, b) = tokio::io::duplex(64 * 1024);
        let client = TlsClient::new(Alpn::Http1).unwrap();
        let (server, client) = tokio::join!(acceptor.accept(a), client.connect(b));
        let (server, _client) = (server.unwrap(), client.unwrap());
        let group = server.get_ref().1.negotiated_key_exchange_group().unwrap();
        assert_eq!(group.name(), rustls::NamedGroup::X25519);
    }
}
