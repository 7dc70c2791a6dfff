//! Errors surfaced by [`Relay::start`](crate::Relay::start).
//!
//! Only setup can fail in a way the caller must handle; per-connection
//! failures are routine under load and are logged, not returned.

use std::io;
use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Creating or configuring the listening socket failed.
    #[error("creating listening socket for {addr}: {source}")]
    Socket { addr: SocketAddr, source: io::Error },
    /// The address is in use, not local, or not permitted.
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    /// The TLS settings cannot be used (bad PEM, a key that is not the
    /// certificate's).
    #[error("TLS: {0}")]
    Tls(String),
    /// A flag's value cannot be used.
    #[error("{0}")]
    Config(String),
}
