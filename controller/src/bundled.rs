//! The bundled relay as a run's target: inside the controller, or (beyond
//! [`crate::plan::CONNECTIONS_PER_RELAY`] connections, as one process may
//! hold only ~20,000 sockets here) as relay processes sharing one port,
//! started by the relay crate ([`RelayProcesses`]).
//!
//! TLS (`bundled_tls`): the controller makes a CA and a server certificate
//! for `127.0.0.1` and `localhost` ([`make_tls`]) for each run; the relay
//! serves `wss://` with them and the workers trust the CA.
//!
//! Faults: the relay's fault clock is started by
//! [`Bundled::start_fault_clock`] at the run's start (not when the relay
//! starts, a second or so earlier while the workers join).

use std::path::Path;
use std::time::{Instant, SystemTime};

use stampede_relay::config::Faults;
use stampede_relay::pki::PkiError;
use stampede_relay::processes::ProcessError;
use stampede_relay::tls::TlsSettings;
use stampede_relay::{Relay, RelayConfig, RelayError, RelayProcesses};
use tokio_util::sync::CancellationToken;

/// Why the bundled relay did not start.
#[derive(Debug, thiserror::Error)]
pub enum BundledError {
    /// In-process relay.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// A relay process.
    #[error(transparent)]
    Process(#[from] ProcessError),
    /// The certificates for `wss://`.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The in-process relay's runtime (threads) did not start.
    #[error("starting the bundled relay's threads: {0}")]
    Runtime(std::io::Error),
}

/// The bundled relay's TLS for one run: a fresh CA and a server certificate
/// it signed for `127.0.0.1` and `localhost`. Returns the CA (PEM, what the
/// workers trust) and the relay's settings.
pub fn make_tls() -> Result<(String, TlsSettings), BundledError> {
    let (ca, server) = stampede_relay::pki::bundled()?;
    Ok((ca, TlsSettings { cert_pem: server.cert, key_pem: server.key, client_ca_pem: None }))
}

/// A running bundled relay.
pub enum Bundled {
    /// Inside the controller.
    InProcess(InProcess),
    /// Child processes sharing a port.
    Processes(RelayProcesses),
}

impl Bundled {
    /// Starts `processes` relay processes (0: a relay in this process)
    /// configured by `config` (echo delay, faults, connection limit, TLS,
    /// JWT secret); faults wait for
    /// [`start_fault_clock`](Self::start_fault_clock). Returns it and its URL.
    pub async fn start(
        config: RelayConfig,
        processes: u64,
        executable: &Path,
        shutdown: CancellationToken,
    ) -> Result<(Bundled, String), BundledError> {
        if processes == 0 {
            let faults = Faults { external_clock: true, ..config.faults.clone() };
            // Its process is ours: our memory and CPU are not the target's.
            let relay =
                InProcess::start(RelayConfig { faults, process_figures: false, ..config }, shutdown).await?;
            let url = relay.relay.ws_url();
            return Ok((Bundled::InProcess(relay), url));
        }
        let relays = RelayProcesses::start(executable, processes, &config).await?;
        let url = relays.ws_url().to_string();
        Ok((Bundled::Processes(relays), url))
    }

    /// Starts the fault clock at the run's start (`epoch`, `epoch_wall` on
    /// the wall clock for relay processes); without faults nothing happens.
    pub async fn start_fault_clock(&mut self, epoch: Instant, epoch_wall: SystemTime) {
        match self {
            Bundled::InProcess(relay) => relay.relay.start_fault_clock(epoch),
            Bundled::Processes(relays) => relays.start_fault_clock(epoch_wall).await,
        }
    }

    /// The Prometheus endpoint, when there is one process to ask (behind a
    /// shared port, each scrape would reach a random process) and it speaks
    /// plain HTTP (the scraper does not do TLS). An in-process relay gives
    /// its counts but not the process's memory and CPU (they are ours); a
    /// relay process of its own gives all.
    pub fn metrics_url(&self) -> Option<String> {
        match self {
            Bundled::InProcess(InProcess { relay, .. }) if relay.ws_url().starts_with("ws://") => {
                Some(format!("http://{}/metrics", relay.local_addr()))
            }
            Bundled::Processes(relays) if relays.count() == 1 => {
                let addr = relays.ws_url().strip_prefix("ws://")?.split('/').next()?;
                Some(format!("http://{addr}/metrics"))
            }
            Bundled::InProcess(_) | Bundled::Processes(_) => None,
        }
    }

    /// Waits for the relay to end after its shutdown token fired; relay
    /// processes are stopped (SIGTERM, then SIGKILL after a grace period).
    pub async fn finish(self) {
        match self {
            Bundled::InProcess(mut relay) => relay.finish().await,
            Bundled::Processes(relays) => relays.stop().await,
        }
    }
}

/// A relay inside the controller, on a runtime of its own: the
/// controller's single thread stays free for the fleet, and the relay
/// uses every core as a relay process does.
pub struct InProcess {
    relay: Relay,
    /// `None` once shut down.
    runtime: Option<tokio::runtime::Runtime>,
}

impl InProcess {
    async fn start(config: RelayConfig, shutdown: CancellationToken) -> Result<InProcess, BundledError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("relay")
            .enable_all()
            .build()
            .map_err(BundledError::Runtime)?;
        let relay = runtime
            .spawn(Relay::start(config, shutdown))
            .await
            .map_err(|e| BundledError::Runtime(std::io::Error::other(e)))??;
        Ok(InProcess { relay, runtime: Some(runtime) })
    }

    /// Waits for its connections to end (its shutdown token fired), then
    /// stops its threads.
    async fn finish(&mut self) {
        self.relay.wait().await;
        self.stop();
    }

    fn stop(&mut self) {
        // Not a blocking shutdown: this may run inside the controller's
        // runtime, where blocking is refused.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
