//! Load shapes end to end (`[[stage]]`): the controller binary, a real
//! worker process and the bundled relay on loopback, limited with
//! `bundled_max_connections` so that a level can fail.

mod common;

use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, read_csv, read_json};

/// Relay limit and stress step of the break test: small, so the run is short.
const LIMIT: u64 = 200;
const STEP_BY: u64 = 50;

#[test]
fn stress_until_break_finds_the_relays_connection_limit() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "stress.toml",
        &format!(
            r#"
name = "break"
[target]
bundled = true
bundled_max_connections = {LIMIT}
[load]
connections = 400
message_interval_s = 0.5
[[stage]]
kind = "stress"
from = {STEP_BY}
step_by = {STEP_BY}
max = 400
step = "2s"
until = "error_rate"
cooldown = "1s"
[thresholds]
error_rate = "< 0.01"
"#
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(45));
    assert!(run.took < Duration::from_secs(30), "took {:?}", run.took);
    // Past the break the run's error rate fails its threshold: FAIL (99).
    assert_eq!(run.code, 99, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    let bp = &summary["breaking_point"];
    let held = bp["connections"].as_u64().unwrap_or_else(|| panic!("no breaking point: {summary:#}"));
    eprintln!("breaking point {held} connections, relay limit {LIMIT}: {bp}");
    assert!(held.abs_diff(LIMIT) <= STEP_BY, "breaking point {held} is not within a step of {LIMIT}");
    assert_eq!(bp["broke_at_connections"].as_u64(), Some(held + STEP_BY));
    assert_eq!(bp["failing_metric"], "error_rate");
    assert!(bp["failing_value"].as_f64().unwrap() >= 0.01);
    assert!(summary["breaking_point_reason"].as_str().unwrap().contains("highest level that held"));
    assert!(summary["errors"]["http_503"].as_u64().unwrap() > 0, "the relay refused with 503");

    // The stage ended at the break: no step above the one that broke ran
    // its full length, and the cooldown came right after.
    let phases = summary["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names.last(), Some(&"stress-cooldown"), "{names:?}");
    assert!(!names.contains(&"stress-400"), "steps after the break are dropped: {names:?}");
    let step_of = |level: u64| phases.iter().find(|p| p["name"] == format!("stress-{level}")).unwrap();
    assert_eq!(step_of(LIMIT)["verdict"], "PASS");
    assert_eq!(step_of(LIMIT + STEP_BY)["verdict"], "FAIL");

    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    let line = format!("stress: breaking point {held} connections: error_rate < 0.01 failed");
    assert!(log.contains(&line), "test.log:\n{log}");
    assert!(log.contains("Breaking point:") && log.contains("phase stress-cooldown started"), "{log}");
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let most = rows.iter().map(|r| r[col("connections_active")].parse::<u64>().unwrap()).max();
    assert_eq!(most, Some(LIMIT), "the relay held exactly its limit");
}

#[test]
fn a_progressive_steps_stage_gives_one_verdict_per_step() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    // The relay takes 30 connections: the first two steps hold, the third
    // cannot, and its verdict comes from its own seconds only.
    let path = scratch.file(
        "steps.toml",
        r#"
name = "progressive"
[target]
bundled = true
bundled_max_connections = 30
[load]
connections = 40
message_interval_s = 0.25
[[stage]]
kind = "progressive"
levels = [10, 20, 40]
step = "3s"
ramp = "1s"
[[stage]]
kind = "ramp"
name = "down"
to = 0
duration = 1
[thresholds]
error_rate = "< 0.01"
latency_p99_ms = "< 1000"
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(45));
    assert_eq!(run.code, 99, "a failing step fails the run; stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    let phases = summary["phases"].as_array().unwrap();
    let verdicts: Vec<(&str, &str)> = phases
        .iter()
        .filter(|p| p["verdict"].is_string())
        .map(|p| (p["name"].as_str().unwrap(), p["verdict"].as_str().unwrap()))
        .collect();
    assert_eq!(verdicts, [("step-10", "PASS"), ("step-20", "PASS"), ("step-40", "FAIL")]);
    for p in phases.iter().filter(|p| p["verdict"].is_string()) {
        assert_eq!(p["kind"], "steps");
        assert_eq!(p["thresholds"].as_array().unwrap().len(), 2, "each threshold over the step: {p}");
    }
    let step40 = &phases[2];
    let error_rate =
        step40["thresholds"].as_array().unwrap().iter().find(|t| t["metric"] == "error_rate").unwrap();
    assert!(error_rate["value"].as_f64().unwrap() >= 0.01 && error_rate["pass"] == false);
    assert!(phases[0]["errors_total"].as_u64() == Some(0), "the refused upgrades belong to the last step");
    assert!(summary.get("breaking_point").is_none(), "no stress stage, no key");

    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    for (name, verdict) in verdicts {
        let line =
            log.lines().find(|l| l.trim_start().starts_with(name) && l.contains("error_rate < 0.01 ("));
        let line = line.unwrap_or_else(|| panic!("no verdict line for {name} in test.log:\n{log}"));
        assert!(line.contains(&format!(" {verdict} ")), "{line}");
    }
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let phase = header.iter().position(|h| h == "phase").unwrap();
    let mut seen: Vec<&str> = rows.iter().map(|r| r[phase].as_str()).collect();
    seen.dedup();
    assert_eq!(seen, ["step-10", "step-20", "step-40", "down"], "each step is its own phase in metrics.csv");
}

#[test]
fn churn_arrivals_waves_and_a_message_rate_keep_fleet_totals_over_two_workers() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "shapes.toml",
        r#"
name = "shapes"
[target]
bundled = true
[load]
connections = 40
message_rate = 200
[fleet]
workers = 2
[[stage]]
kind = "steps"
levels = [10, 40]
step = "3s"
[[stage]]
kind = "churn"
rate = 10
duration = 3
[[stage]]
kind = "wave"
low = 10
high = 30
period = 2
duration = 2
[[stage]]
kind = "arrivals"
rate = 20
session = "1s"
max = 10
duration = 3
[thresholds]
error_rate = "< 0.01"
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["workers"], 2);
    let phase = |name: &str| {
        summary["phases"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned().unwrap()
    };
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let cell = |r: &Vec<String>, name: &str| r[col(name)].parse::<u64>().unwrap();
    let of = |p: &str| -> Vec<&Vec<String>> { rows.iter().filter(|r| r[col("phase")] == p).collect() };

    // The fleet's message rate holds at 10 and at 40 connections: each
    // second after a step's first sends ~200 (the workers split the
    // connections, every connection takes the phase's interval).
    for step in ["step-10", "step-40"] {
        for r in of(step).into_iter().skip(1) {
            let sent = cell(r, "messages_sent");
            assert!((180..=220).contains(&sent), "{step} second {}: {sent} sent", r[0]);
        }
    }
    assert_eq!(summary["messages"]["corrupted"], 0, "interval changes keep every stamp checkable");

    // Churn: 10 replacements a second over 3 s, closed with close frames and
    // reopened, never errors.
    let churn = phase("churn");
    let closed = churn["connections"]["closed_by_client"].as_u64().unwrap();
    let opened = churn["connections"]["opened"].as_u64().unwrap();
    assert!((27..=33).contains(&closed) && opened.abs_diff(closed) <= 2, "closed {closed}, opened {opened}");
    assert_eq!(churn["errors_total"], 0);
    for r in of("churn") {
        assert_eq!(cell(r, "connections_active"), 40, "churn holds the level: {r:?}");
    }

    // The wave stays between its low and high.
    for r in of("wave") {
        let active = cell(r, "connections_active");
        assert!((10..=30).contains(&active), "wave second {}: {active}", r[0]);
    }

    // Arrivals: 20 a second living 1 s want 20 open; the cap is 10, and
    // the arrivals beyond it are counted, not opened.
    let arrivals = phase("arrivals");
    let dropped = arrivals["counters"]["sessions_dropped"].as_u64().unwrap();
    assert!((20..=40).contains(&dropped), "{dropped} dropped");
    for r in of("arrivals").into_iter().skip(1) {
        assert!(cell(r, "connections_active") <= 10, "never above max: {r:?}");
    }
    assert_eq!(arrivals["errors_total"], 0);
}
