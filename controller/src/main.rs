use clap::Parser;
use stampede_controller::cli::{Cli, main as run_cli};
use tokio_util::sync::CancellationToken;

fn main() {
    let cli = Cli::parse();
    stampede_worker::init_tracing_with_default("warn");
    stampede_worker::capacity::raise_open_files_limit();
    let runtime = tokio::runtime::Runtime::new().expect("cannot start the tokio runtime");
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("\ninterrupted: stopping the run and writing results (Ctrl-C again to quit at once)");
            on_signal.cancel();
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        });
        run_cli(cli, shutdown).await
    });
    std::process::exit(code);
}
