//! `controller run` end to end: the controller binary, real worker processes
//! over gRPC on loopback, the bundled relay, and the results folder.

mod common;

use std::os::unix::process::CommandExt;

use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, controller, num, read_csv, read_json};

const QUICK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quick.toml");

#[test]
fn quick_example_passes_and_writes_every_file() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let out = scratch.results_parent();
    // The quick example, shortened: 5 s warmup, 3 s ramp-up, 4 s sustained, 5 s cooldown.
    let run = controller(
        &["run", QUICK, "--ramp-up", "3", "--duration", "4", "--output", out.to_str().unwrap()],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("Verdict: PASS"), "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    assert_eq!(run.stdout, format!("{}\n", dir.display()), "stdout is the results folder, for scripts");
    assert!(dir.file_name().unwrap().to_str().unwrap().starts_with("quick-"));
    for file in [
        "summary.json",
        "metrics.csv",
        "metrics.json",
        "metrics.ndjson",
        "junit.xml",
        "test.log",
        "scenario.toml",
        "latency.hlog",
        "workers.csv",
    ] {
        let len = std::fs::metadata(dir.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{file} is missing or empty");
    }

    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["verdict"], "PASS");
    assert_eq!(summary["workers"], 1);
    assert_eq!(num(&summary, "connections.opened"), 100.0);
    assert_eq!(num(&summary, "connections.peak"), 100.0);
    assert_eq!(num(&summary, "connections.failed"), 0.0);
    let sent = num(&summary, "messages.sent");
    assert!(sent > 500.0, "only {sent} messages sent");
    assert_eq!(num(&summary, "messages.received"), sent);
    assert_eq!(num(&summary, "messages.lost"), 0.0);
    let phases: Vec<&str> =
        summary["phases"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(phases, ["warmup", "ramp-up", "sustained", "cooldown"]);
    assert_eq!(summary["thresholds"].as_array().unwrap().len(), 3);
    // A normal run: the generator kept up in every second.
    assert_eq!(summary["generator_stalled_seconds"], serde_json::json!([]), "{summary}");

    // One row per second of the 17 s schedule (plus the closing second).
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    assert_eq!(header[..3], ["elapsed_s", "timestamp", "phase"]);
    assert!((17..=19).contains(&rows.len()), "{} rows", rows.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.len(), header.len(), "row {i} has {} cells", row.len());
        assert_eq!(row[0], i.to_string(), "rows are consecutive seconds");
        common::spreadsheet_timestamp(&row[1]);
    }
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let csv_sent: f64 = rows.iter().map(|r| r[col("messages_sent")].parse::<f64>().unwrap()).sum();
    assert_eq!(csv_sent, sent, "per-second rows add up to the summary");
    let peak_active = rows.iter().map(|r| r[col("connections_active")].parse::<u64>().unwrap()).max();
    assert_eq!(peak_active, Some(100));
    // The bundled relay's own /metrics, scraped each second.
    let target_conns: Vec<f64> =
        rows.iter().filter_map(|r| r[col("target_connections")].parse().ok()).collect();
    assert!(target_conns.len() + 3 >= rows.len(), "most seconds have the target's figures");
    assert_eq!(target_conns.iter().cloned().fold(0.0, f64::max), 100.0, "the relay saw the 100 connections");
    assert!(rows.iter().filter_map(|r| r[col("target_rss_mb")].parse::<f64>().ok()).all(|mb| mb > 1.0));
    // One row per worker per second.
    let (wheader, wrows) = read_csv(&dir.join("workers.csv"));
    assert_eq!(wheader[..3], ["elapsed_s", "timestamp", "worker"]);
    assert_eq!(wrows.len(), rows.len());
    assert!(wrows.iter().all(|r| r[2] == "local-1"));
    let wsent: f64 = wrows.iter().map(|r| r[6].parse::<f64>().unwrap()).sum();
    assert_eq!(wsent, sent);
    let metrics = read_json(&dir.join("metrics.json"));
    assert_eq!(metrics.as_array().unwrap().len(), rows.len());
    // The NDJSON stream: the same rows, one JSON object a line, as written.
    let ndjson = std::fs::read_to_string(dir.join("metrics.ndjson")).unwrap();
    let streamed: Vec<serde_json::Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(streamed.len() >= rows.len(), "every row, corrections appended");
    let ndjson_sent: f64 = rows
        .iter()
        .map(|r| r[0].parse::<u64>().unwrap())
        .map(|s| streamed.iter().rev().find(|j| j["elapsed_s"] == s).map_or(0.0, |j| num(j, "messages_sent")))
        .sum();
    assert_eq!(ndjson_sent, sent, "the last version of each second adds up to the summary");

    // The interval log holds every row's histograms; merged, they are the run's.
    let (merged, entries) = common::merged_hlog(&dir, "latency", |_| true);
    assert_eq!(entries, rows.len(), "a latency histogram per row (and a connect one)");
    assert_eq!(merged.len() as f64, num(&summary, "latency_ms.count"));
    let p99 = merged.value_at_quantile(0.99) as f64 / 1000.0;
    assert!((p99 - num(&summary, "latency_ms.p99")).abs() < 1e-9, "p99 recomputed from the log");

    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    assert!(log.contains("TEST SUMMARY") && log.contains("Verdict: PASS"));
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains(r#"tests="4" failures="0" errors="0""#), "the run and 3 thresholds:\n{junit}");
    common::valid_junit(&dir.join("junit.xml"));
    let scenario = std::fs::read_to_string(dir.join("scenario.toml")).unwrap();
    assert!(scenario.contains("sustained_s = 4.0"), "overrides are saved:\n{scenario}");
}

#[test]
fn a_threshold_that_cannot_hold_fails_with_99() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "strict.toml",
        r#"
name = "strict"
[target]
bundled = true
bundled_delay_ms = 5
[load]
connections = 10
message_interval_s = 0.2
[phases]
warmup_s = 0
ramp_up_s = 1
sustained_s = 2
cooldown_s = 0
[thresholds]
latency_p95_ms = "< 1"
error_rate = "< 0.01"
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 99, "stderr:\n{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(summary["verdict"], "FAIL");
    let thresholds = summary["thresholds"].as_array().unwrap();
    let latency = thresholds.iter().find(|t| t["metric"] == "latency_p95_ms").unwrap();
    assert_eq!(latency["pass"], false);
    assert!(latency["value"].as_f64().unwrap() >= 5.0, "the injected 5 ms is measured");
    let errors = thresholds.iter().find(|t| t["metric"] == "error_rate").unwrap();
    assert_eq!(errors["pass"], true);
    // junit.xml for CI: the run and both thresholds are cases, the failed
    // one with what was measured; it is valid against the JUnit schema.
    let junit = scratch.results().join("junit.xml");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="3" failures="1" errors="0""#), "{xml}");
    let measured = latency["value"].as_f64().unwrap();
    assert!(xml.contains(&format!("latency_p95_ms &lt; 1: measured {measured}, limit &lt; 1")), "{xml}");
    common::valid_junit(&junit);
}

