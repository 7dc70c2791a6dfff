//! A remote fleet: workers started on their own, before the controller is
//! up, dial in with backoff; the controller waits for them instead of
//! starting local ones.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, num, read_json};

#[test]
fn workers_started_first_join_a_remote_fleet_controller() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let workers: Vec<_> = (1..=2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_controller"))
                .args(["worker", "--controller", &url, "--id", &format!("remote-{i}"), "--once"])
                .args(["--join-timeout", "60"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Nothing listens yet: the workers are retrying with backoff.
    std::thread::sleep(Duration::from_millis(1500));

    let path = scratch.file(
        "remote.toml",
        &format!(
            r#"
name = "remote"
[target]
bundled = true
[load]
connections = 50
message_interval_s = 0.5
[phases]
warmup_s = 0
ramp_up_s = 2
sustained_s = 3
cooldown_s = 1
[fleet]
remote = true
workers = 2
listen = "127.0.0.1:{port}"
join_timeout_s = 20
"#
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    let mut ids: Vec<&str> =
        summary["worker_details"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["remote-1", "remote-2"]);
    assert_eq!(num(&summary, "connections.opened"), 50.0);
    assert_eq!(num(&summary, "messages.received"), num(&summary, "messages.sent"));
    for mut w in workers {
        let status = w.wait().unwrap();
        assert!(status.success(), "a --once worker leaves cleanly after its run: {status}");
    }
}

/// A fleet port open beyond loopback without a token would let anyone who
/// reaches it take the load: the controller refuses to start.
#[test]
fn a_remote_fleet_beyond_loopback_needs_a_token() {
    let scratch = Scratch::new();
    let path = scratch.file(
        "open.toml",
        "name = \"open\"\n[target]\nbundled = true\n[fleet]\nremote = true\nworkers = 1\nlisten = \"0.0.0.0:0\"\n\
         join_timeout_s = 1\n",
    );
    let out = scratch.results_parent();
    let args = ["run", path.to_str().unwrap(), "--output", out.to_str().unwrap()];
    let run = common::controller_with_env(&args, &[("STAMPEDE_FLEET_TOKEN", "")], Duration::from_secs(30));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("needs a fleet token"), "{}", run.stderr);
    let short =
        common::controller_with_env(&args, &[("STAMPEDE_FLEET_TOKEN", "short")], Duration::from_secs(30));
    assert_eq!(short.code, 2, "{}", short.stderr);
    assert!(short.stderr.contains("at least 16"), "{}", short.stderr);
}

/// A worker whose operator allows other targets refuses the plan, and the
/// controller says so (the run does not go ahead with a silent worker).
#[test]
fn a_plan_aimed_outside_a_workers_allowlist_is_refused_with_a_clear_message() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["worker", "--controller", &url, "--id", "careful", "--once", "--join-timeout", "60"])
        .args(["--allow-target", "10.0.0.0/8", "--allow-target", "relay.internal:443"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let path = scratch.file(
        "aimed.toml",
        &format!(
            "name = \"aimed\"\n[target]\nbundled = true\n[load]\nconnections = 5\n\
             [phases]\nwarmup_s = 0\nramp_up_s = 1\nsustained_s = 2\ncooldown_s = 0\n\
             [fleet]\nremote = true\nworkers = 1\nlisten = \"127.0.0.1:{port}\"\njoin_timeout_s = 20\n"
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    let _ = worker.kill();
    let _ = worker.wait();
    assert_ne!(run.code, 0, "stderr:\n{}", run.stderr);
    let log = std::fs::read_to_string(scratch.results().join("test.log")).unwrap_or_default();
    let says = "this worker refuses target 127.0.0.1:";
    assert!(run.stderr.contains(says) || log.contains(says), "stderr:\n{}\ntest.log:\n{log}", run.stderr);
    assert!(
        run.stderr.contains("10.0.0.0/8, relay.internal:443")
            || log.contains("10.0.0.0/8, relay.internal:443")
    );
}
