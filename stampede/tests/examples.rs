//! Every example scenario runs to PASS against the bundled relay, in its
//! short default form (a few trimmed further with flags), but the one that
//! needs a Kubernetes cluster, which is checked; and the environment
//! variables of the 10K suite steer a run as README says.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{
    ONE_RUN_AT_A_TIME, Relay, Scratch, controller, controller_with_env, num, read_csv, read_json,
    relay_metric,
};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// Runs `examples/<name>` with `flags` and checks it passes.
fn passes(name: &str, flags: &[&str]) -> serde_json::Value {
    passes_in(name, flags).0
}

/// [`passes`], with the scratch folder holding the results.
fn passes_in(name: &str, flags: &[&str]) -> (serde_json::Value, Scratch) {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let out = scratch.results_parent();
    let path = example(name);
    let mut args = vec!["run", path.to_str().unwrap(), "--output", out.to_str().unwrap()];
    args.extend_from_slice(flags);
    let run = controller(&args, Duration::from_secs(180));
    assert_eq!(run.code, 0, "{name} did not pass; stderr:\n{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(summary["verdict"], "PASS", "{name}");
    (summary, scratch)
}

macro_rules! examples {
    ($($test:ident: $file:literal $(, $flag:literal)*;)*) => {$(
        #[test]
        fn $test() {
            passes($file, &[$($flag),*]);
        }
    )*};
}

examples! {
    quick: "quick.toml", "--ramp-up", "3", "--duration", "3";
    stress_30k_trimmed: "stress.toml", "--connections", "2000", "--duration", "3";
    faults_trimmed: "faults.toml", "--duration", "5";
    tonk_baseline: "tonk/baseline.toml";
    tonk_moderate: "tonk/moderate.toml";
    tonk_heavy: "tonk/heavy.toml";
    tonk_stress: "tonk/stress.toml";
    tenk_light: "10k/light.toml";
    tenk_medium: "10k/medium.toml";
    tenk_heavy: "10k/heavy.toml";
    tenk_extreme: "10k/extreme.toml";
    tenk_10k_connections: "10k/10k-connections.toml";
    metamask_connection_storm: "metamask/connection-storm.toml";
    metamask_steady_state: "metamask/steady-state.toml";
    metamask_realistic_session: "metamask/realistic-session.toml";
    metamask_async_delivery: "metamask/async-delivery.toml";
    metamask_steady_messaging: "metamask/steady-messaging.toml";
    tenk_flash_sale: "10k/flash-sale.toml";
    tenk_live_event: "10k/live-event.toml";
    tenk_iot: "10k/iot.toml";
    odin_broadcast: "odin/broadcast.toml";
    odin_quick: "odin/quick.toml";
    odin_medium: "odin/medium.toml";
    odin_stress: "odin/stress.toml";
    odin_progressive: "odin/progressive.toml";
    stress_until_break: "stress-until-break.toml";
    json_rpc: "json-rpc.toml";
    k6_tunnel: "k6/tunnel.toml";
    wss_jwt: "wss-jwt.toml";
}

/// Whether Chromium is here (the README's test command installs it; where
/// it cannot, the browser examples say so and pass).
fn chromium() -> bool {
    let found = ["chromium", "chromium-browser", "google-chrome"].iter().any(|name| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).any(|d| d.join(name).is_file())
    }) || std::env::var_os("CHROME_PATH").is_some();
    if !found {
        eprintln!("SKIPPED: no Chromium on this machine");
    }
    found
}

/// Runs browser example `name` against a relay process of its own, so the
/// relay's counters can be read after the run; returns the summary, the
/// relay's (frames received, frames echoed, sessions accepted) and the
/// scratch folder holding the results.
fn browser_example(name: &str, flags: &[&str]) -> (serde_json::Value, [u64; 3], Scratch) {
    let relay = Relay::start();
    let target = format!("ws://127.0.0.1:{}/ws", relay.1);
    let mut all = vec!["--target", target.as_str()];
    all.extend_from_slice(flags);
    let (summary, scratch) = passes_in(name, &all);
    let metric = |m: &str| relay_metric(relay.1, m).unwrap() as u64;
    let counts = [
        metric("relay_messages_received_total"),
        metric("relay_messages_sent_total"),
        metric("relay_connections_total"),
    ];
    (summary, counts, scratch)
}

/// The browser issue's acceptance: 10 sessions clicking once a second for
/// 30 s; the summary has the action latency and the app's frame counts,
/// and they are the relay's own.
#[test]
fn browser() {
    if !chromium() {
        return;
    }
    let (s, [received, echoed, accepted], _) = browser_example("browser.toml", &[]);
    let counter = |name: &str| num(&s, &format!("counters.{name}")) as u64;
    let clicks = num(&s, "steps.send.ok") as u64;
    // 10 sessions x ~30 clicks; a margin for a busy machine.
    assert!(clicks >= 200, "{s}");
    assert_eq!(num(&s, "steps.send.failed"), 0.0, "{s}");
    let (p50, p95) = (num(&s, "steps.send.p50_ms"), num(&s, "steps.send.p95_ms"));
    assert!(p50 > 0.0 && p95 >= p50, "action latency percentiles: {s}");
    assert_eq!(counter("app_events_lost"), 0, "{s}");
    assert_eq!(counter("app_frames_sent"), received, "the relay received what the app sent: {s}");
    // An echo the relay wrote as the run's end closed a page never reaches
    // it: at most one per session open then.
    let got = counter("app_frames_received");
    assert!(got <= echoed && echoed <= got + 10, "the app received what the relay echoed ({echoed}): {s}");
    assert_eq!(counter("app_ws_opened"), accepted, "{s}");
    assert_eq!(counter("app_ws_opened"), counter("app_ws_closed"), "{s}");
    assert_eq!(num(&s, "browser.peak_sessions"), 10.0, "{s}");
    let per_session = num(&s, "browser.pss_mb_per_session");
    assert!(per_session > 1.0 && per_session < 200.0, "{s}");
    assert!(num(&s, "browser.js_heap_mb_max") > 0.1, "the pages' JS heap: {s}");
    eprintln!(
        "browser: {clicks} clicks, p50 {p50:.1} ms, p95 {p95:.1} ms; frames {received} sent = relay; \
         {per_session:.1} MB PSS per session"
    );
}