#[test]
fn a_malformed_scenario_exits_2_naming_the_line() {
    let scratch = Scratch::new();
    let path = scratch.file(
        "bad.toml",
        "name = \"bad\"\n[target]\nbundled = true\n[load]\nconnections = 10\nmessage_interval = 1\n",
    );
    let run = controller(&["run", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(run.code, 2, "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("bad.toml:6:1"), "names file, line and column:\n{}", run.stderr);
    assert!(run.stderr.contains("message_interval_s"), "says what to write instead:\n{}", run.stderr);

    let path =
        scratch.file("unknown.toml", "name = \"x\"\n[target]\nbundled = true\n[thresholds]\np95 = \"< 1\"\n");
    let run = controller(&["run", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(run.code, 2, "an unknown threshold metric is an error:\n{}", run.stderr);
    assert!(run.stderr.contains("unknown.toml:5:1"), "{}", run.stderr);
    assert!(!scratch.results_parent().exists(), "no results for a run that never started");
}

#[test]
fn a_run_beyond_this_machine_fails_before_it_starts_naming_the_limit() {
    // Ten million loopback connections: 667 workers and as many relays
    // would run this machine out of memory halfway up the ramp.
    let scratch = Scratch::new();
    let path = scratch.file(
        "huge.toml",
        "name = \"huge\"\n[target]\nbundled = true\n[load]\nconnections = 10000000\nmessage_interval_s = 0\n",
    );
    let started = std::time::Instant::now();
    let run = controller(&["run", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(run.code, 2, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("10000000 connections need about") && run.stderr.contains("(MemAvailable)"),
        "names the limit:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("lower [load] connections to about"), "says what to change:\n{}", run.stderr);
    assert!(started.elapsed() < Duration::from_secs(10), "before any process starts");
    assert!(!scratch.results_parent().exists(), "no results for a run that never started");
    let check = controller(&["check", path.to_str().unwrap()], Duration::from_secs(20));
    assert_eq!(check.code, 2, "check says the same:\n{}", check.stderr);
    assert!(check.stderr.contains("(MemAvailable)"), "{}", check.stderr);
}

#[test]
fn an_unreachable_target_ends_promptly_with_refused_connections() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = format!("ws://127.0.0.1:{port}/ws");
    let out = scratch.results_parent();
    let run = controller(
        &["run", QUICK, "--target", &target, "--workers", "2", "--output", out.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert_eq!(run.code, 99, "stderr:\n{}", run.stderr);
    assert!(run.took < Duration::from_secs(25), "took {:?} for a 40 s schedule", run.took);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(summary["verdict"], "FAIL");
    assert!(summary["aborted"].as_str().unwrap().contains("target unreachable"), "{}", summary["aborted"]);
    let failed = num(&summary, "connections.failed");
    assert!(failed >= 10.0, "{failed} failures");
    assert_eq!(num(&summary, "connections.opened"), 0.0);
    let errors = summary["errors"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["refused"], "every failure is a refusal: {errors:?}");
    assert_eq!(num(&summary, "errors.refused"), failed);
}

#[test]
fn ctrl_c_stops_the_run_and_still_writes_results() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let out = scratch.results_parent();
    // In a process group of its own, as a shell starts a command.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["run", QUICK, "--quiet", "--output", out.to_str().unwrap()])
        .process_group(0)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(8));
    // Ctrl-C in a terminal signals the whole foreground group: the local
    // workers must leave stopping to the controller, or their last seconds
    // would be lost. SAFETY: signals our own child's group.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) };
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(130));
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["verdict"], "FAIL");
    assert!(summary["aborted"].as_str().unwrap().contains("interrupted"));
    assert!(num(&summary, "messages.received") > 0.0);
    assert_eq!(num(&summary, "messages.lost"), 0.0, "connections drain before they close");
    let (_, rows) = read_csv(&dir.join("metrics.csv"));
    assert!((7..=12).contains(&rows.len()), "{} rows for ~9 s", rows.len());
    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    assert!(log.contains("worker local-1 finished") && !log.contains("worker local-1 lost"), "{log}");
}

#[test]
fn the_bundled_relay_can_span_processes_sharing_a_port() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "spread.toml",
        r#"
name = "spread"
[target]
bundled = true
bundled_processes = 2
[load]
connections = 200
message_interval_s = 0.5
[phases]
warmup_s = 0
ramp_up_s = 2
sustained_s = 3
cooldown_s = 1
[fleet]
workers = 2
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(num(&summary, "connections.opened"), 200.0);
    assert_eq!(num(&summary, "connections.failed"), 0.0);
    let sent = num(&summary, "messages.sent");
    assert!(sent > 800.0, "{sent}");
    assert_eq!(num(&summary, "messages.received"), sent);
    let target = summary["target"].as_str().unwrap();
    assert!(target.starts_with("ws://127.0.0.1:"), "{target}");
    // Nothing listens there any more: the relay processes ended with the run.
    let addr = target.trim_start_matches("ws://").trim_end_matches("/ws");
    assert!(std::net::TcpStream::connect(addr).is_err(), "a relay process outlived the run");
}
