//! The results folder's schema: file names, the `metrics.csv` columns and
//! the `summary.json` document. One definition here keeps writer and readers
//! in step; bump [`SUMMARY_SCHEMA_VERSION`] on any incompatible change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Counters;

mod rows;

pub use rows::{
    ERROR_COLUMNS, JsonRow, MetricsRow, StepSecond, WORKER_COLUMNS, WorkerRow, csv_line, metrics_columns,
    step_columns,
};

/// Schema version written into `summary.json`.
pub const SUMMARY_SCHEMA_VERSION: u32 = 2;

/// Names of the files in a results folder.
pub mod files {
    /// The run's verdict and figures.
    pub const SUMMARY: &str = "summary.json";
    /// One row per second.
    pub const METRICS_CSV: &str = "metrics.csv";
    /// The same series as `metrics.csv`, as JSON.
    pub const METRICS_JSON: &str = "metrics.json";
    /// The verdict's checks as JUnit XML, for CI systems.
    pub const JUNIT: &str = "junit.xml";
    /// The rows of `metrics.csv` as they are written, one JSON object per
    /// line (a corrected row again, with its `revision`).
    pub const METRICS_NDJSON: &str = "metrics.ndjson";
    /// Human-readable summary.
    pub const TEST_LOG: &str = "test.log";
    /// The scenario as run, overrides applied.
    pub const SCENARIO: &str = "scenario.toml";
    /// HdrHistogram interval log of per-second latency and connect time.
    pub const LATENCY_HLOG: &str = "latency.hlog";
    /// One row per second per worker.
    pub const WORKERS_CSV: &str = "workers.csv";
    /// One row per second per error cause that second had.
    pub const ERRORS_CSV: &str = "errors.csv";
}

/// Tags of the histograms in `latency.hlog`.
pub mod hlog_tags {
    /// Message round trip, measured from the intended send time.
    pub const LATENCY: &str = "latency";
    /// The whole connect: TCP connect, TLS handshake (`wss://`) and
    /// WebSocket upgrade.
    pub const CONNECT: &str = "connect";
    /// The TCP connect part of `connect` (written for seconds that have samples).
    pub const CONNECT_TCP: &str = "connect_tcp";
    /// The TLS handshake part of `connect` (`wss://` only).
    pub const CONNECT_TLS: &str = "connect_tls";
    /// The WebSocket upgrade part of `connect`.
    pub const CONNECT_UPGRADE: &str = "connect_upgrade";
}

/// Percentiles of a distribution, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

/// Connection figures of a run or phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnectionFigures {
    /// Connections the plan asked for at its peak.
    pub target: u64,
    /// Most connections open at once: the highest count at a second's end
    /// during the phase, or at its start (see [`crate::figures::peak`]).
    pub peak: u64,
    /// Connection attempts.
    pub attempted: u64,
    /// Attempts that completed the WebSocket upgrade.
    pub opened: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Open connections the server closed (close frame) or dropped (reset, EOF).
    pub closed_by_server: u64,
    /// Connections the client closed (ramp-down or end of run).
    pub closed_by_client: u64,
}

/// Message figures of a run or phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageFigures {
    /// Messages sent.
    pub sent: u64,
    /// Messages whose echo came back intact (each counted once).
    pub received: u64,
    /// Messages never echoed (outstanding when their connection ended).
    pub lost: u64,
    /// Further echoes of a message already echoed.
    pub duplicated: u64,
    /// Echoes that carried our stamp but not the bytes sent (truncated, altered).
    pub corrupted: u64,
    /// Echoes that arrived after a later message's echo.
    pub out_of_order: u64,
    /// Frames received that were not an echo of ours.
    pub unmatched: u64,
    /// Sends the schedule asked for that never left (the previous message
    /// was still being written).
    pub unsent: u64,
    /// Sends that left later than their intended time (by more than 1 ms).
    pub late_sends: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
}

