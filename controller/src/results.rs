//! The results folder. Rows, histogram intervals and events are written as
//! they come, by a thread of their own (file I/O and compression stay off the
//! async runtime), and flushed each second, so a crash or Ctrl-C loses at
//! most the last second. A row corrected by late data is appended (with its
//! `revision`), and at the end metrics.csv is rewritten in order. The summary
//! files follow at the end of the run.
//!
//! A file that cannot be written (disk full) is reported on stderr at once;
//! the run goes on measuring and still decides and prints its verdict.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use stampede_model::results::{
    MetricsRow, Summary, WORKER_COLUMNS, WorkerRow, csv_line, files, hlog_tags, metrics_columns,
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
        Box<crate::aggregate::ConnectSplit>,
        Vec<WorkerRow>,
    ),
    Log(String),
}

/// An open results folder.
pub struct ResultsWriter {
    dir: PathBuf,
    tx: mpsc::Sender<Record>,
    thread: std::thread::JoinHandle<Result<(), ResultsError>>,
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
        let hlog_path = dir.join(files::LATENCY_HLOG);
        // Unbuffered: each interval line reaches the file as it is written,
        // so a SIGKILL loses at most the second being written.
        let hlog = File::create(&hlog_path).map_err(at(&hlog_path))?;
        let files =
            Streams { dir: dir.clone(), csv, workers, log: open(files::TEST_LOG)?, failed: Vec::new() };
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
        let streamed = tokio::task::spawn_blocking(move || {
            thread.join().unwrap_or_else(|_| {
                Err(ResultsError { path: dir2, source: io::Error::other("results writer panicked") })
            })
        })
        .await
        .unwrap_or_else(|e| Err(ResultsError { path: dir.clone(), source: io::Error::other(e) }));
        let write_atomic = |file: &str, text: String| -> Result<(), ResultsError> {
            let path = dir.join(file);
            let tmp = dir.join(format!(".{file}.tmp"));
            fs::write(&tmp, text).map_err(at(&tmp))?;
            fs::rename(&tmp, &path).map_err(at(&path))
        };
        let mut csv = metrics_columns().join(",") + "\n";
        for row in rows {
            csv.push_str(&csv_line(&row.csv_cells()));
        }
        let results = [
            streamed,
            write_atomic(files::METRICS_CSV, csv),
            write_atomic(files::METRICS_JSON, rows.to_json()),
            write_atomic(files::SUMMARY, summary.to_json()),
        ];
        for r in &results {
            if let Err(e) = r {
                eprintln!("error: cannot write results: {e}");
            }
        }
        results.into_iter().find(Result::is_err).unwrap_or(Ok(())).map(|()| dir)
    }
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
    workers: BufWriter<File>,
    log: BufWriter<File>,
    /// Files that failed, reported once each.
    failed: Vec<PathBuf>,
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

    fn run(
        mut self,
        mut rx: mpsc::Receiver<Record>,
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
                Record::Row(row, latency, connect, split, workers) => {
                    let r = self
                        .csv
                        .write_all(csv_line(&row.csv_cells()).as_bytes())
                        .and_then(|()| self.csv.flush());
                    self.check(files::METRICS_CSV, r);
                    let r = workers
                        .iter()
                        .try_for_each(|w| self.workers.write_all(csv_line(&w.csv_cells()).as_bytes()))
                        .and_then(|()| self.workers.flush());
                    self.check(files::WORKERS_CSV, r);
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
