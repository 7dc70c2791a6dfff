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
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    stampede_worker::run(cli.opts, shutdown).await?;
    Ok(())
}
