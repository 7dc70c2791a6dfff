//! The bundled relay as a run's target: inside the controller, or (beyond
//! [`crate::plan::CONNECTIONS_PER_RELAY`] connections, as one process may
//! hold only ~20,000 sockets here) as relay child processes sharing one port
//! through SO_REUSEPORT.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use stampede_relay::config::READY_PREFIX;
use stampede_relay::{Relay, RelayConfig, RelayError};
use tokio::io::{AsyncBufReadExt, BufReader};
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
    /// Starts `processes` relay processes (0: a relay in this process);
    /// returns it and its URL.
    pub async fn start(
        delay: Duration,
        processes: u64,
        executable: &Path,
        shutdown: CancellationToken,
    ) -> Result<(Bundled, String), BundledError> {
        if processes == 0 {
            let relay = Relay::start(RelayConfig { delay, ..RelayConfig::default() }, shutdown).await?;
            let url = relay.ws_url();
            return Ok((Bundled::InProcess(relay), url));
        }
        // The first picks a free port; the others join it.
        let (first, url) = spawn(executable, "127.0.0.1:0", delay).await?;
        let port = url
            .trim_start_matches("ws://")
            .split(['/', ':'])
            .nth(1)
            .ok_or_else(|| BundledError::Process(format!("cannot read the port of {url}")))?
            .to_string();
        let mut children = vec![first];
        for _ in 1..processes {
            let (child, _) = spawn(executable, &format!("127.0.0.1:{port}"), delay).await?;
            children.push(child);
        }
        Ok((Bundled::Processes(children), url))
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

async fn spawn(executable: &Path, listen: &str, delay: Duration) -> Result<(Child, String), BundledError> {
    let mut cmd = Command::new(executable);
    cmd.args(["relay", "--listen", listen, "--reuse-port", "--delay-ms"])
        .arg(delay.as_millis().to_string())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
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
