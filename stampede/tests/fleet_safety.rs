//! A remote fleet that is safe to run: TLS on the control plane (with a
//! token, or with worker certificates instead), workers that stop their
//! load when their controller dies, and a worker that joins a new
//! controller bringing nothing of its old run. Real processes on loopback;
//! certificates made by the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ONE_RUN_AT_A_TIME, Relay, Scratch, free_port, num, read_json, relay_connections};
use stampede_relay::pki::Ca;

/// A worker process dialing `url` with extra flags; stderr to `log`.
fn worker(id: &str, url: &str, extra: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["worker", "--controller", url, "--id", id])
        .args(extra)
        .env_remove("STAMPEDE_FLEET_TOKEN")
        .env_remove("STAMPEDE_FLEET_TOKEN_FILE")
        .env_remove("STAMPEDE_FLEET_CA")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The remote-fleet scenario: `workers` workers at `port`, loading `target`
/// (the bundled relay when `None`).
fn scenario(scratch: &Scratch, port: u16, workers: u32, target: Option<&str>, sustained_s: u32) -> PathBuf {
    let target = match target {
        Some(url) => format!("url = \"{url}\""),
        None => "bundled = true".into(),
    };
    scratch.file(
        "fleet.toml",
        &format!(
            r#"
name = "fleet"
[target]
{target}
[load]
connections = 40
message_interval_s = 0.2
[phases]
warmup_s = 0
ramp_up_s = 2
sustained_s = {sustained_s}
cooldown_s = 1
[fleet]
remote = true
workers = {workers}
listen = "127.0.0.1:{port}"
join_timeout_s = 30
"#
        ),
    )
}

