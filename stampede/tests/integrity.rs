//! Numbers that hold whatever happens to the processes: a worker frozen
//! mid-run, a controller killed or terminated, a server sending frames
//! nobody asked for. Real processes, real signals, real sockets.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use common::{ONE_RUN_AT_A_TIME, Scratch, num, read_csv, read_json};

/// A controller started in the background.
fn spawn_controller(scratch: &Scratch, scenario: &Path) -> Child {
    let out = scratch.results_parent();
    Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["run", scenario.to_str().unwrap(), "--quiet", "--output", out.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start controller")
}

/// Waits for `child` at most `limit`, killing it after.
fn wait(mut child: Child, limit: Duration) -> (i32, String) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().ok();
    panic!("the controller did not finish within {limit:?}");
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: signals a process this test started (or its child).
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill({pid}, {sig})");
}

/// The pid of the local worker `id` started by the controller `parent`.
fn worker_pid(parent: u32, id: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|s| s.split_whitespace().nth(1));
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            if ppid == Some(&parent.to_string())
                && args.contains(&b"worker".as_slice())
                && args.contains(&id.as_bytes())
            {
                return pid;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no worker {id} under {parent}");
}

/// Seconds (interval start times) present in latency.hlog, with how many
/// intervals each has.
fn hlog_seconds(path: &Path) -> BTreeMap<u64, usize> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut seconds = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("Tag=latency,")) {
        let start: f64 = line.split(',').nth(1).unwrap().parse().unwrap();
        *seconds.entry(start.round() as u64).or_default() += 1;
    }
    seconds
}

/// The cells of column `name` in rows.
fn column<'a>(header: &[String], rows: &'a [Vec<String>], name: &str) -> Vec<&'a str> {
    let i = header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    rows.iter().map(|r| r[i].as_str()).collect()
}

const STEADY: &str = r#"
name = "steady"
[target]
bundled = true
[load]
connections = 40
message_interval_s = 0.1
[phases]
warmup_s = 0
ramp_up_s = 2
sustained_s = 24
cooldown_s = 2
[fleet]
workers = 2
"#;

