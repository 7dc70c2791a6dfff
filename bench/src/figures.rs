//! The figures, each measured by a real run, and their record.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

use crate::peers::NodeEcho;
use crate::runs::{Context, RunResult, mean};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// README's letter for it (`a`, `c`, ...).
    pub id: &'static str,
    /// What it is.
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The goal it is held to, if any (`<= 1.5`).
    pub goal: Option<&'static str>,
}

impl Figure {
    pub fn new(id: &'static str, name: impl Into<String>, value: f64, unit: &'static str) -> Figure {
        Figure { id, name: name.into(), value, unit, goal: None }
    }

    pub fn goal(mut self, goal: &'static str) -> Figure {
        self.goal = Some(goal);
        self
    }

    /// `(a) name: value unit (goal ...)`.
    pub fn line(&self) -> String {
        let goal = self.goal.map_or(String::new(), |g| format!(" (goal {g})"));
        format!("({}) {}: {:.3} {}{goal}", self.id, self.name, self.value, self.unit)
    }
}

type Measure = fn(&Context) -> Result<Vec<Figure>>;

/// Every measurement, with the figures it gives.
pub const SUITE: &[(&[&str], Measure)] = &[
    (&["a", "d"], idle_connections),
    (&["b"], peak_connections),
    (&["c"], message_cost),
    (&["e"], crate::fan_in::fan_in),
    (&["f"], accuracy),
    (&["g"], crate::artillery::side_by_side),
    (&["h"], crate::wake::wake_cost),
];

/// Connections held idle in one worker for (a) and (d).
const IDLE: u64 = 15_000;

/// A scenario: `target` is the `[target]` table's body.
fn scenario(
    name: &str,
    target: &str,
    connections: u64,
    interval_s: f64,
    ramp_s: u64,
    sustained_s: u64,
) -> String {
    format!(
        "name = \"{name}\"\n[target]\n{target}\n[load]\nconnections = {connections}\nmessage_interval_s = {interval_s}\n\
         payload_bytes = 64\n[phases]\nwarmup_s = 0\nramp_up_s = {ramp_s}\nsustained_s = {sustained_s}\ncooldown_s = 0\n\
         [fleet]\nworkers = 1\n"
    )
}

/// Fails on a run that did not hold its connections or lost messages: its
/// figures would describe something else.
pub fn clean(run: &RunResult, what: &str) -> Result<()> {
    let s = &run.summary;
    let (failed, lost) = (s["connections"]["failed"].as_u64(), s["messages"]["lost"].as_u64());
    if failed != Some(0) || lost != Some(0) {
        bail!("{what}: {failed:?} connections failed, {lost:?} messages lost ({})", run.dir.display());
    }
    Ok(())
}

/// (a) memory per idle connection: the slope of the worker's RSS against
/// its open connections while 15,000 open and are held; (d) the worker's
/// CPU holding them.
fn idle_connections(ctx: &Context) -> Result<Vec<Figure>> {
    let run = ctx.run("idle", &scenario("idle", "bundled = true", IDLE, 0.0, 15, 20))?;
    clean(&run, "idle")?;
    let (active, rss) = (run.column("connections_active"), run.column("worker_rss_mb"));
    let points: Vec<(f64, f64)> = active
        .iter()
        .zip(&rss)
        .filter(|(a, r)| **a >= 1000.0 && r.is_finite())
        .map(|(a, r)| (*a, *r))
        .collect();
    let slope = fit_slope(&points).ok_or_else(|| anyhow::anyhow!("idle: too few seconds to fit"))?;
    let cpu = mean(&run.sustained_column("worker_cpu_pct", 3));
    let held = run.sustained("connections.peak")?;
    Ok(vec![
        Figure::new(
            "a",
            format!("worker memory per idle connection, up to {held} in one worker"),
            slope * 1e6 / 1024.0,
            "KiB",
        )
        .goal("<= 1.5"),
        Figure::new(
            "a",
            format!("worker RSS holding {held} idle connections"),
            rss.iter().copied().fold(0.0, f64::max),
            "MB",
        ),
        Figure::new("d", "worker CPU per 1,000 idle connections", cpu / (held / 1000.0), "% of a core"),
    ])
}