/// The figures of a run, or of one of its phases: one shape for both, so
/// each is computed and read the same way.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Connections.
    pub connections: ConnectionFigures,
    /// Messages.
    pub messages: MessageFigures,
    /// Round trip latency from the intended send time.
    pub latency_ms: Percentiles,
    /// Connect time (TCP + TLS + upgrade).
    pub connect_ms: Percentiles,
    /// Its TCP connect part.
    #[serde(default)]
    pub connect_tcp_ms: Percentiles,
    /// Its TLS handshake part (no samples for `ws://`).
    #[serde(default)]
    pub connect_tls_ms: Percentiles,
    /// Its WebSocket upgrade part.
    #[serde(default)]
    pub connect_upgrade_ms: Percentiles,
    /// Errors by cause.
    pub errors: BTreeMap<String, u64>,
    /// Errors of every cause: the sum of `errors`.
    pub errors_total: u64,
    /// Errors over connection attempts plus messages scheduled (sent + unsent).
    pub error_rate: f64,
    /// Messages received per second of the rows (seconds) in metrics.csv.
    pub throughput_msg_per_s: f64,
    /// Every counter of the model.
    pub counters: Counters,
    /// Seconds (elapsed_s) in which the load generator could not keep its
    /// schedule: latency there measures stampede, not the target.
    pub generator_stalled_seconds: Vec<u64>,
    /// Workers lost during the run (the whole run's figures only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers_lost: Vec<WorkerLost>,
    /// Each time the load was spread anew over the workers: a worker was
    /// lost, came back, or joined late (the whole run's figures only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rebalanced: Vec<Rebalance>,
    /// A flow's steps by their metric name, in the flow's order (every
    /// step, also one that never ran); no key for a run without a flow.
    #[serde(default, skip_serializing_if = "StepsFigures::is_empty")]
    pub steps: StepsFigures,
}

/// Each flow step's figures by its name, kept in the flow's order (a JSON
/// object whose keys are the step names, in that order).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepsFigures(pub Vec<(String, StepFigures)>);

impl StepsFigures {
    /// Whether there are no steps (a run without a flow).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The figures of the step called `name`.
    pub fn get(&self, name: &str) -> Option<&StepFigures> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, f)| f)
    }

    /// (name, figures), in the flow's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &StepFigures)> {
        self.0.iter().map(|(n, f)| (n.as_str(), f))
    }
}

impl Serialize for StepsFigures {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(n, f)| (n, f)))
    }
}

impl<'de> Deserialize<'de> for StepsFigures {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> serde::de::Visitor<'de> for InOrder {
            type Value = StepsFigures;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of step figures by step name")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<StepsFigures, A::Error> {
                let mut steps = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    steps.push(entry);
                }
                Ok(StepsFigures(steps))
            }
        }
        d.deserialize_map(InOrder)
    }
}

/// The figures of one flow step over a run, a phase or a second. Durations
/// are those of its successful runs (a failed run has no meaningful one);
/// a figure without a sample is `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepFigures {
    /// Runs that succeeded.
    pub ok: u64,
    /// Runs that failed (timeout, wrong status, no match, connection lost).
    pub failed: u64,
    /// failed / (ok + failed), 0..1.
    pub failure_rate: Option<f64>,
    /// Median duration of a successful run, ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 95th percentile, ms.
    pub p95_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Slowest successful run, ms.
    pub max_ms: Option<f64>,
    /// Mean duration, ms.
    pub mean_ms: Option<f64>,
}

impl StepFigures {
    /// The figures of `ok` successful runs timed by `durations` (us; none:
    /// no sample) and `failed` failed ones.
    pub fn of(ok: u64, failed: u64, durations: Option<&hdrhistogram::Histogram<u64>>) -> StepFigures {
        let p = durations.map(Percentiles::of).unwrap_or_default();
        let timed = |v: f64| (p.count > 0).then_some(v);
        let runs = ok.saturating_add(failed);
        StepFigures {
            ok,
            failed,
            failure_rate: (runs > 0).then(|| failed as f64 / runs as f64),
            p50_ms: timed(p.p50),
            p90_ms: timed(p.p90),
            p95_ms: timed(p.p95),
            p99_ms: timed(p.p99),
            max_ms: timed(p.max),
            mean_ms: timed(p.mean),
        }
    }
}

/// A worker the run lost: it died, its link broke, or it refused the plan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerLost {
    /// Its id.
    pub id: String,
    /// When, s from the run's start.
    pub at_s: f64,
    /// Why, as the controller saw it.
    pub reason: String,
    /// When it rejoined and took part again, s from the run's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub back_at_s: Option<f64>,
}

/// The current phase's connections spread anew over the workers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rebalance {
    /// When, s from the run's start.
    pub at_s: f64,
    /// What changed in the fleet.
    pub reason: String,
    /// The phase it applied to.
    pub phase: String,
    /// Connections each live worker holds from then on (at the phase's
    /// level; a ramp moves them together).
    pub connections: BTreeMap<String, u64>,
    /// Connections the phase asks for that no worker had room for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unplaced: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Figures of one phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    /// Phase name.
    pub name: String,
    /// Seconds since run start the phase began at.
    pub start_s: f64,
    /// Planned length, s.
    pub duration_s: f64,
    /// The phase's figures (inline in the JSON).
    #[serde(flatten)]
    pub figures: Figures,
    /// What made it: a stage kind (`ramp`, `steps`, `stress`, ...), or
    /// empty for the fixed `[phases]` table.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Its own verdict, "PASS" or "FAIL", from the thresholds evaluated
    /// over its seconds only: given for each step of a `steps` or `stress`
    /// stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The thresholds over its seconds, when it has a verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds: Vec<ThresholdOutcome>,
}

