//! The controller's run loop with its workers and the bundled relay in this
//! process: real gRPC and WebSocket sockets on loopback, no child processes,
//! so the loop's decisions can be checked quickly and precisely.

use std::path::Path;
use std::time::Duration;

use stampede_controller::plan::Overrides;
use stampede_controller::run::{RunOptions, run};
use stampede_worker::WorkerOptions;
use tokio_util::sync::CancellationToken;

/// One run at a time: each picks a free port for its fleet and releases it
/// before the controller binds it, so two at once could pick the same one.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts worker `id` in this process, joining the controller at `port`.
fn worker(port: u16, id: &str, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let opts = WorkerOptions {
        controller: format!("http://127.0.0.1:{port}"),
        id: Some(id.into()),
        max_connections: None,
        source_addresses: vec![],
        once: true,
        join_timeout: Some(20),
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
    RunOptions { scenario: path, overrides: Overrides::default(), executable: None, quiet: true }
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
}
