//! The results folder. Rows, histogram intervals and events are written as
//! they come, by a thread of their own (file I/O and compression stay off the
//! async runtime), and flushed each second, so a crash or Ctrl-C loses at
//! most the last second. A row corrected by late data is appended (with its
//! `revision`), and at the end metrics.csv is rewritten in order. The summary
//! files follow at the end of the run.
//!
//! A run with a flow adds each step's columns to metrics.csv and
//! metrics.json (`step_<name>_ok`, `_failed`, `_p95_ms`): the header is
//! rewritten with them when the first row arrives, and the writer keeps
//! each second's step cells for the final rewrite.
//!
//! metrics.ndjson gets the same rows as they are written, one JSON object
//! per line (a corrected row again, with its `revision`), for tools that
//! tail a run.
//!
//! A file that cannot be written (disk full) is reported on stderr at once;
//! the run goes on measuring and still decides and prints its verdict.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use stampede_model::results::{
    ERROR_COLUMNS, JsonRow, MetricsRow, StepSecond, Summary, WORKER_COLUMNS, WorkerRow, csv_line, files,
    hlog_tags, metrics_columns, step_columns,
};
use tokio::sync::mpsc;

/// Writing results failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ResultsError {
    /// The file or folder.
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> ResultsError + '_ {
    move |source| ResultsError { path: path.to_path_buf(), source }
}

pub use stampede_model::clock::unix_s;
pub use stampede_model::time::iso8601;

/// What the writer thread is handed.
enum Record {
    Row(
        Box<MetricsRow>,
        Box<Histogram<u64>>,
        Box<Histogram<u64>>,
        Box<crate::totals::ConnectSplit>,
        Vec<WorkerRow>,
        Steps,
        std::collections::BTreeMap<String, u64>,
    ),
    Log(String),
}

/// A row's flow steps: the names (shared by every row) and the cells.
struct Steps {
    names: Arc<[String]>,
    cells: Vec<StepSecond>,
}

/// Each second's step cells as last written (a correction replaces them),
/// for the final metrics.csv and metrics.json.
#[derive(Default)]
struct StepLog {
    names: Vec<String>,
    seconds: BTreeMap<u64, Vec<StepSecond>>,
}

impl StepLog {
    /// The cells of second `s`; a second without any is all zero.
    fn cells(&self, s: u64) -> Vec<StepSecond> {
        self.seconds
            .get(&s)
            .cloned()
            .unwrap_or_else(|| vec![StepSecond { ok: 0, failed: 0, p95_ms: f64::NAN }; self.names.len()])
    }

    /// The header of metrics.csv.
    fn header(&self) -> String {
        let mut columns: Vec<String> = metrics_columns().into_iter().map(String::from).collect();
        columns.extend(step_columns(&self.names));
        csv_line(&columns)
    }
}

type Streamed = (Result<(), ResultsError>, StepLog);

/// An open results folder.
pub struct ResultsWriter {
    dir: PathBuf,
    tx: mpsc::Sender<Record>,
    thread: std::thread::JoinHandle<Streamed>,
}

