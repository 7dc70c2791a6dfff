//! Harness for end-to-end tests: runs the real `controller` binary (which
//! starts real worker processes and the bundled relay on loopback) and reads
//! the results folder it writes.

#![allow(dead_code)]

pub mod netns;
pub mod peer;

use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// End-to-end runs share two cores; one at a time keeps timings honest.
pub static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A scratch folder holding a scenario file and the results.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("temp dir") }
    }

    /// Writes `name` with `text` and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write scenario");
        path
    }

    pub fn results_parent(&self) -> PathBuf {
        self.dir.path().join("results")
    }

    /// Runs `controller run SCENARIO --output <scratch>/results`, killed after `limit`.
    pub fn run(&self, scenario: &Path, limit: Duration) -> Run {
        let out = self.results_parent();
        controller(&["run", scenario.to_str().unwrap(), "--output", out.to_str().unwrap()], limit)
    }

    /// The one results folder a run wrote.
    pub fn results(&self) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.results_parent())
            .expect("results folder exists")
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "expected one results folder, found {dirs:?}");
        dirs.pop().unwrap()
    }
}

/// What a controller run did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

/// Runs `controller ARGS...`, killing it after `limit`.
pub fn controller(args: &[&str], limit: Duration) -> Run {
    controller_with_env(args, &[], limit)
}

/// Runs `controller ARGS...` with `env` set, killing it after `limit`. The
/// variables a run obeys (WS_SERVER_URL, TARGET_CONNECTIONS, ...) are
/// cleared first: a test must not depend on the shell it runs in.
pub fn controller_with_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_controller"));
    for (name, _) in stampede_controller::overrides::ENVIRONMENT {
        cmd.env_remove(name);
    }
    cmd.env_remove(stampede_proto::auth::TOKEN_ENV).env_remove(stampede_proto::auth::TOKEN_FILE_ENV);
    let child = cmd
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start controller");
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(limit);
        // SAFETY: kill only sends a signal; a stale pid at worst gets nothing.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let Output { status, stdout, stderr } = child.wait_with_output().expect("controller output");
    let took = started.elapsed();
    drop(watchdog);
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    assert!(took < limit, "controller did not finish within {limit:?}; stderr:\n{stderr}");
    let stdout = String::from_utf8_lossy(&stdout).into_owned();
    Run { code: status.code().unwrap_or(-1), stdout, stderr, took }
}

/// Checks that `cell` is a CSV timestamp as results write them: UTC,
/// `YYYY-MM-DDTHH:MM:SS.mmm` (ISO 8601 without the `Z` that makes
/// spreadsheets read text).
pub fn spreadsheet_timestamp(cell: &str) {
    let shape: String = cell.chars().map(|c| if c.is_ascii_digit() { '9' } else { c }).collect();
    assert_eq!(shape, "9999-99-99T99:99:99.999", "timestamp {cell:?}");
}

/// Opens `csv` in LibreOffice Calc (headless, its default CSV import) and
/// checks that every cell of the columns named `columns` is read as a
/// date-time, not text. Where LibreOffice is missing (the README's test
/// command installs it) it says so and passes.
pub fn spreadsheet_reads_dates(csv: &Path, columns: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let converted = Command::new("soffice")
        .args(["--headless", "--norestore", "--convert-to", "fods", "--outdir"])
        .arg(out.path())
        .arg(csv)
        .env("HOME", out.path())
        .output();
    match converted {
        Err(e) => {
            eprintln!("SKIPPED: spreadsheet check of {}: no LibreOffice ({e})", csv.display());
            return;
        }
        Ok(o) => assert!(o.status.success(), "soffice: {}", String::from_utf8_lossy(&o.stderr)),
    }
    let fods = out.path().join(csv.with_extension("fods").file_name().unwrap());
    let xml = std::fs::read_to_string(&fods).unwrap_or_else(|e| panic!("{}: {e}", fods.display()));
    // Rows of cells, each (value type, text); repeated cells expanded.
    let mut rows: Vec<Vec<(String, String)>> = Vec::new();
    for row in xml.split("<table:table-row").skip(1) {
        let row = row.split("</table:table-row>").next().unwrap_or("");
        let mut cells = Vec::new();
        for cell in row.split("<table:table-cell").skip(1) {
            let attr = |name: &str| {
                cell.split_once(&format!("{name}=\""))
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(v, _)| v.to_string())
            };
            let repeat: usize =
                attr("table:number-columns-repeated").and_then(|n| n.parse().ok()).unwrap_or(1);
            let text = cell
                .split_once("<text:p>")
                .and_then(|(_, r)| r.split_once("</text:p>"))
                .map_or(String::new(), |(t, _)| t.to_string());
            let kind = attr("office:value-type").unwrap_or_default();
            cells.extend(std::iter::repeat_n((kind, text), repeat.min(1000)));
        }
        rows.push(cells);
    }
    let header: Vec<&str> = rows[0].iter().map(|(_, t)| t.as_str()).collect();
    let mut checked = 0;
    for name in columns {
        let col =
            header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name} in {header:?}"));
        for row in rows[1..].iter().filter(|r| r.iter().any(|(k, _)| !k.is_empty())) {
            let (kind, text) = &row[col];
            assert_eq!(kind, "date", "{} column {name}: {text:?} is read as {kind:?}", csv.display());
            checked += 1;
        }
    }
    assert!(checked > 0, "{}: no timestamp cell checked", csv.display());
}

