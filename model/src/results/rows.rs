//! The rows of the per-second files: `metrics.csv` (and `metrics.json`),
//! `workers.csv` and `errors.csv`, their columns in order and how each
//! cell is written.

use serde::{Deserialize, Serialize};

use crate::Counters;

/// One second of the run, merged across workers: a row of `metrics.csv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsRow {
    /// Seconds since the run started (the row covers `[elapsed_s, elapsed_s + 1)`).
    pub elapsed_s: u64,
    /// Start of the second, ISO 8601 UTC.
    pub timestamp: String,
    /// Phase the second belongs to.
    pub phase: String,
    /// 0 for the row as first written; n for its n-th correction, appended
    /// when a worker's snapshot for this second arrived after the row was
    /// written (readers keep the highest revision of each second; a run that
    /// ends normally rewrites the file in order with only the final rows).
    pub revision: u32,
    /// Connections the plan asked for at the end of this second (a step
    /// the next second begins with is the next second's).
    pub connections_target: u64,
    /// Open connections at the end of this second.
    pub connections_active: u64,
    /// Every counter of the model, counted during this second.
    #[serde(flatten)]
    pub counters: Counters,
    /// Errors of every cause during this second: the sum of the causes.
    pub errors: u64,
    /// Median round trip, ms.
    pub latency_p50_ms: f64,
    /// 95th percentile round trip, ms.
    pub latency_p95_ms: f64,
    /// 99th percentile round trip, ms.
    pub latency_p99_ms: f64,
    /// Slowest round trip, ms.
    pub latency_max_ms: f64,
    /// 95th percentile connect time, ms.
    pub connect_p95_ms: f64,
    /// 95th percentile of the TCP connect part, ms.
    pub connect_tcp_p95_ms: f64,
    /// 95th percentile of the TLS handshake part, ms (NaN for `ws://`).
    pub connect_tls_p95_ms: f64,
    /// 95th percentile of the WebSocket upgrade part, ms.
    pub connect_upgrade_p95_ms: f64,
    /// 1 when a worker could not keep its schedule during this second (its
    /// process stalled, or many of its sends left late): the latency of this
    /// second then measures the load generator, not the target.
    pub generator_stalled: u8,
    /// Resident memory of all workers together, MB (10^6 bytes).
    pub worker_rss_mb: f64,
    /// CPU of all workers together, percent of one core.
    pub worker_cpu_pct: f64,
    /// PSS of the workers' Chromium processes together, MB (NaN: no
    /// browser sessions in the run).
    pub browser_pss_mb: f64,
    /// Browser sessions holding a page at the end of this second.
    pub browser_sessions: u64,
    /// Workers whose report for this second is in the row.
    pub workers_reporting: u32,
    /// Target server's resident memory, MB, from its /metrics (NaN: none).
    pub target_rss_mb: f64,
    /// Target server's CPU, percent of one core, from its /metrics (NaN: none).
    pub target_cpu_pct: f64,
    /// Connections the target server reports open (NaN: none).
    pub target_connections: f64,
}

/// Columns of `metrics.csv` before the counters.
const METRICS_HEAD: [&str; 6] =
    ["elapsed_s", "timestamp", "phase", "revision", "connections_target", "connections_active"];
/// Columns of `metrics.csv` after the counters.
const METRICS_TAIL: [&str; 18] = [
    "errors",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "connect_p95_ms",
    "connect_tcp_p95_ms",
    "connect_tls_p95_ms",
    "connect_upgrade_p95_ms",
    "generator_stalled",
    "worker_rss_mb",
    "worker_cpu_pct",
    "browser_pss_mb",
    "browser_sessions",
    "workers_reporting",
    "target_rss_mb",
    "target_cpu_pct",
    "target_connections",
];

/// Column names of `metrics.csv`, in order: the head, every counter of the
/// model under its own name, then the figures.
pub fn metrics_columns() -> Vec<&'static str> {
    METRICS_HEAD.iter().chain(Counters::NAMES).chain(METRICS_TAIL.iter()).copied().collect()
}

impl MetricsRow {
    /// The row as CSV cells, in [`metrics_columns`] order; NaN (no sample)
    /// is an empty cell.
    pub fn csv_cells(&self) -> Vec<String> {
        let ms = |v: f64| num(v, 3);
        let mut cells = vec![
            self.elapsed_s.to_string(),
            crate::time::spreadsheet_time(&self.timestamp),
            self.phase.clone(),
            self.revision.to_string(),
            self.connections_target.to_string(),
            self.connections_active.to_string(),
        ];
        cells.extend(self.counters.iter().map(|(_, v)| v.to_string()));
        cells.extend([
            self.errors.to_string(),
            ms(self.latency_p50_ms),
            ms(self.latency_p95_ms),
            ms(self.latency_p99_ms),
            ms(self.latency_max_ms),
            ms(self.connect_p95_ms),
            ms(self.connect_tcp_p95_ms),
            ms(self.connect_tls_p95_ms),
            ms(self.connect_upgrade_p95_ms),
            self.generator_stalled.to_string(),
            num(self.worker_rss_mb, 1),
            num(self.worker_cpu_pct, 1),
            num(self.browser_pss_mb, 1),
            self.browser_sessions.to_string(),
            self.workers_reporting.to_string(),
            num(self.target_rss_mb, 1),
            num(self.target_cpu_pct, 1),
            num(self.target_connections, 0),
        ]);
        cells
    }
}

