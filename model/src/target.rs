//! A target URL, parsed once and without name resolution: scheme, host,
//! port, path and query. Resolving is the worker's business (asynchronously,
//! once per run).

use std::fmt;
use std::net::IpAddr;

/// WebSocket URL schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `ws://`, port 80 by default.
    Ws,
    /// `wss://` (TLS), port 443 by default.
    Wss,
}

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetUrl {
    /// Scheme.
    pub scheme: Scheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port (the scheme's default when the URL gives none).
    pub port: u16,
    /// Path, from `/`.
    pub path: String,
    /// Query without the `?`, if any.
    pub query: Option<String>,
    /// The `Host` header value: the authority as written.
    pub authority: String,
}

/// Why a string is not a usable target URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {url:?}: {reason}")]
pub struct UrlError {
    /// The URL as given.
    pub url: String,
    /// What is wrong, and what to write instead.
    pub reason: String,
}

impl TargetUrl {
    /// Parses `url`; nothing is resolved.
    pub fn parse(url: &str) -> Result<TargetUrl, UrlError> {
        let err = |reason: &str| UrlError { url: url.to_string(), reason: reason.to_string() };
        let (scheme, rest) = if let Some(rest) = url.strip_prefix("ws://") {
            (Scheme::Ws, rest)
        } else if let Some(rest) = url.strip_prefix("wss://") {
            (Scheme::Wss, rest)
        } else {
            return Err(err("not a WebSocket URL: write ws://HOST[:PORT]/PATH"));
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(err("user info (user:password@) is not supported: send credentials in a header"));
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (tail, None),
        };
        let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
        let default_port = if scheme == Scheme::Ws { 80 } else { 443 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6.split_once(']').ok_or_else(|| err("unclosed [ in the host"))?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or_else(|| err("junk after ]"))?)),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| err("the port must be a number from 1 to 65535"))?,
        };
        Ok(TargetUrl { scheme, host: host.to_string(), port, path, query, authority: authority.to_string() })
    }

    /// Path and query, as the request line carries them.
    pub fn request_target(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }

    /// The host as an IP address, when it is one.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether the host is a loopback address or `localhost`.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.ip().is_some_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for TargetUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.scheme == Scheme::Ws { "ws" } else { "wss" };
        write!(f, "{scheme}://{}{}", self.authority, self.request_target())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_host_port_path_and_query() {
        let t = TargetUrl::parse("ws://127.0.0.1:9001/ws?room=1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("127.0.0.1", 9001, "/ws"));
        assert_eq!(t.request_target(), "/ws?room=1");
        assert_eq!(t.authority, "127.0.0.1:9001");
        assert!(t.is_loopback());
        let t = TargetUrl::parse("ws://[::1]/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 80));
        let t = TargetUrl::parse("wss://example.com?x").unwrap();
        assert_eq!((t.scheme, t.port, t.request_target().as_str()), (Scheme::Wss, 443, "/?x"));
        assert!(!t.is_loopback());
        assert_eq!(t.to_string(), "wss://example.com/?x");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("http://x/", "not a WebSocket URL"),
            ("ws:///ws", "no host"),
            ("ws://h:99999/", "port"),
            ("ws://h:0/", "port"),
            ("ws://[::1/", "unclosed"),
            ("ws://u:p@h/", "user info"),
        ] {
            let e = TargetUrl::parse(url).unwrap_err();
            assert!(e.to_string().contains(says), "{url}: {e}");
        }
    }
}
