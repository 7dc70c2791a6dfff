//! Synthetic results folders, written with the same schema types the
//! controller uses, with anomalies injected at known times.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use stampede_model::Counters;
use stampede_model::figures;
use stampede_model::histogram::new_histogram;
use stampede_model::results::{
    ConnectionFigures, Figures, MessageFigures, MetricsRow, Percentiles, PhaseSummary,
    SUMMARY_SCHEMA_VERSION, Summary, WORKER_COLUMNS, WorkerRow, csv_line, metrics_columns,
};

/// What to inject.
#[derive(Debug, Clone, Default)]
pub struct Synth {
    /// Seconds in all (phases: warmup 30, ramp-up 60, sustained, cooldown 30).
    pub seconds: usize,
    /// (start s, length s, p95 during it in ms).
    pub latency_plateau: Option<(usize, usize, f64)>,
    /// (start s, MB per minute) of the workers' summed RSS.
    pub rss_rise: Option<(usize, f64)>,
    /// (second, fraction of connections lost for good).
    pub drop: Option<(usize, f64)>,
    /// (second, connections) that end without a close frame (reset) and
    /// are reopened within the second: open connections do not change.
    pub churn: Option<(usize, u64)>,
    /// (start s, length s) in which the load generator stalled: p95 rises
    /// to 30 ms and the rows say `generator_stalled`.
    pub stall: Option<(usize, usize)>,
    /// Write latency.hlog.
    pub hlog: bool,
}

pub const CONNECTIONS: f64 = 1000.0;
pub const STARTED: &str = "2026-11-23T04:00:00.000Z";
const STARTED_UNIX: u64 = 1_795_406_400;

/// Deterministic noise in [-1, 1).
struct Noise(u64);
impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }
}

pub fn phase_of(s: usize, total: usize) -> &'static str {
    match s {
        s if s < 30 => "warmup",
        s if s < 90 => "ramp-up",
        s if s < total - 30 => "sustained",
        _ => "cooldown",
    }
}

/// The connections the plan asks for at second `s` of `total`: up to 100
/// in warmup, to 1,000 over the ramp, held, down to 0 in cooldown.
pub fn planned(s: usize, total: usize) -> f64 {
    match phase_of(s, total) {
        "warmup" => 100.0 * (s as f64 + 1.0) / 30.0,
        "ramp-up" => 100.0 + 900.0 * (s as f64 - 29.0) / 60.0,
        "sustained" => CONNECTIONS,
        _ => CONNECTIONS * (total - s - 1) as f64 / 30.0,
    }
    .round()
    .min(CONNECTIONS)
}

fn iso(s: usize) -> String {
    let t = STARTED_UNIX + s as u64;
    let (h, m, sec) = (t / 3600 % 24, t / 60 % 60, t % 60);
    format!("2026-11-23T{h:02}:{m:02}:{sec:02}.000Z")
}

impl Synth {
    pub fn clean(seconds: usize) -> Synth {
        Synth { seconds, hlog: true, ..Default::default() }
    }

