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
    /// resumes too), that accepts any certificate whose signatures verify.
    pub fn new(alpn: Alpn) -> Result<Self, String> {
        #[allow(deprecated)] // see the engine's tls.rs: `ring` builds everywhere
        let provider = Arc::new(rustls::crypto::ring::default_provider());
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
}
