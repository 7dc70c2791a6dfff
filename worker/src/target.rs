//! Where connections go: the model's parsed URL plus its address, resolved
//! once per run, asynchronously (a slow resolver never blocks a runtime
//! thread), and for `wss://` the run's TLS client, built once.

use std::net::SocketAddr;

use stampede_model::spec::TlsSpec;
use stampede_model::target::{Scheme, TargetUrl, UrlError};

use crate::tls::{TlsClient, TlsError};

/// A target ready to connect to.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL.
    pub url: TargetUrl,
    /// Resolved address.
    pub addr: SocketAddr,
    /// For `wss://`: the TLS client every connection shares (set by
    /// [`Target::with_tls`]).
    pub tls: Option<TlsClient>,
}

/// Why a target URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a usable URL.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The host does not resolve.
    #[error("target {url:?}: cannot resolve {host:?}: {reason}")]
    Resolve {
        /// The URL.
        url: String,
        /// The host part.
        host: String,
        /// Why.
        reason: String,
    },
}

impl Target {
    /// Parses and resolves `url`.
    pub async fn resolve(url: &str) -> Result<Target, TargetError> {
        let parsed = TargetUrl::parse(url)?;
        let resolve_err =
            |reason: String| TargetError::Resolve { url: url.to_string(), host: parsed.host.clone(), reason };
        let addr = match parsed.ip() {
            Some(ip) => SocketAddr::new(ip, parsed.port),
            None => tokio::net::lookup_host((parsed.host.as_str(), parsed.port))
                .await
                .map_err(|e| resolve_err(e.to_string()))?
                .next()
                .ok_or_else(|| resolve_err("no address".into()))?,
        };
        Ok(Target { url: parsed, addr, tls: None })
    }

    /// For a `wss://` target, builds the run's TLS client from `spec`
    /// (once: every connection shares it); a `ws://` target ignores `spec`.
    pub fn with_tls(mut self, spec: &TlsSpec) -> Result<Target, TlsError> {
        if self.url.scheme == Scheme::Wss {
            self.tls = Some(TlsClient::new(spec, &self.url.host)?);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resolves_literals_and_refuses_what_it_cannot_speak() {
        let t = Target::resolve("ws://127.0.0.1:9001/ws?room=1").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.url.request_target(), "/ws?room=1");
        let t = Target::resolve("ws://[::1]/").await.unwrap();
        assert_eq!(t.addr, "[::1]:80".parse().unwrap());
        let t = Target::resolve("wss://127.0.0.1/").await.unwrap();
        assert_eq!(t.addr, "127.0.0.1:443".parse().unwrap());
        assert!(t.with_tls(&TlsSpec::default()).unwrap().tls.is_some());
        let t = Target::resolve("ws://127.0.0.1/").await.unwrap();
        assert!(t.with_tls(&TlsSpec::default()).unwrap().tls.is_none(), "ws:// ignores TLS settings");
        assert!(matches!(Target::resolve("http://x/").await, Err(TargetError::Url(_))));
    }
}