    /// Writes the folder.
    pub fn write(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let n = self.seconds;
        let mut noise = Noise(42);
        let mut rows = Vec::new();
        let mut worker_rows = Vec::new();
        let mut hists = Vec::new();
        let mut lost = 0.0;
        for s in 0..n {
            let phase = phase_of(s, n);
            let target = planned(s, n);
            if let Some((at, fraction)) = self.drop
                && s == at
            {
                lost = (CONNECTIONS * fraction).round();
            }
            let active = (target - lost).max(0.0);
            let closed = if self.drop.is_some_and(|(at, _)| s == at) { lost } else { 0.0 };
            let mut p95 = 2.0 + 0.2 * noise.next();
            if let Some((start, len, ms)) = self.latency_plateau
                && (start..start + len).contains(&s)
            {
                p95 = ms + noise.next();
            }
            let stalled = self.stall.is_some_and(|(start, len)| (start..start + len).contains(&s));
            if stalled {
                p95 = 30.0 + noise.next();
            }
            let mut rss = 50.0 + 0.3 * noise.next() + active * 0.004;
            if let Some((start, per_min)) = self.rss_rise
                && s >= start
            {
                rss += (s - start) as f64 * per_min / 60.0;
            }
            let sent = active;
            let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
            h.record_n((p95 * 500.0) as u64, (sent * 0.9) as u64).unwrap();
            h.record_n((p95 * 1000.0) as u64, (sent * 0.1).max(1.0) as u64).unwrap();
            hists.push(h);
            let churned = self.churn.filter(|(at, _)| *at == s).map_or(0, |(_, n)| n);
            let opened = if phase == "warmup" || phase == "ramp-up" { 17 } else { 0 } + churned;
            rows.push(MetricsRow {
                elapsed_s: s as u64,
                timestamp: iso(s),
                phase: phase.into(),
                revision: 0,
                connections_target: target as u64,
                connections_active: active as u64,
                counters: Counters {
                    connections_attempted: opened,
                    connections_opened: opened,
                    connections_closed_by_server: closed as u64,
                    connections_dropped: churned,
                    messages_sent: sent as u64,
                    messages_received: sent as u64,
                    bytes_sent: sent as u64 * 64,
                    bytes_received: sent as u64 * 64,
                    ..Default::default()
                },
                errors: closed as u64 + churned,
                latency_p50_ms: p95 / 2.0,
                latency_p95_ms: p95,
                latency_p99_ms: p95 * 1.2,
                latency_max_ms: p95 * 1.5,
                connect_p95_ms: 1.0,
                connect_tcp_p95_ms: 0.2,
                connect_tls_p95_ms: 0.5,
                connect_upgrade_p95_ms: 0.8,
                generator_stalled: u8::from(stalled),
                worker_rss_mb: rss,
                worker_cpu_pct: 20.0,
                browser_pss_mb: f64::NAN,
                browser_sessions: 0,
                workers_reporting: 2,
                target_rss_mb: 80.0 + 0.2 * noise.next(),
                target_cpu_pct: 10.0,
                target_connections: active,
            });
            for w in ["local-1", "local-2"] {
                worker_rows.push(WorkerRow {
                    elapsed_s: s as u64,
                    timestamp: iso(s),
                    worker: w.into(),
                    connections_active: (active / 2.0) as u64,
                    messages_sent: (sent / 2.0) as u64,
                    messages_received: (sent / 2.0) as u64,
                    rss_mb: rss / 2.0,
                    cpu_pct: 10.0,
                    reported: true,
                    ..Default::default()
                });
            }
        }
        write_metrics(dir, &rows);
        let mut wcsv = WORKER_COLUMNS.join(",") + "\n";
        for r in &worker_rows {
            wcsv += &(r.csv_cells().join(",") + "\n");
        }
        std::fs::write(dir.join("workers.csv"), wcsv).unwrap();
        let mut connect = new_histogram();
        connect.record(800).unwrap();
        if self.hlog {
            let mut intervals = Vec::new();
            for (s, h) in hists.iter().enumerate() {
                intervals.push((s as u64, "latency".to_string(), h.clone()));
                intervals.push((s as u64, "connect".to_string(), connect.clone()));
            }
            write_hlog_intervals(dir, &intervals);
        }
        // summary.json from the same rows and histograms, as the controller
        // writes it: per phase, and the run.
        let phase_names = ["warmup", "ramp-up", "sustained", "cooldown"];
        let bounds = [(0, 30), (30, 90), (90, n - 30), (n - 30, n)];
        let (mut run_latency, mut run_connect) = (new_histogram(), new_histogram());
        let mut run_counters = Counters::default();
        let mut run_errors = BTreeMap::new();
        let phases: Vec<PhaseSummary> = phase_names
            .iter()
            .zip(bounds)
            .map(|(name, (a, b))| {
                let (mut latency, mut connect) = (new_histogram(), new_histogram());
                let mut counters = Counters::default();
                for s in a..b {
                    latency.add(&hists[s]).unwrap();
                    connect.record(800).unwrap();
                    counters.add(&rows[s].counters);
                }
                run_latency.add(&latency).unwrap();
                run_connect.add(&connect).unwrap();
                run_counters.add(&counters);
                let mut errors = BTreeMap::new();
                if let Some((at, _)) = self.drop
                    && phase_of(at, n) == *name
                {
                    errors.insert("closed_1011".to_string(), lost as u64);
                }
                if let Some((at, churned)) = self.churn
                    && phase_of(at, n) == *name
                {
                    errors.insert("reset".to_string(), churned);
                }
                for (k, v) in &errors {
                    *run_errors.entry(k.clone()).or_insert(0) += v;
                }
                PhaseSummary {
                    name: name.to_string(),
                    start_s: a as f64,
                    duration_s: (b - a) as f64,
                    figures: Figures {
                        latency_ms: Percentiles::of(&latency),
                        connect_ms: Percentiles::of(&connect),
                        errors_total: errors.values().sum(),
                        errors,
                        throughput_msg_per_s: figures::throughput(counters.messages_received, (b - a) as u64),
                        counters,
                        generator_stalled_seconds: (a..b)
                            .filter(|&s| rows[s].generator_stalled > 0)
                            .map(|s| s as u64)
                            .collect(),
                        ..Default::default()
                    },
                    ..Default::default()
                }
            })
            .collect();
        let errors_total = run_errors.values().sum();
        let summary = Summary {
            schema_version: SUMMARY_SCHEMA_VERSION,
            verdict: "PASS".into(),
            aborted: None,
            scenario: "synthetic".into(),
            target: "ws://127.0.0.1:1/ws".into(),
            started_at: STARTED.into(),
            duration_s: n as f64,
            workers: 2,
            worker_details: vec![],
            figures: Figures {
                connections: ConnectionFigures::default(),
                messages: MessageFigures::default(),
                latency_ms: Percentiles::of(&run_latency),
                connect_ms: Percentiles::of(&run_connect),
                errors: run_errors,
                errors_total,
                error_rate: figures::error_rate(errors_total, &run_counters),
                throughput_msg_per_s: figures::throughput(run_counters.messages_received, n as u64),
                counters: run_counters,
                generator_stalled_seconds: rows
                    .iter()
                    .filter(|r| r.generator_stalled > 0)
                    .map(|r| r.elapsed_s)
                    .collect(),
                ..Default::default()
            },
            worker_rss_peak_mb: 0.0,
            phases,
            thresholds: vec![],
            breaking_point: None,
            breaking_point_reason: None,
            subprotocols: Default::default(),
            channels: Vec::new(),
            browser: None,
        };
        std::fs::write(dir.join("summary.json"), serde_json::to_string_pretty(&summary).unwrap()).unwrap();
    }
}

