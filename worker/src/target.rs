//! A parsed `ws://` target URL, resolved once per run rather than per
//! connection.

use std::net::{SocketAddr, ToSocketAddrs};

/// Where connections go.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// Resolved address.
    pub addr: SocketAddr,
    /// Value of the Host header.
    pub host_header: String,
    /// Path and query of the request line.
    pub path: String,
}

/// Why a target URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Not a ws:// URL.
    #[error("target {0:?} is not a ws:// URL (wss:// is not supported yet)")]
    Scheme(String),
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
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let rest = url.strip_prefix("ws://").ok_or_else(|| TargetError::Scheme(url.to_string()))?;
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(TargetError::Scheme(url.to_string()));
        }
        let with_port = if authority.starts_with('[') {
            if authority.contains("]:") { authority.to_string() } else { format!("{authority}:80") }
        } else if authority.contains(':') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let resolve_err = |reason: String| TargetError::Resolve {
            url: url.to_string(),
            host: authority.to_string(),
            reason,
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| resolve_err(e.to_string()))?
            .next()
            .ok_or_else(|| resolve_err("no address".into()))?;
        Ok(Target { url: url.to_string(), addr, host_header: authority.to_string(), path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_path() {
        let t = Target::parse("ws://127.0.0.1:9001/ws?room=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:9001".parse().unwrap());
        assert_eq!(t.host_header, "127.0.0.1:9001");
        assert_eq!(t.path, "/ws?room=1");
        let t = Target::parse("ws://[::1]/").unwrap();
        assert_eq!(t.addr, "[::1]:80".parse().unwrap());
        let t = Target::parse("ws://127.0.0.1:1?x").unwrap();
        assert_eq!(t.path, "/?x");
    }

    #[test]
    fn refuses_other_schemes() {
        assert!(matches!(Target::parse("http://x/"), Err(TargetError::Scheme(_))));
        assert!(matches!(Target::parse("wss://x/"), Err(TargetError::Scheme(_))));
        assert!(matches!(Target::parse("ws:///ws"), Err(TargetError::Scheme(_))));
    }
}
