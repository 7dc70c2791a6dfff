//! Several hosts on one machine (issue 9): the relay, the controller and
//! three workers each in a network namespace of their own, joined by a
//! bridge (see `common/netns.rs`), so the fleet's traffic and the load
//! really cross a network that a test can cut. The fleet runs with a token
//! and TLS on its control link.
//!
//! Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) and iproute2; without them each
//! test prints "skipped: ..." and passes (`STAMPEDE_REQUIRE_NETNS=1` makes
//! that a failure).
//!
//! Times here are measured against the run's own clock: summary.json's
//! `started_at` is the wall time of the run's second 0 (the same instant
//! `elapsed_s` 0 of metrics.csv starts, and the one `workers_lost[].at_s`
//! counts from), at millisecond precision, on the same machine clock the
//! test reads when it acts. While the run goes, the test learns the start
//! from test.log's "run <name>-<start, unix us> started" line.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::netns::Lab;
use common::{ONE_RUN_AT_A_TIME, Scratch, num, read_csv, read_json};
use stampede_model::time::parse_iso8601;
use stampede_relay::pki::Ca;

const BIN: &str = env!("CARGO_BIN_EXE_controller");
const HOSTS: [&str; 5] = ["relay", "ctl", "w1", "w2", "w3"];
const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
const RELAY_PORT: u16 = 8080;
const FLEET_PORT: u16 = 7700;
/// Connections of every run here: 50 a worker.
const CONNECTIONS: u64 = 150;
/// Every run ramps up over 3 s, then holds, then cools down over 2 s.
const RAMP_S: u64 = 3;
const COOLDOWN_S: u64 = 2;
/// When the tests act, seconds into the run: well into the sustained phase,
/// and mid-second, so the second before has been reported.
const ACT_AT_S: f64 = 8.5;
/// Open connections at the relay (relay/src/stats.rs).
const RELAY_GAUGE: &str = "relay_connections_active";

// ---------------------------------------------------------------------------
// Processes

/// A process started in the lab, its stderr in a file; SIGKILLed and reaped
/// when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf, stdout: Stdio) -> Proc {
        for (var, _) in stampede_controller::overrides::ENVIRONMENT {
            cmd.env_remove(var);
        }
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .env_remove(stampede_proto::auth::TOKEN_ENV)
            .env_remove(stampede_proto::auth::TOKEN_FILE_ENV)
            .env_remove("STAMPEDE_CONTROLLER")
            .env_remove("STAMPEDE_WORKER_ID")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc { name: name.to_string(), child, log }
    }

    /// SIGKILLs it; returns when (UNIX seconds).
    fn kill(&mut self) -> f64 {
        self.child.kill().unwrap_or_else(|e| panic!("kill {}: {e}", self.name));
        let at = unix_now();
        let _ = self.child.wait();
        at
    }

    /// Its exit status, waiting up to `limit`; `None` if still running.
    fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// The fleet

/// Certificates for the fleet's control link.
struct FleetTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Clone, Copy, PartialEq)]
enum Tls {
    /// The test is about TLS: without it, it fails.
    Required,
    /// On when this build has it (the test is about something else).
    IfAvailable,
}

/// Whether `controller <sub> --help` lists `flag`.
fn has_flag(sub: &str, flag: &str) -> bool {
    let out = Command::new(BIN).args([sub, "--help"]).output().expect("controller --help");
    String::from_utf8_lossy(&out.stdout).contains(flag)
}

fn tls_built() -> bool {
    has_flag("run", "--fleet-cert") && has_flag("run", "--fleet-key") && has_flag("worker", "--fleet-ca")
}

/// The relay, the controller and the workers, each in its own namespace.
/// Fields drop in order: the processes, the scratch folder, then the lab.
struct Fleet {
    workers: BTreeMap<String, Proc>,
    controller: Option<Proc>,
    relay: Proc,
    relay_url: String,
    token: PathBuf,
    tls: Option<FleetTls>,
    scratch: Scratch,
    lab: Lab,
}

