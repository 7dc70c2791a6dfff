//! (e) controller fan-in: the release controller commanding 1,000 workers
//! over real gRPC streams (one HTTP/2 connection each), every one of them
//! reporting a snapshot every second.
//!
//! The workers are real `stampede_worker` instances, the code a worker
//! process runs, 1,000 of them in this process; each holds 2 connections
//! to a bundled relay (in this process too) and sends 10 messages a second
//! on each, so every snapshot carries histograms, counters, errors and
//! gauges as a working worker's do. Measured from /proc: the controller
//! process's CPU over the sustained phase and its peak RSS.

use std::net::TcpListener;
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use stampede_worker::WorkerOptions;
use stampede_worker::process::{cpu_time_us_of, status_bytes};
use tokio_util::sync::CancellationToken;

use crate::figures::{Figure, clean};
use crate::procs::MB;
use crate::runs::Context;

const WORKERS: usize = 1_000;
const CONNECTIONS_PER_WORKER: usize = 2;
const SUSTAINED_S: u64 = 30;
/// Seconds of the sustained phase left out while the level settles.
const SETTLE_S: f64 = 3.0;

/// One reading of the controller process.
#[derive(Debug, Clone, Copy)]
struct Reading {
    /// Seconds since the Unix epoch.
    at: f64,
    /// CPU time used so far, s.
    cpu_s: f64,
    /// Its peak RSS so far (VmHWM), MB.
    peak_rss_mb: f64,
}

pub fn fan_in(ctx: &Context) -> Result<Vec<Figure>> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let shutdown = CancellationToken::new();
    let relay = runtime.block_on(stampede_relay::Relay::start(Default::default(), shutdown.clone()))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let token = ctx.write("fleet.token", &random_token()?)?;
    let scenario = format!(
        "name = \"fan-in\"\n[target]\nurl = \"{url}\"\n[load]\nconnections = {conns}\nmessage_interval_s = 0.1\n\
         payload_bytes = 64\n[phases]\nwarmup_s = 0\nramp_up_s = 5\nsustained_s = {SUSTAINED_S}\ncooldown_s = 0\n\
         [fleet]\nremote = true\nworkers = {WORKERS}\nlisten = \"127.0.0.1:{port}\"\njoin_timeout_s = 120\n",
        url = relay.ws_url(),
        conns = WORKERS * CONNECTIONS_PER_WORKER,
    );
    let mut controller = ctx.spawn("fan-in", &scenario, &["--token-file".as_ref(), token.as_os_str()])?;
    let workers: Vec<_> = (0..WORKERS)
        .map(|i| {
            let opts = WorkerOptions {
                controller: format!("http://127.0.0.1:{port}"),
                id: Some(format!("sim-{i:04}")),
                max_connections: None,
                source_addresses: Vec::new(),
                once: true,
                token_file: Some(token.clone()),
                allow_targets: Vec::new(),
                allow_file: None,
                join_timeout: Some(120),
                grace: 30.0,
                fleet_ca: None,
                fleet_cert: None,
                fleet_key: None,
                threads: None,
            };
            let stop = shutdown.clone();
            runtime.spawn(async move { stampede_worker::run(opts, stop).await })
        })
        .collect();
    let readings = watch(&mut controller);
    let run = ctx.results("fan-in", controller);
    shutdown.cancel();
    let refused = runtime.block_on(async {
        let mut refused = 0;
        for w in workers {
            if !matches!(w.await, Ok(Ok(()))) {
                refused += 1;
            }
        }
        refused
    });
    let run = run?;
    clean(&run, "fan-in")?;
    if refused > 0 {
        bail!("fan-in: {refused} of {WORKERS} workers ended with an error ({})", run.dir.display());
    }
    // The sustained phase, by the wall clock of metrics.csv's seconds.
    let times = run.sustained_times();
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        bail!("fan-in: no sustained seconds in metrics.csv ({})", run.dir.display());
    };
    let (from, to) = (first + SETTLE_S, last + 1.0);
    // The readings inside the window: the first at or after its start, the
    // last at or before its end (the controller exits as the run ends).
    let inside: Vec<&Reading> = readings.iter().filter(|r| (from..=to).contains(&r.at)).collect();
    let (Some(first), Some(last)) = (inside.first(), inside.last()) else {
        bail!("fan-in: the controller was not watched over its sustained phase");
    };
    let (t0, c0, t1, c1) = (first.at, first.cpu_s, last.at, last.cpu_s);
    if t1 - t0 < 10.0 {
        bail!("fan-in: only {:.1} s of the sustained phase watched", t1 - t0);
    }
    let cpu_pct = (c1 - c0) / (t1 - t0) * 100.0;
    let peak = readings.iter().map(|r| r.peak_rss_mb).fold(0.0, f64::max);
    let joined = run.summary["workers"].as_u64().unwrap_or(0);
    if joined != WORKERS as u64 {
        bail!("fan-in: {joined} of {WORKERS} workers took part ({})", run.dir.display());
    }
    Ok(vec![
        Figure::new(
            "e",
            format!("controller CPU with {WORKERS} workers streaming a snapshot a second"),
            cpu_pct,
            "% of a core",
        )
        .goal("<= 10"),
        Figure::new("e", format!("controller peak RSS with {WORKERS} workers"), peak, "MB").goal("<= 300"),
    ])
}

/// Reads the controller's CPU time and peak RSS four times a second until
/// it exits.
fn watch(child: &mut Child) -> Vec<Reading> {
    let pid = child.id().to_string();
    let mut readings = Vec::new();
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() && started.elapsed() < Duration::from_secs(600) {
        if let (Some(cpu_us), Some(hwm)) = (cpu_time_us_of(&pid), status_bytes(&pid, "VmHWM")) {
            readings.push(Reading {
                at: unix_now(),
                cpu_s: cpu_us as f64 / 1e6,
                peak_rss_mb: hwm as f64 / MB,
            });
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    readings
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// A fleet token for this run only: 32 random bytes, hex.
fn random_token() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
