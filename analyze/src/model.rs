//! The analysis' plain data: per-second series of a run, its phases, the
//! findings of the detectors and latency distributions. Loading fills these
//! from a results folder (with polars); detectors, reports and plots only
//! read them, so none of those depends on how the files were read.

use serde::Serialize;
use stampede_model::{Counters, figures};

/// A phase of a run, in seconds since its start.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseSpan {
    /// `warmup`, `ramp-up`, `sustained`, `cooldown`, ...
    pub name: String,
    /// First second of the phase.
    pub start_s: f64,
    /// End of the phase (exclusive).
    pub end_s: f64,
}

/// One run's per-second series, all of the same length as `elapsed_s`.
/// A missing sample is NaN (a second without echoes has no latency).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// The run's label in reports and legends (its folder name).
    pub label: String,
    /// Seconds since the run start.
    pub elapsed_s: Vec<f64>,
    /// The phase of each second.
    pub phase: Vec<String>,
    /// Phases in order.
    pub phases: Vec<PhaseSpan>,
    /// Median round trip, ms.
    pub latency_p50_ms: Vec<f64>,
    /// 95th percentile round trip, ms.
    pub latency_p95_ms: Vec<f64>,
    /// 99th percentile round trip, ms.
    pub latency_p99_ms: Vec<f64>,
    /// Slowest round trip, ms.
    pub latency_max_ms: Vec<f64>,
    /// Connections the plan asked for.
    pub connections_target: Vec<f64>,
    /// Connections open.
    pub connections_active: Vec<f64>,
    /// Connections opened during the second.
    pub connections_opened: Vec<f64>,
    /// Connection attempts failed during the second.
    pub connections_failed: Vec<f64>,
    /// Connections the server closed with a close frame during the second.
    pub connections_closed_by_server: Vec<f64>,
    /// Connections that ended without a close frame (reset, EOF) during the second.
    pub connections_dropped: Vec<f64>,
    /// Messages sent per second.
    pub messages_sent: Vec<f64>,
    /// Echoes received per second (throughput).
    pub messages_received: Vec<f64>,
    /// Errors of every cause per second.
    pub errors: Vec<f64>,
    /// Resident memory of all workers, MB.
    pub worker_rss_mb: Vec<f64>,
    /// CPU of all workers, percent of one core.
    pub worker_cpu_pct: Vec<f64>,
    /// The target server's resident memory, MB (all NaN when not scraped).
    pub target_rss_mb: Vec<f64>,
    /// The target server's CPU, percent of one core.
    pub target_cpu_pct: Vec<f64>,
    /// Per worker (from workers.csv): id and resident memory, MB, per second.
    pub worker_rss: Vec<(String, Vec<f64>)>,
    /// Errors per second by cause (errors.csv), most errors first; empty
    /// without the file.
    pub errors_by_cause: Vec<(String, Vec<f64>)>,
    /// Seconds in which the load generator could not keep its schedule
    /// (latency there measures stampede, not the target).
    pub generator_stalled: Vec<bool>,
    /// Every counter of each second, exact (the f64 series above are the
    /// same numbers, for charts and detectors). Empty for a timeline built
    /// without them (the figures then come from the f64 series).
    pub counters: Vec<Counters>,
}

impl Timeline {
    /// Number of seconds.
    pub fn len(&self) -> usize {
        self.elapsed_s.len()
    }

    /// Whether the run has no rows.
    pub fn is_empty(&self) -> bool {
        self.elapsed_s.is_empty()
    }

    /// The error rate of each second, 0..1, as [`figures::error_rate`]
    /// defines it (errors over connection attempts plus messages scheduled).
    pub fn error_rate(&self) -> Vec<f64> {
        (0..self.len())
            .map(|i| {
                let counters = self.counters.get(i).copied().unwrap_or_else(|| Counters {
                    connections_attempted: (self.connections_opened[i] + self.connections_failed[i]) as u64,
                    messages_sent: self.messages_sent[i] as u64,
                    ..Default::default()
                });
                figures::error_rate(self.errors[i] as u64, &counters)
            })
            .collect()
    }

    /// The phase at second `t`, if any.
    pub fn phase_at(&self, t: f64) -> Option<&str> {
        self.phases.iter().find(|p| t >= p.start_s && t < p.end_s).map(|p| p.name.as_str())
    }

    /// The names of the phases the rows belong to, in order of first appearance.
    pub fn phase_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for p in &self.phase {
            if !names.contains(&p.as_str()) {
                names.push(p);
            }
        }
        names
    }
}

/// What a detector looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Latency far above the run's baseline for a while.
    LatencySpike,
    /// Latency very far above the baseline for a second or two.
    LatencyBlip,
    /// Resident memory that keeps growing.
    MemoryGrowth,
    /// Connections lost at once.
    ConnectionDrop,
    /// Seconds in which the load generator could not keep its schedule.
    GeneratorStalled,
}

impl FindingKind {
    /// The name used in reports and CSV.
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::LatencySpike => "latency_spike",
            FindingKind::LatencyBlip => "latency_blip",
            FindingKind::MemoryGrowth => "memory_growth",
            FindingKind::ConnectionDrop => "connection_drop",
            FindingKind::GeneratorStalled => "generator_stalled",
        }
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Likely a problem.
    Warning,
    /// A problem.
    Critical,
}

impl Severity {
    /// The name used in reports and CSV.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One anomaly found in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The run (its label).
    pub run: String,
    /// What was found.
    pub kind: FindingKind,
    /// What it concerns: `latency_p95_ms`, `worker_rss_mb`, `worker local-1`, `target_rss_mb`, ...
    pub subject: String,
    /// First second, since the run start.
    pub start_s: f64,
    /// Last second (inclusive).
    pub end_s: f64,
    /// Phase at the start.
    pub phase: String,
    /// Size of the anomaly, in `unit`.
    pub magnitude: f64,
    /// Unit of `magnitude`: `ms`, `MB/min`, `connections`, ...
    pub unit: String,
    /// How bad.
    pub severity: Severity,
    /// How sure the detector is that this is not the run's own noise, 0..1
    /// (1 minus the chance that noise alone gives a finding this strong).
    pub confidence: f64,
    /// The rule that fired, with its parameters.
    pub rule: String,
    /// One sentence for a human.
    pub description: String,
}

/// A latency distribution for a CDF chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// The run's label.
    pub label: String,
    /// (latency in ms, fraction of samples at or below it), ascending.
    pub points: Vec<(f64, f64)>,
}
