//! The `analyze` binary on good and bad folders: one clear line per bad
//! input, exit code 2, and the good folders still analyzed; spreadsheet-clean
//! CSV outputs.

use crate::common;

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
            // UTC, in the form spreadsheets read as a date-time.
            let t = &r[time_col];
            assert!(t.starts_with("2026-11-23T") && t.len() == 23 && !t.ends_with('Z'), "{file}: {r:?}");
        }
    }
    let anomalies = csv(&out.join("anomalies.csv"));
    assert_eq!(anomalies.len(), 3, "{anomalies:?}");
    assert_eq!(anomalies[1][1], "latency_spike");
    assert_eq!(anomalies[1][6], "2026-11-23T04:05:00.000");
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
    assert_eq!(p95["runs"][0]["regression"], true, "p95 regressed: {p95}");
    assert_eq!(p95["runs"][0]["run"], "b-slow", "{p95}");
    let tput =
        json["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "throughput_msg_per_s").unwrap();
    assert_eq!(tput["runs"][0]["regression"], false, "throughput did not: {tput}");
}

/// Sets `key` of a run's summary.json (a string value).
fn set_summary(run: &Path, key: &str, value: &str) {
    let path = run.join("summary.json");
    let mut s: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    s[key] = serde_json::Value::String(value.into());
    std::fs::write(&path, serde_json::to_string_pretty(&s).unwrap()).unwrap();
}

#[test]
fn ci_gates_on_regressions_and_findings_with_their_own_exit_codes() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, slow) = (root.path().join("a"), root.path().join("b"), root.path().join("c-slow"));
    Synth::clean(300).write(&a);
    Synth::clean(300).write(&b);
    Synth { latency_plateau: Some((100, 150, 6.0)), ..Synth::clean(300) }.write(&slow);
    let out = root.path().join("out");
    let gate = |runs: &[&Path], extra: &[&str]| {
        let mut args: Vec<String> = runs.iter().map(|p| p.display().to_string()).collect();
        args.extend(["--out".to_string(), out.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        analyze(&args)
    };
    let (code, _, stderr) = gate(&[&a, &b], &["--fail-on-regression"]);
    assert_eq!(code, 0, "equal runs: {stderr}");
    let (code, _, stderr) = gate(&[&a, &slow], &["--fail-on-regression"]);
    assert_eq!(code, 3, "a regressed run: {stderr}");
    assert!(stderr.contains("regression against the baseline"), "{stderr}");
    let (code, _, _) = gate(&[&a, &slow], &[]);
    assert_eq!(code, 0, "without the flag a regression is reported, not failed");
    // A 30 % connection drop is a warning; clean runs have no finding.
    let dropped = root.path().join("d-dropped");
    Synth { drop: Some((200, 0.3)), ..Synth::clean(300) }.write(&dropped);
    let (code, stdout, stderr) = gate(&[&dropped], &["--fail-on", "warning"]);
    assert_eq!(code, 4, "{stdout}{stderr}");
    assert!(stderr.contains("findings at or above --fail-on"), "{stderr}");
    let (code, stdout, stderr) = gate(&[&dropped], &["--fail-on", "critical"]);
    assert_eq!(code, 0, "a warning is below critical: {stdout}{stderr}");
    let (code, _, stderr) = gate(&[&a], &["--fail-on", "warning"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, _, stderr) = gate(&[&a], &["--fail-on", "severe"]);
    assert_eq!(code, 2, "a bad value is a usage error: {stderr}");
}

#[test]
fn the_oldest_run_is_the_baseline_and_different_tests_are_flagged() {
    let root = tempfile::tempdir().unwrap();
    // Sorted by path, "a-late" comes first; by start, "b-early" is older.
    let (late, early) = (root.path().join("a-late"), root.path().join("b-early"));
    Synth::clean(300).write(&late);
    Synth { latency_plateau: Some((100, 150, 6.0)), ..Synth::clean(300) }.write(&early);
    set_summary(&early, "started_at", "2026-01-01T00:00:00.000Z");
    set_summary(&late, "started_at", "2026-06-01T00:00:00.000Z");
    set_summary(&late, "scenario", "another");
    let out = root.path().join("out");
    let (code, stdout, stderr) = analyze(&[
        late.to_str().unwrap(),
        early.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{stderr}");
    // One JSON document: an array of the runs' reports.
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc.as_array().map(Vec::len), Some(2), "{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("comparison.json")).unwrap()).unwrap();
    assert_eq!(json["baseline"], "b-early", "the oldest run: {json}");
    let warnings = json["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("ran scenario another")), "{json}");
    assert!(stderr.contains("warning: a-late ran scenario another"), "{stderr}");
    // A regression against the baseline here is an improvement: the older run was slow.
    let p95 = json["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "latency_p95_ms").unwrap();
    assert_eq!(p95["runs"][0]["run"], "a-late");
    assert_eq!(p95["runs"][0]["regression"], false, "{p95}");
}

#[test]
fn detector_flags_out_of_range_are_refused_by_name() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run-20261123T040000Z");
    Synth::clean(200).write(&run);
    let run = run.to_str().unwrap();
    for (flag, value, says) in [
        ("--leak-alpha", "2", "above 0 and below 1"),
        ("--leak-alpha", "0", "above 0 and below 1"),
        ("--leak-block-s", "inf", "above 0"),
        ("--drop-mad", "NaN", "0 or more"),
        ("--spike-mad", "-1", "0 or more"),
        ("--drop-min-fraction", "1.5", "from 0 to 1"),
        ("--blip-min-ratio", "1e999", "0 or more"),
    ] {
        // One token, as a negative value must be given (`--spike-mad=-1`).
        let (code, _, stderr) = analyze(&[run, &format!("{flag}={value}")]);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(says), "{flag} {value}: {stderr}");
    }
    // In range: analyzed.
    let (code, _, stderr) =
        analyze(&[run, "--leak-alpha", "0.01", "--drop-mad", "0", "--leak-block-s", "30"]);
    assert_eq!(code, 0, "{stderr}");
}
