//! The `analyze` binary on good and bad folders: one clear line per bad
//! input, exit code 2, and the good folders still analyzed; spreadsheet-clean
//! CSV outputs.

mod common;

use std::path::Path;
use std::process::Command;

use common::Synth;
use stampede_model::results::SUMMARY_SCHEMA_VERSION;

fn analyze(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_analyze")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn csv(path: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(common::split_csv).collect()
}

#[test]
fn bad_folders_are_named_and_good_ones_still_analyzed() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("good-20261123T040000Z");
    Synth { latency_plateau: Some((300, 20, 40.0)), ..Synth::clean(600) }.write(&good);

    let truncated = root.path().join("truncated");
    Synth::clean(200).write(&truncated);
    let text = std::fs::read_to_string(truncated.join("metrics.csv")).unwrap();
    std::fs::write(truncated.join("metrics.csv"), &text[..text.len() - 40]).unwrap();

    let foreign = root.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("metrics.csv"), "time,value\n1,2\n").unwrap();

    let newer = root.path().join("newer");
    Synth::clean(200).write(&newer);
    let summary = std::fs::read_to_string(newer.join("summary.json")).unwrap();
    let version = format!("\"schema_version\": {SUMMARY_SCHEMA_VERSION}");
    assert!(summary.contains(&version));
    std::fs::write(newer.join("summary.json"), summary.replace(&version, "\"schema_version\": 99")).unwrap();

    let missing = root.path().join("missing");
    let nothing = format!("{}/none-*", root.path().display());
    let (code, stdout, stderr) = analyze(&[
        good.to_str().unwrap(),
        truncated.to_str().unwrap(),
        foreign.to_str().unwrap(),
        newer.to_str().unwrap(),
        missing.to_str().unwrap(),
        &nothing,
    ]);
    assert_eq!(code, 2, "stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 5, "one line per bad folder or empty pattern:\n{stderr}");
    assert!(stderr.contains("none-*: no results folder matches"), "{stderr}");
    assert!(stderr.contains("truncated/metrics.csv"), "{stderr}");
    assert!(stderr.contains("foreign/metrics.csv: not a stampede metrics file"), "{stderr}");
    assert!(stderr.contains("newer/summary.json: schema version 99 is newer"), "{stderr}");
    assert!(stderr.contains("missing: no such results folder"), "{stderr}");
    assert!(stdout.contains("good-20261123T040000Z") && stdout.contains("latency_p95_ms rose"), "{stdout}");
    assert!(good.join("analysis/report.md").is_file());
}

#[test]
fn outputs_are_spreadsheet_clean() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    Synth { latency_plateau: Some((300, 20, 40.0)), drop: Some((450, 0.3)), ..Synth::clean(600) }.write(&run);
    let out = root.path().join("out");
    let (code, _, stderr) = analyze(&[run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    for file in ["anomalies.csv", "phases.csv"] {
        let rows = csv(&out.join(file));
        let width = rows[0].len();
        assert!(rows.len() >= 2, "{file} has data rows");
        for (i, r) in rows.iter().enumerate() {
            assert_eq!(r.len(), width, "{file} row {i}: {r:?}");
        }
        let time_col = rows[0].iter().position(|h| h == "start_time").unwrap();
        for r in &rows[1..] {
            assert!(r[time_col].starts_with("2026-11-23T") && r[time_col].ends_with('Z'), "{file}: {r:?}");
        }
    }
    let anomalies = csv(&out.join("anomalies.csv"));
    assert_eq!(anomalies.len(), 3, "{anomalies:?}");
    assert_eq!(anomalies[1][1], "latency_spike");
    assert_eq!(anomalies[1][6], "2026-11-23T04:05:00.000Z");
    assert_eq!(anomalies[2][1], "connection_drop");
    let phases = csv(&out.join("phases.csv"));
    let names: Vec<&str> = phases[1..].iter().map(|r| r[1].as_str()).collect();
    assert_eq!(names, ["warmup", "ramp-up", "sustained", "cooldown", "all"]);
    let source = phases[0].iter().position(|h| h == "percentile_source").unwrap();
    assert!(phases[1..].iter().all(|r| r[source] == "latency.hlog"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["findings"].as_array().unwrap().len(), 2);
}

#[test]
fn a_folder_without_its_histogram_log_says_what_is_approximate() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    Synth { hlog: false, ..Synth::clean(300) }.write(&run);
    std::fs::remove_file(run.join("workers.csv")).unwrap();
    let (code, stdout, stderr) = analyze(&[run.to_str().unwrap(), "--format", "markdown"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("latency.hlog missing: percentiles approximate (from summary.json)"), "{stdout}");
    assert!(stdout.contains("workers.csv missing"), "{stdout}");
    assert!(
        stdout.contains("| sustained | 90 | 180 |")
            && stdout.contains("| approximate (latency.hlog missing: from summary.json) |"),
        "each phase's percentiles come from summary.json, marked: {stdout}"
    );
}

#[test]
fn runs_are_compared_against_a_baseline() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("a-base");
    let slow = root.path().join("b-slow");
    Synth::clean(300).write(&base);
    Synth { latency_plateau: Some((100, 150, 6.0)), ..Synth::clean(300) }.write(&slow);
    let out = root.path().join("cmp");
    let pattern = format!("{}/b-*", root.path().display());
    let (code, stdout, stderr) =
        analyze(&[&pattern, "--baseline", base.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let md = std::fs::read_to_string(out.join("comparison.md")).unwrap();
    assert!(md.contains("latency_p95_ms") && md.contains("REGRESSION"), "{md}");
    assert!(stdout.contains("Comparison against a-base"), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap()).unwrap();
    let p95 = json["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "latency_p95_ms").unwrap();
    assert_eq!(p95["runs"][0][3], true, "p95 regressed: {p95}");
    let tput =
        json["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "throughput_msg_per_s").unwrap();
    assert_eq!(tput["runs"][0][3], false, "throughput did not: {tput}");
}
