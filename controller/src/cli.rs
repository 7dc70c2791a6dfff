//! The `controller run` and `controller check` commands; the executable
//! (crate `stampede`) parses the command line and calls them.

use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;

use stampede_proto::auth::FleetToken;
use stampede_proto::transport::ServerTls;

use crate::plan::{MIN_INTERVAL_S, Overrides};
use crate::run::{RunError, RunOptions, run};
use crate::{EXIT_CONFIG, EXIT_ERROR, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS};

/// Flags of `controller run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Load this ws:// or wss:// URL instead of the scenario's target.
    #[arg(long, value_name = "URL", value_parser = target_url)]
    pub target: Option<String>,
    /// Connections to hold in the sustained phase.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub connections: Option<u64>,
    /// Length of the sustained phase, seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub duration: Option<f64>,
    /// Length of the ramp-up phase, seconds.
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub ramp_up: Option<f64>,
    /// Seconds between two messages on a connection (0: connect only; or "250ms").
    #[arg(long, value_name = "SECS", value_parser = interval)]
    pub message_interval: Option<f64>,
    /// Pairs: messages each side sends per session (the MetaMask seed's
    /// --messages-per-session).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub messages_per_side: Option<u64>,
    /// Pairs: async delivery with side b away this long (the MetaMask
    /// seed's --delay; or "30s").
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub away: Option<f64>,
    /// Local worker processes to start.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub workers: Option<u64>,
    /// Folder to put the results folder in.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// No progress lines or summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// File holding the fleet token remote workers must prove (or
    /// STAMPEDE_FLEET_TOKEN_FILE, or the token in STAMPEDE_FLEET_TOKEN);
    /// a local fleet gets a fresh one.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Serve the fleet over TLS with this certificate chain (PEM; or
    /// STAMPEDE_FLEET_CERT); workers dial https:// and check it.
    #[arg(long, value_name = "FILE", requires = "fleet_key")]
    pub fleet_cert: Option<PathBuf>,
    /// The private key of --fleet-cert (PEM; or STAMPEDE_FLEET_KEY).
    #[arg(long, value_name = "FILE", requires = "fleet_cert")]
    pub fleet_key: Option<PathBuf>,
    /// Require worker certificates signed by this CA (PEM; or
    /// STAMPEDE_FLEET_CLIENT_CA): mutual TLS, which may replace the token.
    #[arg(long, value_name = "FILE")]
    pub fleet_client_ca: Option<PathBuf>,
    /// Serve the run's status on this address: GET /health, /status (JSON),
    /// /metrics (Prometheus), POST /stop (with the fleet token). Off by
    /// default; bind it to loopback unless the network is yours.
    #[arg(long, value_name = "IP:PORT")]
    pub status_addr: Option<std::net::SocketAddr>,
    /// Show the live view in the terminal instead of progress lines
    /// (q stops the run, as Ctrl-C does). Without a terminal the progress
    /// lines stay.
    #[arg(long)]
    pub tui: bool,
}

/// A duration flag: `20`, `250ms`, `20s`, `5m`, `2h`, at most a week.
fn seconds(s: &str) -> Result<f64, String> {
    crate::scenario::Seconds::parse(s).map(|v| v.0)
}

/// `--message-interval`: 0 (connect only) or at least 1 µs.
fn interval(s: &str) -> Result<f64, String> {
    let v = seconds(s)?;
    if v > 0.0 && v < MIN_INTERVAL_S {
        return Err(format!(
            "{v} s: give 0 (connect only) or at least {MIN_INTERVAL_S} s (1us: a million messages/s per connection)"
        ));
    }
    Ok(v)
}

/// `--target`: a ws:// or wss:// URL, checked here so the error names the flag.
fn target_url(s: &str) -> Result<String, String> {
    stampede_model::TargetUrl::parse(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

impl RunArgs {
    /// The run options these flags ask for; values the flags leave unset
    /// come from the environment ([`Overrides::from_env`]): flag, then
    /// environment, then file.
    pub fn options(&self) -> Result<RunOptions, String> {
        let env = Overrides::from_env(|name| std::env::var(name).ok())?;
        let used = Overrides::env_in_use(|name| std::env::var(name).ok());
        if !used.is_empty() && !self.quiet {
            eprintln!("from the environment (a flag would win): {}", used.join(" "));
        }
        Ok(RunOptions {
            scenario: self.scenario.clone(),
            overrides: Overrides {
                target: self.target.clone(),
                connections: self.connections,
                duration_s: self.duration,
                ramp_up_s: self.ramp_up,
                message_interval_s: self.message_interval,
                workers: self.workers,
                output: self.output.clone(),
                messages_per_side: self.messages_per_side,
                away_s: self.away,
            }
            .or(env),
            executable: None,
            quiet: self.quiet,
            fleet_token: FleetToken::from_sources(self.token_file.as_deref(), |n| std::env::var(n).ok())?,
            fleet_tls: ServerTls::from_sources(
                self.fleet_cert.clone(),
                self.fleet_key.clone(),
                self.fleet_client_ca.clone(),
                |n| std::env::var(n).ok(),
            )?,
            status_addr: self.status_addr,
            tui: self.tui,
        })
    }
}

/// `controller run`: runs the scenario; returns the process exit code.
pub async fn run_command(args: RunArgs, shutdown: CancellationToken) -> i32 {
    let options = match args.options() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_CONFIG;
        }
    };
    let outcome = run(options, shutdown).await;
    if let Ok(outcome) = &outcome {
        // One line on stdout, for scripts: where the results are
        // (everything else goes to stderr).
        println!("{}", outcome.dir.display());
    }
    match outcome {
        Ok(outcome) if outcome.interrupted => EXIT_INTERRUPTED,
        Ok(outcome) if outcome.summary.verdict == "PASS" => EXIT_PASS,
        Ok(_) => EXIT_FAIL,
        Err(err @ (RunError::Scenario(_) | RunError::Cost(_) | RunError::Machine(_) | RunError::Flag(_))) => {
            eprintln!("error: {err}");
            EXIT_CONFIG
        }
        Err(RunError::Interrupted) => EXIT_INTERRUPTED,
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_ERROR
        }
    }
}

/// `controller check`: validates the scenario and prints the fleet it needs
/// and what that costs ([`crate::deploy::estimate`]); a scenario whose cost
/// is above its `max_cost` fails, as its run would. Returns the exit code.
pub fn check_command(scenario: &Path) -> i32 {
    let checked = crate::scenario::Scenario::load(scenario)
        .and_then(|(sc, source)| crate::plan::Plan::new(&sc, scenario, &source));
    match checked {
        Ok(plan) => {
            let fits = crate::deploy::check_cost(&plan)
                .and_then(|()| crate::machine::check(&plan, &crate::machine::Machine::read()));
            if let Err(err) = fits {
                eprintln!("error: {}: {err}", scenario.display());
                return EXIT_CONFIG;
            }
            println!(
                "{}: ok ({} phases, {:.0} s, peak {} connections, {} thresholds)",
                scenario.display(),
                plan.phases.len(),
                plan.duration().as_secs_f64(),
                plan.peak(),
                plan.thresholds.len()
            );
            let estimate = crate::deploy::estimate(&plan);
            for line in estimate.lines() {
                println!("  {line}");
            }
            if let Some(why) = estimate.shortfall() {
                eprintln!("warning: {why}");
            }
            EXIT_PASS
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_CONFIG
        }
    }
}
