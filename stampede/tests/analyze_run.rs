//! A real run, analyzed end to end: the controller drives two worker
//! processes against the bundled relay with a latency plateau and a
//! connection drop injected, and `analyze` must find both where they were,
//! and nothing else, and draw every chart.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{ONE_RUN_AT_A_TIME, Scratch};

/// Runs `scenario` (within `limit`), then `analyze` on its results with
/// `flags`: the results folder, the analysis folder and report.json.
fn run_and_analyze(
    scratch: &Scratch,
    scenario: &std::path::Path,
    limit: Duration,
    flags: &[&str],
) -> (std::path::PathBuf, std::path::PathBuf, serde_json::Value) {
    let run = scratch.run(scenario, limit);
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let analysis = scratch.dir.path().join("analysis");
    let mut argv = vec!["analyze", dir.to_str().unwrap()];
    argv.extend_from_slice(flags);
    argv.extend(["--out", analysis.to_str().unwrap()]);
    let args = stampede_analyze::cli::Args::parse_from(argv);
    assert_eq!(stampede_analyze::cli::run(args, &mut Vec::new()), 0);
    let report =
        serde_json::from_str(&std::fs::read_to_string(analysis.join("report.json")).unwrap()).unwrap();
    (dir, analysis, report)
}

#[test]
fn analyze_finds_the_injected_faults_of_a_real_run() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "faults.toml",
        r#"
name = "faults"
[target]
bundled = true
bundled_delay_ms = 2
bundled_fault_slow = { start_s = 12, length_s = 8, extra_ms = 40 }
bundled_fault_drop = { at_s = 26.5, fraction = 0.3 }
[load]
connections = 200
message_interval_s = 0.2
reconnect = false
[phases]
warmup_s = 2
ramp_up_s = 3
sustained_s = 28
cooldown_s = 2
[fleet]
workers = 2
"#,
    );
    let (dir, analysis, report) =
        run_and_analyze(&scratch, &path, Duration::from_secs(90), &["--plots", "--format", "html"]);
    let findings = report["findings"].as_array().unwrap();
    let of = |kind: &str| findings.iter().filter(|f| f["kind"] == kind).collect::<Vec<_>>();
    let near = |v: &serde_json::Value, t: f64| (v.as_f64().unwrap() - t).abs() <= 2.0;

    let spikes = of("latency_spike");
    assert_eq!(spikes.len(), 1, "{findings:#?}");
    assert!(near(&spikes[0]["start_s"], 12.0) && near(&spikes[0]["end_s"], 19.0), "{:#?}", spikes[0]);
    assert!(spikes[0]["magnitude"].as_f64().unwrap() >= 35.0, "{:#?}", spikes[0]);

    let drops = of("connection_drop");
    assert_eq!(drops.len(), 1, "{findings:#?}");
    assert!(near(&drops[0]["start_s"], 26.0), "{:#?}", drops[0]);
    assert!((drops[0]["magnitude"].as_f64().unwrap() - 60.0).abs() <= 3.0, "30% of 200: {:#?}", drops[0]);
    assert!(drops[0]["description"].as_str().unwrap().contains("closed_1011"), "{:#?}", drops[0]);
    assert_eq!(findings.len(), 2, "nothing else: {findings:#?}");

    assert_eq!(report["overall"]["percentile_source"], "hlog");
    for stem in stampede_analyze::plots::CHARTS {
        for ext in ["png", "svg"] {
            let file = analysis.join(format!("{stem}.{ext}"));
            let len = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert!(len > 5_000, "{} is {len} bytes", file.display());
        }
    }
    let html = std::fs::read_to_string(analysis.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), stampede_analyze::plots::CHARTS.len());

    // Every timestamp column of every CSV opens as date-times in a spreadsheet.
    common::spreadsheet_reads_dates(&dir.join("metrics.csv"), &["timestamp"]);
    common::spreadsheet_reads_dates(&dir.join("workers.csv"), &["timestamp"]);
    let (_, error_rows) = common::read_csv(&dir.join("errors.csv"));
    assert!(!error_rows.is_empty(), "the injected drop's errors are in errors.csv");
    common::spreadsheet_reads_dates(&dir.join("errors.csv"), &["timestamp"]);
    common::spreadsheet_reads_dates(&analysis.join("anomalies.csv"), &["start_time", "end_time"]);
    common::spreadsheet_reads_dates(&analysis.join("phases.csv"), &["start_time"]);
}

/// Faults at the small end, as issue "find the subtle anomalies" asks: the
/// echo 2x slower for 6 s, 6 % of the connections dropped, the relay
/// leaking 0.8 MB/min (1.3 MB over the run). Each must be found where it was,
/// and nothing else.
#[test]
fn analyze_finds_small_faults_of_a_real_run() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "small.toml",
        r#"