/// Writes a CA and a certificate for 127.0.0.1 signed by it; their paths
/// (ca, cert, key).
fn server_pki(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca = Ca::new(name).unwrap();
    let pem = ca.server(&["127.0.0.1", "localhost"]).unwrap();
    let paths = (
        dir.join(format!("{name}-ca.pem")),
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&paths.0, ca.cert_pem()).unwrap();
    std::fs::write(&paths.1, &pem.cert).unwrap();
    std::fs::write(&paths.2, &pem.key).unwrap();
    paths
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code().unwrap_or(-1));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn worker_ids(summary: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = summary["worker_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_fleet_over_tls_with_a_token_passes_and_unverified_workers_never_join() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let (ca, cert, key) = server_pki(dir, "fleet");
    let (other_ca, _, _) = server_pki(dir, "stranger");
    let token = dir.join("token");
    std::fs::write(&token, "a-fleet-token-for-this-test-0001\n").unwrap();
    let port = free_port();
    let https = format!("https://127.0.0.1:{port}");
    let (ca, token) = (ca.to_str().unwrap(), token.to_str().unwrap());
    let good: Vec<Child> = (1..=2)
        .map(|i| {
            let log = dir.join(format!("w{i}.log"));
            worker(&format!("w{i}"), &https, &["--once", "--fleet-ca", ca, "--token-file", token], &log)
        })
        .collect();
    // Trusts another CA; speaks plain HTTP/2 to a TLS port.
    let mut wrong_ca = worker(
        "wrong-ca",
        &https,
        &["--once", "--fleet-ca", other_ca.to_str().unwrap(), "--token-file", token],
        &dir.join("wrong-ca.log"),
    );
    let mut plain = worker(
        "plain",
        &format!("http://127.0.0.1:{port}"),
        &["--once", "--token-file", token],
        &dir.join("plain.log"),
    );

    let path = scenario(&scratch, port, 2, None, 4);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let run = common::controller(
        &[
            "run",
            path.to_str().unwrap(),
            "--output",
            scratch.results_parent().to_str().unwrap(),
            "--token-file",
            token,
            "--fleet-cert",
            cert,
            "--fleet-key",
            key,
        ],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stderr.contains(&format!("join at https://127.0.0.1:{port}")), "{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(summary["verdict"], "PASS");
    assert_eq!(worker_ids(&summary), ["w1", "w2"], "only the verified workers took part");
    // Each second says the clock offset it was numbered by, refreshed from
    // heartbeats: on one host, within a few ms of 0.
    let (header, rows) = common::read_csv(&scratch.results().join("workers.csv"));
    let col = header.iter().position(|h| h == "clock_offset_ms").expect("workers.csv has clock_offset_ms");
    let offsets: Vec<f64> = rows.iter().map(|r| r[col].parse().unwrap()).collect();
    assert!(offsets.len() >= 12 && offsets.iter().all(|o| o.abs() < 50.0), "{offsets:?}");
    assert_eq!(num(&summary, "messages.lost"), 0.0);
    assert!(num(&summary, "messages.received") > 100.0, "{summary}");
    for mut w in good {
        assert_eq!(wait_exit(&mut w, Duration::from_secs(15)), Some(0), "--once workers exit 0");
    }
    // The others never got in, and say why.
    let _ = wrong_ca.kill();
    let _ = plain.kill();
    let _ = (wrong_ca.wait(), plain.wait());
    let said = std::fs::read_to_string(dir.join("wrong-ca.log")).unwrap();
    assert!(said.to_lowercase().contains("certificate"), "the TLS failure is named: {said}");
    assert!(!said.contains("joined controller"), "{said}");
    let said = std::fs::read_to_string(dir.join("plain.log")).unwrap();
    assert!(!said.contains("joined controller"), "{said}");
}

#[test]
fn with_mutual_tls_worker_certificates_replace_the_token() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let (ca, cert, key) = server_pki(dir, "fleet");
    let workers_ca = Ca::new("workers").unwrap();
    let client_ca = dir.join("workers-ca.pem");
    std::fs::write(&client_ca, workers_ca.cert_pem()).unwrap();
    let port = free_port();
    let https = format!("https://127.0.0.1:{port}");
    let ca = ca.to_str().unwrap();
    let good: Vec<Child> = (1..=2)
        .map(|i| {
            let pem = workers_ca.client(&format!("w{i}")).unwrap();
            let (c, k) = (dir.join(format!("w{i}.pem")), dir.join(format!("w{i}.key")));
            std::fs::write(&c, &pem.cert).unwrap();
            std::fs::write(&k, &pem.key).unwrap();
            let flags = [
                "--once",
                "--fleet-ca",
                ca,
                "--fleet-cert",
                c.to_str().unwrap(),
                "--fleet-key",
                k.to_str().unwrap(),
            ];
            worker(&format!("w{i}"), &https, &flags, &dir.join(format!("w{i}.log")))
        })
        .collect();
    let mut uncertified = worker("nocert", &https, &["--once", "--fleet-ca", ca], &dir.join("nocert.log"));

    let path = scenario(&scratch, port, 2, None, 3);
    let run = common::controller(
        &[
            "run",
            path.to_str().unwrap(),
            "--output",
            scratch.results_parent().to_str().unwrap(),
            "--fleet-cert",
            cert.to_str().unwrap(),
            "--fleet-key",
            key.to_str().unwrap(),
            "--fleet-client-ca",
            client_ca.to_str().unwrap(),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(worker_ids(&summary), ["w1", "w2"]);
    assert_eq!(num(&summary, "messages.lost"), 0.0);
    for mut w in good {
        assert_eq!(wait_exit(&mut w, Duration::from_secs(15)), Some(0));
    }
    let _ = uncertified.kill();
    let _ = uncertified.wait();
    let said = std::fs::read_to_string(dir.join("nocert.log")).unwrap();
    assert!(!said.contains("joined controller"), "a worker without a certificate is not let in: {said}");
}

fn spawn_run(scratch: &Scratch, path: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["run", path.to_str().unwrap(), "--output", scratch.results_parent().to_str().unwrap()])
        .env_remove("STAMPEDE_FLEET_TOKEN")
        .env_remove("STAMPEDE_FLEET_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Two remote workers (`flags`) loading a relay process of their own for a
/// 60 s sustained phase, once all 40 connections are open.
struct Loaded {
    relay: Relay,
    workers: Vec<Child>,
    controller: Child,
    port: u16,
}

impl Loaded {
    fn start(scratch: &Scratch, flags: &[&str]) -> Loaded {
        let relay = Relay::start();
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let target = format!("ws://127.0.0.1:{}/ws", relay.1);
        let dir = scratch.dir.path();
        let workers =
            (1..=2).map(|i| worker(&format!("w{i}"), &url, flags, &dir.join(format!("w{i}.log")))).collect();
        let controller = spawn_run(scratch, &scenario(scratch, port, 2, Some(&target), 60));
        let end = Instant::now() + Duration::from_secs(30);
        while relay_connections(relay.1).unwrap_or(0) < 40 {
            assert!(Instant::now() < end, "the load never reached 40 connections");
            std::thread::sleep(Duration::from_millis(200));
        }
        Loaded { relay, workers, controller, port }
    }
}

#[test]
fn workers_whose_controller_dies_stop_their_load_within_the_grace() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let loaded = Loaded::start(&scratch, &["--once", "--grace", "3", "--join-timeout", "30"]);
    let (relay, mut workers, mut controller) = (loaded.relay, loaded.workers, loaded.controller);
    controller.kill().unwrap();
    let killed = Instant::now();
    controller.wait().unwrap();
    // The workers keep their load through the grace, then close it.
    let mut zero_after = None;
    while killed.elapsed() < Duration::from_secs(20) {
        if relay_connections(relay.1) == Some(0) {
            zero_after = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let zero_after = zero_after.expect("the relay's connections went to 0 within 20 s of the kill");
    // 3 s of silence to notice, 3 s of grace, a few for closing handshakes.
    assert!(zero_after >= Duration::from_secs(3), "kept through the grace: {zero_after:?}");
    assert!(zero_after <= Duration::from_secs(12), "stopped soon after the grace: {zero_after:?}");
    for (i, w) in workers.iter_mut().enumerate() {
        let code = wait_exit(w, Duration::from_secs(15));
        assert_eq!(code, Some(1), "w{} exits with an error", i + 1);
        let said = std::fs::read_to_string(dir.join(format!("w{}.log", i + 1))).unwrap();
        assert!(said.contains("no controller took this worker back within 3 s"), "{said}");
    }
}

#[test]
fn a_worker_that_joins_a_new_controller_brings_nothing_of_its_old_run() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    // Not --once: they serve run after run, and hold their load 60 s for a
    // controller to come back.
    let loaded = Loaded::start(&scratch, &["--grace", "60"]);
    let (relay, mut workers, mut controller, port) =
        (loaded.relay, loaded.workers, loaded.controller, loaded.port);
    let target = format!("ws://127.0.0.1:{}/ws", relay.1);
    // Let the outboxes fill with seconds the dead controller never acks.
    std::thread::sleep(Duration::from_secs(2));
    controller.kill().unwrap();
    controller.wait().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    std::fs::remove_dir_all(scratch.results_parent()).unwrap();

    // A new controller, a new run, on the same address.
    let second = scenario(&scratch, port, 2, Some(&target), 4);
    let run = common::controller(
        &["run", second.to_str().unwrap(), "--output", scratch.results_parent().to_str().unwrap()],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let results = scratch.results();
    let summary = read_json(&results.join("summary.json"));
    assert_eq!(worker_ids(&summary), ["w1", "w2"]);
    // Only this run's seconds and messages: rows from 0, as long as the
    // plan (7 s), their sums the totals, and every message answered.
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(results.join("metrics.json")).unwrap()).unwrap();
    assert!((7..=10).contains(&rows.len()), "{} rows", rows.len());
    let sent: f64 = rows.iter().map(|r| r["messages_sent"].as_f64().unwrap()).sum();
    assert_eq!(sent, num(&summary, "messages.sent"));
    assert_eq!(num(&summary, "messages.received"), num(&summary, "messages.sent"));
    assert!(num(&summary, "connections.peak") <= 40.0, "the old run's connections are gone: {summary}");
    for i in 1..=2 {
        let said = std::fs::read_to_string(dir.join(format!("w{i}.log"))).unwrap();
        assert!(said.contains("dropping what was left of run"), "w{i} dropped its old run: {said}");
    }
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
}

/// Peak resident memory of process `pid` so far, bytes (VmHWM).
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn hostile_fleet_peers_are_refused_or_dropped_and_the_controller_stays_small() {
    use common::peer::{assigned_peer, hello, peer, proved, run_id, snapshot};
    use stampede_proto::auth::FleetToken;
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let dir = scratch.dir.path();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "the-fleet-token-of-this-test-42\n").unwrap();
    let token = FleetToken::from_sources(Some(&token_file), |_| None).unwrap().unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut real =
        worker("w1", &url, &["--once", "--token-file", token_file.to_str().unwrap()], &dir.join("w1.log"));
    let path = scenario(&scratch, port, 1, None, 12);
    let mut controller = Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["run", path.to_str().unwrap(), "--output", scratch.results_parent().to_str().unwrap()])
        .args(["--token-file", token_file.to_str().unwrap()])
        .env_remove("STAMPEDE_FLEET_TOKEN")
        .env_remove("STAMPEDE_FLEET_TOKEN_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("controller.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = controller.id();
    let version = stampede_proto::PROTOCOL_VERSION;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut peak = 0;
    runtime.block_on(async {
        // Wait until the run has started (the real worker is assigned).
        tokio::time::sleep(Duration::from_secs(3)).await;
        // A wrong token: refused before anything is sent to it.
        let wrong = FleetToken::new(b"some-other-token-0000000".to_vec()).unwrap();
        let refused = peer(port, proved(hello("intruder", version), &wrong)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
        // Insiders gone bad (they hold the token): a second far beyond the
        // run; a histogram whose 40-byte header claims a range of 2^62 us;
        // a 9 MiB message; the same snapshot 20,000 times.
        let (far, assigned) = assigned_peer(port, proved(hello("far", version), &token)).await.unwrap();
        let run = run_id(assigned).await;
        far.send(snapshot(&run, 1, 1_000_000_000, &[("messages_sent", 1)], &[])).await.unwrap();
        let mut claim = Vec::new();
        let empty = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        use hdrhistogram::serialization::Serializer;
        hdrhistogram::serialization::V2Serializer::new().serialize(&empty, &mut claim).unwrap();
        claim[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes());
        let (huge, _) = assigned_peer(port, proved(hello("huge", version), &token)).await.unwrap();
        huge.send(snapshot(&run, 1, 2, &[], &claim)).await.unwrap();
        let (big, _) = assigned_peer(port, proved(hello("big", version), &token)).await.unwrap();
        big.send(snapshot(&run, 1, 2, &[], &vec![7u8; 9 << 20])).await.unwrap();
        let (flood, _) = assigned_peer(port, proved(hello("flood", version), &token)).await.unwrap();
        for _ in 0..20_000 {
            if flood.send(snapshot(&run, 1, 2, &[("messages_sent", 3)], &[])).await.is_err() {
                break;
            }
        }
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end && controller.try_wait().unwrap().is_none() {
            peak = peak.max(peak_rss(pid).unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        drop((far, huge, big, flood));
    });
    let code = wait_exit(&mut controller, Duration::from_secs(30));
    let _ = wait_exit(&mut real, Duration::from_secs(15));
    let stderr = std::fs::read_to_string(dir.join("controller.log")).unwrap();
    assert_eq!(
        code,
        Some(0),
        "the run completes with its verdict (PASS: the real worker's figures are whole)\n{stderr}"
    );
    assert!(peak > 0 && peak < 100 << 20, "controller peak RSS {:.1} MB", peak as f64 / 1e6);
    eprintln!("controller peak RSS {:.1} MB", peak as f64 / 1e6);
    let log = std::fs::read_to_string(scratch.results().join("test.log")).unwrap();
    for line in [
        "refused a worker from 127.0.0.1:",
        "worker far: snapshot 1 dropped: snapshot for second 1000000000",
        "worker far lost",
        "worker huge: snapshot 1 dropped: bad histogram",
        "claims the range",
        "worker huge lost",
        "worker big lost",
    ] {
        assert!(log.contains(line), "test.log lacks {line:?}:\n{log}");
    }
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(num(&summary, "messages.lost"), 0.0, "{summary}");
    let flood_sent: u64 = {
        let (header, rows) = common::read_csv(&scratch.results().join("workers.csv"));
        let (id, sent) = (
            header.iter().position(|h| h == "worker").unwrap(),
            header.iter().position(|h| h == "messages_sent").unwrap(),
        );
        rows.iter().filter(|r| r[id] == "flood").map(|r| r[sent].parse::<u64>().unwrap()).sum()
    };
    assert_eq!(flood_sent, 3, "20,000 copies of one snapshot count once");
}
