//! One set of figures everywhere: a real run with warmup, errors and
//! reconnects, then its summary.json, test.log, metrics.csv and `analyze`
//! must agree on throughput, error total, peak connections and p50/p95/p99,
//! for the whole run and for each phase.

mod common;

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use common::{ONE_RUN_AT_A_TIME, Scratch, merged_hlog, num, read_csv, read_json};
use serde_json::Value;
use stampede_model::figures;

/// Runs analyze on `dir` with `extra` flags; returns report.json.
fn analyze(dir: &Path, out: &Path, extra: &[&str]) -> Value {
    let mut argv = vec!["analyze", dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--format", "json"];
    argv.extend_from_slice(extra);
    let mut stdout = Vec::new();
    assert_eq!(stampede_analyze::cli::run(stampede_analyze::cli::Args::parse_from(argv), &mut stdout), 0);
    read_json(&out.join("report.json"))
}

/// metrics.csv's figures over the rows whose phase passes `keep`.
struct RowFigures {
    throughput: f64,
    errors: u64,
    peak: u64,
}

fn row_figures(dir: &Path, keep: impl Fn(&str) -> bool) -> RowFigures {
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let (phase, received, errors, active) =
        (col("phase"), col("messages_received"), col("errors"), col("connections_active"));
    let u = |r: &Vec<String>, i: usize| r[i].parse::<u64>().unwrap();
    let first = rows.iter().position(|r| keep(&r[phase])).expect("rows of the phase set");
    let kept: Vec<&Vec<String>> = rows.iter().filter(|r| keep(&r[phase])).collect();
    let before = first.checked_sub(1).map_or(0, |i| u(&rows[i], active));
    RowFigures {
        throughput: figures::throughput(kept.iter().map(|r| u(r, received)).sum(), kept.len() as u64),
        errors: kept.iter().map(|r| u(r, errors)).sum(),
        peak: figures::peak(before, kept.iter().map(|r| u(r, active))),
    }
}

/// `a` and `b` equal to within float printing.
fn same(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-9 * a.abs().max(1.0), "{what}: {a} vs {b}");
}

#[test]
fn summary_test_log_metrics_csv_and_analyze_agree() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "agree.toml",
        r#"