impl Fleet {
    /// A lab with the relay serving in it; the controller and workers come
    /// later.
    fn start(lab: Lab, tls: Tls) -> Fleet {
        let scratch = Scratch::new();
        let built = tls_built();
        assert!(
            built || tls == Tls::IfAvailable,
            "TLS on the fleet link is not built yet: `controller run --help` lists no --fleet-cert/--fleet-key \
             or `controller worker --help` no --fleet-ca"
        );
        if !built {
            let _ =
                writeln!(std::io::stderr(), "note: fleet TLS not built yet; this run uses the token only");
        }
        let tls = built.then(|| {
            let ca = Ca::new("stampede multi-host test CA").unwrap();
            let server = ca.server(&[&lab.ip("ctl").to_string()]).unwrap();
            FleetTls {
                ca: scratch.file("fleet-ca.pem", ca.cert_pem()),
                cert: scratch.file("fleet.pem", &server.cert),
                key: scratch.file("fleet.key", &server.key),
            }
        });
        let token = scratch
            .file("fleet.token", &format!("multi-host test token {} {}", std::process::id(), unix_now()));

        let listen = format!("{}:{RELAY_PORT}", lab.ip("relay"));
        let mut cmd = lab.exec("relay", BIN);
        cmd.args(["relay", "--listen", &listen]);
        let mut relay = Proc::spawn("relay", cmd, scratch.dir.path().join("relay.log"), Stdio::piped());
        // Its first line says where it listens; the rest is drained.
        let (tx, rx) = mpsc::channel();
        let stdout = relay.child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            lines.for_each(drop);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let relay_url =
            line.trim().strip_prefix(stampede_relay::config::READY_PREFIX).unwrap_or_default().to_string();
        let log = std::fs::read_to_string(&relay.log).unwrap_or_default();
        assert_eq!(relay_url, format!("ws://{listen}/ws"), "the relay did not start: {line:?}\n{log}");
        Fleet { workers: BTreeMap::new(), controller: None, relay, relay_url, token, tls, scratch, lab }
    }

    /// A scenario against the relay for a remote fleet of the three
    /// workers, holding [`CONNECTIONS`] for `sustained_s`; `extra` goes
    /// at the end of `[fleet]`.
    fn scenario(&self, name: &str, sustained_s: u64, extra: &str) -> PathBuf {
        let (relay, ctl) = (self.lab.ip("relay"), self.lab.ip("ctl"));
        self.scratch.file(
            &format!("{name}.toml"),
            &format!(
                "name = \"{name}\"\n\
                 [target]\nurl = \"{}\"\nmetrics_url = \"http://{relay}:{RELAY_PORT}/metrics\"\n\
                 [load]\nconnections = {CONNECTIONS}\nmessage_interval_s = 0.5\n\
                 [phases]\nwarmup_s = 0\nramp_up_s = {RAMP_S}\nsustained_s = {sustained_s}\ncooldown_s = {COOLDOWN_S}\n\
                 [fleet]\nremote = true\nworkers = {}\nlisten = \"{ctl}:{FLEET_PORT}\"\njoin_timeout_s = 30\n{extra}",
                self.relay_url,
                WORKERS.len()
            ),
        )
    }

    /// `controller run SCENARIO` on the ctl host.
    fn start_controller(&mut self, scenario: &Path) {
        let mut cmd = self.lab.exec("ctl", BIN);
        cmd.arg("run").arg(scenario).arg("--output").arg(self.scratch.results_parent());
        cmd.arg("--token-file").arg(&self.token);
        if let Some(tls) = &self.tls {
            cmd.arg("--fleet-cert").arg(&tls.cert).arg("--fleet-key").arg(&tls.key);
        }
        let log = self.scratch.dir.path().join("controller.log");
        self.controller = Some(Proc::spawn("controller", cmd, log, Stdio::null()));
    }

