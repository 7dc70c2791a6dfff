//! The bundled relay as a run's target: inside the controller, or (beyond
//! [`crate::plan::CONNECTIONS_PER_RELAY`] connections, as one process may
//! hold only ~20,000 sockets here) as relay child processes sharing one port
//! through SO_REUSEPORT.
//!
//! Faults: the relay's fault clock is started by
//! [`Bundled::start_fault_clock`] at the run's start (not when the relay
//! starts, a second or so earlier while the workers join): in-process
//! directly, for relay processes (`--fault-clock-stdin`) as a UNIX time in
//! microseconds written to their stdin. Each relay process applies the
//! faults to its own connections, so a drop fraction holds overall.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use stampede_relay::config::{Faults, READY_PREFIX};
use stampede_relay::{Relay, RelayConfig, RelayError};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::local_fleet::die_with_parent;

/// How long a relay process may take to start listening.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Why the bundled relay did not start.
#[derive(Debug, thiserror::Error)]
pub enum BundledError {
    /// In-process relay.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// A relay process.
    #[error("relay process: {0}")]
    Process(String),
}

/// A running bundled relay.
pub enum Bundled {
    /// Inside the controller.
    InProcess(Relay),
    /// Child processes sharing a port.
    Processes(Vec<Child>),
}

impl Bundled {
    /// Starts `processes` relay processes (0: a relay in this process)
    /// with `faults`, which wait for [`start_fault_clock`](Self::start_fault_clock);
    /// returns it and its URL.
    pub async fn start(
        delay: Duration,
        processes: u64,
        faults: &Faults,
        executable: &Path,
        shutdown: CancellationToken,
    ) -> Result<(Bundled, String), BundledError> {
        let faults = Faults { external_clock: true, ..faults.clone() };
        if processes == 0 {
            let config = RelayConfig { delay, faults, ..RelayConfig::default() };
            let relay = Relay::start(config, shutdown).await?;
            let url = relay.ws_url();
            return Ok((Bundled::InProcess(relay), url));
        }
        // The first picks a free port; the others join it.
        let (first, url) = spawn(executable, "127.0.0.1:0", delay, &faults).await?;
        let port = url
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .ok_or_else(|| BundledError::Process(format!("cannot read the port of {url}")))?
            .to_string();
        let mut children = vec![first];
        for _ in 1..processes {
            let (child, _) = spawn(executable, &format!("127.0.0.1:{port}"), delay, &faults).await?;
            children.push(child);
        }
        Ok((Bundled::Processes(children), url))
    }

    /// Starts the fault clock at the run's start (`epoch`, `epoch_wall` on
    /// the wall clock for relay processes); without faults nothing happens.
    pub async fn start_fault_clock(&mut self, epoch: Instant, epoch_wall: SystemTime) {
        match self {
            Bundled::InProcess(relay) => relay.start_fault_clock(epoch),
            Bundled::Processes(children) => {
                let unix_us = stampede_model::clock::unix_us(epoch_wall);
                let line = format!("{unix_us}\n");
                for child in children {
                    // Piped only when faults are configured.
                    let Some(stdin) = child.stdin.as_mut() else { continue };
                    let written = async {
                        stdin.write_all(line.as_bytes()).await?;
                        stdin.flush().await
                    };
                    if let Err(e) = written.await {
                        tracing::warn!("cannot start the fault clock of a relay process: {e}");
                    }
                }
            }
        }
    }

    /// The Prometheus endpoint, when there is one process to ask (behind a
    /// shared port, each scrape would reach a random process).
    pub fn metrics_url(&self) -> Option<String> {
        match self {
            Bundled::InProcess(relay) => Some(format!("http://{}/metrics", relay.local_addr())),
            Bundled::Processes(_) => None,
        }
    }

    /// Waits for the relay to end after its shutdown token fired; child
    /// processes get SIGTERM, then SIGKILL after a grace period.
    pub async fn finish(self) {
        match self {
            Bundled::InProcess(relay) => relay.wait().await,
            Bundled::Processes(children) => {
                for mut child in children {
                    if let Some(pid) = child.id() {
                        // SAFETY: signals our own child process.
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
                        let _ = child.kill().await;
                    }
                }
            }
        }
    }
}

async fn spawn(
    executable: &Path,
    listen: &str,
    delay: Duration,
    faults: &Faults,
) -> Result<(Child, String), BundledError> {
    let mut cmd = Command::new(executable);
    cmd.args(["relay", "--listen", listen, "--reuse-port", "--delay-ms"])
        .arg(delay.as_millis().to_string())
        .args(faults.to_args())
        .env("RUST_LOG", "warn")
        // With faults the run's start arrives on stdin (--fault-clock-stdin).
        .stdin(if faults.any() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(&mut cmd);
    let mut child =
        cmd.spawn().map_err(|e| BundledError::Process(format!("{}: {e}", executable.display())))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(READY_WAIT, lines.next_line())
        .await
        .map_err(|_| BundledError::Process("did not start listening within 10 s".into()))?
        .map_err(|e| BundledError::Process(e.to_string()))?
        .ok_or_else(|| BundledError::Process("exited before listening".into()))?;
    let url = line
        .strip_prefix(READY_PREFIX)
        .ok_or_else(|| BundledError::Process(format!("unexpected first line {line:?}")))?
        .to_string();
    Ok((child, url))
}
