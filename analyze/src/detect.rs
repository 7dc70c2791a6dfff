//! Anomaly detectors over a run's per-second series. Each reports findings
//! with start and end second, phase, magnitude (with its unit) and severity;
//! every threshold is a documented parameter the command line can override.
//! A clean run yields no findings.

use crate::model::{Finding, FindingKind, Severity, Timeline};
use crate::stats::fit_line;

/// Parameters of the detectors (`analyze --help` lists them).
#[derive(Debug, Clone, clap::Args)]
pub struct DetectorParams {
    /// Latency spikes: width of the rolling median/MAD baseline, s.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub spike_window_s: usize,
    /// Latency spikes: how many robust deviations (1.4826 x MAD) above the
    /// baseline a second must be.
    #[arg(long, default_value_t = 6.0, value_name = "K")]
    pub spike_mad: f64,
    /// Latency spikes: and at least this many times the baseline.
    #[arg(long, default_value_t = 1.5, value_name = "RATIO")]
    pub spike_min_ratio: f64,
    /// Latency spikes: and at least this much above it, ms.
    #[arg(long, default_value_t = 1.0, value_name = "MS")]
    pub spike_min_ms: f64,
    /// Latency spikes: shortest spike reported, s (single-second noise is ignored).
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    pub spike_min_duration_s: usize,
    /// Latency spikes: quiet seconds that still join two spikes into one.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    pub spike_merge_gap_s: usize,
    /// Memory growth: smallest slope reported, MB per minute.
    #[arg(long, default_value_t = 1.0, value_name = "MB_PER_MIN")]
    pub leak_min_mb_per_min: f64,
    /// Memory growth: smallest goodness of fit (R^2) of the linear rise.
    #[arg(long, default_value_t = 0.8, value_name = "R2")]
    pub leak_min_r2: f64,
    /// Memory growth: shortest window analysed, s.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub leak_min_duration_s: usize,
    /// Connection drops: smallest loss reported, as a fraction of the open connections.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    pub drop_min_fraction: f64,
    /// Connection drops: smallest loss reported, connections.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub drop_min_connections: u64,
    /// Connection drops: seconds over which a fall counts as sudden.
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    pub drop_window_s: usize,
}