    /// The workers, each on its host, dialling the controller.
    fn start_workers(&mut self, extra: &[&str]) {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}:{FLEET_PORT}", self.lab.ip("ctl"));
        for id in WORKERS {
            let mut cmd = self.lab.exec(id, BIN);
            cmd.args(["worker", "--controller", &url, "--id", id, "--join-timeout", "60"]);
            cmd.arg("--token-file").arg(&self.token);
            cmd.args(["--allow-target", &self.lab.ip("relay").to_string()]);
            if let Some(tls) = &self.tls {
                cmd.arg("--fleet-ca").arg(&tls.ca);
            }
            cmd.args(extra);
            let log = self.scratch.dir.path().join(format!("{id}.log"));
            self.workers.insert(id.to_string(), Proc::spawn(id, cmd, log, Stdio::null()));
        }
    }

    fn worker(&mut self, id: &str) -> &mut Proc {
        self.workers.get_mut(id).unwrap()
    }

    /// Waits up to `limit` for the controller to exit.
    fn wait_controller(&mut self, limit: Duration) -> ExitStatus {
        let ctl = self.controller.as_mut().expect("controller started");
        ctl.wait_for(limit).unwrap_or_else(|| panic!("the controller did not finish within {limit:?}"))
    }

    /// The one results folder, once the run has made it.
    fn results_dir(&self) -> Option<PathBuf> {
        let mut dirs = std::fs::read_dir(self.scratch.results_parent()).ok()?.filter_map(|e| e.ok());
        dirs.next().map(|e| e.path())
    }

    fn results(&self) -> PathBuf {
        self.scratch.results()
    }

    /// The run's start (UNIX seconds), from test.log's first line, waiting
    /// for the workers to join and the run to begin.
    fn run_start(&mut self) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.results_dir().and_then(|d| std::fs::read_to_string(d.join("test.log")).ok());
            let line = log
                .as_deref()
                .and_then(|l| l.lines().find(|l| l.contains(" started with ")).map(String::from));
            if let Some(line) = line {
                // "[     0.0 s] run <name>-<unix us> started with 3 workers"
                let id = line.split("run ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or_default();
                let us: u64 = id.rsplit('-').next().and_then(|u| u.parse().ok()).unwrap_or_else(|| {
                    panic!("test.log's start line names no run start in UNIX microseconds: {line:?}")
                });
                return us as f64 / 1e6;
            }
            let ctl = self.controller.as_mut().expect("controller started");
            if let Some(status) = ctl.child.try_wait().unwrap() {
                panic!("the controller exited ({status}) before the run started");
            }
            assert!(Instant::now() < deadline, "the run did not start within 60 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A sample of the relay's `/metrics`, fetched from inside the relay's
    /// namespace.
    fn relay_metric(&self, name: &str) -> Option<f64> {
        let addr = SocketAddr::from((self.lab.ip("relay"), RELAY_PORT));
        let body = self.lab.within("relay", || http_get(addr, "/metrics")).ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
    }

    /// The relay's open connections; panics when it cannot be read.
    fn relay_open(&self) -> f64 {
        self.relay_metric(RELAY_GAUGE).unwrap_or_else(|| panic!("no {RELAY_GAUGE} from the relay's /metrics"))
    }
}

impl Drop for Fleet {
    /// On failure (or with STAMPEDE_TEST_LOGS set), says what each
    /// process said.
    fn drop(&mut self) {
        if !std::thread::panicking() && std::env::var_os("STAMPEDE_TEST_LOGS").is_none() {
            return;
        }
        let mut logs: Vec<(String, PathBuf)> = Vec::new();
        if let Some(dir) = self.results_dir() {
            logs.push(("test.log".into(), dir.join("test.log")));
        }
        for p in self.controller.iter().chain([&self.relay]).chain(self.workers.values()) {
            logs.push((p.name.clone(), p.log.clone()));
        }
        for (name, path) in logs {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!("----- {name} ({} lines, last 80) -----\n{tail}", lines.len());
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

fn sleep_until_unix(t: f64) {
    let wait = t - unix_now();
    if wait > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(wait));
    }
}

/// GET `path` from `addr`: the response body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("GET {path}: {head}")));
    }
    Ok(body.to_string())
}

