//! Statistics of a run and of each phase: throughput, connection success,
//! errors, and latency percentiles recomputed from latency.hlog (merged
//! histograms, never averaged per-second percentiles). Each headline figure
//! is computed by the function of `stampede_model::figures` the controller
//! uses, over the rows of the phase set: a second belongs to the phase of
//! its metrics.csv row.

use std::collections::BTreeMap;

use serde::Serialize;
use stampede_model::results::{Percentiles, Summary, files};
use stampede_model::{Counters, figures};

use crate::hlog::percentiles;
use crate::load::Run;

/// Where percentiles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PercentileSource {
    /// Merged histograms from latency.hlog: exact (3 significant digits).
    Hlog,
    /// summary.json's figures for the same phase set: approximate (the log
    /// that would confirm them is missing or damaged).
    Summary,
    /// None: no log, and summary.json has no figures for the phase set.
    None,
}

/// Figures of a set of phases of a run (one phase, or the run).
#[derive(Debug, Clone, Serialize)]
pub struct WindowStats {
    /// Run label.
    pub run: String,
    /// Phase name, or `all` (the run without warmup unless asked).
    pub phase: String,
    /// The phases the figures cover, joined by `+`, e.g. `ramp-up+sustained+cooldown`.
    pub phases: String,
    /// What the set leaves out or is limited to, said next to every figure:
    /// `warmup excluded`, `warmup included`, `sustained only`, `all phases`;
    /// empty for a single phase's own row.
    pub scope: String,
    /// First second.
    pub start_s: f64,
    /// End (exclusive): the last second plus one.
    pub end_s: f64,
    /// Seconds with rows.
    pub seconds: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Echoes received.
    pub messages_received: u64,
    /// Echoes per second of rows ([`figures::throughput`]).
    pub throughput_msg_per_s: f64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connection attempts failed.
    pub connections_failed: u64,
    /// opened / (opened + failed); NaN without attempts.
    pub connect_success_rate: f64,
    /// Connections the server closed with a close frame.
    pub connections_closed_by_server: u64,
    /// Connections that ended without a close frame (reset, EOF).
    pub connections_dropped: u64,
    /// Errors of every cause: the sum of the rows' `errors`.
    pub errors: u64,
    /// [`figures::error_rate`]: errors over attempts plus messages scheduled.
    pub error_rate: f64,
    /// Errors by cause, from summary.json (empty when it has none for the set).
    pub errors_by_cause: BTreeMap<String, u64>,
    /// Peak open connections ([`figures::peak`]).
    pub connections_peak: u64,
    /// Round trip, ms; `None` when there is no sample or no source.
    pub latency_ms: Option<Percentiles>,
    /// Connect time, ms; `None` when there is no sample or no source.
    pub connect_ms: Option<Percentiles>,
    /// Where the percentiles come from.
    pub percentile_source: PercentileSource,
    /// The same for a human, said next to the percentiles: `latency.hlog`,
    /// `approximate (latency.hlog missing: from summary.json)`, `not given (...)`.
    pub percentiles_from: String,
    /// Seconds in which the load generator could not keep its schedule.
    pub generator_stalled_seconds: Vec<u64>,
    /// What does not add up (causes against the rows' total), if anything.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl WindowStats {
    /// `(scope)` to print after a figure, or nothing.
    pub fn scope_tag(&self) -> String {
        if self.scope.is_empty() { String::new() } else { format!(" ({})", self.scope) }
    }

    /// `(scope; source)` to print after the percentiles (the source only when
    /// it is not the exact log).
    pub fn percentile_tag(&self) -> String {
        let parts: Vec<&str> = [self.scope.as_str(), self.percentiles_from.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty() && *p != files::LATENCY_HLOG)
            .collect();
        if parts.is_empty() { String::new() } else { format!(" ({})", parts.join("; ")) }
    }
}

/// A least-squares line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// Slope, y per x.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// Goodness of fit, 0..1.
    pub r2: f64,
}

impl Line {
    /// The line's y at `x`.
    pub fn at(&self, x: f64) -> f64 {
        self.intercept + self.slope * x
    }
}

