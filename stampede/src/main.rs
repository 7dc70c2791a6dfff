//! `controller`: the one stampede executable. `run` and `check` drive a
//! test; `worker` and `relay` are what the local fleet and big bundled runs
//! start as child processes, so nothing else needs installing.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};

use clap::{Parser, Subcommand};
use stampede_controller::cli::{RunArgs, check_command, run_command};
use stampede_controller::{EXIT_ERROR, EXIT_INTERRUPTED, EXIT_PASS, EXIT_TERMINATED};
use tokio::signal::unix::{SignalKind, signal};
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
    /// Act as a worker (what the local fleet starts; same flags as `worker`).
    Worker(stampede_worker::WorkerOptions),
    /// Run the bundled relay (what big bundled runs start; same flags as `relay`).
    Relay(stampede_relay::config::RelayArgs),
}

fn main() {
    let cli = Cli::parse();
    stampede_worker::init_tracing_with_default("warn");
    stampede_worker::capacity::raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signalled = Arc::new(AtomicI32::new(0));
        on_signals(shutdown.clone(), signalled.clone());
        let code = match cli.command {
            Command::Run(args) => run_command(args, shutdown).await,
            Command::Check { scenario } => check_command(&scenario),
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

/// The first Ctrl-C or SIGTERM stops the run gracefully (results are still
/// written) and sets `signalled` to the exit code it asks for; a second one
/// quits at once.
fn on_signals(shutdown: CancellationToken, signalled: Arc<AtomicI32>) {
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        eprintln!("warning: cannot handle signals; Ctrl-C will not write results");
        return;
    };
    tokio::spawn(async move {
        let code = tokio::select! {
            _ = int.recv() => EXIT_INTERRUPTED,
            _ = term.recv() => EXIT_TERMINATED,
        };
        signalled.store(code, Relaxed);
        eprintln!("\ninterrupted: stopping and writing results (again to quit at once)");
        shutdown.cancel();
        tokio::select! {
            _ = int.recv() => std::process::exit(EXIT_INTERRUPTED),
            _ = term.recv() => std::process::exit(EXIT_TERMINATED),
        }
    });
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
