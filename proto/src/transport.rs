//! TLS on the control plane, for both ends. The controller serves its
//! certificate (and may require worker certificates: mutual TLS, an
//! alternative to the fleet token); workers verify it against a CA file or
//! the system's roots. PEM files are read and checked here, so a wrong path
//! or a file that is not what it should be is an error naming the file,
//! not a failed handshake later.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The environment variables of the controller's certificate and key.
pub const CERT_ENV: &str = "STAMPEDE_FLEET_CERT";
/// See [`CERT_ENV`].
pub const KEY_ENV: &str = "STAMPEDE_FLEET_KEY";
/// The CA workers verify the controller with.
pub const CA_ENV: &str = "STAMPEDE_FLEET_CA";
/// The CA whose worker certificates the controller accepts.
pub const CLIENT_CA_ENV: &str = "STAMPEDE_FLEET_CLIENT_CA";

/// After how long without a frame from the other end each end of the
/// HTTP/2 connection pings it, and how long it waits for the answer: a
/// stalled link is noticed in about 4 s even when no message is due. Two
/// seconds, not one: during a run snapshots and their acknowledgements
/// cross every second, so no ping is needed, where one second made a ping
/// and its answer on about every other second of every link (bench (e)).
pub const KEEPALIVE: Duration = Duration::from_secs(2);
/// See [`KEEPALIVE`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The controller's TLS material.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Its certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Require worker certificates signed by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

/// A worker's TLS settings for an `https://` controller.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// Verify the controller against this CA (PEM); `None`: the system's
    /// roots.
    pub ca: Option<PathBuf>,
    /// This worker's certificate and key (PEM), for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Reads a PEM file holding at least one certificate.
fn certificates(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let pem = read(path, what)?;
    let n = CertificateDer::pem_slice_iter(&pem).filter(Result::is_ok).count();
    if n == 0 {
        return Err(format!("{what} {}: no PEM certificate in it", path.display()));
    }
    Ok(pem)
}

/// Reads a PEM file holding a private key.
fn private_key(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{what} {}: no PEM private key in it ({e})", path.display()))?;
    Ok(pem)
}

impl ServerTls {
    /// The settings from flags, falling back to the environment; `None`
    /// when neither names a certificate.
    pub fn from_sources(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<ServerTls>, String> {
        let pick = |flag: Option<PathBuf>, name: &str| {
            flag.or_else(|| env(name).filter(|v| !v.is_empty()).map(PathBuf::from))
        };
        let (cert, key, client_ca) =
            (pick(cert, CERT_ENV), pick(key, KEY_ENV), pick(client_ca, CLIENT_CA_ENV));
        match (cert, key) {
            (Some(cert), Some(key)) => Ok(Some(ServerTls { cert, key, client_ca })),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => {
                Err("--fleet-client-ca needs --fleet-cert and --fleet-key: mutual TLS is TLS".into())
            }
            _ => {
                Err("give both --fleet-cert and --fleet-key (or STAMPEDE_FLEET_CERT and STAMPEDE_FLEET_KEY)"
                    .into())
            }
        }
    }

    /// The tonic server configuration, every file read and checked.
    pub fn config(&self) -> Result<ServerTlsConfig, String> {
        let cert = certificates(&self.cert, "fleet certificate")?;
        let key = private_key(&self.key, "fleet key")?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(certificates(ca, "fleet client CA")?));
        }
        Ok(config.timeout(Duration::from_secs(10)))
    }
}

impl ClientTls {
    /// The settings from flags, falling back to the environment.
    pub fn from_sources(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ClientTls, String> {
        let ca = ca.or_else(|| env(CA_ENV).filter(|v| !v.is_empty()).map(PathBuf::from));
        let identity = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err("give both --fleet-cert and --fleet-key for mutual TLS".into()),
        };
        Ok(ClientTls { ca, identity })
    }

    /// Whether any TLS setting was given.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.identity.is_some()
    }

    fn config(&self) -> Result<ClientTlsConfig, String> {
        let mut config = ClientTlsConfig::new().timeout(Duration::from_secs(10));
        config = match &self.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(certificates(ca, "fleet CA")?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            let identity = Identity::from_pem(
                certificates(cert, "worker certificate")?,
                private_key(key, "worker key")?,
            );
            config = config.identity(identity);
        }
        Ok(config)
    }
}

/// The endpoint a worker dials: `http://` plain, `https://` with `tls`
/// (TLS settings with an `http://` URL are an error: they would be
/// silently unused), with HTTP/2 keepalive either way.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("controller address {url:?}: {e} (write it like http://10.0.0.5:7700)"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("https") => endpoint.tls_config(tls.config()?).map_err(|e| format!("fleet TLS: {e}")),
        Some("http") if tls.is_set() => Err(format!(
            "fleet TLS settings were given but the controller address {url} is http://: use https://"
        )),
        Some("http") => Ok(endpoint),
        _ => Err(format!("controller address {url:?}: give http://HOST:PORT or https://HOST:PORT")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_checked_and_named_in_errors() {
        let dir = std::env::temp_dir().join(format!("stampede-transport-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let tls = ServerTls { cert: junk.clone(), key: junk.clone(), client_ca: None };
        let err = tls.config().unwrap_err();
        assert!(
            err.contains("fleet certificate") && err.contains("junk.pem") && err.contains("no PEM"),
            "{err}"
        );
        let missing = ServerTls { cert: dir.join("nope.pem"), key: junk, client_ca: None };
        assert!(missing.config().unwrap_err().contains("nope.pem"));
        let client = ClientTls { ca: Some(dir.join("nope.pem")), identity: None };
        let err = endpoint("https://127.0.0.1:7700", &client).unwrap_err();
        assert!(err.contains("fleet CA") && err.contains("nope.pem"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn addresses_and_settings_must_agree() {
        let tls = ClientTls { ca: Some("ca.pem".into()), identity: None };
        assert!(endpoint("http://127.0.0.1:7700", &tls).unwrap_err().contains("use https://"));
        assert!(endpoint("127.0.0.1:7700", &ClientTls::default()).is_err());
        assert!(
            endpoint("ftp://127.0.0.1:7700", &ClientTls::default()).unwrap_err().contains("http://HOST:PORT")
        );
        assert!(endpoint("http://127.0.0.1:7700", &ClientTls::default()).is_ok());
        let none = |_: &str| None;
        assert!(ServerTls::from_sources(None, None, None, none).unwrap().is_none());
        assert!(ServerTls::from_sources(Some("c".into()), None, None, none).unwrap_err().contains("both"));
        assert!(
            ServerTls::from_sources(None, None, Some("ca".into()), none).unwrap_err().contains("mutual TLS")
        );
        let env = |n: &str| (n == CERT_ENV || n == KEY_ENV).then(|| format!("/x/{n}"));
        let tls = ServerTls::from_sources(None, None, None, env).unwrap().unwrap();
        assert_eq!(tls.cert, PathBuf::from("/x/STAMPEDE_FLEET_CERT"));
    }
}
