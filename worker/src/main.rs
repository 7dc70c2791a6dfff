use clap::Parser;
use tokio_util::sync::CancellationToken;

/// A stampede worker: joins a controller and runs the load it commands.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(flatten)]
    opts: stampede_worker::WorkerOptions,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    stampede_worker::init_tracing();
    let shutdown = CancellationToken::new();
    // SIGTERM (a pod being stopped) closes the connections gracefully.
    stampede_child::stop_on_signals(shutdown.clone());
    stampede_worker::run(cli.opts, shutdown).await?;
    Ok(())
}