/// Fits a line through `points`; `None` for fewer than 3 or a vertical set.
pub fn fit_line(points: &[(f64, f64)]) -> Option<Line> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (mut vxx, mut vxy, mut vyy) = (0.0, 0.0, 0.0);
    for (x, y) in points {
        vxx += (x - mx) * (x - mx);
        vxy += (x - mx) * (y - my);
        vyy += (y - my) * (y - my);
    }
    if vxx == 0.0 {
        return None;
    }
    let slope = vxy / vxx;
    let r2 = if vyy == 0.0 { 1.0 } else { (vxy * vxy) / (vxx * vyy) };
    Some(Line { slope, intercept: my - slope * mx, r2 })
}

fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 { num / den } else { f64::NAN }
}

/// Figures of the rows whose phase is one of `names`, labelled `label`.
pub fn window(run: &Run, label: &str, names: &[&str], scope: &str) -> WindowStats {
    let t = &run.timeline;
    let idx: Vec<usize> = (0..t.len()).filter(|&i| names.contains(&t.phase[i].as_str())).collect();
    let mut c = Counters::default();
    let mut errors = 0u64;
    for &i in &idx {
        match t.counters.get(i) {
            Some(row) => c.add(row),
            // A timeline built without counters: the same numbers as floats.
            None => c.add(&Counters {
                connections_attempted: (t.connections_opened[i] + t.connections_failed[i]) as u64,
                connections_opened: t.connections_opened[i] as u64,
                connections_failed: t.connections_failed[i] as u64,
                connections_closed_by_server: t.connections_closed_by_server[i] as u64,
                connections_dropped: t.connections_dropped.get(i).map_or(0, |v| *v as u64),
                messages_sent: t.messages_sent[i] as u64,
                messages_received: t.messages_received[i] as u64,
                ..Default::default()
            }),
        }
        errors = errors.saturating_add(t.errors[i] as u64);
    }
    let rows = idx.len() as u64;
    let before = idx.first().and_then(|&i| i.checked_sub(1)).map_or(0, |i| t.connections_active[i] as u64);
    let peak = figures::peak(before, idx.iter().map(|&i| t.connections_active[i] as u64));
    let (latency_ms, connect_ms, percentile_source, percentiles_from) = percentiles_of(run, names);
    let set = names.join("+");
    let mut notes = Vec::new();
    let errors_by_cause = match causes_of(run, names) {
        Some(causes) => {
            let sum = causes.values().fold(0u64, |a, v| a.saturating_add(*v));
            if sum != errors {
                notes.push(format!(
                    "{set}: errors by cause (summary.json) add up to {sum}, but the rows of {} count {errors}",
                    files::METRICS_CSV
                ));
            }
            causes
        }
        None => {
            if errors > 0 {
                notes.push(format!(
                    "{set}: errors by cause unknown (summary.json has none for this phase set)"
                ));
            }
            BTreeMap::new()
        }
    };
    let (opened, failed) = (c.connections_opened as f64, c.connections_failed as f64);
    WindowStats {
        run: run.label.clone(),
        phase: label.to_string(),
        phases: set,
        scope: scope.to_string(),
        start_s: idx.first().map_or(0.0, |&i| t.elapsed_s[i]),
        end_s: idx.last().map_or(0.0, |&i| t.elapsed_s[i] + 1.0),
        seconds: rows,
        messages_sent: c.messages_sent,
        messages_received: c.messages_received,
        throughput_msg_per_s: figures::throughput(c.messages_received, rows),
        connections_opened: c.connections_opened,
        connections_failed: c.connections_failed,
        connect_success_rate: ratio(opened, opened + failed),
        connections_closed_by_server: c.connections_closed_by_server,
        connections_dropped: c.connections_dropped,
        errors,
        error_rate: figures::error_rate(errors, &c),
        errors_by_cause,
        connections_peak: peak,
        latency_ms,
        connect_ms,
        percentile_source,
        percentiles_from,
        generator_stalled_seconds: idx
            .iter()
            .filter(|&&i| t.generator_stalled.get(i).copied().unwrap_or(false))
            .map(|&i| t.elapsed_s[i] as u64)
            .collect(),
        notes,
    }
}