/// A CSV row by column name.
type Row = BTreeMap<String, String>;

fn rows(path: &Path) -> Vec<Row> {
    let (header, rows) = read_csv(path);
    rows.into_iter().map(|r| header.iter().cloned().zip(r).collect()).collect()
}

/// A cell as a number (NaN when empty).
fn cell(row: &Row, col: &str) -> f64 {
    let text = row.get(col).unwrap_or_else(|| panic!("no column {col}"));
    if text.is_empty() { f64::NAN } else { text.parse().unwrap_or_else(|_| panic!("{col} = {text:?}")) }
}

/// metrics.csv, each second's final row (its highest revision).
fn metrics_by_second(dir: &Path) -> BTreeMap<u64, Row> {
    let mut by_second: BTreeMap<u64, Row> = BTreeMap::new();
    for row in rows(&dir.join("metrics.csv")) {
        let s = cell(&row, "elapsed_s") as u64;
        if by_second.get(&s).is_none_or(|old| cell(old, "revision") <= cell(&row, "revision")) {
            by_second.insert(s, row);
        }
    }
    by_second
}

/// workers.csv, the final row of each (worker, second): the last one
/// written (a correction is appended after the row it corrects).
fn workers_by_second(dir: &Path) -> BTreeMap<(String, u64), Row> {
    let mut by_key = BTreeMap::new();
    for row in rows(&dir.join("workers.csv")) {
        by_key.insert((row["worker"].clone(), cell(&row, "elapsed_s") as u64), row);
    }
    by_key
}

/// Worker `id`'s seconds in `range` that are missing or not reported.
fn unreported(
    workers: &BTreeMap<(String, u64), Row>,
    id: &str,
    range: impl Iterator<Item = u64>,
) -> Vec<u64> {
    range.filter(|s| workers.get(&(id.to_string(), *s)).is_none_or(|r| r["reported"] != "1")).collect()
}

