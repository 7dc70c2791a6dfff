//! The running relay: listening socket, accept loop and task lifetime.
//!
//! Owns binding (including `SO_REUSEPORT`) and the [`TaskTracker`] that
//! lets [`Relay::wait`] promise that no connection task outlives shutdown.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::faults::{self, DeliveryFaults, FaultState};
use crate::hub::{self, Hub};
use crate::{RelayConfig, RelayError, Stats, conn};

/// Large enough that connection storms from a load test queue in the
/// kernel instead of being refused.
const BACKLOG: u32 = 4096;
/// Largest message the relay reassembles; bounds per-connection memory.
const MAX_MESSAGE: usize = 16 << 20;

/// Read-only state every connection task needs.
pub(crate) struct Shared {
    pub(crate) stats: Arc<Stats>,
    pub(crate) delay: Duration,
    pub(crate) max_connections: usize,
    pub(crate) jwt_secret: Option<crate::jwt::JwtSecret>,
    pub(crate) ws_config: WebSocketConfig,
    /// Injected faults; `None` (nothing to check) when none is configured.
    pub(crate) faults: Option<Arc<FaultState>>,
    /// `wss://`: every connection does the TLS handshake first.
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    /// The channels of `/pubsub` and `POST /publish`.
    pub(crate) hub: Arc<Hub>,
    /// `--fault-duplicate`, `--fault-reorder`.
    pub(crate) delivery_faults: DeliveryFaults,
    /// /metrics gives the process's memory and CPU.
    pub(crate) process_figures: bool,
}

/// A running relay. Dropping it does not stop it; cancel the token passed
/// to [`Relay::start`] and then [`wait`](Relay::wait).
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    stats: Arc<Stats>,
    tracker: TaskTracker,
    faults: Option<Arc<FaultState>>,
    tls: bool,
}

impl Relay {
    /// Binds and starts accepting in the background. Returns once the
    /// socket is listening, so callers can connect immediately. The fault
    /// clock starts now, unless `config.faults.external_clock` leaves that
    /// to [`start_fault_clock`](Relay::start_fault_clock).
    pub async fn start(config: RelayConfig, shutdown: CancellationToken) -> Result<Relay, RelayError> {
        let started = Instant::now();
        let listener = bind(&config)?;
        let addr = config.listen;
        let local_addr = listener.local_addr().map_err(|source| RelayError::Listen { addr, source })?;

        // Small buffers: a load test holds many idle connections, and the
        // defaults (128 KiB each way) would dominate memory. The read
        // buffer is held for the connection's life: 1 KiB instead of 4
        // cut the heap of an idle connection from 9,038 to 6,019 bytes
        // (tests/memory.rs). A larger frame still gets room for all of it
        // at once, read 1 KiB a call.
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(1024)
            .write_buffer_size(0)
            .max_write_buffer_size(2 * MAX_MESSAGE)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let stats = Arc::new(Stats::default());
        let fault_state = FaultState::new(&config.faults);
        let tls = config.tls.as_ref().map(crate::tls::acceptor).transpose().map_err(RelayError::Tls)?;
        let is_tls = tls.is_some();
        let hub = Arc::new(Hub::new(&config.pubsub, stats.clone()));
        let shared = Arc::new(Shared {
            stats: stats.clone(),
            delay: config.delay,
            max_connections: config.max_connections,
            jwt_secret: config.jwt_secret.clone(),
            ws_config,
            faults: fault_state.clone(),
            tls,
            hub: hub.clone(),
            delivery_faults: DeliveryFaults::new(&config.pubsub),
            process_figures: config.process_figures,
        });

        let tracker = TaskTracker::new();
        tracker.spawn(hub::sweep_loop(hub, shutdown.clone()));
        if let Some(state) = &fault_state {
            faults::spawn(state, &config.faults, &tracker, &shutdown);
            if !config.faults.external_clock {
                state.start_clock(started);
            }
            tracing::info!(faults = ?config.faults, "fault injection on");
        }
        tracker.spawn(accept_loop(listener, shared, shutdown, tracker.clone()));
        // Closing now is fine: the accept loop is itself tracked and spawns
        // its children before it ends, so `wait` cannot finish early.
        tracker.close();
        tracing::info!(%local_addr, "relay listening");
        Ok(Relay { local_addr, stats, tracker, faults: fault_state, tls: is_tls })
    }

    /// Starts the fault clock at `epoch` (which may lie in the past or the
    /// future) for a relay whose faults have `external_clock`: fault times
    /// then count from `epoch`. Only the first start counts; without faults
    /// this does nothing.
    pub fn start_fault_clock(&self, epoch: Instant) {
        if let Some(state) = &self.faults {
            state.start_clock(epoch);
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A URL clients can dial; a wildcard bind is reported as loopback
    /// because `0.0.0.0` is not a connectable address.
    pub fn ws_url(&self) -> String {
        self.url("ws", "/ws")
    }

    /// The URL of the channels endpoint, `/pubsub`.
    pub fn pubsub_url(&self) -> String {
        self.url("ws", "/pubsub")
    }

    /// The plain HTTP base URL (`/health`, `/metrics`, `/publish/...`),
    /// without a trailing slash.
    pub fn http_url(&self) -> String {
        self.url("http", "")
    }

    /// `scheme` (`ws` or `http`, made secure when TLS is on) to `path`.
    fn url(&self, scheme: &str, path: &str) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let secure = if self.tls { "s" } else { "" };
        format!("{scheme}{secure}://{}{path}", SocketAddr::new(ip, self.local_addr.port()))
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Resolves once shutdown was requested and the accept loop and every
    /// connection task have finished (each closes within a bounded grace).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }
}

fn bind(config: &RelayConfig) -> Result<TcpListener, RelayError> {
    let addr = config.listen;
    let socket_err = |source| RelayError::Socket { addr, source };
    let socket =
        if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.map_err(socket_err)?;
    // Lets a restarted relay rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true).map_err(socket_err)?;
    if config.reuse_port {
        socket.set_reuseport(true).map_err(socket_err)?;
    }
    socket.bind(addr).map_err(|source| RelayError::Bind { addr, source })?;
    socket.listen(BACKLOG).map_err(|source| RelayError::Listen { addr, source })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tracker.spawn(conn::serve(stream, shared.clone(), shutdown.clone()));
            }
            Err(e) => accept_error(e).await,
        }
    }
    tracing::debug!("accept loop stopped");
}

/// Accept errors are usually fd or memory exhaustion; backing off briefly
/// keeps the loop from spinning until existing connections free resources.
async fn accept_error(e: io::Error) {
    tracing::warn!("accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
