//! A stampede worker: joins a controller over gRPC, runs the WebSocket load
//! the controller commands, and streams one snapshot per second back.
//!
//! `main.rs` (and the controller's local fleet) only parse flags and call
//! [`run`].

pub mod allow;
pub mod broadcast;
pub mod browser;
pub mod capacity;
pub mod connection;
pub mod delivery;
pub mod echo;
pub mod engine;
pub mod extract;
pub mod feed;
pub mod flow;
pub mod handshake;
pub mod http;
pub mod jwt;
pub mod link;
pub mod opening;
pub mod orders;
pub mod pace;
pub mod pair;
pub mod payload;
pub mod process;
pub mod recorder;
pub mod request;
pub mod schedule;
pub mod sealed;
pub mod session;
pub mod shards;
pub mod slots;
pub mod target;
pub mod tls;
pub mod websocket;

use std::net::IpAddr;

use stampede_proto::PROTOCOL_VERSION;
use stampede_proto::fleet::Hello;
use tokio_util::sync::CancellationToken;

/// Flags of `worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerOptions {
    /// The controller's fleet address, e.g. http://10.0.0.5:7700.
    #[arg(long, env = "STAMPEDE_CONTROLLER")]
    pub controller: String,
    /// Name of this worker in results (default: HOSTNAME-PID).
    #[arg(long, env = "STAMPEDE_WORKER_ID")]
    pub id: Option<String>,
    /// Hold at most this many connections (default: what the open-file limit allows).
    #[arg(long)]
    pub max_connections: Option<u64>,
    /// Local address to open connections from; repeat to spread connections
    /// over several (each gives ~28,000 ports per target).
    #[arg(long = "source-address", value_name = "IP")]
    pub source_addresses: Vec<IpAddr>,
    /// Take part in one run, then exit; exit too when the link to the
    /// controller breaks.
    #[arg(long)]
    pub once: bool,
    /// File holding the fleet token the controller asks for (or
    /// STAMPEDE_FLEET_TOKEN_FILE, or the token itself in STAMPEDE_FLEET_TOKEN;
    /// never on the command line, where `ps` shows it).
    #[arg(long, value_name = "FILE", env = "STAMPEDE_FLEET_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// A target this worker agrees to load: HOST, HOST:PORT, IP, IP:PORT or
    /// IP/BITS; repeat for more. Without any: loopback targets only.
    #[arg(long = "allow-target", value_name = "TARGET")]
    pub allow_targets: Vec<String>,
    /// A file of allowed targets, one per line as --allow-target takes
    /// them (`#` comments); added to any --allow-target.
    #[arg(long, value_name = "FILE", env = "STAMPEDE_ALLOW_FILE")]
    pub allow_file: Option<std::path::PathBuf>,
    /// Give up when the controller cannot be reached for this many seconds
    /// (default: keep trying).
    #[arg(long, value_name = "SECS")]
    pub join_timeout: Option<u64>,
    /// After losing the controller mid-run, keep the load going this many
    /// seconds for it to come back, then close every connection.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, env = "STAMPEDE_WORKER_GRACE", value_parser = grace)]
    pub grace: f64,
    /// Verify an https:// controller against this CA (PEM; or
    /// STAMPEDE_FLEET_CA); default: the system's roots.
    #[arg(long, value_name = "FILE")]
    pub fleet_ca: Option<std::path::PathBuf>,
    /// This worker's certificate (PEM), when the controller asks for one
    /// (mutual TLS); needs --fleet-key.
    #[arg(long, value_name = "FILE", requires = "fleet_key")]
    pub fleet_cert: Option<std::path::PathBuf>,
    /// The private key of --fleet-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "fleet_cert")]
    pub fleet_key: Option<std::path::PathBuf>,
    /// Threads that run connections, 1 to 256 (default: one per core). Use
    /// fewer when the server under test shares this machine, so the two do
    /// not take turns on every core (the controller does so for its local
    /// workers against a loopback target).
    #[arg(long, value_name = "N", env = "STAMPEDE_WORKER_THREADS", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: Option<u16>,
}

/// `--grace`: 0 to 3600 seconds.
fn grace(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: give seconds from 0 to 3600")),
    }
}

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Never reached the controller.
    #[error("cannot reach the controller at {0}: {1}")]
    Unreachable(String, String),
    /// The controller would not take this worker.
    #[error("the controller refused this worker: {0}")]
    Refused(String),
    /// The fleet token, TLS settings or target allowlist cannot be used.
    #[error("{0}")]
    Token(String),
    /// The link broke mid-run (with `--once`).
    #[error("lost the link to the controller: {0}")]
    LinkLost(String),
}