/// `connections_active` (and the relay's count) of seconds `from..to`, for
/// messages.
fn active_series(metrics: &BTreeMap<u64, Row>, from: u64, to: u64) -> String {
    metrics
        .range(from..to)
        .map(|(s, r)| format!("{s}: {} (relay {})", r["connections_active"], r["target_connections"]))
        .collect::<Vec<_>>()
        .join(", ")
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Tests

/// The plain case across hosts: every message echoed, each worker holding
/// its third, the relay in its own namespace seeing exactly the fleet's
/// connections and messages.
#[test]
fn a_run_across_hosts_passes_with_token_and_tls() {
    let _one = lock();
    let Some(lab) = Lab::new(&HOSTS) else { return };
    let mut fleet = Fleet::start(lab, Tls::Required);
    let scenario = fleet.scenario(
        "multihost",
        10,
        "[thresholds]\nerror_rate = \"<= 0\"\nconnect_success_rate = \">= 1\"\nmessage_loss_rate = \"<= 0\"\n",
    );
    fleet.start_controller(&scenario);
    fleet.start_workers(&["--once"]);
    let status = fleet.wait_controller(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "the run passes");

    let said = std::fs::read_to_string(&fleet.controller.as_ref().unwrap().log).unwrap();
    let https = format!("join at https://{}:{FLEET_PORT}", fleet.lab.ip("ctl"));
    assert!(said.contains(&https), "the fleet link was TLS: {https:?} not in\n{said}");

    let dir = fleet.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["verdict"], "PASS");
    let mut ids: Vec<&str> =
        summary["worker_details"].as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, WORKERS);
    assert_eq!(summary["workers_lost"].as_array().map_or(0, Vec::len), 0, "{}", summary["workers_lost"]);
    assert_eq!(num(&summary, "connections.opened"), CONNECTIONS as f64);
    assert_eq!(num(&summary, "connections.failed"), 0.0);
    let sent = num(&summary, "messages.sent");
    // 2 messages a second on each of 150 connections for the 10 s held.
    assert!(sent >= (CONNECTIONS * 2 * 10) as f64, "{sent} sent");
    assert_eq!(num(&summary, "messages.received"), sent, "every message echoed across the bridge");
    assert_eq!(num(&summary, "messages.lost"), 0.0);

    // Each worker held its share, reported every second of it.
    let workers = workers_by_second(&dir);
    let metrics = metrics_by_second(&dir);
    let held: Vec<u64> = metrics.iter().filter(|(_, r)| r["phase"] == "sustained").map(|(s, _)| *s).collect();
    assert!(held.len() >= 9, "sustained seconds: {held:?}");
    for id in WORKERS {
        for s in &held {
            let row = &workers[&(id.to_string(), *s)];
            assert_eq!(row["reported"], "1", "{id} second {s}");
            assert_eq!(cell(row, "connections_active"), (CONNECTIONS / 3) as f64, "{id} second {s}");
        }
    }

    // The relay, in its own namespace, saw exactly that load.
    assert_eq!(fleet.relay_metric("relay_connections_total"), Some(CONNECTIONS as f64));
    assert_eq!(fleet.relay_metric("relay_messages_received_total"), Some(sent));
    assert_eq!(fleet.relay_open(), 0.0, "every connection closed at the end");

    // --once workers leave cleanly once their run is over.
    for id in WORKERS {
        let status = fleet.worker(id).wait_for(Duration::from_secs(15));
        assert!(status.is_some_and(|s| s.success()), "{id}: {status:?}");
    }
}