/// Writes metrics.csv with `rows` in the given order (corrections included).
pub fn write_metrics(dir: &Path, rows: &[MetricsRow]) {
    let mut csv = csv_line(&metrics_columns());
    for r in rows {
        csv += &csv_line(&r.csv_cells());
    }
    std::fs::write(dir.join("metrics.csv"), csv).unwrap();
}

/// Runs the `analyze` binary: (exit code, stdout, stderr).
pub fn analyze_bin(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_analyze")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// metrics.csv of a folder as (header cells, data lines).
pub fn metrics_lines(dir: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    let mut lines = text.lines().map(str::to_string);
    let header = lines.next().unwrap().split(',').map(str::to_string).collect();
    (header, lines.collect())
}

/// Rewrites metrics.csv from a header and data lines.
pub fn write_metrics_lines(dir: &Path, header: &[String], lines: &[String]) {
    let mut text = header.join(",") + "\n";
    for l in lines {
        text += l;
        text += "\n";
    }
    std::fs::write(dir.join("metrics.csv"), text).unwrap();
}

/// Sets the cell `column` of data row `row` (1-based) of metrics.csv (the
/// synthetic rows have no quoted cells).
pub fn set_cell(dir: &Path, row: usize, column: &str, value: &str) {
    let (header, mut lines) = metrics_lines(dir);
    let k = header.iter().position(|h| h == column).unwrap_or_else(|| panic!("no column {column}"));
    let mut cells: Vec<String> = lines[row - 1].split(',').map(str::to_string).collect();
    cells[k] = value.to_string();
    lines[row - 1] = cells.join(",");
    write_metrics_lines(dir, &header, &lines);
}

/// The intervals of a folder's latency.hlog: (second, tag, histogram).
pub fn hlog_intervals(dir: &Path) -> Vec<(u64, String, Histogram<u64>)> {
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let bytes = std::fs::read(dir.join("latency.hlog")).unwrap();
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let LogEntry::Interval(h) = entry.unwrap() else { continue };
        let raw = base64_decode(h.encoded_histogram());
        let decoded: Histogram<u64> = Deserializer::new().deserialize(&mut raw.as_slice()).unwrap();
        out.push((h.start_timestamp().as_secs(), h.tag().unwrap().as_str().to_string(), decoded));
    }
    out
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

/// Writes latency.hlog from (second, tag, histogram) intervals, in order.
pub fn write_hlog_intervals(dir: &Path, intervals: &[(u64, String, Histogram<u64>)]) {
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let start = UNIX_EPOCH + Duration::from_secs(STARTED_UNIX);
    let mut log = IntervalLogWriterBuilder::new()
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(&mut buf, &mut ser)
        .unwrap();
    for (s, tag, h) in intervals {
        log.write_histogram(h, Duration::from_secs(*s), Duration::from_secs(1), Tag::new(tag)).unwrap();
    }
    drop(log);
    std::fs::write(dir.join("latency.hlog"), buf).unwrap();
}

/// RFC 4180 fields of one CSV line (analyze's own reader).
pub fn split_csv(line: &str) -> Vec<String> {
    stampede_analyze::metrics::split_csv(line).expect("balanced quotes")
}

/// phases.csv of an analysis folder: the row of phase `phase`, by column.
pub fn phases_row(out: &Path, phase: &str) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(out.join("phases.csv")).unwrap();
    let mut lines = text.lines();
    let header = split_csv(lines.next().unwrap());
    let row =
        lines.map(split_csv).find(|r| r[1] == phase).unwrap_or_else(|| panic!("no {phase} row:\n{text}"));
    header.into_iter().zip(row).collect()
}