/// Where a stress stage broke.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakingPoint {
    /// The highest level (connections) that held: the level of the step
    /// before the one in which the failure began (0 if the first one broke).
    pub connections: u64,
    /// The level of the step in which the failure began.
    pub broke_at_connections: u64,
    /// The threshold metric that failed.
    pub failing_metric: String,
    /// Its condition, e.g. `error_rate < 0.01`.
    pub expression: String,
    /// Its value in the second that completed the failing window.
    pub failing_value: Option<f64>,
    /// Seconds since the run's start at which the failing window began.
    pub at_s: f64,
}

/// `Some(inner)` for a key that is present, even as `null`: tells a stress
/// run whose level never broke (`null`) from a run without a stress stage
/// (no key).
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// One threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdOutcome {
    /// The expression as written, e.g. `latency_p95_ms < 100`.
    pub expression: String,
    /// Metric name.
    pub metric: String,
    /// Comparison operator.
    pub op: String,
    /// The limit.
    pub limit: f64,
    /// The measured value (null when the run produced no sample for it).
    pub value: Option<f64>,
    /// Whether it held.
    pub pass: bool,
}

/// A worker that took part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Worker id.
    pub id: String,
    /// Host it runs on.
    pub hostname: String,
    /// Connections it can hold.
    pub max_connections: u64,
    /// Snapshots received from it.
    pub snapshots: u64,
}

/// The `summary.json` document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// [`SUMMARY_SCHEMA_VERSION`] of the writer.
    pub schema_version: u32,
    /// "PASS" or "FAIL".
    pub verdict: String,
    /// Why the run ended early, if it did.
    pub aborted: Option<String>,
    /// Scenario name.
    pub scenario: String,
    /// Target URL.
    pub target: String,
    /// Start of the run, ISO 8601 UTC.
    pub started_at: String,
    /// Length of the run, s.
    pub duration_s: f64,
    /// Number of workers.
    pub workers: u32,
    /// The workers.
    pub worker_details: Vec<WorkerInfo>,
    /// The whole run's figures (inline in the JSON).
    #[serde(flatten)]
    pub figures: Figures,
    /// Peak resident memory of all workers together, MB.
    pub worker_rss_peak_mb: f64,
    /// Per-phase figures.
    pub phases: Vec<PhaseSummary>,
    /// Thresholds and their outcome.
    pub thresholds: Vec<ThresholdOutcome>,
    /// A stress stage's finding: `null` when no level broke (see
    /// `breaking_point_reason`); no key when the run has no stress stage.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub breaking_point: Option<Option<BreakingPoint>>,
    /// Why the breaking point is what it is, in words (what failed, or that
    /// every level held); no key without a stress stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaking_point_reason: Option<String>,
    /// Connections opened, by the subprotocol the server picked (no key
    /// when none was offered).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subprotocols: BTreeMap<String, u64>,
    /// Broadcast runs of at most [`MAX_CHANNEL_FIGURES`] channels: each
    /// channel's deliveries over the run, by channel number (no key
    /// otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelFigures>,
    /// Runs with browser sessions: what the browsers cost (no key
    /// otherwise). The app's WebSocket counts are in `counters`
    /// (`app_frames_sent`, ...), the page actions in `steps`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub browser: Option<BrowserFigures>,
}

/// What the browser sessions of a run cost, from the second with the most
/// sessions open. A figure a writer did not have reads as 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BrowserFigures {
    /// Most sessions holding a page at once (over all workers).
    pub peak_sessions: u64,
    /// PSS of the workers' Chromium processes then, MB (10^6 bytes).
    pub pss_mb_at_peak: f64,
    /// That PSS per session, MB: what one more session costs, browsers'
    /// own processes shared out.
    pub pss_mb_per_session: f64,
    /// Most PSS of the Chromium processes at any second, MB.
    pub pss_mb_peak: f64,
    /// The largest JavaScript heap (used) of a page, sampled as each
    /// session ended, MB: the app's own memory in one session.
    pub js_heap_mb_max: f64,
}

/// Broadcast runs report per channel up to this many channels.
pub const MAX_CHANNEL_FIGURES: u64 = 1000;

/// One broadcast channel's deliveries over the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFigures {
    /// Its number (0 .. channels).
    pub channel: u64,
    /// Messages published to it.
    pub published: u64,
    /// Deliveries its subscribers were owed.
    pub expected: u64,
    /// Deliveries received (first copies).
    pub received: u64,
    /// Deliveries that never came.
    pub lost: u64,
    /// Further copies of deliveries already received.
    pub duplicated: u64,
    /// Deliveries that came after a later message of the channel.
    pub out_of_order: u64,
}

#[cfg(test)]
mod tests;
