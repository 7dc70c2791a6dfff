//! `relay` binary: command-line front end for the bundled target server.
//! Parsing, logging and the runtime live here; behaviour lives in the library.

use clap::Parser;
use stampede_relay::config::{RelayArgs, serve};
use tokio_util::sync::CancellationToken;

/// WebSocket echo relay with /health and Prometheus /metrics.
#[derive(Debug, Parser)]
#[command(name = "relay", version)]
struct Cli {
    #[command(flatten)]
    args: RelayArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let shutdown = CancellationToken::new();
    stampede_child::stop_on_signals(shutdown.clone());
    serve(&cli.args, shutdown).await?;
    Ok(())
}