impl Default for DetectorParams {
    fn default() -> Self {
        DetectorParams {
            spike_window_s: 120,
            spike_mad: 6.0,
            spike_min_ratio: 1.5,
            spike_min_ms: 1.0,
            spike_min_duration_s: 3,
            spike_merge_gap_s: 2,
            leak_min_mb_per_min: 1.0,
            leak_min_r2: 0.8,
            leak_min_duration_s: 60,
            drop_min_fraction: 0.1,
            drop_min_connections: 5,
            drop_window_s: 3,
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Groups flagged seconds into runs `[start, end]` (indices), joining runs
/// separated by at most `gap` unflagged seconds.
fn spans(flags: &[bool], gap: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, &f) in flags.iter().enumerate() {
        if !f {
            continue;
        }
        match out.last_mut() {
            Some((_, end)) if i - *end <= gap + 1 => *end = i,
            _ => out.push((i, i)),
        }
    }
    out
}

fn phase_of(t: &Timeline, i: usize) -> String {
    t.phase.get(i).cloned().unwrap_or_default()
}

/// Whether second `i` is analysed (warmup is excluded unless asked).
fn in_scope(t: &Timeline, i: usize, include_warmup: bool) -> bool {
    include_warmup || t.phase.get(i).is_none_or(|p| p != "warmup")
}

/// Latency spikes in `series` (p95 or p99 of each second): seconds far above
/// a rolling median, measured in robust deviations (MAD), lasting at least
/// the minimum duration.
pub fn latency_spikes(
    t: &Timeline,
    subject: &str,
    series: &[f64],
    p: &DetectorParams,
    include_warmup: bool,
) -> Vec<Finding> {
    let n = series.len();
    let half = p.spike_window_s / 2;
    let mut baseline = vec![f64::NAN; n];
    let mut flags = vec![false; n];
    let mut window = Vec::with_capacity(p.spike_window_s + 1);
    for i in 0..n {
        let v = series[i];
        if v.is_nan() || !in_scope(t, i, include_warmup) {
            continue;
        }
        window.clear();
        let (lo, hi) = (i.saturating_sub(half), (i + half + 1).min(n));
        window.extend(
            (lo..hi).filter(|&j| in_scope(t, j, include_warmup)).map(|j| series[j]).filter(|v| !v.is_nan()),
        );
        let med = median(&mut window);
        for w in window.iter_mut() {
            *w = (*w - med).abs();
        }
        let mad = median(&mut window) * 1.4826;
        baseline[i] = med;
        let limit = med + (p.spike_mad * mad).max(p.spike_min_ms);
        flags[i] = v > limit && v > med * p.spike_min_ratio;
    }
    spans(&flags, p.spike_merge_gap_s)
        .into_iter()
        .filter(|(s, e)| e - s + 1 >= p.spike_min_duration_s)
        .map(|(s, e)| {
            let (peak_i, peak) = (s..=e)
                .filter(|&i| !series[i].is_nan())
                .map(|i| (i, series[i]))
                .fold((s, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
            let base = baseline[peak_i];
            let ratio = peak / base.max(1e-9);
            let severity = match ratio {
                r if r >= 10.0 => Severity::Critical,
                r if r >= 3.0 => Severity::Warning,
                _ => Severity::Info,
            };
            let mut description = format!(
                "{subject} rose to {peak:.2} ms ({ratio:.1}x the baseline of {base:.2} ms) for {} s",
                e - s + 1
            );
            // A stalled generator sends late and measures its own delay:
            // the spike then says nothing about the target.
            let stalled: Vec<String> = stalled_spans(t)
                .into_iter()
                .filter(|&(a, b)| a <= e && b >= s)
                .map(|(a, b)| seconds_text(t, a, b))
                .collect();
            if !stalled.is_empty() {
                description += &format!(
                    ", while the load generator stalled (seconds {}): this latency measures the load generator, not the target",
                    stalled.join(", ")
                );
            }
            Finding {
                run: t.label.clone(),
                kind: FindingKind::LatencySpike,
                subject: subject.to_string(),
                start_s: t.elapsed_s[s],
                end_s: t.elapsed_s[e],
                phase: phase_of(t, s),
                magnitude: peak - base,
                unit: "ms".into(),
                severity,
                description,
            }
        })
        .collect()
}

/// Runs `[first, last]` (indices) of seconds flagged `generator_stalled`.
fn stalled_spans(t: &Timeline) -> Vec<(usize, usize)> {
    spans(&t.generator_stalled[..t.generator_stalled.len().min(t.len())], 0)
}

/// `12-21` (or `12`) for the seconds of indices `a..=b`.
fn seconds_text(t: &Timeline, a: usize, b: usize) -> String {
    if a == b {
        format!("{:.0}", t.elapsed_s[a])
    } else {
        format!("{:.0}-{:.0}", t.elapsed_s[a], t.elapsed_s[b])
    }
}

/// Seconds in which the load generator could not keep its schedule (the
/// rows' `generator_stalled`): latency there measures stampede, not the
/// target. One finding per run of stalled seconds.
pub fn generator_stalls(t: &Timeline, include_warmup: bool) -> Vec<Finding> {
    let flags: Vec<bool> = (0..t.len())
        .map(|i| t.generator_stalled.get(i) == Some(&true) && in_scope(t, i, include_warmup))
        .collect();
    spans(&flags, 0)
        .into_iter()
        .map(|(s, e)| Finding {
            run: t.label.clone(),
            kind: FindingKind::GeneratorStalled,
            subject: "generator_stalled".into(),
            start_s: t.elapsed_s[s],
            end_s: t.elapsed_s[e],
            phase: phase_of(t, s),
            magnitude: (e - s + 1) as f64,
            unit: "s".into(),
            severity: Severity::Warning,
            description: format!(
                "generator stalled in seconds {}: latency there measures the load generator, not the target",
                seconds_text(t, s, e)
            ),
        })
        .collect()
}

/// The seconds a memory trend is judged on: the sustained phase, else
/// everything but warmup, ramp-up and cooldown, else everything.
pub fn steady_window(t: &Timeline) -> Option<(usize, usize)> {
    let idx = |pred: &dyn Fn(&str) -> bool| {
        let first = t.phase.iter().position(|p| pred(p))?;
        let last = t.phase.iter().rposition(|p| pred(p))?;
        Some((first, last))
    };
    idx(&|p| p == "sustained")
        .or_else(|| idx(&|p| !matches!(p, "warmup" | "ramp-up" | "cooldown")))
        .or_else(|| (!t.is_empty()).then(|| (0, t.len() - 1)))
}

/// Memory growth of `series` (MB per second sample) over the steady window:
/// a linear fit after the best change point (flat, then rising), reported
/// when its slope and fit are beyond the thresholds.
pub fn memory_growth(t: &Timeline, subject: &str, series: &[f64], p: &DetectorParams) -> Option<Finding> {
    let (first, last) = steady_window(t)?;
    let points: Vec<(f64, f64)> =
        (first..=last).filter(|&i| !series[i].is_nan()).map(|i| (t.elapsed_s[i], series[i])).collect();
    if points.len() < p.leak_min_duration_s.max(3) {
        return None;
    }
    let onset = change_point(&points);
    let rising = &points[onset..];
    let fit = fit_line(rising)?;
    let per_min = fit.slope * 60.0;
    let span_s = rising.last()?.0 - rising.first()?.0;
    if per_min < p.leak_min_mb_per_min
        || fit.r2 < p.leak_min_r2
        || span_s + 1.0 < p.leak_min_duration_s as f64
    {
        return None;
    }
    let per_hour = per_min * 60.0;
    let severity = match per_hour {
        h if h >= 500.0 => Severity::Critical,
        h if h >= 100.0 => Severity::Warning,
        _ => Severity::Info,
    };
    let start = rising.first()?.0;
    let i_start = t.elapsed_s.iter().position(|&e| e == start).unwrap_or(first);
    Some(Finding {
        run: t.label.clone(),
        kind: FindingKind::MemoryGrowth,
        subject: subject.to_string(),
        start_s: start,
        end_s: rising.last()?.0,
        phase: phase_of(t, i_start),
        magnitude: per_min,
        unit: "MB/min".into(),
        severity,
        description: format!(
            "{subject} grows {per_min:.2} MB/min (R^2 {:.2}) over {:.0} s: {per_hour:.0} MB per hour if it goes on; likely leak",
            fit.r2, span_s
        ),
    })
}

/// Index where a flat start turns into a linear rise: the hinge
/// `y = c + s * max(0, x - x_b)` with the least squared error over every
/// candidate `b`; 0 when one straight line explains the points as well.
/// Suffix sums keep it linear in the number of points.
fn change_point(points: &[(f64, f64)]) -> usize {
    let n = points.len();
    if n < 4 {
        return 0;
    }
    // Suffix sums over i >= b of x, x^2, y, xy.
    let mut suf = vec![[0.0f64; 4]; n + 1];
    for i in (0..n).rev() {
        let (x, y) = points[i];
        let s = suf[i + 1];
        suf[i] = [s[0] + x, s[1] + x * x, s[2] + y, s[3] + x * y];
    }
    let k = n as f64;
    let sy: f64 = points.iter().map(|p| p.1).sum();
    let syy: f64 = points.iter().map(|p| p.1 * p.1).sum();
    let var_y = syy - sy * sy / k;
    let sse = |b: usize| {
        let xb = points[b].0;
        let m = (n - b) as f64;
        let [tx, txx, ty, txy] = suf[b];
        let su = tx - m * xb;
        let suu = txx - 2.0 * xb * tx + m * xb * xb;
        let suy = txy - xb * ty;
        let var_u = suu - su * su / k;
        let cov = suy - su * sy / k;
        if var_u <= 0.0 { var_y } else { var_y - cov * cov / var_u }
    };
    let line = sse(0);
    let min_len = 10.min(n / 2).max(2);
    let best = (min_len..n - min_len).map(|b| (sse(b), b)).min_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((e, b)) if e < line * 0.98 => b,
        _ => 0,
    }
}

/// Connection drops: open connections falling short of the plan within a
/// few seconds, or bursts of server closes and failures.
pub fn connection_drops(
    t: &Timeline,
    causes: &str,
    p: &DetectorParams,
    include_warmup: bool,
) -> Vec<Finding> {
    let n = t.len();
    let w = p.drop_window_s.max(1);
    // Shortfall against the plan now, minus the smallest shortfall a moment
    // ago; or the closes and failures of the second, whichever is larger.
    let short = |j: usize| (t.connections_target[j] - t.connections_active[j]).max(0.0);
    let lost: Vec<f64> = (0..n)
        .map(|i| {
            if !in_scope(t, i, include_warmup) {
                return 0.0;
            }
            let before = (i.saturating_sub(w)..i).map(short).fold(f64::INFINITY, f64::min);
            let fell = if before.is_finite() { short(i) - before } else { 0.0 };
            // Server close frames, and connections that ended without one
            // (reset, EOF): both are the server's doing.
            let dropped = t.connections_dropped.get(i).copied().unwrap_or(0.0);
            fell.max(t.connections_closed_by_server[i] + dropped + t.connections_failed[i])
        })
        .collect();
    let flags: Vec<bool> = (0..n)
        .map(|i| {
            let base = (t.connections_active[i] + lost[i]).max(t.connections_target[i]).max(1.0);
            lost[i] >= p.drop_min_connections as f64 && lost[i] >= p.drop_min_fraction * base
        })
        .collect();
    spans(&flags, 1)
        .into_iter()
        .map(|(s, e)| {
            let peak = (s..=e).map(|i| lost[i]).fold(0.0, f64::max);
            let before = t.connections_active[s.saturating_sub(1)].max(t.connections_target[s]).max(1.0);
            let fraction = peak / before;
            let severity = match fraction {
                f if f >= 0.5 => Severity::Critical,
                f if f >= 0.2 => Severity::Warning,
                _ => Severity::Info,
            };
            let cause_text =
                if causes.is_empty() { String::new() } else { format!("; causes in the phase: {causes}") };
            Finding {
                run: t.label.clone(),
                kind: FindingKind::ConnectionDrop,
                subject: "connections_active".into(),
                start_s: t.elapsed_s[s],
                end_s: t.elapsed_s[e],
                phase: phase_of(t, s),
                magnitude: peak,
                unit: "connections".into(),
                severity,
                description: format!(
                    "{peak:.0} connections lost ({:.0}% of {before:.0}) within {} s{cause_text}",
                    fraction * 100.0,
                    e - s + 1
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_join_small_gaps() {
        let f = [false, true, true, false, false, true, false, false, false, true];
        assert_eq!(spans(&f, 2), vec![(1, 5), (9, 9)]);
        assert_eq!(spans(&f, 0), vec![(1, 2), (5, 5), (9, 9)]);
    }

    #[test]
    fn change_point_finds_the_onset() {
        let points: Vec<(f64, f64)> =
            (0..200).map(|i| (i as f64, if i < 80 { 50.0 } else { 50.0 + (i - 80) as f64 * 0.5 })).collect();
        let b = change_point(&points);
        assert!((78..=82).contains(&b), "{b}");
        let line: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, i as f64)).collect();
        assert_eq!(change_point(&line), 0);
    }
}