name = "small-faults"
[target]
bundled = true
bundled_delay_ms = 2
bundled_fault_slow = { start_s = 30, length_s = 6, extra_ms = 2 }
bundled_fault_drop = { at_s = 60.5, fraction = 0.06 }
bundled_fault_leak_mb_per_min = 0.8
# A relay process of its own: an in-process relay's memory is the
# controller's, which fills its 60 s of correctable rows at first.
bundled_processes = 1
[load]
connections = 200
message_interval_s = 0.2
reconnect = false
[phases]
warmup_s = 2
ramp_up_s = 3
sustained_s = 95
cooldown_s = 2
[fleet]
workers = 2
"#,
    );
    let (dir, _, report) = run_and_analyze(&scratch, &path, Duration::from_secs(180), &["--format", "json"]);
    let findings = report["findings"].as_array().unwrap();
    eprintln!("{findings:#?}");
    let of = |kind: &str| findings.iter().filter(|f| f["kind"] == kind).collect::<Vec<_>>();
    let at = |v: &serde_json::Value| v.as_f64().unwrap();

    // The slow window is found where it was. This host is shared: a spike
    // elsewhere must be one the run really saw, never one the detector made
    // up (CI once saw the generator stall at 40 s: a 15x blip, so reported).
    let spikes = of("latency_spike");
    let slow = |f: &serde_json::Value| {
        (at(&f["start_s"]) - 30.0).abs() <= 2.0 && (at(&f["end_s"]) - 35.0).abs() <= 2.0
    };
    assert_eq!(spikes.iter().filter(|f| slow(f)).count(), 1, "{findings:#?}");
    let (header, rows) = common::read_csv(&dir.join("metrics.csv"));
    let column = |name: &str| -> Vec<f64> {
        let k = header.iter().position(|h| h == name).unwrap();
        rows.iter().map(|r| r[k].parse().unwrap_or(f64::NAN)).collect()
    };
    let p95 = column("latency_p95_ms");
    let mut sorted: Vec<f64> = p95.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    // The run really saw it: the p95 of one of its seconds 1.5x the median.
    let really_rose = |f: &serde_json::Value| {
        let seen = (at(&f["start_s"]) as usize..=at(&f["end_s"]) as usize)
            .filter_map(|s| p95.get(s))
            .fold(0.0f64, |a, b| a.max(*b));
        assert!(seen >= 1.5 * median, "latency the run did not see (p95 {seen} ms, median {median}): {f:#?}");
    };
    spikes.iter().filter(|f| !slow(f)).for_each(|f| really_rose(f));
    // A stalled generator (the host's doing) is reported as such: a blip or
    // a stall only where the rows say the generator stalled or p95 rose.
    let blips = of("latency_blip");
    blips.iter().for_each(|f| really_rose(f));
    let stalls = of("generator_stalled");
    let stalled = column("generator_stalled");
    for stall in &stalls {
        let (a, b) = (at(&stall["start_s"]) as usize, at(&stall["end_s"]) as usize);
        assert!((a..=b).any(|s| stalled.get(s) == Some(&1.0)), "a stall the rows do not show: {stall:#?}");
    }

    let drops = of("connection_drop");
    assert_eq!(drops.len(), 1, "{findings:#?}");
    assert!((at(&drops[0]["start_s"]) - 60.0).abs() <= 2.0, "{:#?}", drops[0]);
    assert!((at(&drops[0]["magnitude"]) - 12.0).abs() <= 2.0, "6 % of 200: {:#?}", drops[0]);

    let leaks = of("memory_growth");
    assert!(leaks.iter().any(|l| l["subject"] == "target_rss_mb"), "{findings:#?}");
    let leak = leaks.iter().find(|l| l["subject"] == "target_rss_mb").unwrap();
    // The leak, plus the relay's own growth under this load (0.2-0.3 MB/min
    // over such a run: 3.2 measured for a 3 MB/min leak, 1.07-1.09 for 0.8).
    assert!((0.7..=1.3).contains(&at(&leak["magnitude"])), "0.8 MB/min: {leak:#?}");
    // Growth elsewhere must be in the data too: the series' lowest value in
    // its last 10 s at least half the reported rise above that of its first
    // 10 s. (The workers' RSS does rise ~0.13 MB/min over such a run.)
    for other in leaks.iter().filter(|l| l["subject"] != "target_rss_mb") {
        let series = column(other["subject"].as_str().unwrap());
        let (a, b) = (at(&other["start_s"]) as usize, at(&other["end_s"]) as usize);
        let low =
            |r: std::ops::Range<usize>| r.filter_map(|s| series.get(s)).fold(f64::INFINITY, |m, v| m.min(*v));
        let rise = low(b.saturating_sub(9)..b + 1) - low(a..a + 10);
        let reported = at(&other["magnitude"]) / 60.0 * (b - a) as f64;
        assert!(rise >= reported / 2.0, "growth the run did not show ({rise} MB): {other:#?}");
    }
    for f in findings {
        assert!(at(&f["confidence"]) > 0.99 && f["rule"].as_str().is_some_and(|r| !r.is_empty()), "{f:#?}");
    }
    let real = 1 + spikes.len() + blips.len() + stalls.len() + leaks.len();
    assert_eq!(findings.len(), real, "nothing else: {findings:#?}");
}
