use clap::Parser;

fn main() {
    let args = stampede_analyze::cli::Args::parse();
    std::process::exit(stampede_analyze::cli::main(args));
}