#[test]
fn a_frozen_worker_loses_nothing_and_its_seconds_are_flagged_as_a_generator_stall() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file("steady.toml", STEADY);
    let controller = spawn_controller(&scratch, &path);
    let worker = worker_pid(controller.id(), "local-1");
    std::thread::sleep(Duration::from_secs(7));
    signal(worker, libc::SIGSTOP);
    std::thread::sleep(Duration::from_secs(10));
    signal(worker, libc::SIGCONT);
    let (code, stderr) = wait(controller, Duration::from_secs(90));
    assert_eq!(code, 0, "{stderr}");
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));

    // Every second of both workers is in workers.csv (the last row of a
    // (second, worker) wins: late data is appended as a correction).
    let (wh, wrows) = read_csv(&dir.join("workers.csv"));
    let mut reported: BTreeMap<(String, String), String> = BTreeMap::new();
    let (secs, ids, rep) =
        (column(&wh, &wrows, "elapsed_s"), column(&wh, &wrows, "worker"), column(&wh, &wrows, "reported"));
    for i in 0..wrows.len() {
        reported.insert((secs[i].to_string(), ids[i].to_string()), rep[i].to_string());
    }
    let (mh, mrows) = read_csv(&dir.join("metrics.csv"));
    let elapsed: Vec<u64> = column(&mh, &mrows, "elapsed_s").iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(elapsed, (0..elapsed.len() as u64).collect::<Vec<_>>(), "metrics.csv is rewritten in order");
    for s in 0..elapsed.len() as u64 - 1 {
        for id in ["local-1", "local-2"] {
            assert_eq!(
                reported.get(&(s.to_string(), id.to_string())).map(String::as_str),
                Some("1"),
                "{id} second {s}"
            );
        }
    }
    let reporting = column(&mh, &mrows, "workers_reporting");
    assert!(
        reporting[..reporting.len() - 1].iter().all(|r| *r == "2"),
        "every row holds both workers: {reporting:?}"
    );
    let revised = column(&mh, &mrows, "revision").iter().filter(|r| **r != "0").count();
    assert!(revised >= 5, "the frozen seconds were corrected after the worker resumed: {revised}");

    // The row sums are the summary's totals.
    let sent: u64 = column(&mh, &mrows, "messages_sent").iter().map(|s| s.parse::<u64>().unwrap()).sum();
    assert_eq!(sent as f64, num(&summary, "messages.sent"));
    assert_eq!(num(&summary, "messages.lost"), 0.0, "{summary}");

    // The stall is flagged where it happened, in metrics.csv and the summary.
    let stalled: BTreeSet<u64> = summary["generator_stalled_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(stalled.len() >= 8 && stalled.len() <= 14, "{stalled:?}");
    assert!(stalled.iter().all(|s| (6..=20).contains(s)), "{stalled:?}");
    let flags = column(&mh, &mrows, "generator_stalled");
    let flagged: BTreeSet<u64> = (0..flags.len() as u64).filter(|s| flags[*s as usize] == "1").collect();
    assert_eq!(flagged, stalled);
    assert!(num(&summary, "latency_ms.p99") > 1000.0, "the frozen sends count from when they were due");

    // Every second's histograms are in latency.hlog, the late ones appended.
    let hlog = hlog_seconds(&dir.join("latency.hlog"));
    assert!((0..elapsed.len() as u64).all(|s| hlog.contains_key(&s)), "{hlog:?}");
    assert!(hlog.values().filter(|n| **n > 1).count() >= 5, "late intervals appended: {hlog:?}");

    // analyze, from the same merged histograms, agrees, and says why.
    let out = scratch.dir.path().join("analysis");
    let args = ["analyze", dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--format", "json"];
    let mut stdout = Vec::new();
    assert_eq!(stampede_analyze::cli::run(stampede_analyze::cli::Args::parse_from(args), &mut stdout), 0);
    let report = read_json(&out.join("report.json"));
    let overall = &report["overall"];
    assert_eq!(overall["phases"], "ramp-up+sustained+cooldown");
    for p in ["count", "p50", "p95", "p99"] {
        assert_eq!(num(&overall["latency_ms"], p), num(&summary, &format!("latency_ms.{p}")), "{p}");
    }
    let stalls: Vec<&serde_json::Value> =
        report["findings"].as_array().unwrap().iter().filter(|f| f["kind"] == "generator_stalled").collect();
    assert!(!stalls.is_empty(), "{}", report["findings"]);

    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    // Frozen, it is taken as lost within 3 s and its share moves to the
    // other worker; thawed, it rejoins, resends, and takes its share back.
    assert!(log.contains("worker local-1 lost"), "{log}");
    assert!(log.contains("rebalanced after local-1 lost: local-2 40"), "{log}");
    assert!(log.contains("rebalanced after local-1 rejoined: local-1 20, local-2 20"), "{log}");
    let lost = &summary["workers_lost"][0];
    assert_eq!(lost["id"], "local-1", "{summary}");
    let (at, back) = (num(lost, "at_s"), num(lost, "back_at_s"));
    assert!((5.0..=11.5).contains(&at), "frozen ~7 s after the start, lost within 3 s (and a beat): {at}");
    assert!((6.0..=11.0).contains(&(back - at)), "back once thawed (frozen for 10 s): {at} -> {back}");
    assert!(log.contains("late data from local-1"), "{log}");
    assert!(log.contains("the load generator stalled in seconds"), "{log}");
}

#[test]
fn a_killed_controller_leaves_every_second_but_the_last_and_sigterm_completes_the_results() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file("steady.toml", STEADY);
    let controller = spawn_controller(&scratch, &path);
    std::thread::sleep(Duration::from_millis(9500));
    signal(controller.id(), libc::SIGKILL);
    let killed_at = stampede_model::clock::unix_s(std::time::SystemTime::now());
    let (code, _) = wait(controller, Duration::from_secs(10));
    assert_eq!(code, -1, "killed");
    let dir = scratch.results();
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let started = column(&header, &rows, "timestamp")[0];
    let ran = killed_at - stampede_model::time::parse_iso8601(started).unwrap();
    let hlog = hlog_seconds(&dir.join("latency.hlog"));
    eprintln!("killed {ran:.2} s into the run: {} seconds in latency.hlog", hlog.len());
    // Every second that had ended is there, but the one whose reports were
    // on their way when the process died.
    assert!(
        hlog.len() as f64 >= ran.floor() - 1.0,
        "{} seconds in latency.hlog {ran:.1} s into the run",
        hlog.len()
    );
    assert_eq!(hlog.keys().copied().collect::<Vec<_>>(), (0..hlog.len() as u64).collect::<Vec<_>>());
    assert_eq!(rows.len(), hlog.len(), "metrics.csv and latency.hlog hold the same seconds");

    let scratch = Scratch::new();
    let path = scratch.file("steady.toml", STEADY);
    let controller = spawn_controller(&scratch, &path);
    std::thread::sleep(Duration::from_secs(8));
    signal(controller.id(), libc::SIGTERM);
    let (code, stderr) = wait(controller, Duration::from_secs(30));
    assert_eq!(code, 143, "{stderr}");
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["verdict"], "FAIL");
    assert!(summary["aborted"].as_str().unwrap().contains("interrupted"), "{summary}");
    assert_eq!(num(&summary, "messages.lost"), 0.0, "connections drain before they close");
    assert!(dir.join("metrics.json").exists());
    let (_, rows) = read_csv(&dir.join("metrics.csv"));
    assert_eq!(hlog_seconds(&dir.join("latency.hlog")).len(), rows.len());
}

