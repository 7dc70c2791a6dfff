//! Several relay processes sharing one port (SO_REUSEPORT), for runs with
//! more connections than one process may hold (~20,000 open files here).
//! Each process is the same executable run as `EXE relay ...`, supervised:
//! it dies with its parent and is stopped with SIGTERM, then SIGKILL.
//!
//! Faults: with faults configured, each process waits for the run's start
//! (`--fault-clock-stdin`), written to its stdin by
//! [`RelayProcesses::start_fault_clock`]; each applies the faults to its own
//! connections, so a drop fraction holds overall.
//!
//! Channels (`/pubsub`) live in one process: each process has its own, so
//! two clients the kernel hands to different processes do not meet. The
//! channel settings are passed on all the same.
//!
//! TLS: the certificate and key reach the processes as files in a private
//! temporary folder (mode 0700), removed as soon as every process has read
//! them and listens.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stampede_child::{Supervised, command};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::config::{Faults, READY_PREFIX, RelayConfig};
use crate::tls::TlsSettings;

/// How long a relay process may take to start listening.
const READY_WAIT: Duration = Duration::from_secs(10);
/// Longest ready line read from a relay process, bytes.
const READY_LINE_MAX: u64 = 4096;
/// How long a relay process may take to close its connections when stopped.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why relay processes did not start.
#[derive(Debug, thiserror::Error)]
#[error("relay process: {0}")]
pub struct ProcessError(String);

/// Running relay processes.
#[derive(Debug)]
pub struct RelayProcesses {
    children: Vec<Supervised>,
    url: String,
}

impl RelayProcesses {
    /// Starts `count` processes of `executable` (run as `EXECUTABLE relay`)
    /// on one free loopback port, with the echo `delay` and `faults`, and
    /// serving `wss://` with `tls` if given.
    pub async fn start(
        executable: &Path,
        count: u64,
        config: &RelayConfig,
    ) -> Result<RelayProcesses, ProcessError> {
        // Dropped (folder and files removed) when this returns: by then
        // every process has read its files.
        let tls_files = config.tls.as_ref().map(TlsFiles::write).transpose()?;
        let tls_args = tls_files.as_ref().map(TlsFiles::args).unwrap_or_default();
        // The first picks a free port; the others join it.
        let (first, url) = spawn(executable, "127.0.0.1:0", config, &tls_args, 1).await?;
        let port = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split(['/', ':']).nth(1))
            .ok_or_else(|| ProcessError(format!("cannot read the port of {url}")))?
            .to_string();
        let mut children = vec![first];
        for i in 2..=count {
            let listen = format!("127.0.0.1:{port}");
            let (child, _) = spawn(executable, &listen, config, &tls_args, i).await?;
            children.push(child);
        }
        Ok(RelayProcesses { children, url })
    }

    /// The WebSocket URL they share.
    pub fn ws_url(&self) -> &str {
        &self.url
    }

    /// How many processes there are.
    pub fn count(&self) -> usize {
        self.children.len()
    }

    /// Starts the fault clock of every process at `epoch` (wall clock);
    /// without faults nothing happens.
    pub async fn start_fault_clock(&mut self, epoch: SystemTime) {
        let unix_us = epoch.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
        let line = format!("{unix_us}\n");
        for child in &mut self.children {
            // Piped only when faults are configured.
            let Some(stdin) = child.child.stdin.as_mut() else { continue };
            let written = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            };
            if let Err(e) = written.await {
                tracing::warn!("cannot start the fault clock of {}: {e}", child.name);
            }
        }
    }

    /// Stops every process: SIGTERM (they close their connections), then
    /// SIGKILL after a grace period.
    pub async fn stop(self) {
        for child in self.children {
            child.stop(STOP_GRACE).await;
        }
    }
}

/// TLS settings written out for relay processes to read.
struct TlsFiles {
    dir: tempfile::TempDir,
    client_ca: bool,
}

impl TlsFiles {
    fn write(tls: &TlsSettings) -> Result<TlsFiles, ProcessError> {
        let io = |e: std::io::Error| ProcessError(format!("cannot write the TLS files: {e}"));
        // TempDir creates its folder with mode 0700: the key is readable by
        // this user only.
        let dir = tempfile::Builder::new().prefix("stampede-relay-tls-").tempdir().map_err(io)?;
        std::fs::write(dir.path().join("cert.pem"), &tls.cert_pem).map_err(io)?;
        std::fs::write(dir.path().join("key.pem"), &tls.key_pem).map_err(io)?;
        if let Some(ca) = &tls.client_ca_pem {
            std::fs::write(dir.path().join("client-ca.pem"), ca).map_err(io)?;
        }
        Ok(TlsFiles { dir, client_ca: tls.client_ca_pem.is_some() })
    }

    fn args(&self) -> Vec<std::ffi::OsString> {
        let path = |name: &str| self.dir.path().join(name).into_os_string();
        let mut args = vec!["--tls-cert".into(), path("cert.pem"), "--tls-key".into(), path("key.pem")];
        if self.client_ca {
            args.extend(["--tls-client-ca".into(), path("client-ca.pem")]);
        }
        args
    }
}

/// The environment variable that carries the JWT secret to a relay process
/// (never its command line, which `ps` shows to every user).
const JWT_SECRET_ENV: &str = "STAMPEDE_RELAY_JWT_SECRET";

async fn spawn(
    executable: &Path,
    listen: &str,
    config: &RelayConfig,
    tls_args: &[std::ffi::OsString],
    n: u64,
) -> Result<(Supervised, String), ProcessError> {
    let faults = Faults { external_clock: config.faults.any(), ..config.faults.clone() };
    let mut cmd = command(executable);
    cmd.args(["relay", "--listen", listen, "--reuse-port", "--delay-ms"])
        .arg(config.delay.as_millis().to_string())
        .args(faults.to_args())
        .args(config.pubsub.to_args())
        .args(tls_args)
        .env("RUST_LOG", "warn");
    if config.max_connections > 0 {
        // Per process: the kernel spreads connections over them.
        cmd.args(["--max-connections", &config.max_connections.to_string()]);
    }
    if let Some(secret) = &config.jwt_secret {
        cmd.args(["--jwt-secret-env", JWT_SECRET_ENV]).env(JWT_SECRET_ENV, secret.as_os_str());
    }
    cmd
        // With faults the run's start arrives on stdin (--fault-clock-stdin).
        .stdin(if faults.any() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped());
    let mut child = Supervised::spawn(format!("relay process {n}"), &mut cmd)
        .map_err(|e| ProcessError(format!("{}: {e}", executable.display())))?;
    let stdout = child.child.stdout.take().expect("stdout is piped");
    // The ready line is short; a child that prints without end must not
    // grow our memory.
    let mut lines = BufReader::new(stdout.take(READY_LINE_MAX)).lines();
    let line = tokio::time::timeout(READY_WAIT, lines.next_line())
        .await
        .map_err(|_| ProcessError("did not start listening within 10 s".into()))?
        .map_err(|e| ProcessError(e.to_string()))?
        .ok_or_else(|| ProcessError("exited before listening".into()))?;
    let url = line
        .strip_prefix(READY_PREFIX)
        .ok_or_else(|| ProcessError(format!("unexpected first line {line:?}")))?
        .to_string();
    Ok((child, url))
}
