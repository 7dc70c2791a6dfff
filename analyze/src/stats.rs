//! Statistics of a run and of each phase: throughput, connection success,
//! errors, and latency percentiles recomputed from latency.hlog (merged
//! histograms, never averaged per-second percentiles).

use serde::Serialize;
use stampede_model::results::Percentiles;

use crate::hlog::percentiles;
use crate::load::Run;
use crate::model::PhaseSpan;

/// Where percentiles come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PercentileSource {
    /// Merged histograms from latency.hlog: exact (3 significant digits).
    Hlog,
    /// summary.json's figures for the phase (exact, but only per phase).
    Summary,
    /// The worst per-second row of the window: an upper bound, approximate.
    Rows,
}

/// Figures of one window of a run (a phase, or the run).
#[derive(Debug, Clone, Serialize)]
pub struct WindowStats {
    /// Run label.
    pub run: String,
    /// Phase name, or `all` (the run without warmup unless asked).
    pub phase: String,
    /// First second.
    pub start_s: f64,
    /// End (exclusive).
    pub end_s: f64,
    /// Seconds with rows.
    pub seconds: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Echoes received.
    pub messages_received: u64,
    /// Echoes per second.
    pub throughput_msg_per_s: f64,
    /// Connections opened.
    pub connections_opened: u64,
    /// Connection attempts failed.
    pub connections_failed: u64,
    /// opened / (opened + failed); NaN without attempts.
    pub connect_success_rate: f64,
    /// Connections the server closed or dropped.
    pub connections_closed_by_server: u64,
    /// Errors of every cause.
    pub errors: u64,
    /// errors / (attempts + messages sent).
    pub error_rate: f64,
    /// Peak open connections.
    pub connections_peak: u64,
    /// Round trip, ms.
    pub latency_ms: Percentiles,
    /// Connect time, ms.
    pub connect_ms: Percentiles,
    /// Where the percentiles come from.
    pub percentile_source: PercentileSource,
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

/// Figures of the seconds `[start, end)` of `run`, labelled `phase`; the
/// percentiles merge the phases `phases` (and the seconds after the last
/// phase when `outside`).
pub fn window(run: &Run, phase: &str, start: f64, end: f64, phases: &[&str], outside: bool) -> WindowStats {
    let t = &run.timeline;
    let idx: Vec<usize> = (0..t.len()).filter(|&i| t.elapsed_s[i] >= start && t.elapsed_s[i] < end).collect();
    let sum = |v: &[f64]| idx.iter().map(|&i| v[i]).filter(|x| !x.is_nan()).sum::<f64>();
    let sent = sum(&t.messages_sent);
    let received = sum(&t.messages_received);
    let opened = sum(&t.connections_opened);
    let failed = sum(&t.connections_failed);
    let errors = sum(&t.errors);
    let seconds = idx.len() as f64;
    let peak = idx.iter().map(|&i| t.connections_active[i]).fold(0.0, f64::max);

    let (latency_ms, connect_ms, source) = match (&run.hlog, &run.summary) {
        (Some(h), _) => {
            let (latency, connect) = h.merged(phases, outside);
            (percentiles(&latency), percentiles(&connect), PercentileSource::Hlog)
        }
        (None, Some(s)) if s.phases.iter().any(|p| p.name == phase) => {
            let p = s.phases.iter().find(|p| p.name == phase).expect("checked");
            (p.latency_ms.clone(), p.connect_ms.clone(), PercentileSource::Summary)
        }
        _ => {
            let worst =
                |v: &[f64]| idx.iter().map(|&i| v[i]).filter(|x| !x.is_nan()).fold(f64::NAN, f64::max);
            let approx = Percentiles {
                count: received as u64,
                p50: worst(&t.latency_p50_ms),
                p95: worst(&t.latency_p95_ms),
                p99: worst(&t.latency_p99_ms),
                max: worst(&t.latency_max_ms),
                p90: f64::NAN,
                p999: f64::NAN,
                mean: f64::NAN,
            };
            (approx, Percentiles::default(), PercentileSource::Rows)
        }
    };
    WindowStats {
        run: run.label.clone(),
        phase: phase.to_string(),
        start_s: start,
        end_s: end,
        seconds: seconds as u64,
        messages_sent: sent as u64,
        messages_received: received as u64,
        throughput_msg_per_s: ratio(received, seconds),
        connections_opened: opened as u64,
        connections_failed: failed as u64,
        connect_success_rate: ratio(opened, opened + failed),
        connections_closed_by_server: sum(&t.connections_closed_by_server) as u64,
        errors: errors as u64,
        error_rate: if opened + failed + sent > 0.0 { errors / (opened + failed + sent) } else { 0.0 },
        connections_peak: peak as u64,
        latency_ms,
        connect_ms,
        percentile_source: source,
    }
}

/// Per-phase figures, plus the whole run (`all`) without warmup unless
/// `include_warmup`; restricted to `only` when given.
pub fn run_stats(run: &Run, include_warmup: bool, only: Option<&str>) -> (WindowStats, Vec<WindowStats>) {
    let phases: Vec<&PhaseSpan> =
        run.timeline.phases.iter().filter(|p| only.is_none_or(|o| o == p.name)).collect();
    let per_phase =
        phases.iter().map(|p| window(run, &p.name, p.start_s, p.end_s, &[p.name.as_str()], false)).collect();
    let counted: Vec<&&PhaseSpan> = phases.iter().filter(|p| include_warmup || p.name != "warmup").collect();
    let start = counted.iter().map(|p| p.start_s).fold(f64::INFINITY, f64::min);
    let end = match only {
        Some(_) => counted.iter().map(|p| p.end_s).fold(0.0, f64::max),
        // The whole run: through the closing second after the last phase.
        None => run.timeline.elapsed_s.last().map_or(0.0, |t| t + 1.0),
    };
    let start = if start.is_finite() { start } else { 0.0 };
    let label = only.unwrap_or("all");
    let names: Vec<&str> = counted.iter().map(|p| p.name.as_str()).collect();
    (window(run, label, start, end, &names, only.is_none()), per_phase)
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
