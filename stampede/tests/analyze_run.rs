//! A real run, analyzed end to end: the controller drives two worker
//! processes against the bundled relay with a latency plateau and a
//! connection drop injected, and `analyze` must find both where they were,
//! and nothing else, and draw every chart.

mod common;

use std::time::Duration;

use clap::Parser;
use common::{ONE_RUN_AT_A_TIME, Scratch};

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
    let run = scratch.run(&path, Duration::from_secs(90));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();

    let analysis = scratch.dir.path().join("analysis");
    let args = stampede_analyze::cli::Args::parse_from([
        "analyze",
        dir.to_str().unwrap(),
        "--plots",
        "--format",
        "html",
        "--out",
        analysis.to_str().unwrap(),
    ]);
    let mut stdout = Vec::new();
    assert_eq!(stampede_analyze::cli::run(args, &mut stdout), 0);

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(analysis.join("report.json")).unwrap()).unwrap();
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