name = "agree"
[target]
bundled = true
bundled_delay_ms = 1
bundled_fault_drop = { at_s = 9.5, fraction = 0.25 }
[load]
connections = 80
message_interval_s = 0.1
reconnect = true
[phases]
warmup_s = 3
warmup_connections = 20
ramp_up_s = 3
sustained_s = 8
cooldown_s = 3
[fleet]
workers = 2
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(90));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert!(num(&summary, "errors_total") >= 15.0, "the drop made errors: {}", summary["errors"]);
    let causes: f64 = summary["errors"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert_eq!(causes, num(&summary, "errors_total"), "the error total is the sum of its causes");
    // errors.csv: each second's causes at its highest revision add up to
    // summary.json's causes, cause by cause.
    let (header, lines) = read_csv(&dir.join("errors.csv"));
    assert_eq!(header, ["elapsed_s", "timestamp", "revision", "cause", "errors"]);
    let mut latest: std::collections::BTreeMap<u64, (u64, Vec<(String, f64)>)> = Default::default();
    for l in &lines {
        let (s, rev) = (l[0].parse::<u64>().unwrap(), l[2].parse::<u64>().unwrap());
        let entry = latest.entry(s).or_insert((rev, Vec::new()));
        if rev > entry.0 {
            *entry = (rev, Vec::new());
        }
        if rev == entry.0 {
            entry.1.push((l[3].clone(), l[4].parse().unwrap()));
        }
    }
    let mut by_cause: std::collections::BTreeMap<String, f64> = Default::default();
    for (_, (_, causes)) in latest {
        for (cause, n) in causes {
            *by_cause.entry(cause).or_default() += n;
        }
    }
    let summary_causes: std::collections::BTreeMap<String, f64> = summary["errors"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect();
    assert_eq!(by_cause, summary_causes, "errors.csv by cause = summary.json's errors");

    // The whole run: summary.json = metrics.csv = test.log = analyze --include-warmup.
    let rows = row_figures(&dir, |_| true);
    same(rows.throughput, num(&summary, "throughput_msg_per_s"), "throughput, rows vs summary");
    assert_eq!(rows.errors as f64, num(&summary, "errors_total"));
    assert_eq!(rows.peak as f64, num(&summary, "connections.peak"));
    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    let l = &summary["latency_ms"];
    for line in [
        format!("Throughput:          {:.1} msg/s", num(&summary, "throughput_msg_per_s")),
        format!("Errors:              {} (", num(&summary, "errors_total")),
        format!("peak {},", num(&summary, "connections.peak")),
        format!(
            "p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}",
            num(l, "p50"),
            num(l, "p90"),
            num(l, "p95"),
            num(l, "p99")
        ),
    ] {
        assert!(log.contains(&line), "test.log lacks {line:?}:\n{log}");
    }
    let all = analyze(&dir, &scratch.dir.path().join("a1"), &["--include-warmup"]);
    let o = &all["overall"];
    assert_eq!(o["phases"], "warmup+ramp-up+sustained+cooldown");
    same(num(o, "throughput_msg_per_s"), num(&summary, "throughput_msg_per_s"), "throughput, analyze");
    assert_eq!(num(o, "errors"), num(&summary, "errors_total"));
    assert_eq!(num(o, "connections_peak"), num(&summary, "connections.peak"));
    assert_eq!(o["percentile_source"], "hlog");
    for p in ["count", "p50", "p95", "p99", "max"] {
        same(num(&o["latency_ms"], p), num(l, p), &format!("latency {p}, analyze vs summary"));
    }

    // Each phase.
    for (i, phase) in summary["phases"].as_array().unwrap().iter().enumerate() {
        let name = phase["name"].as_str().unwrap();
        let rows = row_figures(&dir, |p| p == name);
        same(rows.throughput, num(phase, "throughput_msg_per_s"), &format!("{name} throughput"));
        assert_eq!(rows.errors as f64, num(phase, "errors_total"), "{name} errors");
        assert_eq!(rows.peak as f64, num(phase, "connections.peak"), "{name} peak");
        let a = &all["phases"][i];
        assert_eq!(a["phase"], name);
        same(
            num(a, "throughput_msg_per_s"),
            num(phase, "throughput_msg_per_s"),
            &format!("{name} analyze throughput"),
        );
        assert_eq!(num(a, "errors"), num(phase, "errors_total"), "{name} analyze errors");
        assert_eq!(num(a, "connections_peak"), num(phase, "connections.peak"), "{name} analyze peak");
        for p in ["count", "p50", "p95", "p99"] {
            same(num(&a["latency_ms"], p), num(&phase["latency_ms"], p), &format!("{name} latency {p}"));
        }
    }
    let cooldown = summary["phases"].as_array().unwrap().last().unwrap();
    assert_eq!(num(cooldown, "connections.peak"), 80.0, "a cooldown's peak is the level it starts from");

    // analyze's default leaves warmup out, says so next to the figures, and
    // still computes them the same way.
    let default = analyze(&dir, &scratch.dir.path().join("a2"), &[]);
    let o = &default["overall"];
    assert_eq!(o["scope"], "warmup excluded");
    let rows = row_figures(&dir, |p| p != "warmup");
    same(num(o, "throughput_msg_per_s"), rows.throughput, "throughput without warmup");
    assert_eq!(num(o, "errors") as u64, rows.errors);
    assert_eq!(num(o, "connections_peak") as u64, rows.peak);
    let (_, csv_rows) = read_csv(&dir.join("metrics.csv"));
    let warmup_rows = csv_rows.iter().filter(|r| r[2] == "warmup").count() as u64;
    let (merged, _) = merged_hlog(&dir, "latency", |s| s >= warmup_rows);
    for (p, q) in [("p50", 0.5), ("p95", 0.95), ("p99", 0.99)] {
        same(
            num(&o["latency_ms"], p),
            merged.value_at_quantile(q) as f64 / 1000.0,
            &format!("{p} without warmup"),
        );
    }
    let text = std::fs::read_to_string(scratch.dir.path().join("a2").join("report.md")).unwrap();
    assert!(text.contains("(warmup excluded)"), "the scope is said next to the figures:\n{text}");
}
