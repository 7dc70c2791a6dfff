//! Relay configuration.
//!
//! Kept in its own module so the binary, the controller and tests can all
//! build a relay from plain values without pulling in CLI parsing.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How a [`Relay`](crate::Relay) listens and behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Address to bind. Port 0 picks a free port, which is what tests and
    /// the in-process controller want.
    pub listen: SocketAddr,
    /// Injected echo delay, to emulate a slow backend without serialising
    /// the connection: each message is echoed at its receive time + delay.
    pub delay: Duration,
    /// Set `SO_REUSEPORT` so several relay processes can share one port and
    /// let the kernel spread connections across them.
    pub reuse_port: bool,
    /// Upper bound on concurrent WebSocket sessions; upgrades beyond it get
    /// `503`. 0 means unlimited.
    pub max_connections: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            delay: Duration::ZERO,
            reuse_port: false,
            max_connections: 0,
        }
    }
}
