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

/// Flags of the `relay` binary (and of `controller relay`, which the
/// controller starts when a run needs more than one relay process).
#[derive(Debug, Clone, clap::Args)]
pub struct RelayArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Injected echo delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_ms: u64,
    /// Set SO_REUSEPORT so several relays can share the port.
    #[arg(long)]
    pub reuse_port: bool,
    /// Maximum concurrent WebSocket connections (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub max_connections: usize,
}

impl RelayArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> RelayConfig {
        RelayConfig {
            listen: self.listen,
            delay: Duration::from_millis(self.delay_ms),
            reuse_port: self.reuse_port,
            max_connections: self.max_connections,
        }
    }
}

/// What the relay prints on stdout once it listens; whoever started it may
/// read the URL from this line.
pub const READY_PREFIX: &str = "relay listening on ";

/// Runs a relay until `shutdown`, announcing its URL on stdout.
pub async fn serve(
    args: &RelayArgs,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), crate::RelayError> {
    let relay = crate::Relay::start(args.config(), shutdown.clone()).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{READY_PREFIX}{}", relay.ws_url());
        let _ = out.flush();
    }
    shutdown.cancelled().await;
    relay.wait().await;
    Ok(())
}
