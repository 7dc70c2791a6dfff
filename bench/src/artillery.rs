//! (g) Artillery side by side: the (c) shape (100 connections, 64 B echoes
//! against the same Node `ws` server) run by Artillery's ws engine and by
//! stampede, one after the other, with their ratios.
//!
//! Artillery has no open-model schedule for WebSocket messages nor a
//! latency figure for them: each of its 100 virtual users loops a send,
//! waits for the echo (timed by bench/node/artillery-echo.js from just
//! before the send) and thinks for `100 / rate` s. Its latency therefore
//! counts from the actual send, which flatters it (a late send hides its
//! lateness), and its rate falls short of the one asked by the latency;
//! the rate it reached is a figure, and its CPU is per message it sent.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::figures::{Figure, SHAPE_S, Shape, stampede_at};
use crate::peers::NodeEcho;
use crate::procs::tree_cpu_s;
use crate::runs::Context;

/// The rates compared, msg/s in all.
const RATES: [u64; 2] = [1_000, 20_000];

/// Virtual users (connections), as in (c).
const USERS: u64 = 100;

pub fn side_by_side(ctx: &Context) -> Result<Vec<Figure>> {
    let server = NodeEcho::start(&ctx.node)?;
    let mut out = Vec::new();
    for rate in RATES {
        let ours = stampede_at(ctx, &server.url(), rate)?;
        let (theirs, reached) = artillery_at(ctx, &server.url(), rate)?;
        let label =
            |what: &str| format!("Artillery {what} at {rate} msg/s asked (100 connections, 64 B, Node ws)");
        out.extend([
            Figure::new("g", label("rate reached"), reached, "msg/s"),
            Figure::new("g", label("CPU per 10,000 msg/s"), theirs.cpu_per_10k, "% of a core"),
            Figure::new("g", label("latency p50 (from the actual send)"), theirs.p50, "ms"),
            Figure::new("g", label("latency p99 (from the actual send)"), theirs.p99, "ms"),
            Figure::new("g", label("latency p99.9 (from the actual send)"), theirs.p999, "ms"),
            Figure::new(
                "g",
                label("CPU per message / stampede's"),
                theirs.cpu_per_10k / ours.cpu_per_10k,
                "x",
            ),
            Figure::new("g", label("p99 / stampede's"), theirs.p99 / ours.p99, "x"),
        ]);
    }
    Ok(out)
}

/// Runs the shape with Artillery at `rate` msg/s against `url`: what it
/// measured, and the rate it reached.
fn artillery_at(ctx: &Context, url: &str, rate: u64) -> Result<(Shape, f64)> {
    let bin = ctx.node.join("node_modules/.bin/artillery");
    if !bin.is_file() {
        bail!("{}: no Artillery (bench/run installs it: npm ci --prefix bench/node)", bin.display());
    }
    let per_user = rate as f64 / USERS as f64;
    let processor = std::fs::canonicalize(ctx.node.join("artillery-echo.js"))?;
    let script = json!({
        "config": {
            "target": url,
            "processor": processor,
            "phases": [{ "duration": 2, "arrivalCount": USERS }],
        },
        "scenarios": [{
            "engine": "ws",
            "flow": [{
                // In whole ms: Artillery reads a fractional think as ms.
                "loop": [{ "function": "echo" }, { "think": format!("{}ms", (1000.0 / per_user).round()) }],
                "count": (per_user * SHAPE_S as f64) as u64,
            }],
        }],
    });
    // YAML is a superset of JSON: Artillery reads this as its script.
    let name = format!("artillery-{rate}");
    let script = ctx.write(&format!("{name}.yml"), &script.to_string())?;
    let report = script.with_extension("json");
    let mut child = Command::new(&bin)
        .args(["run", "--quiet", "--output"])
        .arg(&report)
        .arg(&script)
        .env("ARTILLERY_DISABLE_TELEMETRY", "true")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(script.with_extension("err"))?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    // CPU over the seconds every user is looping: from 5 s (Node's start
    // and the 2 s of arrivals behind) to 5 s before the planned end.
    let started = Instant::now();
    let window = (Duration::from_secs(5), Duration::from_secs(SHAPE_S - 3));
    let mut readings = Vec::new();
    while child.try_wait()?.is_none() {
        let at = started.elapsed();
        if at >= window.0 && at <= window.1 {
            readings.push((at.as_secs_f64(), tree_cpu_s(child.id())));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = child.wait()?;
    let (Some(first), Some(last)) = (readings.first(), readings.last()) else {
        bail!("{name}: Artillery ended within {:?} (exit {:?})", started.elapsed(), status.code());
    };
    let cpu_pct = (last.1 - first.1) / (last.0 - first.0).max(1e-9) * 100.0;
    read_report(&report, cpu_pct).with_context(|| format!("{name}: {}", report.display()))
}

/// The shape and the reached rate from Artillery's JSON report; `cpu_pct`
/// is what it used, % of a core.
fn read_report(path: &Path, cpu_pct: f64) -> Result<(Shape, f64)> {
    let report: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let all = &report["aggregate"];
    let (sent, received) = (all["counters"]["echo.sent"].as_f64(), all["counters"]["echo.received"].as_f64());
    let (Some(sent), Some(received)) = (sent, received) else { bail!("no echo counters") };
    if received < sent || all["counters"]["vusers.failed"].as_f64().unwrap_or(0.0) > 0.0 {
        bail!("{received} of {sent} echoes came back, or a virtual user failed");
    }
    let span_ms = all["lastCounterAt"].as_f64().zip(all["firstCounterAt"].as_f64()).map(|(l, f)| l - f);
    let reached = received / (span_ms.context("no counter times")? / 1000.0).max(1.0);
    let latency = &all["summaries"]["echo_ms"];
    let p = |key: &str| latency[key].as_f64().with_context(|| format!("no echo_ms {key}"));
    let shape = Shape {
        cpu_per_10k: cpu_pct / (reached / 10_000.0),
        p50: p("p50")?,
        p99: p("p99")?,
        p999: p("p999")?,
    };
    Ok((shape, reached))
}