/// Connections (b) holds for a minute.
const PEAK: u64 = 300_000;

/// (b) 300,000 idle connections to the bundled relay on this machine,
/// opened over a minute and held for a minute (the controller picks the
/// worker processes, their 127.0.x.y source addresses and the relay
/// processes), every one of them open the whole minute.
fn peak_connections(ctx: &Context) -> Result<Vec<Figure>> {
    let scenario = scenario("peak", "bundled = true", PEAK, 0.0, 60, 60).replace("workers = 1\n", "");
    let mut child = ctx.spawn("peak", &scenario, &[])?;
    let peaks = crate::procs::watch(&mut child);
    let run = ctx.results("peak", child)?;
    clean(&run, "peak")?;
    // The seconds of the planned hold (60 s ramp, then 60 s), not those
    // after its end while 300,000 connections close.
    let held: Vec<f64> = run
        .rows
        .iter()
        .filter(|r| {
            r.get("elapsed_s").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| (60..120).contains(&s))
        })
        .filter_map(|r| r.get("connections_active")?.parse().ok())
        .collect();
    let least = held.iter().copied().fold(f64::INFINITY, f64::min);
    if held.len() < 55 || least < PEAK as f64 {
        bail!(
            "peak: {} sustained seconds, at least {least} connections open ({})",
            held.len(),
            run.dir.display()
        );
    }
    let per_connection = |mb: f64| mb * 1024.0 / PEAK as f64;
    Ok(vec![
        Figure::new(
            "b",
            "connections held 60 s with zero failures (fewest open in any second)",
            least,
            "connections",
        )
        .goal(">= 300000"),
        Figure::new(
            "b",
            format!("workers' RSS per connection at {PEAK} (all workers)"),
            per_connection(peaks.workers_mb),
            "KiB",
        ),
        Figure::new(
            "b",
            format!("bundled relays' RSS per connection at {PEAK}"),
            per_connection(peaks.relays_mb),
            "KiB",
        ),
        Figure::new(
            "b",
            format!("machine memory per connection at {PEAK} (MemAvailable's fall: processes and kernel)"),
            per_connection(peaks.machine_mb),
            "KiB",
        ),
    ])
}