/// A worker SIGKILLed mid-run: marked lost within 3 s, its share taken by
/// the others within 10 s, its seconds before the kill kept.
#[test]
fn a_killed_worker_is_replaced() {
    let _one = lock();
    let Some(lab) = Lab::new(&HOSTS) else { return };
    let mut fleet = Fleet::start(lab, Tls::IfAvailable);
    let sustained = 25;
    let scenario = fleet.scenario("killed", sustained, "on_worker_lost = \"rebalance\"\n");
    fleet.start_controller(&scenario);
    fleet.start_workers(&[]);
    let start = fleet.run_start();
    sleep_until_unix(start + ACT_AT_S);
    assert_eq!(fleet.relay_open(), CONNECTIONS as f64, "all connections open before the kill");
    let killed_at = fleet.worker("w2").kill();
    let status = fleet.wait_controller(Duration::from_secs(70));
    assert!(matches!(status.code(), Some(0 | 99)), "the run ends with a verdict: {status}");

    let dir = fleet.results();
    let summary = read_json(&dir.join("summary.json"));
    assert!(summary["verdict"] == "PASS" || summary["verdict"] == "FAIL", "{}", summary["verdict"]);
    let started = parse_iso8601(summary["started_at"].as_str().unwrap()).unwrap();
    assert!((started - start).abs() < 0.002, "test.log and summary.json agree on the start");
    // Seconds into the run when w2 died.
    let kill_s = killed_at - started;
    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();

    // Marked lost within 3 s, and nobody else.
    let lost = summary["workers_lost"].as_array().cloned().unwrap_or_default();
    let ids: Vec<&str> = lost.iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["w2"], "workers_lost: {}", summary["workers_lost"]);
    let at_s = lost[0]["at_s"].as_f64().unwrap();
    assert!(
        at_s >= kill_s - 0.1 && at_s <= kill_s + 3.0,
        "w2 killed at {kill_s:.3} s, marked lost at {at_s:.3} s ({})",
        lost[0]["reason"]
    );

    // Its share rebalanced: the fleet back at the target within 10 s, and
    // the relay seeing it too (its count is scraped once a second, so it
    // may show one second later).
    let metrics = metrics_by_second(&dir);
    let first = kill_s.floor() as u64;
    let series = active_series(&metrics, first.saturating_sub(1), first + 14);
    let target = |r: &Row| cell(r, "connections_target");
    let back = metrics
        .range(first..)
        .find(|(_, r)| r["phase"] == "sustained" && cell(r, "connections_active") >= target(r));
    let (back_s, _) = back
        .unwrap_or_else(|| panic!("never back at {CONNECTIONS} after the kill at {kill_s:.1} s: {series}"));
    // A second's gauges are taken at its end.
    let took = (*back_s + 1) as f64 - kill_s;
    assert!(took <= 10.0, "back at the target {took:.1} s after the kill: {series}");
    for (s, r) in metrics.range(back_s..).filter(|(_, r)| r["phase"] == "sustained") {
        assert!(cell(r, "connections_active") >= target(r), "second {s} fell short again: {series}");
    }
    eprintln!(
        "w2 killed at {kill_s:.2} s, lost at {at_s:.2} s, back at the target {took:.1} s later: {series}"
    );
    let relay_back = metrics
        .range(first..)
        .take_while(|(s, _)| (**s + 1) as f64 <= kill_s + 11.0)
        .any(|(_, r)| cell(r, "target_connections") >= CONNECTIONS as f64);
    assert!(relay_back, "the relay never saw {CONNECTIONS} connections again within 11 s: {series}");
    assert!(log.to_lowercase().contains("rebalanc"), "test.log says what was rebalanced:\n{log}");

    // Its data up to the kill kept: every second that ended 0.5 s or more
    // before the kill, reported (so not carried gauges).
    let workers = workers_by_second(&dir);
    let last = (kill_s - 1.5).floor() as u64;
    assert_eq!(
        unreported(&workers, "w2", 0..=last),
        Vec::<u64>::new(),
        "w2's seconds 0-{last} (killed at {kill_s:.2} s)"
    );
    for s in RAMP_S..=last {
        assert!(cell(&workers[&("w2".to_string(), s)], "messages_sent") > 0.0, "w2 sent in second {s}");
    }
}

