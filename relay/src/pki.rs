//! Certificates made on the fly with rcgen (ring backend): a CA and the
//! certificates it signs. The controller's bundled `wss://` relay gets its
//! CA and server certificate here, and tests make their expired, misnamed,
//! untrusted and client certificates the same way.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot make a certificate: {0}")]
pub struct PkiError(#[from] rcgen::Error);

/// A certificate and its private key, PEM.
#[derive(Clone)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

impl std::fmt::Debug for Pem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pem").field("cert", &self.cert).field("key", &"<redacted>").finish()
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// A TLS server.
    Server,
    /// A TLS client (mutual TLS).
    Client,
}

/// A certificate authority that signs leaf certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Result<Ca, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Ca { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA's certificate, PEM: what a client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A server certificate for `names` (DNS names or IP addresses), valid
    /// from 1975 to 4096 (rcgen's defaults).
    pub fn server(&self, names: &[&str]) -> Result<Pem, PkiError> {
        self.leaf(names, Usage::Server, false)
    }

    /// A client certificate for mutual TLS.
    pub fn client(&self, name: &str) -> Result<Pem, PkiError> {
        self.leaf(&[name], Usage::Client, false)
    }

    /// A server certificate for `names` that expired at the start of 2021.
    pub fn expired_server(&self, names: &[&str]) -> Result<Pem, PkiError> {
        self.leaf(names, Usage::Server, true)
    }

    fn leaf(&self, names: &[&str], usage: Usage, expired: bool) -> Result<Pem, PkiError> {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        if let Some(first) = names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pem { cert: cert.pem(), key: key.serialize_pem() })
    }
}

/// What the controller's bundled `wss://` relay uses: a fresh CA (the
/// workers trust it) and a server certificate it signed for `127.0.0.1`
/// and `localhost`.
pub fn bundled() -> Result<(String, Pem), PkiError> {
    let ca = Ca::new("stampede bundled relay CA")?;
    let server = ca.server(&["127.0.0.1", "localhost"])?;
    Ok((ca.cert_pem().to_string(), server))
}
