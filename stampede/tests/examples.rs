//! Every example scenario runs to PASS against the bundled relay, in its
//! short default form (a few trimmed further with flags), but the one that
//! needs a Kubernetes cluster, which is checked; and the environment
//! variables of the 10K suite steer a run as README says.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, controller, controller_with_env, num, read_json};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name)
}

/// Runs `examples/<name>` with `flags` and checks it passes.
fn passes(name: &str, flags: &[&str]) -> serde_json::Value {
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
    summary
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