/// Native and browser clients in one run: one metrics.csv with the native
/// figures and the page actions' step columns, each group at its share.
#[test]
fn mixed() {
    if !chromium() {
        return;
    }
    let (s, [received, _, accepted], scratch) = browser_example("mixed.toml", &[]);
    let counter = |name: &str| num(&s, &format!("counters.{name}")) as u64;
    assert_eq!(s["workers"].as_u64(), Some(2), "a worker per group: {s}");
    assert!(counter("messages_received") > 0 && counter("app_frames_sent") > 0, "{s}");
    assert_eq!(counter("messages_sent") + counter("app_frames_sent"), received, "the relay saw both: {s}");
    assert_eq!(counter("connections_opened") + counter("app_ws_opened"), accepted, "{s}");
    assert_eq!(num(&s, "browser.peak_sessions"), 10.0, "web's share, 1 of 4 weights: {s}");
    let (head, rows) = read_csv(&scratch.results().join("metrics.csv"));
    let col =
        |name: &str| head.iter().position(|h| h == name).unwrap_or_else(|| panic!("no {name} in {head:?}"));
    let (latency, click, sessions) =
        (col("latency_p95_ms"), col("step_web_click_ok"), col("browser_sessions"));
    // One timeline: seconds where both kinds of clients were measured.
    let both =
        rows.iter().filter(|r| !r[latency].is_empty() && r[click].parse::<u64>().unwrap_or(0) > 0).count();
    assert!(both >= 10, "{both} seconds with native latency and browser clicks");
    assert!(rows.iter().any(|r| r[sessions] == "10"), "browser_sessions column");
}

/// `kubernetes.toml` needs a cluster (its target is a Service there, its
/// workers pods): checked here, its manifests validated in deploy.rs.
#[test]
fn kubernetes_checks_and_says_its_fleet_and_cost() {
    let path = example("kubernetes.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "no warning: {}", String::from_utf8_lossy(&out.stderr));
    for part in [
        "fleet: 10 remote workers, up to 4000 connections each (max_connections_per_worker); the peak of 20000 \
         needs 5",
        "memory: 64 MiB per worker",
        "time: 840 s planned + 240 s grace",
        "cost: at most 0.30 (0.1 per worker-hour), max_cost 1: ok",
    ] {
        assert!(stdout.contains(part), "{part:?} in:\n{stdout}");
    }
}

/// Every file under examples/ is listed above (a new example without a
/// test fails here).
#[test]
fn every_example_has_a_test() {
    let source = include_str!("examples.rs");
    let mut missing = Vec::new();
    let root = example("");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "toml") {
                let rel = path.strip_prefix(&root).unwrap().to_str().unwrap().to_string();
                if !source.contains(&format!("\"{rel}\"")) {
                    missing.push(rel);
                }
            }
        }
    }
    assert!(missing.is_empty(), "examples without a test: {missing:?}");
}

#[test]
fn the_10k_suite_environment_variables_steer_a_run_and_flags_win() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let out = scratch.results_parent();
    let path = example("10k/light.toml");
    let env = [
        ("TARGET_CONNECTIONS", "40"),
        ("RAMP_UP_TIME", "1000"),
        ("TEST_DURATION", "2s"),
        ("MESSAGE_INTERVAL", "250"),
    ];
    let args = ["run", path.to_str().unwrap(), "--output", out.to_str().unwrap(), "--connections", "30"];
    let run = controller_with_env(&args, &env, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("from the environment (a flag would win): TARGET_CONNECTIONS=40"),
        "{}",
        run.stderr
    );
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(num(&summary, "connections.peak"), 30.0, "--connections beats TARGET_CONNECTIONS");
    let phases = summary["phases"].as_array().unwrap();
    let length = |name: &str| {
        let p = phases.iter().find(|p| p["name"] == name).unwrap();
        num(p, "duration_s")
    };
    assert_eq!(length("ramp-up"), 1.0, "RAMP_UP_TIME is in ms");
    assert_eq!(length("sustained"), 2.0);
    // 30 connections, 4 messages a second each, for about 2.5 s of full load.
    assert!(num(&summary, "messages.sent") > 30.0 * 4.0 * 2.0, "MESSAGE_INTERVAL=250 ms");

    let bad = controller_with_env(&args, &[("RAMP_UP_TIME", "soon")], Duration::from_secs(30));
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("RAMP_UP_TIME"), "{}", bad.stderr);
}
