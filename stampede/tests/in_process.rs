//! The controller's run loop with its workers and the bundled relay in this
//! process: real gRPC and WebSocket sockets on loopback, no child processes,
//! so the loop's decisions can be checked quickly and precisely.

mod common;

use std::path::Path;
use std::time::Duration;

use common::free_port;
use common::peer::{assigned_peer, deaf_peer, heartbeat, hello, peer, run_id, snapshot};
use stampede_controller::plan::Overrides;
use stampede_controller::run::{RunOptions, run};
use stampede_proto::fleet::{self, fleet_client::FleetClient, worker_message::Body};
use stampede_worker::WorkerOptions;
use tokio_util::sync::CancellationToken;

/// One run at a time: each picks a free port for its fleet and releases it
/// before the controller binds it, so two at once could pick the same one.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts worker `id` in this process, joining the controller at `port`.
fn worker(port: u16, id: &str, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    worker_with_token(port, id, None, stop)
}

/// Starts worker `id`, proving the fleet token in `token_file` if given.
fn worker_with_token(
    port: u16,
    id: &str,
    token_file: Option<std::path::PathBuf>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let opts = WorkerOptions {
        token_file,
        allow_targets: vec![],
        allow_file: None,
        controller: format!("http://127.0.0.1:{port}"),
        id: Some(id.into()),
        max_connections: None,
        source_addresses: vec![],
        once: true,
        join_timeout: Some(20),
        grace: 30.0,
        fleet_ca: None,
        fleet_cert: None,
        fleet_key: None,
        threads: None,
    };
    tokio::spawn(async move {
        let _ = stampede_worker::run(opts, stop).await;
    })
}

