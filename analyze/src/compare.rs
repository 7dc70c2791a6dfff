//! Comparison of runs: each key metric per run and its change against the
//! baseline, flagging regressions beyond a tolerance.

use serde::Serialize;
use stampede_model::results::Percentiles;

use crate::stats::WindowStats;

/// Which direction is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    /// Smaller is better (latency, errors, memory).
    Lower,
    /// Larger is better (throughput, success).
    Higher,
}

/// A metric compared across runs.
#[derive(Debug, Clone, Serialize)]
pub struct ComparedMetric {
    /// Name with unit.
    pub metric: String,
    /// Whether it is a latency percentile (whose source may be approximate).
    pub percentile: bool,
    /// Which way is better.
    pub better: Better,
    /// The baseline's value.
    pub baseline: f64,
    /// Each other run's value.
    pub runs: Vec<RunValue>,
}

/// One run's value of a compared metric.
#[derive(Debug, Clone, Serialize)]
pub struct RunValue {
    /// The run's label.
    pub run: String,
    /// Its value (NaN, `null` in JSON: none).
    pub value: f64,
    /// Relative change against the baseline (NaN: the baseline is 0).
    pub change: f64,
    /// Worse than the baseline beyond the tolerance and the metric's floor.
    pub regression: bool,
}

/// What one run's compared figures cover.
#[derive(Debug, Clone, Serialize)]
pub struct RunScope {
    /// The run's label.
    pub run: String,
    /// Its phase set, e.g. `ramp-up+sustained+cooldown (warmup excluded)`.
    pub scope: String,
    /// Where its percentiles come from (`latency.hlog`, or an approximation).
    pub percentiles_from: String,
}

/// The comparison table.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The baseline run's label.
    pub baseline: String,
    /// What makes the runs hard to compare (another scenario, another
    /// scale), in words; empty when nothing does.
    pub warnings: Vec<String>,
    /// Relative worsening that counts as a regression.
    pub tolerance: f64,
    /// What each run's figures cover, the baseline first.
    pub scopes: Vec<RunScope>,
    /// One row per metric.
    pub metrics: Vec<ComparedMetric>,
}

impl Comparison {
    /// Whether any metric regressed.
    pub fn regressed(&self) -> bool {
        self.metrics.iter().any(|m| m.runs.iter().any(|r| r.regression))
    }
}

/// The metrics compared, with how to read them from a run's figures; the
/// absolute floor ignores changes too small to matter (noise).
type Getter = fn(&WindowStats) -> f64;
const METRICS: &[(&str, Better, f64, Getter)] = &[
    ("latency_p50_ms", Better::Lower, 0.05, |s| pct(&s.latency_ms, |p| p.p50)),
    ("latency_p95_ms", Better::Lower, 0.05, |s| pct(&s.latency_ms, |p| p.p95)),
    ("latency_p99_ms", Better::Lower, 0.05, |s| pct(&s.latency_ms, |p| p.p99)),
    ("latency_max_ms", Better::Lower, 0.5, |s| pct(&s.latency_ms, |p| p.max)),
    ("connect_p95_ms", Better::Lower, 0.05, |s| pct(&s.connect_ms, |p| p.p95)),
    ("throughput_msg_per_s", Better::Higher, 0.5, |s| s.throughput_msg_per_s),
    ("connect_success_rate", Better::Higher, 0.0005, |s| s.connect_success_rate),
    ("error_rate", Better::Lower, 0.0005, |s| s.error_rate),
    ("connections_peak", Better::Higher, 1.0, |s| s.connections_peak as f64),
];

/// A percentile, NaN when there is none (NaN never counts as a regression).
fn pct(p: &Option<Percentiles>, get: fn(&Percentiles) -> f64) -> f64 {
    p.as_ref().map_or(f64::NAN, get)
}

/// Compares `others` against `baseline`.
pub fn compare(baseline: &WindowStats, others: &[&WindowStats], tolerance: f64) -> Comparison {
    let metrics = METRICS
        .iter()
        .map(|(name, better, floor, get)| {
            let base = get(baseline);
            let runs = others
                .iter()
                .map(|s| {
                    let v = get(s);
                    let change = if base.abs() > 0.0 { (v - base) / base.abs() } else { f64::NAN };
                    let worse_by = match better {
                        Better::Lower => v - base,
                        Better::Higher => base - v,
                    };
                    let relative_worse = if base.abs() > 0.0 { worse_by / base.abs() } else { f64::INFINITY };
                    let regression = worse_by > *floor && relative_worse > tolerance;
                    RunValue { run: s.run.clone(), value: v, change, regression }
                })
                .collect();
            let percentile = name.starts_with("latency_") || name.starts_with("connect_p");
            ComparedMetric { metric: name.to_string(), percentile, better: *better, baseline: base, runs }
        })
        .collect();
    let scopes = std::iter::once(baseline)
        .chain(others.iter().copied())
        .map(|s| RunScope {
            run: s.run.clone(),
            scope: format!("{}{}", s.phases, s.scope_tag()),
            percentiles_from: s.percentiles_from.clone(),
        })
        .collect();
    Comparison { baseline: baseline.run.clone(), warnings: Vec::new(), tolerance, scopes, metrics }
}