/// A WebSocket server on a thread of its own that sends `unsolicited`
/// frames to each new connection, then echoes everything.
fn chatty_server(unsolicited: usize) -> String {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                    for i in 0..unsolicited {
                        if ws.send(Message::text(format!("{{\"news\": {i}}}"))).await.is_err() {
                            return;
                        }
                    }
                    while let Some(Ok(msg)) = ws.next().await {
                        if msg.is_text() || msg.is_binary() {
                            if ws.send(msg).await.is_err() {
                                return;
                            }
                        } else if msg.is_close() {
                            break;
                        }
                    }
                });
            }
        });
    });
    url
}

#[test]
fn unsolicited_frames_are_counted_and_a_threshold_on_them_fails_the_run() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let url = chatty_server(1000);
    let scratch = Scratch::new();
    let path = scratch.file(
        "chatty.toml",
        &format!(
            r#"
name = "chatty"
[target]
url = "{url}"
[load]
connections = 2
message_interval_s = 0.2
[phases]
warmup_s = 0
ramp_up_s = 1
sustained_s = 3
cooldown_s = 1
[thresholds]
messages_unmatched = "< 1"
error_rate = "< 0.01"
"#
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 99, "{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(num(&summary, "messages.unmatched"), 2000.0, "1,000 per connection, exactly");
    assert_eq!(num(&summary, "counters.messages_unmatched"), 2000.0);
    assert_eq!(num(&summary, "messages.received"), num(&summary, "messages.sent"));
    let thresholds = summary["thresholds"].as_array().unwrap();
    let unmatched = thresholds.iter().find(|t| t["metric"] == "messages_unmatched").unwrap();
    assert_eq!(unmatched["pass"], false);
    assert_eq!(unmatched["value"], 2000.0);
    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    assert!(log.contains("unmatched 2000"), "{log}");
    assert!(log.contains("[FAIL] messages_unmatched < 1"), "{log}");
}

#[test]
fn a_bad_flag_is_named_not_a_line_of_the_file() {
    let scratch = Scratch::new();
    let path = scratch.file("ok.toml", "name = \"ok\"\n[target]\nbundled = true\n");
    for (flag, value, says) in [
        ("--target", "http://example.com/", "not a WebSocket URL"),
        ("--duration", "20x", "is not a duration"),
        ("--message-interval", "0.0000001", "at least 0.000001"),
        ("--connections", "0", "0"),
    ] {
        let run = common::controller(&["run", path.to_str().unwrap(), flag, value], Duration::from_secs(20));
        assert_eq!(run.code, 2, "{flag} {value}: {}", run.stderr);
        assert!(run.stderr.contains(flag) && run.stderr.contains(says), "{flag} {value}: {}", run.stderr);
        assert!(!run.stderr.contains("ok.toml:"), "{}", run.stderr);
    }
}

#[test]
fn a_full_disk_is_reported_at_once_and_the_verdict_still_stands() {
    use std::os::unix::process::CommandExt;
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "small.toml",
        "name = \"small\"\n[target]\nbundled = true\n[load]\nconnections = 10\nmessage_interval_s = 0.1\n\
         [phases]\nwarmup_s = 0\nramp_up_s = 1\nsustained_s = 5\ncooldown_s = 1\n[thresholds]\nerror_rate = \"< 0.01\"\n",
    );
    let out = scratch.results_parent();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_controller"));
    cmd.args(["run", path.to_str().unwrap(), "--output", out.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls: files may
    // grow to 1 KB (writes past it fail with EFBIG, like a full disk), and
    // SIGXFSZ is ignored so the failing write returns an error instead of
    // killing the process.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let (code, stderr) = wait(cmd.spawn().unwrap(), Duration::from_secs(60));
    assert_eq!(code, 0, "the run passed; only its files are incomplete:\n{stderr}");
    assert!(stderr.contains("error: cannot write"), "{stderr}");
    assert!(stderr.contains("the run goes on"), "{stderr}");
    assert!(stderr.contains("Verdict: PASS"), "{stderr}");
    let first = stderr.find("error: cannot write").unwrap();
    assert!(first < stderr.find("TEST SUMMARY").unwrap(), "reported as it happened, before the summary");
}

/// A worker starved on purpose (stopped 80 ms of every 250 ms for 4 s:
/// never long enough for a snapshot to be late or a send 100 ms behind,
/// the older signs) is flagged by its scheduling probe in the seconds it
/// was starved, and only there.
#[test]
fn a_starved_worker_flags_its_seconds_and_only_those() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let scenario = STEADY.replace("sustained_s = 24", "sustained_s = 14");
    let path = scratch.file("starved.toml", &scenario);
    let controller = spawn_controller(&scratch, &path);
    let worker = worker_pid(controller.id(), "local-1");
    // Starve it from 6 s to 10 s of the run (the workers join within a second).
    std::thread::sleep(Duration::from_secs(6));
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        signal(worker, libc::SIGSTOP);
        std::thread::sleep(Duration::from_millis(80));
        signal(worker, libc::SIGCONT);
        std::thread::sleep(Duration::from_millis(170));
    }
    let (code, stderr) = wait(controller, Duration::from_secs(60));
    assert_eq!(code, 0, "{stderr}");
    let summary = read_json(&scratch.results().join("summary.json"));
    let flagged: Vec<u64> = summary["generator_stalled_seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert!(flagged.len() >= 3, "the starved seconds are flagged: {flagged:?}");
    assert_eq!(num(&summary, "counters.sends_stalled"), 0.0, "no send was 100 ms late: the probe found it");
    assert!(flagged.iter().all(|s| (4..=13).contains(s)), "and only around them: {flagged:?}");
    let log = std::fs::read_to_string(scratch.results().join("test.log")).unwrap();
    assert!(log.contains("the load generator stalled in seconds"), "test.log warns: {log}");
}
