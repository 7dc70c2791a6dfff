//! `[[flow]]` end to end: the k6 tunnel example (the bundled relay's
//! `/pubsub`, HTTP publishes routed into each session) run by the
//! controller binary and its worker processes, with each step's figures in
//! summary.json, metrics.csv and metrics.json, and step thresholds deciding
//! the verdict.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, num, read_csv, read_json};

const STEPS: [&str; 7] =
    ["connect", "established", "tunnel", "tunnel_http", "tunnel_message", "sleep", "close"];

#[test]
fn a_tunnel_flow_reports_each_step_and_step_thresholds_decide_the_verdict() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/k6/tunnel.toml");
    let text = std::fs::read_to_string(example).unwrap();
    // The example's flow, with one step threshold that holds and one that
    // no real run can meet.
    let flow = text.split("[thresholds]").next().unwrap();
    let scratch = Scratch::new();
    let path = scratch.file(
        "tunnel.toml",
        &format!(
            "{flow}[thresholds]\nstep_tunnel_http_failure_rate = \"< 0.01\"\nstep_tunnel_message_p95_ms = \"< 0.001\"\n"
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(120));
    assert_eq!(run.code, 99, "a failing step threshold fails the run; stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("| steps: connect "), "the progress line shows the steps:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["verdict"], "FAIL");
    let outcomes: Vec<(&str, bool)> = summary["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["metric"].as_str().unwrap(), t["pass"].as_bool().unwrap()))
        .collect();
    assert_eq!(outcomes, [("step_tunnel_http_failure_rate", true), ("step_tunnel_message_p95_ms", false)]);
    let measured = summary["thresholds"][1]["value"].as_f64().unwrap();
    assert!(measured > 0.001, "measured, and above the limit: {measured}");

    // summary.json: every step, in the flow's order.
    let steps = summary["steps"].as_object().unwrap();
    let mut names: Vec<&str> = steps.keys().map(String::as_str).collect();
    names.sort_by_key(|n| STEPS.iter().position(|s| s == n));
    assert_eq!(names, STEPS);
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let at = text.find("\n  \"steps\": {").expect("a top-level steps object");
    let places: Vec<usize> =
        STEPS.iter().map(|s| text[at..].find(&format!("\"{s}\": {{")).unwrap()).collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "written in the flow's order: {places:?}");
    for name in ["connect", "established", "tunnel_http", "tunnel_message"] {
        let s = &steps[name];
        assert!(num(s, "ok") >= 10.0, "{name}: {s}");
        assert!(num(s, "failure_rate") < 0.01, "{name}: {s}");
        let (p50, p95, max) = (num(s, "p50_ms"), num(s, "p95_ms"), num(s, "max_ms"));
        assert!(0.0 < p50 && p50 <= p95 && p95 <= max, "{name}: {s}");
        assert!(p95 < 1000.0, "{name} on loopback: {s}");
    }
    assert!(num(&steps["tunnel_http"], "ok") >= 5.0 * num(&steps["established"], "ok"), "{steps:?}");
    assert!(num(&steps["tunnel_message"], "ok") <= num(&steps["tunnel_http"], "ok"));
    assert!(num(&steps["sleep"], "p50_ms") >= 50.0, "sleeps of 50 to 150 ms: {}", steps["sleep"]);
    let phases = summary["phases"].as_array().unwrap();
    let in_phases: f64 = phases.iter().map(|p| num(&p["steps"]["tunnel_http"], "ok")).sum();
    assert_eq!(in_phases, num(&steps["tunnel_http"], "ok"), "the phases' steps add up to the run's");

    // metrics.csv: three columns per step after the fixed ones, adding up
    // to the summary's counts.
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let first = header.iter().position(|h| h.starts_with("step_")).unwrap();
    assert_eq!(header[first - 1], "target_connections", "after the fixed columns");
    let expected: Vec<String> = STEPS
        .iter()
        .flat_map(|s| [format!("step_{s}_ok"), format!("step_{s}_failed"), format!("step_{s}_p95_ms")])
        .collect();
    assert_eq!(header[first..], expected[..]);
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    for name in ["tunnel_http", "tunnel_message"] {
        for (figure, key) in [("ok", "ok"), ("failed", "failed")] {
            let i = column(&format!("step_{name}_{figure}"));
            let sum: u64 = rows.iter().map(|r| r[i].parse::<u64>().unwrap()).sum();
            assert_eq!(sum as f64, num(&steps[name], key), "{name} {figure}: rows vs summary");
        }
        let p95 = column(&format!("step_{name}_p95_ms"));
        let ok = column(&format!("step_{name}_ok"));
        for r in &rows {
            // A second without a successful run has no p95 (an empty cell).
            assert_eq!(r[p95].is_empty(), r[ok] == "0", "{name}: {r:?}");
        }
    }

    // metrics.json: the same columns in each row.
    let json = read_json(&dir.join("metrics.json"));
    let json_rows = json.as_array().unwrap();
    assert_eq!(json_rows.len(), rows.len());
    let sum: f64 = json_rows.iter().map(|r| num(r, "step_tunnel_http_ok")).sum();
    assert_eq!(sum, num(&steps["tunnel_http"], "ok"));
    assert!(json_rows.iter().all(|r| r.get("step_close_p95_ms").is_some()));

    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    assert!(log.contains("Flow steps") && log.contains("  tunnel_message "), "{log}");
}
