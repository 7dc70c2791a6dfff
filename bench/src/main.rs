//! `bench/run`: measures the figures of README's performance section on
//! this machine, prints them as a table and writes them as JSON to
//! `bench/results/<UTC date and time>.json`.
//!
//! Each figure is a real run of the release `controller` (local workers,
//! real sockets on loopback) against the bundled relay or a Node `ws` echo
//! server, read back from its results folder: the same numbers a user
//! gets. Never a timed test: these machines are shared and noisy, so the
//! figures are for a quiet machine and a human to judge.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

mod artillery;
mod fan_in;
mod figures;
mod peers;
mod procs;
mod runs;
mod wake;
mod yardstick;

use figures::Figure;

#[derive(Parser)]
#[command(about = "Measures stampede's performance figures on this machine")]
struct Args {
    /// The release controller binary (bench/run builds it).
    #[arg(long, default_value = "target/release/controller")]
    controller: PathBuf,
    /// The Node peers' folder (bench/run installs `ws` there).
    #[arg(long, default_value = "bench/node")]
    node: PathBuf,
    /// Where the JSON record of this run goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Only these figures (letters as in README: a to h), comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let ctx = runs::Context::new(&args.controller, &args.node)?;
    let wanted = |id: &str| args.only.is_empty() || args.only.iter().any(|o| o == id);
    let mut all: Vec<Figure> = Vec::new();
    for (ids, measure) in figures::SUITE {
        if ids.iter().any(|id| wanted(id)) {
            eprintln!("measuring {} ...", ids.join(", "));
            let got = measure(&ctx).with_context(|| format!("figure {}", ids.join(", ")))?;
            for f in &got {
                eprintln!("  {}", f.line());
            }
            all.extend(got);
        }
    }
    println!("\n{}", figures::table(&all));
    let path = figures::write_record(&args.out, &all)?;
    println!("written: {}", path.display());
    Ok(())
}