impl ResultsWriter {
    /// Creates `<parent>/<name>-<UTC timestamp>/`, saves the scenario as run
    /// and opens the streamed files.
    pub fn create(
        parent: &Path,
        name: &str,
        started: SystemTime,
        scenario_toml: &str,
    ) -> Result<ResultsWriter, ResultsError> {
        fs::create_dir_all(parent).map_err(at(parent))?;
        let stamp: String =
            iso8601(unix_s(started))[..19].chars().filter(|c| c.is_ascii_digit() || *c == 'T').collect();
        let mut dir = parent.join(format!("{name}-{stamp}Z"));
        let mut n = 2;
        while dir.exists() {
            dir = parent.join(format!("{name}-{stamp}Z-{n}"));
            n += 1;
        }
        fs::create_dir(&dir).map_err(at(&dir))?;
        let scenario_path = dir.join(files::SCENARIO);
        fs::write(&scenario_path, scenario_toml).map_err(at(&scenario_path))?;

        let open = |file: &str| -> Result<BufWriter<File>, ResultsError> {
            let path = dir.join(file);
            File::create(&path).map(BufWriter::new).map_err(at(&path))
        };
        let mut csv = open(files::METRICS_CSV)?;
        writeln!(csv, "{}", metrics_columns().join(",")).map_err(at(&dir.join(files::METRICS_CSV)))?;
        let mut workers = open(files::WORKERS_CSV)?;
        writeln!(workers, "{}", WORKER_COLUMNS.join(",")).map_err(at(&dir.join(files::WORKERS_CSV)))?;
        let mut errors = open(files::ERRORS_CSV)?;
        writeln!(errors, "{}", ERROR_COLUMNS.join(",")).map_err(at(&dir.join(files::ERRORS_CSV)))?;
        let hlog_path = dir.join(files::LATENCY_HLOG);
        // Unbuffered: each interval line reaches the file as it is written,
        // so a SIGKILL loses at most the second being written.
        let hlog = File::create(&hlog_path).map_err(at(&hlog_path))?;
        let files = Streams {
            dir: dir.clone(),
            csv,
            ndjson: open(files::METRICS_NDJSON)?,
            workers,
            errors,
            log: open(files::TEST_LOG)?,
            failed: Vec::new(),
            rows: 0,
            steps: StepLog::default(),
        };
        let (tx, rx) = mpsc::channel(256);
        let thread = std::thread::Builder::new()
            .name("results".into())
            .spawn(move || files.run(rx, started, hlog))
            .map_err(at(&dir))?;
        Ok(ResultsWriter { dir, tx, thread })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a row to metrics.csv and workers.csv and its histograms to
    /// latency.hlog; a row corrected by late data is appended the same way.
    pub async fn row(&self, row: crate::aggregate::Row) {
        let record = Record::Row(
            Box::new(row.metrics),
            Box::new(row.latency),
            Box::new(row.connect),
            Box::new(row.connect_split),
            row.workers,
            Steps {
                cells: row.steps.iter().map(crate::totals::StepTotals::second).collect(),
                names: row.step_names,
            },
            row.errors,
        );
        let _ = self.tx.send(record).await;
    }

    /// Appends a line to test.log.
    pub async fn log(&self, line: String) {
        let _ = self.tx.send(Record::Log(line)).await;
    }

    /// Closes the streams and writes summary.json, metrics.json, metrics.csv
    /// in order (corrections applied) and the summary part of test.log.
    /// Every file is attempted; the first failure is returned.
    pub async fn finish(
        self,
        summary: &Summary,
        rows: &[MetricsRow],
        human: String,
    ) -> Result<PathBuf, ResultsError> {
        let ResultsWriter { dir, tx, thread } = self;
        tx.send(Record::Log(human)).await.ok();
        drop(tx);
        let dir2 = dir.clone();
        let (streamed, steps) = tokio::task::spawn_blocking(move || {
            thread.join().unwrap_or_else(|_| {
                let panicked =
                    ResultsError { path: dir2, source: io::Error::other("results writer panicked") };
                (Err(panicked), StepLog::default())
            })
        })
        .await
        .unwrap_or_else(|e| {
            (Err(ResultsError { path: dir.clone(), source: io::Error::other(e) }), StepLog::default())
        });
        let write_atomic = |file: &str, text: String| -> Result<(), ResultsError> {
            let path = dir.join(file);
            let tmp = dir.join(format!(".{file}.tmp"));
            fs::write(&tmp, text).map_err(at(&tmp))?;
            fs::rename(&tmp, &path).map_err(at(&path))
        };
        let mut csv = steps.header();
        let mut json = Vec::with_capacity(rows.len());
        for row in rows {
            let cells = steps.cells(row.elapsed_s);
            let mut line = row.csv_cells();
            line.extend(cells.iter().flat_map(StepSecond::csv_cells));
            csv.push_str(&csv_line(&line));
            json.push(cells);
        }
        let json: Vec<JsonRow> = rows
            .iter()
            .zip(&json)
            .map(|(row, cells)| JsonRow { row, names: &steps.names, steps: cells })
            .collect();
        let results = [
            streamed,
            write_atomic(files::METRICS_CSV, csv),
            write_atomic(files::METRICS_JSON, json.to_json()),
            write_atomic(files::SUMMARY, summary.to_json()),
            write_atomic(files::JUNIT, crate::junit::render(summary, &hostname())),
        ];
        for r in &results {
            if let Err(e) = r {
                eprintln!("error: cannot write results: {e}");
            }
        }
        results.into_iter().find(Result::is_err).unwrap_or(Ok(())).map(|()| dir)
    }
}

/// This machine's name (junit.xml says where the run was judged).
fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Pretty JSON of plain results data.
trait Json {
    fn to_json(&self) -> String;
}

impl<T: serde::Serialize + ?Sized> Json for T {
    fn to_json(&self) -> String {
        // NaN (a second without samples) becomes null.
        serde_json::to_string_pretty(self).expect("results are plain data") + "\n"
    }
}

struct Streams {
    dir: PathBuf,
    csv: BufWriter<File>,
    /// metrics.ndjson: each row as one JSON line, for tools that tail it.
    ndjson: BufWriter<File>,
    workers: BufWriter<File>,
    /// errors.csv: each second's errors by cause.
    errors: BufWriter<File>,
    log: BufWriter<File>,
    /// Files that failed, reported once each.
    failed: Vec<PathBuf>,
    /// Rows written to metrics.csv so far.
    rows: u64,
    /// The flow's step cells by second.
    steps: StepLog,
}

impl Streams {
    /// Notes a write failure: reported on stderr the first time for a file,
    /// and the run goes on.
    fn check(&mut self, file: &str, r: io::Result<()>) {
        if let Err(e) = r {
            let path = self.dir.join(file);
            if !self.failed.contains(&path) {
                eprintln!(
                    "error: cannot write {}: {e}; the run goes on, this file will be incomplete",
                    path.display()
                );
                self.failed.push(path);
            }
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<Record>, started: SystemTime, hlog_file: File) -> Streamed {
        let result = self.stream(&mut rx, started, hlog_file);
        (result, self.steps)
    }

    /// The first row of a run with a flow names its steps: the header
    /// (all the file holds so far) is written again with their columns.
    fn step_header(&mut self, names: &Arc<[String]>) -> io::Result<()> {
        self.steps.names = names.to_vec();
        self.csv.flush()?;
        let file = self.csv.get_mut();
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        self.csv.write_all(self.steps.header().as_bytes())
    }

    fn stream(
        &mut self,
        rx: &mut mpsc::Receiver<Record>,
        started: SystemTime,
        mut hlog_file: File,
    ) -> Result<(), ResultsError> {
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment("stampede: per-second histograms; values in microseconds, max column in ms")
            .add_comment("tags: latency = message round trip from intended send time; connect = TCP connect + TLS handshake (wss://) + WebSocket upgrade")
            .add_comment("connect_tcp, connect_tls, connect_upgrade = the parts of connect, written for seconds that have samples")
            .add_comment("an interval may appear twice for one second (late data appended): merge them")
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1000.0);
        let mut hlog = builder
            .begin_log_with(&mut hlog_file, &mut serializer)
            .map_err(at(&self.dir.join(files::LATENCY_HLOG)))?;
        while let Some(record) = rx.blocking_recv() {
            match record {
                Record::Row(row, latency, connect, split, workers, steps, errors) => {
                    if self.rows == 0 && !steps.names.is_empty() {
                        let r = self.step_header(&steps.names);
                        self.check(files::METRICS_CSV, r);
                    }
                    self.rows += 1;
                    let mut cells = row.csv_cells();
                    cells.extend(steps.cells.iter().flat_map(StepSecond::csv_cells));
                    if !steps.cells.is_empty() {
                        self.steps.seconds.insert(row.elapsed_s, steps.cells);
                    }
                    let r = self.csv.write_all(csv_line(&cells).as_bytes()).and_then(|()| self.csv.flush());
                    self.check(files::METRICS_CSV, r);
                    let step_cells = self.steps.cells(row.elapsed_s);
                    let json = JsonRow { row: &row, names: &self.steps.names, steps: &step_cells };
                    let r = serde_json::to_writer(&mut self.ndjson, &json)
                        .map_err(io::Error::other)
                        .and_then(|()| self.ndjson.write_all(b"\n"))
                        .and_then(|()| self.ndjson.flush());
                    self.check(files::METRICS_NDJSON, r);
                    let r = workers
                        .iter()
                        .try_for_each(|w| self.workers.write_all(csv_line(&w.csv_cells()).as_bytes()))
                        .and_then(|()| self.workers.flush());
                    self.check(files::WORKERS_CSV, r);
                    let r = errors
                        .iter()
                        .filter(|(_, n)| **n > 0)
                        .try_for_each(|(cause, n)| {
                            let cells = [
                                row.elapsed_s.to_string(),
                                stampede_model::time::spreadsheet_time(&row.timestamp),
                                row.revision.to_string(),
                                cause.clone(),
                                n.to_string(),
                            ];
                            self.errors.write_all(csv_line(&cells).as_bytes())
                        })
                        .and_then(|()| self.errors.flush());
                    self.check(files::ERRORS_CSV, r);
                    let start = Duration::from_secs(row.elapsed_s);
                    for (h, tag) in [(&latency, hlog_tags::LATENCY), (&connect, hlog_tags::CONNECT)] {
                        let r = hlog
                            .write_histogram(h, start, Duration::from_secs(1), Tag::new(tag))
                            .map_err(|e| io::Error::other(format!("{e:?}")));
                        self.check(files::LATENCY_HLOG, r);
                    }
                    // The parts only where they have samples: a ws:// run
                    // would otherwise log an empty TLS histogram a second.
                    for (h, tag) in split.tagged().into_iter().filter(|(h, _)| !h.is_empty()) {
                        let r = hlog
                            .write_histogram(h, start, Duration::from_secs(1), Tag::new(tag))
                            .map_err(|e| io::Error::other(format!("{e:?}")));
                        self.check(files::LATENCY_HLOG, r);
                    }
                }
                Record::Log(line) => {
                    let r = writeln!(self.log, "{line}").and_then(|()| self.log.flush());
                    self.check(files::TEST_LOG, r);
                }
            }
        }
        drop(hlog);
        match self.failed.first() {
            Some(path) => {
                Err(ResultsError { path: path.clone(), source: io::Error::other("some writes failed") })
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use stampede_model::histogram::new_histogram;
    use stampede_model::results::{Figures, SUMMARY_SCHEMA_VERSION};

    use super::*;
    use crate::aggregate::Row;
    use crate::totals::{ConnectSplit, StepTotals};

    fn row(second: u64, revision: u32, steps: Vec<StepTotals>) -> Row {
        Row {
            metrics: MetricsRow {
                elapsed_s: second,
                phase: "sustained".into(),
                revision,
                latency_p50_ms: f64::NAN,
                ..Default::default()
            },
            latency: new_histogram(),
            connect: new_histogram(),
            connect_split: ConnectSplit::default(),
            workers: Vec::new(),
            errors: Default::default(),
            step_names: vec!["established".to_string(), "tunnel_http".to_string()].into(),
            steps,
        }
    }

    fn step(ok_ms: &[u64], failed: u64) -> StepTotals {
        let mut t = StepTotals::default();
        let mut h = new_histogram();
        ok_ms.iter().for_each(|ms| h.record(ms * 1000).unwrap());
        t.add(ok_ms.len() as u64, failed, Some(&h)).unwrap();
        t
    }

    fn summary() -> Summary {
        Summary {
            schema_version: SUMMARY_SCHEMA_VERSION,
            verdict: "PASS".into(),
            aborted: None,
            scenario: "flow".into(),
            target: "ws://x".into(),
            started_at: String::new(),
            duration_s: 2.0,
            workers: 1,
            worker_details: Vec::new(),
            figures: Figures::default(),
            worker_rss_peak_mb: 0.0,
            phases: Vec::new(),
            thresholds: Vec::new(),
            breaking_point: None,
            breaking_point_reason: None,
            subprotocols: Default::default(),
            channels: Vec::new(),
            browser: None,
        }
    }

    #[tokio::test]
    async fn a_flows_steps_get_columns_in_metrics_csv_and_json() {
        let parent = tempfile::tempdir().unwrap();
        let writer = ResultsWriter::create(parent.path(), "flow", SystemTime::now(), "").unwrap();
        let dir = writer.dir().to_path_buf();
        writer.row(row(0, 0, vec![step(&[3; 10], 0), step(&[], 1)])).await;
        writer.row(row(1, 0, vec![step(&[], 0), step(&[12; 50], 1)])).await;
        // Streamed as it comes: the header names the steps' columns.
        let csv_path = dir.join(files::METRICS_CSV);
        let mut streamed = String::new();
        for _ in 0..500 {
            streamed = fs::read_to_string(&csv_path).unwrap();
            if streamed.lines().count() == 3 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let header: Vec<&str> = streamed.lines().next().unwrap().split(',').collect();
        let fixed = metrics_columns().len();
        assert_eq!(
            header[fixed..],
            [
                "step_established_ok",
                "step_established_failed",
                "step_established_p95_ms",
                "step_tunnel_http_ok",
                "step_tunnel_http_failed",
                "step_tunnel_http_p95_ms"
            ]
        );
        assert!(streamed.lines().nth(1).unwrap().ends_with(",10,0,3.001,0,1,"), "{streamed}");
        // A late correction of second 0 replaces its cells.
        writer.row(row(0, 1, vec![step(&[3; 11], 0), step(&[], 1)])).await;
        let final_rows = [
            MetricsRow { elapsed_s: 0, revision: 1, ..Default::default() },
            MetricsRow { elapsed_s: 1, ..Default::default() },
        ];
        let summary = summary();
        writer.finish(&summary, &final_rows, String::new()).await.unwrap();
        let csv = fs::read_to_string(&csv_path).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3, "{csv}");
        assert_eq!(lines[0].split(',').count(), fixed + 6);
        assert!(lines[1].ends_with(",11,0,3.001,0,1,"), "{csv}");
        assert!(lines[2].ends_with(",0,0,,50,1,12.007"), "{csv}");
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(dir.join(files::METRICS_JSON)).unwrap()).unwrap();
        assert_eq!(json[0]["step_established_ok"], 11);
        assert_eq!(json[0]["step_tunnel_http_p95_ms"], serde_json::Value::Null);
        assert_eq!(json[1]["step_tunnel_http_p95_ms"], 12.007);
        assert_eq!(json[1]["elapsed_s"], 1);
    }

    #[tokio::test]
    async fn a_run_without_a_flow_keeps_the_fixed_columns() {
        let parent = tempfile::tempdir().unwrap();
        let writer = ResultsWriter::create(parent.path(), "plain", SystemTime::now(), "").unwrap();
        let dir = writer.dir().to_path_buf();
        let mut plain = row(0, 0, Vec::new());
        plain.step_names = Vec::new().into();
        writer.row(plain).await;
        let summary = summary();
        writer.finish(&summary, &[MetricsRow::default()], String::new()).await.unwrap();
        let csv = fs::read_to_string(dir.join(files::METRICS_CSV)).unwrap();
        assert_eq!(csv.lines().next().unwrap(), metrics_columns().join(","));
        let json = fs::read_to_string(dir.join(files::METRICS_JSON)).unwrap();
        assert!(!json.contains("step_"), "{json}");
    }
}