fn scenario(dir: &Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("inproc.toml");
    let text = format!(
        r#"
name = "inproc"
[target]
bundled = true
[load]
connections = 20
message_interval_s = 0.1
[phases]
warmup_s = 1
warmup_connections = 4
ramp_up_s = 1
sustained_s = 4
cooldown_s = 1
[fleet]
remote = true
workers = 2
listen = "127.0.0.1:{port}"
[output]
dir = "{}"
"#,
        dir.join("results").display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn options(path: std::path::PathBuf) -> RunOptions {
    RunOptions {
        status_addr: None,
        tui: false,
        scenario: path,
        overrides: Overrides::default(),
        executable: None,
        quiet: true,
        fleet_token: None,
        fleet_tls: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_loop_drives_every_phase_and_every_second_adds_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = scenario(tmp.path(), port);
    let stop = CancellationToken::new();
    let workers = [worker(port, "w1", stop.clone()), worker(port, "w2", stop.clone())];
    let outcome = run(options(path), CancellationToken::new()).await.unwrap();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(10), w).await.expect("--once workers exit").unwrap();
    }
    let s = &outcome.summary;
    assert_eq!(s.verdict, "PASS", "{s:?}");
    let names: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["warmup", "ramp-up", "sustained", "cooldown"]);
    assert_eq!(s.phases[0].figures.connections.peak, 4, "warmup holds warmup_connections");
    assert_eq!(s.phases[2].figures.connections.peak, 20);
    assert_eq!(s.phases[3].figures.connections.peak, 20, "a cooldown's peak is the level it starts from");
    assert_eq!(s.figures.connections.opened, 20);
    assert_eq!(s.figures.messages.received, s.figures.messages.sent);
    assert_eq!(s.figures.errors_total, 0);
    // The totals are the sums of the phases, and of the rows.
    let phase_sent: u64 = s.phases.iter().map(|p| p.figures.messages.sent).sum();
    assert_eq!(phase_sent, s.figures.messages.sent);
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("metrics.json")).unwrap()).unwrap();
    let row_sent: u64 = rows.iter().map(|r| r["messages_sent"].as_u64().unwrap()).sum();
    assert_eq!(row_sent, s.figures.messages.sent);
    let seconds: Vec<u64> = rows.iter().map(|r| r["elapsed_s"].as_u64().unwrap()).collect();
    assert_eq!(seconds, (0..rows.len() as u64).collect::<Vec<_>>());
    assert!((7..=9).contains(&rows.len()), "{} rows for a 7 s plan", rows.len());
    assert!(rows.iter().all(|r| r["workers_reporting"] == 2 || r["elapsed_s"] == rows.len() as u64 - 1));
    let throughput = s.figures.messages.received as f64 / rows.len() as f64;
    assert!((s.figures.throughput_msg_per_s - throughput).abs() < 1e-9, "one definition of throughput");
    let log = std::fs::read_to_string(outcome.dir.join("test.log")).unwrap();
    let order: Vec<usize> = [
        "phase warmup started",
        "phase ramp-up started",
        "phase sustained started",
        "phase cooldown started",
    ]
    .iter()
    .map(|p| log.find(p).unwrap_or_else(|| panic!("{p} missing:\n{log}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_leaving_mid_run_is_reported_and_rows_stop_waiting_for_it() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = scenario(tmp.path(), port);
    let (stop1, stop2) = (CancellationToken::new(), CancellationToken::new());
    let w1 = worker(port, "w1", stop1.clone());
    let w2 = worker(port, "w2", stop2.clone());
    let leave = stop2.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        leave.cancel();
    });
    let outcome = run(options(path), CancellationToken::new()).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(10), w1).await;
    let _ = tokio::time::timeout(Duration::from_secs(10), w2).await;
    let log = std::fs::read_to_string(outcome.dir.join("test.log")).unwrap();
    assert!(log.contains("worker w2 lost"), "{log}");
    assert!(log.contains("Worker lost:         w2 at "), "{log}");
    let lost = &outcome.summary.figures.workers_lost;
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(lost[0].id, "w2");
    assert!((3.0..7.0).contains(&lost[0].at_s), "left ~4 s after the run began: {}", lost[0].at_s);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json["workers_lost"][0]["id"], "w2", "summary.json says which worker was lost");
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("metrics.json")).unwrap()).unwrap();
    assert!(rows.len() >= 7, "rows go on without the lost worker: {}", rows.len());
    let last_full = rows.iter().rposition(|r| r["workers_reporting"] == 2).unwrap();
    assert!(last_full <= 4, "w2 reported until it left at ~3 s into the run: {last_full}");
    assert!(rows[last_full + 1..rows.len() - 1].iter().all(|r| r["workers_reporting"] == 1));
    assert!(
        outcome.summary.figures.connections.closed_by_client >= 10,
        "w2 closed its connections before leaving"
    );
    // Its share went to w1, and the fleet was back at 20 within a second.
    let r = &outcome.summary.figures.rebalanced;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].reason, "w2 lost");
    assert_eq!(r[0].connections, [("w1".to_string(), 20)].into(), "{r:?}");
    assert!(log.contains("rebalanced after w2 lost: w1 20"), "{log}");
    let lost_at = lost[0].at_s.ceil() as usize;
    let after: Vec<u64> =
        rows[lost_at + 1..rows.len() - 2].iter().map(|r| r["connections_active"].as_u64().unwrap()).collect();
    assert!(!after.is_empty() && after.iter().all(|n| *n == 20), "back to 20 after the loss: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joining_late_takes_a_share() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = scenario(tmp.path(), port);
    let stop = CancellationToken::new();
    let early = [worker(port, "w1", stop.clone()), worker(port, "w2", stop.clone())];
    let late_stop = stop.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(3500)).await;
        worker(port, "w3", late_stop).await
    });
    let outcome = run(options(path), CancellationToken::new()).await.unwrap();
    for w in early {
        tokio::time::timeout(Duration::from_secs(10), w).await.expect("--once workers exit").unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), late).await.expect("w3 exits").unwrap().unwrap();
    let s = &outcome.summary;
    assert_eq!(s.verdict, "PASS", "{s:?}");
    let r = &s.figures.rebalanced;
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].reason, "w3 joined");
    assert_eq!(r[0].connections.values().sum::<u64>(), 20, "{r:?}");
    assert!(r[0].connections.values().all(|n| (6..=7).contains(n)), "split three ways: {r:?}");
    let w3 = s.worker_details.iter().find(|w| w.id == "w3").expect("w3 is in the results");
    assert!(w3.snapshots >= 2, "w3 reported: {w3:?}");
    assert_eq!(s.figures.messages.received, s.figures.messages.sent);
    let log = std::fs::read_to_string(outcome.dir.join("test.log")).unwrap();
    assert!(log.contains("worker w3 joined the run late"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_fleet_peer_cannot_corrupt_or_stall_the_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = scenario(tmp.path(), port);
    let real = worker(port, "w1", CancellationToken::new());
    let hostile = async {
        // Refused at the door: no Hello first, another protocol version;
        // and one that connects and says nothing does not hold the run up.
        let no_hello = peer(port, snapshot("", 1, 0, &[], &[])).await.unwrap_err();
        assert_eq!(no_hello.code(), tonic::Code::InvalidArgument, "{no_hello}");
        let old = peer(port, hello("old", 1)).await.unwrap_err();
        assert_eq!(old.code(), tonic::Code::FailedPrecondition, "{old}");
        // A Hello whose strings are huge or hold control characters: refused
        // before anything of it is kept.
        let v = stampede_proto::PROTOCOL_VERSION;
        for (id, host) in [
            ("x".repeat(10_000), "rogue".to_string()),
            ("w\n9".into(), "rogue".into()),
            ("w9".into(), "h".repeat(100_000)),
        ] {
            let mut h = hello(&id, v);
            if let Some(Body::Hello(hh)) = &mut h.body {
                hh.hostname = host;
            }
            let refused = peer(port, h).await.unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
        }
        let silent = tokio::spawn(async move {
            let _ = FleetClient::connect(format!("http://127.0.0.1:{port}")).await;
        });

        // A member that misbehaves: the same snapshot 1,000 times, a counter
        // at u64::MAX twice (saturated), a snapshot of another run (ignored),
        // then a second far beyond the run: nonsense, so it is lost and may
        // not come back.
        let version = stampede_proto::PROTOCOL_VERSION;
        let (rogue, assigned) = assigned_peer(port, hello("w2", version)).await.unwrap();
        let run = run_id(assigned).await;
        for _ in 0..1000 {
            rogue.send(snapshot(&run, 1, 0, &[("messages_sent", 5)], &[])).await.unwrap();
        }
        rogue.send(snapshot(&run, 2, 1, &[("bytes_received", u64::MAX)], &[])).await.unwrap();
        rogue.send(snapshot(&run, 3, 2, &[("bytes_received", u64::MAX)], &[])).await.unwrap();
        rogue.send(snapshot("an-old-run", 4, 2, &[("messages_sent", 1000)], &[])).await.unwrap();
        rogue.send(snapshot(&run, 5, 1_000_000_000, &[("messages_sent", 1)], &[])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let banned = peer(port, hello("w2", version)).await;
        // Late joiners with a histogram that is not one, a counter that does
        // not exist; and one that joins and then says nothing at all.
        let (w3, assigned) = assigned_peer(port, hello("w3", version)).await.unwrap();
        w3.send(snapshot(&run_id(assigned).await, 1, 2, &[], b"\x1c\x84\x93\x14not a histogram"))
            .await
            .unwrap();
        let (w4, assigned) = assigned_peer(port, hello("w4", version)).await.unwrap();
        w4.send(snapshot(&run_id(assigned).await, 1, 2, &[("messages_teleported", 1)], &[])).await.unwrap();
        let quiet = peer(port, hello("w5", version)).await.unwrap();
        (vec![rogue, w3, w4, quiet], silent, banned)
    };
    let run = tokio::time::timeout(Duration::from_secs(60), run(options(path), CancellationToken::new()));
    let (outcome, (rogues, silent, banned)) = tokio::join!(run, hostile);
    let outcome = outcome.expect("the run ends").unwrap();
    drop(rogues);
    silent.abort();
    let _ = tokio::time::timeout(Duration::from_secs(10), real).await;
    let s = &outcome.summary;
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(outcome.dir.join("metrics.json")).unwrap()).unwrap();
    assert!((7..=10).contains(&rows.len()), "{} rows: not one per second up to a claimed one", rows.len());
    let (header, wrows) = common::read_csv(&outcome.dir.join("workers.csv"));
    let (id, sent) = (
        header.iter().position(|h| h == "worker").unwrap(),
        header.iter().position(|h| h == "messages_sent").unwrap(),
    );
    let rogue_sent: u64 =
        wrows.iter().filter(|r| r[id] == "w2").map(|r| r[sent].parse::<u64>().unwrap()).sum();
    assert_eq!(rogue_sent, 5, "a snapshot sent 1,000 times counts once");
    assert_eq!(s.figures.counters.bytes_received, u64::MAX, "saturated, not wrapped");
    let real_snapshots = s.worker_details.iter().find(|w| w.id == "w1").unwrap().snapshots;
    assert!(real_snapshots >= 7, "the real worker was heard throughout: {real_snapshots}");
    assert!(s.figures.messages.received > 0 && s.figures.messages.lost == 0, "{:?}", s.figures.messages);
    let log = std::fs::read_to_string(outcome.dir.join("test.log")).unwrap();
    for line in [
        "worker w2: snapshot 4 of another run (\"an-old-run\") ignored",
        "worker w2: snapshot 5 dropped: snapshot for second 1000000000",
        "worker w2 lost: sent a snapshot that was refused",
        "worker w2 refused: it sent a snapshot that was refused",
        "worker w3: snapshot 1 dropped: bad histogram",
        "worker w3 lost: sent a snapshot that was refused",
        "worker w4: snapshot 1 dropped: bad snapshot: unknown counter \"messages_teleported\"",
        "worker w5 lost: silent for 3 s",
    ] {
        assert!(log.contains(line), "test.log lacks {line:?}:\n{log}");
    }
    // The banned name's stream is ended, not served.
    if let Ok(tx) = banned {
        tokio::time::timeout(Duration::from_secs(5), tx.closed()).await.expect("the controller drops it");
    }
    let lost: Vec<&str> = s.figures.workers_lost.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(lost, ["w2", "w3", "w4", "w5"], "each is lost once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_heartbeats_and_never_reports_is_lost_and_bounded() {
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = scenario(tmp.path(), port);
    let real = worker(port, "w1", CancellationToken::new());
    let flood = async {
        // Joins, never reads the answers, never reports a second: 200,000
        // heartbeats as fast as the link takes them.
        let version = stampede_proto::PROTOCOL_VERSION;
        let (flooder, unread) = deaf_peer(port, hello("w6", version)).await.unwrap();
        let started = std::time::Instant::now();
        let mut sent = 0u64;
        while sent < 200_000 && started.elapsed() < Duration::from_secs(20) {
            if flooder.send(heartbeat()).await.is_err() {
                break; // the controller ended the stream
            }
            sent += 1;
        }
        // One that reads and heartbeats like a live worker, but never
        // reports a second of the load it is given.
        let (idle, _assigned) = assigned_peer(port, hello("w7", version)).await.unwrap();
        for _ in 0..100 {
            if idle.send(heartbeat()).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (flooder, unread, sent)
    };
    let rss_before = vm_hwm_kb();
    let run = tokio::time::timeout(Duration::from_secs(90), run(options(path), CancellationToken::new()));
    let (outcome, (flooder, unread, sent)) = tokio::join!(run, flood);
    let outcome = outcome.expect("the run ends").unwrap();
    drop((flooder, unread));
    let _ = tokio::time::timeout(Duration::from_secs(10), real).await;
    let s = &outcome.summary;
    eprintln!("heartbeats sent {sent}; peak RSS of the test process {} -> {} kB", rss_before, vm_hwm_kb());
    assert!(sent >= 1000, "the flood got going: {sent}");
    let lost: Vec<&str> = s.figures.workers_lost.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(lost, ["w6", "w7"], "{lost:?}");
    let log = std::fs::read_to_string(outcome.dir.join("test.log")).unwrap();
    // The deaf one: its answers filled its link, so the next command could
    // not be delivered: its assignment, if the link filled before the run
    // began (the flood starts as it joins), else a phase command, and then
    // w1 takes its share. The idle one: heartbeats, but no second reported.
    let at_start = log.contains("worker w6 lost: its assignment could not be delivered");
    let later = log.contains("worker w6 lost: a phase command could not be delivered");
    assert!(at_start || later, "{log}");
    if later {
        assert!(log.contains("rebalanced after w6 lost"), "w1 takes its share: {log}");
    }
    assert!(log.contains("worker w7 lost: no snapshot for 6 s (heartbeats only)"), "{log}");
    assert_eq!(s.figures.connections.peak, 20, "w1 held the whole planned level either way");
    assert!(s.figures.messages.received > 0 && s.figures.messages.lost == 0, "{:?}", s.figures.messages);
    // Answers to a peer that does not read are dropped, not queued: the
    // whole test process (controller, worker, relay) stays small.
    assert!(vm_hwm_kb() < 400_000, "peak RSS {} kB", vm_hwm_kb());
}

/// This process's peak resident memory, kB.
fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fleet_token_strangers_are_refused_and_the_run_goes_on() {
    use stampede_proto::auth::FleetToken;
    let _one = ONE_AT_A_TIME.lock().await;
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = scenario(tmp.path(), port);
    let token_file = tmp.path().join("fleet.token");
    std::fs::write(&token_file, "the-fleet-token-0123456789\n").unwrap();
    let token = FleetToken::from_sources(Some(&token_file), |_| None).unwrap();
    let strangers = tokio::spawn(async move {
        // Strangers first: no proof, then a proof made with another token.
        // Each is refused before the run tells it anything.
        let no_proof = peer(port, hello("stranger-1", stampede_proto::PROTOCOL_VERSION)).await.unwrap_err();
        let wrong = FleetToken::new(b"not-the-fleet-token-0000".to_vec()).unwrap();
        let mut forged = hello("stranger-2", stampede_proto::PROTOCOL_VERSION);
        if let Some(Body::Hello(h)) = &mut forged.body {
            h.sent_at_unix_us = stampede_model::clock::unix_us(std::time::SystemTime::now());
            h.token_proof = wrong.prove("stranger-2", h.sent_at_unix_us);
            h.capacity = Some(fleet::Capacity { max_connections: 1_000_000_000, ..Default::default() });
        }
        let forged = peer(port, forged).await.unwrap_err();
        (no_proof, forged)
    });
    let stop = CancellationToken::new();
    let workers = [
        worker_with_token(port, "w1", Some(token_file.clone()), stop.clone()),
        worker_with_token(port, "w2", Some(token_file.clone()), stop.clone()),
    ];
    let outcome =
        run(RunOptions { fleet_token: token, ..options(path) }, CancellationToken::new()).await.unwrap();
    let (no_proof, forged) = strangers.await.unwrap();
    assert_eq!(no_proof.code(), tonic::Code::Unauthenticated, "{no_proof:?}");
    assert!(no_proof.message().contains("no fleet token"), "{no_proof:?}");
    assert_eq!(forged.message(), "wrong fleet token");
    for w in workers {
        tokio::time::timeout(Duration::from_secs(10), w).await.expect("--once workers exit").unwrap();
    }
    let s = &outcome.summary;
    assert_eq!(s.verdict, "PASS");
    let mut ids: Vec<&str> = s.worker_details.iter().map(|w| w.id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["w1", "w2"], "the strangers took no share");
    assert_eq!(s.figures.connections.opened, 20);
}
