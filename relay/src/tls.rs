//! TLS for the relay (`wss://`): the server configuration from PEM (with
//! client certificates required when a client CA is given), and the byte
//! stream a connection runs over once accepted, plain TCP or TLS.
//!
//! rustls with the ring provider, passed explicitly: nothing depends on a
//! process-wide default provider.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ServerConfig, WebPkiClientVerifier};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The relay's TLS settings, PEM text (the `relay` binary reads them from
/// the files its flags name; the controller passes what it generated).
#[derive(Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The server's certificate chain.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// When set, clients must present a certificate this CA signed.
    pub client_ca_pem: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("client_ca_pem", &self.client_ca_pem)
            .finish()
    }
}

fn certificates(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what}: unreadable PEM: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what}: no CERTIFICATE block in the PEM text"));
    }
    Ok(certs)
}

/// The acceptor for `settings`, or what is wrong with them.
pub(crate) fn acceptor(settings: &TlsSettings) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certificates(&settings.cert_pem, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(settings.key_pem.as_bytes())
        .map_err(|e| format!("private key: no usable key in the PEM text: {e}"))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match &settings.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(pem, "client CA")? {
                roots.add(cert).map_err(|e| format!("client CA: {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("client CA: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| format!("certificate and key: {e}"))?;
    // Load-test clients do a full handshake per connection: tickets and a
    // session cache would only cost memory and work per connection.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// An accepted connection's byte stream. The TLS session is boxed: it is
/// large inline, and plain connections should not pay for it.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked_and_the_key_never_prints() {
        let (ca, server) = crate::pki::bundled().unwrap();
        let ok =
            TlsSettings { cert_pem: server.cert.clone(), key_pem: server.key.clone(), client_ca_pem: None };
        assert!(acceptor(&ok).is_ok());
        assert!(!format!("{ok:?}").contains(&server.key));
        let mutual = TlsSettings { client_ca_pem: Some(ca), ..ok.clone() };
        assert!(acceptor(&mutual).is_ok());
        let no_cert = TlsSettings { cert_pem: "junk".into(), ..ok.clone() };
        assert!(acceptor(&no_cert).err().unwrap().contains("no CERTIFICATE"));
        let no_key = TlsSettings { key_pem: server.cert.clone(), ..ok.clone() };
        assert!(acceptor(&no_key).err().unwrap().contains("private key"));
        let other = crate::pki::bundled().unwrap().1;
        let mismatch = TlsSettings { key_pem: other.key, ..ok };
        assert!(acceptor(&mismatch).is_err(), "a key that is not the certificate's");
    }
}
