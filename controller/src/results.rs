//! The results folder. Rows, histogram intervals and events are written as
//! they come, by a thread of their own (file I/O and compression stay off the
//! async runtime), and flushed each second, so a crash or Ctrl-C loses at
//! most the last second. The summary files follow at the end of the run.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use stampede_proto::results::{
    METRICS_COLUMNS, MetricsRow, Summary, WORKER_COLUMNS, WorkerRow, csv_line, files, hlog_tags,
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

pub use stampede_proto::time::iso8601;

/// Seconds since the epoch.
pub fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// What the writer thread is handed.
enum Record {
    Row(Box<MetricsRow>, Box<Histogram<u64>>, Box<Histogram<u64>>, Vec<WorkerRow>),
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
        writeln!(csv, "{}", METRICS_COLUMNS.join(",")).map_err(at(&dir.join(files::METRICS_CSV)))?;
        let mut workers = open(files::WORKERS_CSV)?;
        writeln!(workers, "{}", WORKER_COLUMNS.join(",")).map_err(at(&dir.join(files::WORKERS_CSV)))?;
        let files = Streams {
            dir: dir.clone(),
            csv,
            workers,
            hlog: open(files::LATENCY_HLOG)?,
            log: open(files::TEST_LOG)?,
        };
        let (tx, rx) = mpsc::channel(256);
        let thread = std::thread::Builder::new()
            .name("results".into())
            .spawn(move || files.run(rx, started))
            .map_err(at(&dir))?;
        Ok(ResultsWriter { dir, tx, thread })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a row to metrics.csv and its histograms to latency.hlog.
    pub async fn row(&self, row: crate::aggregate::Row) {
        let record =
            Record::Row(Box::new(row.metrics), Box::new(row.latency), Box::new(row.connect), row.workers);
        let _ = self.tx.send(record).await;
    }

    /// Appends a line to test.log.
    pub async fn log(&self, line: String) {
        let _ = self.tx.send(Record::Log(line)).await;
    }

    /// Closes the streams and writes summary.json, metrics.json and the
    /// summary part of test.log.
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
        tokio::task::spawn_blocking(move || {
            thread.join().unwrap_or_else(|_| {
                Err(ResultsError { path: dir2, source: io::Error::other("results writer panicked") })
            })
        })
        .await
        .map_err(|e| ResultsError { path: dir.clone(), source: io::Error::other(e) })??;
        let write_json = |file: &str, value: &dyn erased::Json| -> Result<(), ResultsError> {
            let path = dir.join(file);
            let tmp = dir.join(format!(".{file}.tmp"));
            fs::write(&tmp, value.to_json()).map_err(at(&tmp))?;
            fs::rename(&tmp, &path).map_err(at(&path))
        };
        write_json(files::METRICS_JSON, &rows)?;
        write_json(files::SUMMARY, summary)?;
        Ok(dir)
    }
}

mod erased {
    /// Object-safe pretty JSON.
    pub trait Json {
        fn to_json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> String {
            serde_json::to_string_pretty(self).expect("results are plain data") + "\n"
        }
    }
}

struct Streams {
    dir: PathBuf,
    csv: BufWriter<File>,
    workers: BufWriter<File>,
    hlog: BufWriter<File>,
    log: BufWriter<File>,
}

impl Streams {
    fn run(mut self, mut rx: mpsc::Receiver<Record>, started: SystemTime) -> Result<(), ResultsError> {
        let hlog_path = self.dir.join(files::LATENCY_HLOG);
        let mut serializer = V2DeflateSerializer::new();
        let mut builder = IntervalLogWriterBuilder::new();
        builder
            .add_comment("stampede: per-second histograms; values in microseconds, max column in ms")
            .add_comment("tags: latency = message round trip from intended send time; connect = TCP connect + WebSocket upgrade")
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1000.0);
        let mut hlog = builder.begin_log_with(&mut self.hlog, &mut serializer).map_err(at(&hlog_path))?;
        let csv_path = self.dir.join(files::METRICS_CSV);
        let log_path = self.dir.join(files::TEST_LOG);
        let workers_path = self.dir.join(files::WORKERS_CSV);
        while let Some(record) = rx.blocking_recv() {
            match record {
                Record::Row(row, latency, connect, workers) => {
                    write_csv_row(&mut self.csv, &row.csv_cells()).map_err(at(&csv_path))?;
                    self.csv.flush().map_err(at(&csv_path))?;
                    for w in &workers {
                        write_csv_row(&mut self.workers, &w.csv_cells()).map_err(at(&workers_path))?;
                    }
                    self.workers.flush().map_err(at(&workers_path))?;
                    let start = Duration::from_secs(row.elapsed_s);
                    for (h, tag) in [(&latency, hlog_tags::LATENCY), (&connect, hlog_tags::CONNECT)] {
                        hlog.write_histogram(h, start, Duration::from_secs(1), Tag::new(tag)).map_err(
                            |e| ResultsError {
                                path: hlog_path.clone(),
                                source: io::Error::other(format!("{e:?}")),
                            },
                        )?;
                    }
                }
                Record::Log(line) => {
                    writeln!(self.log, "{line}").map_err(at(&log_path))?;
                    self.log.flush().map_err(at(&log_path))?;
                }
            }
        }
        drop(hlog);
        self.hlog.flush().map_err(at(&hlog_path))?;
        Ok(())
    }
}

fn write_csv_row(out: &mut impl Write, cells: &[String]) -> io::Result<()> {
    out.write_all(csv_line(cells).as_bytes())
}
