//! `relay` binary: command-line front end for the bundled target server.
//!
//! Deliberately thin — parsing, logging and the runtime live here, all
//! behaviour lives in the library so tests exercise the same code.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

/// WebSocket echo relay with /health and Prometheus /metrics.
#[derive(Debug, Parser)]
#[command(name = "relay", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Injected echo delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Set SO_REUSEPORT so several relays can share the port.
    #[arg(long)]
    reuse_port: bool,
    /// Maximum concurrent WebSocket connections (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    max_connections: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("building tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = RelayConfig {
        listen: args.listen,
        delay: Duration::from_millis(args.delay_ms),
        reuse_port: args.reuse_port,
        max_connections: args.max_connections,
    };
    let shutdown = CancellationToken::new();
    let relay = Relay::start(config, shutdown.clone()).await?;
    println!("relay listening on {}", relay.ws_url());

    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    tracing::info!("shutting down");
    shutdown.cancel();
    relay.wait().await;
    Ok(())
}