/// A worker cut off for 30 s (its link down, the process untouched) keeps
/// its load and, once back, delivers every second it measured meanwhile.
#[test]
fn a_link_down_for_30_s_loses_no_data() {
    let _one = lock();
    let Some(lab) = Lab::new(&HOSTS) else { return };
    let mut fleet = Fleet::start(lab, Tls::IfAvailable);
    // Long enough after the link is back for TCP's retransmission backoff
    // (up to ~25 s after 30 s of silence) and the resending.
    let sustained = 65;
    let end_s = RAMP_S + sustained + COOLDOWN_S;
    let scenario = fleet.scenario("linkdown", sustained, "");
    fleet.start_controller(&scenario);
    fleet.start_workers(&[]);
    let start = fleet.run_start();
    sleep_until_unix(start + ACT_AT_S);
    assert_eq!(fleet.relay_open(), CONNECTIONS as f64, "all connections open before the link goes down");
    fleet.lab.link_down("w1");
    let down_at = unix_now();
    // The cut is real: from the controller's host w1 no longer answers
    // (a closed port there times out instead of being refused).
    let probe = SocketAddr::from((fleet.lab.ip("w1"), 9));
    let reach = |fleet: &Fleet| {
        fleet.lab.within("ctl", || TcpStream::connect_timeout(&probe, Duration::from_secs(1)).map(drop))
    };
    let cut = reach(&fleet);
    assert!(cut.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::TimedOut), "w1 cut off: {cut:?}");
    sleep_until_unix(down_at + 30.0);
    fleet.lab.link_up("w1");
    let up_at = unix_now();
    // The port takes a moment to forward again (and neighbour entries to
    // resolve): probe for up to 5 s.
    let refused = |r: &std::io::Result<()>| {
        r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    };
    let mut back = reach(&fleet);
    while !refused(&back) && unix_now() < up_at + 5.0 {
        std::thread::sleep(Duration::from_millis(200));
        back = reach(&fleet);
    }
    assert!(refused(&back), "w1 reachable again within 5 s of the link coming up: {back:?}");
    let left = start + end_s as f64 - unix_now();
    let status = fleet.wait_controller(Duration::from_secs_f64(left.max(0.0) + 30.0));
    assert!(matches!(status.code(), Some(0 | 99)), "the run ends with a verdict: {status}");

    let dir = fleet.results();
    let summary = read_json(&dir.join("summary.json"));
    assert!(summary["verdict"] == "PASS" || summary["verdict"] == "FAIL", "{}", summary["verdict"]);
    let started = parse_iso8601(summary["started_at"].as_str().unwrap()).unwrap();
    let (down_s, up_s) = (down_at - started, up_at - started);

    // Zero seconds of w1 missing, from its first to the schedule's end.
    let workers = workers_by_second(&dir);
    let first = workers
        .iter()
        .filter(|((id, _), r)| id == "w1" && r["reported"] == "1")
        .map(|((_, s), _)| *s)
        .min()
        .expect("w1 reported something");
    let missing = unreported(&workers, "w1", first..end_s);
    assert_eq!(
        missing,
        Vec::<u64>::new(),
        "w1's seconds {first}-{} not reported (link down {down_s:.1}-{up_s:.1} s)",
        end_s - 1
    );

    // It kept its phase while cut off: the connections it held before, and
    // sending, every second wholly inside the outage; and the merged rows
    // of those seconds have all three workers.
    let before = cell(&workers[&("w1".to_string(), down_s.floor() as u64 - 1)], "connections_active");
    assert_eq!(before, (CONNECTIONS / 3) as f64, "w1's share before the cut");
    let metrics = metrics_by_second(&dir);
    for s in down_s.ceil() as u64..up_s.floor() as u64 {
        let row = &workers[&("w1".to_string(), s)];
        assert_eq!(cell(row, "connections_active"), before, "w1 second {s}: kept its connections");
        assert!(cell(row, "messages_sent") > 0.0, "w1 second {s}: kept sending");
        // Written without w1 at first, corrected when its resent seconds came.
        let row = &metrics[&s];
        assert_eq!(cell(row, "workers_reporting"), 3.0, "metrics.csv second {s}");
        assert!(
            cell(row, "revision") >= 1.0,
            "metrics.csv second {s} was never corrected: w1 resent nothing"
        );
    }
}