/// What one run of the (c) shape measured: 100 connections, 64 B, at a
/// fixed rate against an echo server.
#[derive(Debug)]
pub struct Shape {
    /// The generator's CPU per 10,000 msg/s, % of a core.
    pub cpu_per_10k: f64,
    /// Latency percentiles, ms.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Seconds the (c) shape's sustained phase lasts.
pub const SHAPE_S: u64 = 20;

/// Runs the (c) shape with stampede at `rate` msg/s against `url`.
pub fn stampede_at(ctx: &Context, url: &str, rate: u64) -> Result<Shape> {
    let name = format!("rate-{rate}");
    let target = format!("url = \"{url}\"");
    let run = ctx.run(&name, &scenario(&name, &target, 100, 100.0 / rate as f64, 2, SHAPE_S))?;
    clean(&run, &name)?;
    let cpu = mean(&run.sustained_column("worker_cpu_pct", 3));
    Ok(Shape {
        cpu_per_10k: cpu / (rate as f64 / 10_000.0),
        p50: run.sustained("latency_ms.p50")?,
        p99: run.sustained("latency_ms.p99")?,
        p999: run.sustained("latency_ms.p999")?,
    })
}

/// (c) the generator's CPU per 10,000 msg/s and its latency percentiles,
/// 100 connections against a Node `ws` echo server at four rates (the
/// fastest: a message per connection per millisecond), each beside the
/// yardstick's (a bare client that measures the same,
/// [`crate::yardstick`]) in the same minute against the same server: what
/// this machine allows.
fn message_cost(ctx: &Context) -> Result<Vec<Figure>> {
    let server = NodeEcho::start(&ctx.node)?;
    let mut out = Vec::new();
    for rate in [1_000u64, 10_000, 20_000, 100_000] {
        let shape = stampede_at(ctx, &server.url(), rate)?;
        let floor = crate::yardstick::measure(&server.url(), rate, SHAPE_S)?;
        let label = |what: &str| format!("{what} at {rate} msg/s (100 connections, 64 B, Node ws)");
        let mut cost =
            Figure::new("c", label("generator CPU per 10,000 msg/s"), shape.cpu_per_10k, "% of a core");
        if rate == 100_000 {
            cost = cost.goal("<= 5.2 (half of 10.4)");
        }
        out.push(cost);
        out.push(Figure::new("c", label("yardstick CPU per 10,000 msg/s"), floor.cpu_per_10k, "% of a core"));
        for (p, value, least) in
            [("p50", shape.p50, floor.p50), ("p99", shape.p99, floor.p99), ("p99.9", shape.p999, floor.p999)]
        {
            let mut f = Figure::new("c", label(&format!("latency {p}")), value, "ms");
            if rate == 1_000 && p == "p99" {
                f = f.goal("<= 0.3");
            }
            out.push(f);
            out.push(Figure::new("c", label(&format!("yardstick latency {p}")), least, "ms"));
        }
    }
    Ok(out)
}

/// (f) accuracy: the bundled relay delays each echo 20 ms; 5,000 msg/s.
fn accuracy(ctx: &Context) -> Result<Vec<Figure>> {
    let run = ctx
        .run("accuracy", &scenario("accuracy", "bundled = true\nbundled_delay_ms = 20", 100, 0.02, 2, 20))?;
    clean(&run, "accuracy")?;
    Ok(vec![
        Figure::new(
            "f",
            "reported p50 minus the injected 20 ms (5,000 msg/s)",
            run.sustained("latency_ms.p50")? - 20.0,
            "ms",
        )
        .goal("<= 0.5"),
        Figure::new(
            "f",
            "reported p99 minus the injected 20 ms (5,000 msg/s)",
            run.sustained("latency_ms.p99")? - 20.0,
            "ms",
        )
        .goal("<= 2"),
    ])
}

/// The least-squares slope of `points`; `None` for fewer than 3.
fn fit_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (mx, my) = (points.iter().map(|p| p.0).sum::<f64>() / n, points.iter().map(|p| p.1).sum::<f64>() / n);
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The figures as a Markdown table.
pub fn table(figures: &[Figure]) -> String {
    let mut s = String::from("| | figure | value | goal |\n|---|---|---|---|\n");
    for f in figures {
        s.push_str(&format!(
            "| {} | {} | {:.3} {} | {} |\n",
            f.id,
            f.name,
            f.value,
            f.unit,
            f.goal.unwrap_or("")
        ));
    }
    s
}

/// Writes `<out>/<UTC date and time>.json` with the figures and the machine.
pub fn write_record(out: &Path, figures: &[Figure]) -> Result<PathBuf> {
    std::fs::create_dir_all(out)?;
    let now = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H%M%SZ"]).output()?;
    let stamp = String::from_utf8_lossy(&now.stdout).trim().to_string();
    let commit = std::process::Command::new("git").args(["rev-parse", "--short", "HEAD"]).output()?;
    let record = serde_json::json!({
        "taken_at": stamp,
        "commit": String::from_utf8_lossy(&commit.stdout).trim(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "figures": figures,
    });
    let path = out.join(format!("{stamp}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&record)? + "\n")?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_of_a_line_is_its_slope() {
        let points: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 1000.0, 30.0 + i as f64 * 2.5)).collect();
        assert!((fit_slope(&points).unwrap() - 0.0025).abs() < 1e-12);
        assert_eq!(fit_slope(&points[..2]), None);
        assert_eq!(fit_slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
    }
}