/// Percentiles of the phases `names`: merged from latency.hlog; without it,
/// summary.json's figures of the same phase set, marked approximate; else none.
fn percentiles_of(
    run: &Run,
    names: &[&str],
) -> (Option<Percentiles>, Option<Percentiles>, PercentileSource, String) {
    let sampled = |p: Percentiles| (p.count > 0).then_some(p);
    if let Some(h) = &run.hlog {
        let (latency, connect) = h.merged(names);
        let (l, c) = (percentiles(&latency), percentiles(&connect));
        return (sampled(l), sampled(c), PercentileSource::Hlog, files::LATENCY_HLOG.to_string());
    }
    let problem = run.hlog_problem.clone().unwrap_or_else(|| format!("{} missing", files::LATENCY_HLOG));
    match run.summary.as_ref().and_then(|s| summary_percentiles(s, names)) {
        Some((l, c)) => (
            sampled(l.clone()),
            sampled(c.clone()),
            PercentileSource::Summary,
            format!("approximate ({problem}: from {})", files::SUMMARY),
        ),
        None => {
            let why = match &run.summary {
                None => format!("no {}", files::SUMMARY),
                Some(_) => format!(
                    "{} has figures per phase and for the whole run, none for {}",
                    files::SUMMARY,
                    names.join("+")
                ),
            };
            (None, None, PercentileSource::None, format!("not given ({problem}; {why})"))
        }
    }
}

/// summary.json's percentiles of exactly the phases `names`: a phase's
/// own, or the run's when every other phase has no sample.
fn summary_percentiles<'a>(s: &'a Summary, names: &[&str]) -> Option<(&'a Percentiles, &'a Percentiles)> {
    let phase = |name: &str| s.phases.iter().find(|p| p.name == name);
    if names.is_empty() || names.iter().any(|n| phase(n).is_none()) {
        return None;
    }
    if let [one] = names {
        let p = phase(one)?;
        return Some((&p.figures.latency_ms, &p.figures.connect_ms));
    }
    let others_empty = s
        .phases
        .iter()
        .filter(|p| !names.contains(&p.name.as_str()))
        .all(|p| p.figures.latency_ms.count == 0 && p.figures.connect_ms.count == 0);
    others_empty.then_some((&s.figures.latency_ms, &s.figures.connect_ms))
}

/// summary.json's errors by cause of the phases `names`: their per-phase
/// counts added, or the run's when the set is every phase of the rows.
fn causes_of(run: &Run, names: &[&str]) -> Option<BTreeMap<String, u64>> {
    let s = run.summary.as_ref()?;
    if !names.is_empty() && names.iter().all(|n| s.phases.iter().any(|p| p.name == *n)) {
        let mut causes = BTreeMap::new();
        for p in s.phases.iter().filter(|p| names.contains(&p.name.as_str())) {
            for (cause, n) in &p.figures.errors {
                let total: &mut u64 = causes.entry(cause.clone()).or_default();
                *total = total.saturating_add(*n);
            }
        }
        return Some(causes);
    }
    let all = run.timeline.phase_names();
    (all.len() == names.len() && all.iter().all(|n| names.contains(n))).then(|| s.figures.errors.clone())
}

/// Which phases the headline figures cover: `only`, else every phase of
/// the rows but warmup unless `include_warmup`; and how to say so.
pub fn counted_phases<'a>(
    run: &'a Run,
    include_warmup: bool,
    only: Option<&'a str>,
) -> (Vec<&'a str>, String) {
    let all = run.timeline.phase_names();
    match only {
        Some(o) => (vec![o], format!("{o} only")),
        None if !all.contains(&"warmup") => (all, "all phases".to_string()),
        None if include_warmup => (all, "warmup included".to_string()),
        None => (all.into_iter().filter(|p| *p != "warmup").collect(), "warmup excluded".to_string()),
    }
}

/// Per-phase figures, plus the headline set's (`all`: the run without
/// warmup unless `include_warmup`; `only` when given).
pub fn run_stats(run: &Run, include_warmup: bool, only: Option<&str>) -> (WindowStats, Vec<WindowStats>) {
    let per_phase = run
        .timeline
        .phase_names()
        .into_iter()
        .filter(|p| only.is_none_or(|o| o == *p))
        .map(|p| window(run, p, &[p], ""))
        .collect();
    let (names, scope) = counted_phases(run, include_warmup, only);
    (window(run, only.unwrap_or("all"), &names, &scope), per_phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_lines() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 2.0 * i as f64 + 1.0)).collect();
        let l = fit_line(&pts).unwrap();
        assert!(
            (l.slope - 2.0).abs() < 1e-12 && (l.intercept - 1.0).abs() < 1e-12 && (l.r2 - 1.0).abs() < 1e-12
        );
        assert!(fit_line(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]).is_none());
    }
}