/// Runs the worker until `shutdown` fires or, with `--once`, its run ends.
pub async fn run(mut opts: WorkerOptions, shutdown: CancellationToken) -> Result<(), WorkerError> {
    let capacity = capacity::probe(opts.max_connections);
    let hostname = hostname();
    let worker_id = opts.id.clone().unwrap_or_else(|| format!("{hostname}-{}", std::process::id()));
    opts.id = Some(worker_id.clone());
    // The file flag reads STAMPEDE_FLEET_TOKEN_FILE itself (clap).
    let token = stampede_proto::auth::FleetToken::from_sources(opts.token_file.as_deref(), |name| {
        (name == stampede_proto::auth::TOKEN_ENV).then(|| std::env::var(name).ok()).flatten()
    })
    .map_err(WorkerError::Token)?;
    if let Some(file) = opts.allow_file.take() {
        opts.allow_targets.extend(allow::Allowlist::read_file(&file).map_err(WorkerError::Token)?);
    }
    allow::Allowlist::parse(&opts.allow_targets).map_err(WorkerError::Token)?;
    let tls = stampede_proto::transport::ClientTls::from_sources(
        opts.fleet_ca.clone(),
        opts.fleet_cert.clone(),
        opts.fleet_key.clone(),
        |name| std::env::var(name).ok(),
    )
    .map_err(WorkerError::Token)?;
    let endpoint = stampede_proto::transport::endpoint(&opts.controller, &tls).map_err(WorkerError::Token)?;
    if let Some(n) = opts.threads
        && !shards::Shards::configure(n.into())
    {
        tracing::warn!("--threads {n}: this process's connection threads had already started");
    }
    tracing::info!(
        "worker {worker_id}: {} cores, {} connection threads, room for {} connections",
        capacity.cores,
        shards::Shards::get().threads(),
        capacity.max_connections
    );
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_id,
        hostname,
        engines: engines(),
        capacity: Some(capacity),
        sent_at_unix_us: 0,
        resume_run_id: String::new(),
        token_proof: Vec::new(),
        load_stopped: false,
    };
    link::serve(&opts, endpoint, hello, token, shutdown).await
}

/// The engines this worker runs: browser sessions only where Chromium is
/// found (the controller places browser groups on such workers only).
fn engines() -> Vec<String> {
    let mut engines = vec!["native".to_string()];
    match playwright_driver::find_chromium(None) {
        Ok(path) => {
            tracing::info!("browser sessions: chromium at {}", path.display());
            engines.push("browser".into());
        }
        Err(e) => tracing::info!("no browser sessions on this worker: {e}"),
    }
    engines
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Sets up logging to stderr: `RUST_LOG`, or `info`.
pub fn init_tracing() {
    init_tracing_with_default("info");
}

/// Sets up logging to stderr: `RUST_LOG`, or `default` when it is unset.
pub fn init_tracing_with_default(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: super::WorkerOptions,
    }

    fn parse(extra: &[&str]) -> Result<super::WorkerOptions, String> {
        let args = ["worker", "--controller", "http://127.0.0.1:1"].iter().chain(extra);
        Cli::try_parse_from(args).map(|c| c.opts).map_err(|e| e.to_string())
    }

    #[test]
    fn threads_and_grace_outside_their_range_are_refused_naming_it() {
        assert_eq!(parse(&["--threads", "3"]).unwrap().threads, Some(3));
        assert_eq!(parse(&[]).unwrap().threads, None);
        for bad in ["0", "257", "99999999999", "-1", "two", ""] {
            let err = parse(&[&format!("--threads={bad}")])
                .err()
                .unwrap_or_else(|| panic!("--threads {bad:?} taken"));
            assert!(err.contains("--threads"), "{bad:?}: {err}");
        }
        assert!(parse(&["--threads", "0"]).unwrap_err().contains("1..=256"));
        for bad in ["-1", "3601", "NaN", "inf"] {
            let err =
                parse(&[&format!("--grace={bad}")]).err().unwrap_or_else(|| panic!("--grace {bad:?} taken"));
            assert!(err.contains("0 to 3600"), "{bad:?}: {err}");
        }
    }
}
