//! Command-line interface of `controller`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::plan::Overrides;
use crate::run::{RunError, RunOptions, run};
use crate::{EXIT_CONFIG, EXIT_ERROR, EXIT_FAIL, EXIT_INTERRUPTED, EXIT_PASS};

/// stampede: distributed WebSocket load testing.
#[derive(Debug, Parser)]
#[command(name = "controller", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario file; exit 0 on PASS, 99 on FAIL, 2 on a bad scenario.
    Run(RunArgs),
    /// Check a scenario file without running it.
    Check {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// Act as a worker (what the local fleet starts; same flags as `worker`).
    Worker(stampede_worker::WorkerOptions),
    /// Run the bundled relay (what big bundled runs start; same flags as `relay`).
    Relay(stampede_relay::config::RelayArgs),
}

/// Flags of `controller run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Load this ws:// URL instead of the scenario's target.
    #[arg(long, value_name = "URL")]
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
    /// Seconds between two messages on a connection (0: connect only).
    #[arg(long, value_name = "SECS", value_parser = seconds)]
    pub message_interval: Option<f64>,
    /// Local worker processes to start.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub workers: Option<u64>,
    /// Folder to put the results folder in.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// No progress lines or summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

fn seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if v.is_finite() && (0.0..=604_800.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s}: give seconds between 0 and 604800"))
    }
}

impl RunArgs {
    /// The run options these flags ask for.
    pub fn options(&self) -> RunOptions {
        RunOptions {
            scenario: self.scenario.clone(),
            overrides: Overrides {
                target: self.target.clone(),
                connections: self.connections,
                duration_s: self.duration,
                ramp_up_s: self.ramp_up,
                message_interval_s: self.message_interval,
                workers: self.workers,
                output: self.output.clone(),
            },
            executable: None,
            quiet: self.quiet,
        }
    }
}

/// Runs the command; returns the process exit code.
pub async fn main(cli: Cli, shutdown: CancellationToken) -> i32 {
    match cli.command {
        Command::Run(args) => match run(args.options(), shutdown).await {
            Ok(outcome) if outcome.interrupted => EXIT_INTERRUPTED,
            Ok(outcome) if outcome.summary.verdict == "PASS" => EXIT_PASS,
            Ok(_) => EXIT_FAIL,
            Err(err @ RunError::Scenario(_)) => {
                eprintln!("error: {err}");
                EXIT_CONFIG
            }
            Err(RunError::Interrupted) => EXIT_INTERRUPTED,
            Err(err) => {
                eprintln!("error: {err}");
                EXIT_ERROR
            }
        },
        Command::Check { scenario } => {
            let checked = crate::scenario::Scenario::load(&scenario)
                .and_then(|(sc, source)| crate::plan::Plan::new(&sc, &scenario, &source));
            match checked {
                Ok(plan) => {
                    println!(
                        "{}: ok ({} phases, {:.0} s, peak {} connections, {} thresholds)",
                        scenario.display(),
                        plan.phases.len(),
                        plan.duration().as_secs_f64(),
                        plan.peak(),
                        plan.thresholds.len()
                    );
                    EXIT_PASS
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    EXIT_CONFIG
                }
            }
        }
        Command::Relay(args) => match stampede_relay::config::serve(&args, shutdown).await {
            Ok(()) => EXIT_PASS,
            Err(err) => {
                eprintln!("error: {err}");
                EXIT_ERROR
            }
        },
        Command::Worker(opts) => match stampede_worker::run(opts, shutdown).await {
            Ok(()) => EXIT_PASS,
            Err(err) => {
                eprintln!("error: {err}");
                EXIT_ERROR
            }
        },
    }
}