/// Checks `junit` against the JUnit XML schema (tests/data/junit.xsd) with
/// xmllint, which the README's test command installs; says so and passes
/// where it is missing.
pub fn valid_junit(junit: &Path) {
    let xsd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/junit.xsd");
    let out = match Command::new("xmllint").arg("--noout").arg("--schema").arg(&xsd).arg(junit).output() {
        Ok(out) => out,
        Err(e) => {
            eprintln!("SKIPPED: junit.xml schema check: no xmllint ({e})");
            return;
        }
    };
    assert!(
        out.status.success(),
        "junit.xml is not valid JUnit XML:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// metrics.csv as header + rows of cells.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).expect("metrics.csv");
    let mut lines = text.lines();
    let header = lines.next().expect("header").split(',').map(String::from).collect();
    let rows = lines.map(|l| l.split(',').map(String::from).collect()).collect();
    (header, rows)
}

pub fn num(v: &serde_json::Value, path: &str) -> f64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_f64().unwrap_or_else(|| panic!("{path} is not a number: {cur}"))
}

/// The `tag` histograms of latency.hlog whose second passes `keep`, merged;
/// and how many intervals were merged.
pub fn merged_hlog(dir: &Path, tag: &str, keep: impl Fn(u64) -> bool) -> (Histogram<u64>, usize) {
    let hlog = std::fs::read(dir.join("latency.hlog")).unwrap();
    let mut merged = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    let mut entries = 0;
    for entry in IntervalLogIterator::new(&hlog) {
        if let LogEntry::Interval(h) = entry.expect("valid interval log") {
            let second = h.start_timestamp().as_secs_f64().round() as u64;
            if h.tag().map(|t| t.as_str()) == Some(tag) && keep(second) {
                entries += 1;
                let bytes = base64_decode(h.encoded_histogram());
                let hist: Histogram<u64> = Deserializer::new().deserialize(&mut bytes.as_slice()).unwrap();
                merged.add(&hist).unwrap();
            }
        }
    }
    (merged, entries)
}

/// Standard base64 (the interval log's encoding of each histogram).
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    bytes
        .chunks(4)
        .flat_map(|q| {
            let n = q.iter().enumerate().fold(0u32, |acc, (i, &v)| acc | u32::from(v) << (18 - 6 * i));
            let out = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.into_iter().take(q.len() - 1)
        })
        .collect()
}

/// A free loopback port (free when asked; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A value from the relay's /metrics on `port` (`None`: unreachable or no
/// such line).
pub fn relay_metric(port: u16, name: &str) -> Option<f64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `relay_connections_active` from the relay's /metrics.
pub fn relay_connections(port: u16) -> Option<u64> {
    relay_metric(port, "relay_connections_active").map(|v| v as u64)
}

/// A relay process of its own (the controller's bundled one dies with
/// it), started with `controller relay` and extra flags; killed on drop.
pub struct Relay(pub std::process::Child, pub u16);

impl Relay {
    /// A plain relay.
    pub fn start() -> Relay {
        Relay::with(&[])
    }

    /// A relay with extra flags.
    pub fn with(flags: &[&str]) -> Relay {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["relay", "--listen", &listen];
        args.extend_from_slice(flags);
        let child = Command::new(env!("CARGO_BIN_EXE_controller"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        while relay_connections(port).is_none() {
            assert!(Instant::now() < end, "the relay did not come up");
            std::thread::sleep(Duration::from_millis(100));
        }
        Relay(child, port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