/// One CSV line (with its newline) of `cells`, quoting a cell that holds a
/// comma, quote or line break (RFC 4180), as every results CSV is written.
pub fn csv_line<S: AsRef<str>>(cells: &[S]) -> String {
    let mut line = String::new();
    for (i, cell) in cells.iter().enumerate() {
        let cell = cell.as_ref();
        if i > 0 {
            line.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&cell.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(cell);
        }
    }
    line.push('\n');
    line
}

/// A number with `decimals` places; NaN (no sample) is an empty cell.
fn num(v: f64, decimals: usize) -> String {
    if v.is_nan() { String::new() } else { format!("{v:.decimals$}") }
}

/// One second of one worker: a row of `workers.csv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Seconds since the run started.
    pub elapsed_s: u64,
    /// Start of the second, ISO 8601 UTC.
    pub timestamp: String,
    /// Worker id.
    pub worker: String,
    /// Open connections at the end of the second (last report carried forward).
    pub connections_active: u64,
    /// Connections opened during the second.
    pub connections_opened: u64,
    /// Connection attempts that failed during the second.
    pub connections_failed: u64,
    /// Messages sent during the second.
    pub messages_sent: u64,
    /// Echoes received during the second.
    pub messages_received: u64,
    /// Errors of every cause during the second.
    pub errors: u64,
    /// The worker's resident memory, MB.
    pub rss_mb: f64,
    /// The worker's CPU, percent of one core.
    pub cpu_pct: f64,
    /// Whether the worker reported this second (else its gauges are carried).
    pub reported: bool,
    /// The clock offset the worker numbered this second with (controller
    /// minus worker), ms; refreshed from heartbeats during the run.
    pub clock_offset_ms: f64,
}

/// Column names of `errors.csv`, in order: a second's errors of one cause.
/// A second corrected by late data is appended again whole, with its
/// `revision` (as in metrics.csv): the highest revision of a second wins.
pub const ERROR_COLUMNS: &[&str] = &["elapsed_s", "timestamp", "revision", "cause", "errors"];

/// Column names of `workers.csv`, in order.
pub const WORKER_COLUMNS: &[&str] = &[
    "elapsed_s",
    "timestamp",
    "worker",
    "connections_active",
    "connections_opened",
    "connections_failed",
    "messages_sent",
    "messages_received",
    "errors",
    "rss_mb",
    "cpu_pct",
    "reported",
    "clock_offset_ms",
];

impl WorkerRow {
    /// The row as CSV cells, in [`WORKER_COLUMNS`] order.
    pub fn csv_cells(&self) -> [String; 13] {
        [
            self.elapsed_s.to_string(),
            crate::time::spreadsheet_time(&self.timestamp),
            self.worker.clone(),
            self.connections_active.to_string(),
            self.connections_opened.to_string(),
            self.connections_failed.to_string(),
            self.messages_sent.to_string(),
            self.messages_received.to_string(),
            self.errors.to_string(),
            num(self.rss_mb, 1),
            num(self.cpu_pct, 1),
            u8::from(self.reported).to_string(),
            num(self.clock_offset_ms, 3),
        ]
    }
}

/// One flow step in one second: its cells in `metrics.csv`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepSecond {
    /// Runs that succeeded during the second.
    pub ok: u64,
    /// Runs that failed during the second.
    pub failed: u64,
    /// 95th percentile duration of the successful ones, ms (NaN: none).
    pub p95_ms: f64,
}

/// The figures of a step in a second, in the order of [`step_columns`].
const STEP_COLUMNS: [&str; 3] = ["ok", "failed", "p95_ms"];

/// The columns a flow's steps add to `metrics.csv` (after the fixed
/// columns of [`metrics_columns`]), in the flow's order:
/// `step_<name>_ok`, `step_<name>_failed`, `step_<name>_p95_ms`.
pub fn step_columns(names: &[String]) -> Vec<String> {
    names.iter().flat_map(|n| STEP_COLUMNS.iter().map(move |c| format!("step_{n}_{c}"))).collect()
}

impl StepSecond {
    /// Its cells, in [`step_columns`] order; NaN is an empty cell.
    pub fn csv_cells(&self) -> [String; 3] {
        [self.ok.to_string(), self.failed.to_string(), num(self.p95_ms, 3)]
    }
}

/// A row of `metrics.json`: the row's fields, then its steps' columns
/// under their `metrics.csv` names (a p95 without a sample is `null`).
pub struct JsonRow<'a> {
    /// The fixed columns.
    pub row: &'a MetricsRow,
    /// The flow's step names, in order.
    pub names: &'a [String],
    /// The row's steps, as `names`.
    pub steps: &'a [StepSecond],
}

impl Serialize for JsonRow<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Steps<'a>(&'a [String], &'a [StepSecond]);
        impl Serialize for Steps<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut map = s.serialize_map(Some(self.0.len() * STEP_COLUMNS.len()))?;
                for (name, step) in self.0.iter().zip(self.1) {
                    map.serialize_entry(&format!("step_{name}_ok"), &step.ok)?;
                    map.serialize_entry(&format!("step_{name}_failed"), &step.failed)?;
                    let p95 = (!step.p95_ms.is_nan()).then_some(step.p95_ms);
                    map.serialize_entry(&format!("step_{name}_p95_ms"), &p95)?;
                }
                map.end()
            }
        }
        #[derive(Serialize)]
        struct Both<'a> {
            #[serde(flatten)]
            row: &'a MetricsRow,
            #[serde(flatten)]
            steps: Steps<'a>,
        }
        Both { row: self.row, steps: Steps(self.names, self.steps) }.serialize(s)
    }
}