/// Workers whose controller dies stop their load within their grace (the
/// relay, which they were loading, counts their connections going to 0).
#[test]
fn workers_stop_their_load_when_the_controller_dies() {
    const GRACE_S: f64 = 5.0;
    let _one = lock();
    let Some(lab) = Lab::new(&HOSTS) else { return };
    assert!(has_flag("worker", "--grace"), "`controller worker --help` lists no --grace yet");
    let mut fleet = Fleet::start(lab, Tls::IfAvailable);
    let scenario = fleet.scenario("orphans", 40, "");
    fleet.start_controller(&scenario);
    fleet.start_workers(&["--grace", &format!("{GRACE_S}")]);
    let start = fleet.run_start();
    sleep_until_unix(start + ACT_AT_S);
    assert_eq!(fleet.relay_open(), CONNECTIONS as f64, "all connections open before the controller dies");
    let killed_at = fleet.controller.as_mut().unwrap().kill();

    let deadline = killed_at + GRACE_S + 10.0;
    let mut seen = Vec::new();
    let zero_at = loop {
        let open = fleet.relay_open();
        let now = unix_now();
        seen.push(format!("{:.1} s: {open}", now - killed_at));
        if open == 0.0 {
            break now;
        }
        assert!(
            now < deadline,
            "still {open} open {:.1} s after the controller died: {}",
            now - killed_at,
            seen.join(", ")
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = zero_at - killed_at;
    eprintln!("load stopped {took:.1} s after the controller died (grace {GRACE_S} s)");
    // And it stays stopped: workers waiting for a controller hold nothing.
    let quiet_until = unix_now() + 3.0;
    while unix_now() < quiet_until {
        assert_eq!(fleet.relay_open(), 0.0, "connections reopened with no controller");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A worker cut off for longer than its grace stops its load (unsupervised
/// no longer), keeps what it measured, and delivers it when the link is
/// back: no second of it is missing, and the others take its share.
#[test]
fn a_worker_cut_off_past_its_grace_stops_its_load_and_still_delivers() {
    const GRACE_S: f64 = 8.0;
    const OUTAGE_S: f64 = 14.0;
    let _one = lock();
    let Some(lab) = Lab::new(&HOSTS) else { return };
    let mut fleet = Fleet::start(lab, Tls::IfAvailable);
    let sustained = 35;
    let end_s = RAMP_S + sustained + COOLDOWN_S;
    let scenario = fleet.scenario("pastgrace", sustained, "");
    fleet.start_controller(&scenario);
    fleet.start_workers(&["--grace", &format!("{GRACE_S}")]);
    let start = fleet.run_start();
    sleep_until_unix(start + ACT_AT_S);
    assert_eq!(fleet.relay_open(), CONNECTIONS as f64, "all connections open before the cut");
    fleet.lab.link_down("w1");
    let down_at = unix_now();
    sleep_until_unix(down_at + OUTAGE_S);
    fleet.lab.link_up("w1");
    let left = start + end_s as f64 - unix_now();
    let status = fleet.wait_controller(Duration::from_secs_f64(left.max(0.0) + 30.0));
    assert!(matches!(status.code(), Some(0 | 99)), "the run ends with a verdict: {status}");

    let dir = fleet.results();
    let summary = read_json(&dir.join("summary.json"));
    let started = parse_iso8601(summary["started_at"].as_str().unwrap()).unwrap();
    let down_s = down_at - started;
    // Every second w1 measured is there, up to when its load stopped, which
    // was after the grace, so inside the outage: it delivered them late.
    let workers = workers_by_second(&dir);
    let reported: Vec<u64> = workers
        .iter()
        .filter(|((id, _), r)| id == "w1" && r["reported"] == "1")
        .map(|((_, s), _)| *s)
        .collect();
    let (first, last) = (reported[0], *reported.last().unwrap());
    assert_eq!(unreported(&workers, "w1", first..=last), Vec::<u64>::new(), "no second of w1 missing");
    assert!(
        last as f64 >= down_s + GRACE_S,
        "w1 measured through its grace and delivered it ({first}..={last}, cut at {down_s:.1} s)"
    );
    assert!((last as f64) < down_s + OUTAGE_S, "its load stopped before the link came back ({last})");
    let log = std::fs::read_to_string(dir.join("test.log")).unwrap();
    // It comes back only to deliver: it takes no share (the others never
    // drop to 50 each and back), then finishes.
    assert!(log.contains("worker w1 rejoined with its load stopped"), "{log}");
    assert!(!log.contains("rebalanced after w1 rejoined"), "{log}");
    assert!(log.contains("rebalanced after w1 finished early: w2 75, w3 75"), "{log}");
    let said = std::fs::read_to_string(fleet.scratch.dir.path().join("w1.log")).unwrap();
    assert!(said.contains("closing every connection and stopping the load"), "{said}");
    // The others hold the whole load to the end of the sustained phase.
    let metrics = metrics_by_second(&dir);
    let back = (down_s + OUTAGE_S).ceil() as u64 + 3;
    for s in back..RAMP_S + sustained {
        assert_eq!(cell(&metrics[&s], "connections_active"), CONNECTIONS as f64, "second {s}");
    }
}
