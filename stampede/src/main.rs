//! `controller`: the one stampede executable. `run` and `check` drive a
//! test; `worker` and `relay` are what the local fleet and big bundled runs
//! start as child processes, so nothing else needs installing; `deploy`
//! renders what runs a fleet elsewhere (Kubernetes manifests).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;

use clap::{Parser, Subcommand};
use stampede_controller::cli::{RunArgs, check_command, run_command};
use stampede_controller::deploy::{DeployCommand, deploy_command};
use stampede_controller::{EXIT_ERROR, EXIT_PASS};
use tokio_util::sync::CancellationToken;

/// stampede: distributed WebSocket load testing.
#[derive(Debug, Parser)]
#[command(name = "controller", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario file; exit 0 on PASS, 99 on FAIL, 2 on a bad scenario.
    Run(RunArgs),
    /// Check a scenario file without running it.
    Check {
        /// The scenario file.
        scenario: PathBuf,
    },
    /// Render what runs a scenario's fleet elsewhere: `deploy kubernetes
    /// SCENARIO` prints its manifests.
    Deploy {
        /// Where to deploy.
        #[command(subcommand)]
        to: DeployCommand,
    },
    /// Act as a worker (what the local fleet starts; same flags as `worker`).
    Worker(stampede_worker::WorkerOptions),
    /// Run the bundled relay (what big bundled runs start; same flags as `relay`).
    Relay(stampede_relay::config::RelayArgs),
}

fn main() {
    let cli = Cli::parse();
    stampede_worker::init_tracing_with_default("warn");
    stampede_worker::capacity::raise_open_files_limit();
    let runtime = runtime_for(&cli.command).expect("cannot start the tokio runtime");
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signalled = stampede_child::stop_on_signals(shutdown.clone());
        let code = match cli.command {
            Command::Run(args) => run_command(args, shutdown).await,
            Command::Check { scenario } => check_command(&scenario),
            Command::Deploy { to } => deploy_command(&to),
            Command::Relay(args) => report(stampede_relay::config::serve(&args, shutdown).await),
            Command::Worker(opts) => report(stampede_worker::run(opts, shutdown).await),
        };
        // Interrupted runs exit with the signal's code even when they
        // finished cleanly: the caller asked them to stop.
        match signalled.load(Relaxed) {
            0 => code,
            signal_code => signal_code,
        }
    });
    std::process::exit(code);
}

/// The controller runs on one thread: its work comes in bursts (every
/// worker's snapshot at each second of the run clock) that one thread
/// serves in a few wakes, where two threads woke each other for every
/// stream. With 1,000 workers streaming (bench e) its CPU fell from
/// 12.7-13.1 % to 7.4-7.6 % of a core. A relay in the controller gets a
/// runtime of its own (`stampede_controller::bundled`). Workers and relay
/// processes use every core.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        Command::Run(_) | Command::Check { .. } | Command::Deploy { .. } => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        Command::Worker(_) | Command::Relay(_) => tokio::runtime::Runtime::new(),
    }
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> i32 {
    match result {
        Ok(()) => EXIT_PASS,
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_ERROR
        }
    }
}
