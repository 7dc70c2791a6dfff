//! Anomaly detectors over a run's per-second series. Each reports findings
//! with start and end second, phase, magnitude (with its unit) and severity;
//! every threshold is a documented parameter the command line can override.
//! A clean run yields no findings.

use crate::model::{Finding, FindingKind, Severity, Timeline};

pub use crate::growth::{block_minima, block_s, growth, memory_growth};

/// Parameters of the detectors (`analyze --help` lists them).
#[derive(Debug, Clone, clap::Args)]
pub struct DetectorParams {
    /// Latency spikes: width of the rolling median/MAD baseline, s.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub spike_window_s: usize,
    /// Latency spikes: how many robust deviations (1.4826 x MAD) above the
    /// baseline a second must be.
    #[arg(long, default_value_t = 6.0, value_name = "K", value_parser = non_negative)]
    pub spike_mad: f64,
    /// Latency spikes: and at least this many times the baseline.
    #[arg(long, default_value_t = 1.5, value_name = "RATIO", value_parser = non_negative)]
    pub spike_min_ratio: f64,
    /// Latency spikes: and at least this much above it, ms.
    #[arg(long, default_value_t = 1.0, value_name = "MS", value_parser = non_negative)]
    pub spike_min_ms: f64,
    /// Latency spikes: shortest spike reported, s (single-second noise is ignored).
    #[arg(long, default_value_t = 3, value_name = "SECS")]
    pub spike_min_duration_s: usize,
    /// Latency spikes: quiet seconds that still join two spikes into one.
    #[arg(long, default_value_t = 2, value_name = "SECS")]
    pub spike_merge_gap_s: usize,
    /// Latency blips: a spike shorter than the shortest spike is still
    /// reported (as a blip, info) when at least this many times the baseline.
    #[arg(long, default_value_t = 10.0, value_name = "RATIO", value_parser = non_negative)]
    pub blip_min_ratio: f64,
    /// Memory growth: the Mann-Kendall significance a rise must reach (its
    /// one-sided p-value at most this).
    #[arg(long, default_value_t = 0.001, value_name = "P", value_parser = probability)]
    pub leak_alpha: f64,
    /// Memory growth: the longest block whose lowest value stands for it, s
    /// (make it longer than the allocator's or GC's cycle).
    #[arg(long, default_value_t = 60.0, value_name = "SECS", value_parser = positive)]
    pub leak_block_s: f64,
    /// Memory growth: smallest projected growth reported, MB per hour.
    #[arg(long, default_value_t = 6.0, value_name = "MB_PER_HOUR", value_parser = non_negative)]
    pub leak_min_mb_per_hour: f64,
    /// Memory growth: shortest window analysed, s.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub leak_min_duration_s: usize,
    /// Connection drops: smallest loss reported, as a fraction of the open connections.
    #[arg(long, default_value_t = 0.03, value_name = "FRACTION", value_parser = fraction)]
    pub drop_min_fraction: f64,
    /// Connection drops: how many robust deviations (1.4826 x MAD) of the
    /// run's own second-to-second losses a drop must exceed.
    #[arg(long, default_value_t = 8.0, value_name = "K", value_parser = non_negative)]
    pub drop_mad: f64,
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
            blip_min_ratio: 10.0,
            leak_alpha: 0.001,
            leak_block_s: 60.0,
            leak_min_mb_per_hour: 6.0,
            leak_min_duration_s: 60,
            drop_min_fraction: 0.03,
            drop_mad: 8.0,
            drop_min_connections: 5,
            drop_window_s: 3,
        }
    }
}

/// A number a flag takes: finite, and `ok` for it, else what to give.
fn number(text: &str, ok: impl Fn(f64) -> bool, what: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && ok(v) => Ok(v),
        _ => Err(format!("{text:?}: give {what}")),
    }
}

fn non_negative(text: &str) -> Result<f64, String> {
    number(text, |v| v >= 0.0, "a number of 0 or more")
}

fn positive(text: &str) -> Result<f64, String> {
    number(text, |v| v > 0.0, "a number above 0")
}

fn fraction(text: &str) -> Result<f64, String> {
    number(text, |v| (0.0..=1.0).contains(&v), "a fraction from 0 to 1")
}

fn probability(text: &str) -> Result<f64, String> {
    number(text, |v| v > 0.0 && v < 1.0, "a p-value above 0 and below 1, such as 0.001")
}

pub(crate) fn median(values: &mut [f64]) -> f64 {
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

pub(crate) fn phase_of(t: &Timeline, i: usize) -> String {
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
    // The robust deviation at each second (never below what the 1 ms floor implies).
    let mut spread = vec![f64::NAN; n];
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
        spread[i] = mad.max(p.spike_min_ms / p.spike_mad.max(1e-9));
        let limit = med + (p.spike_mad * mad).max(p.spike_min_ms);
        flags[i] = v > limit && v > med * p.spike_min_ratio;
    }
    spans(&flags, p.spike_merge_gap_s)
        .into_iter()
        .filter_map(|(s, e)| {
            let (peak_i, peak) = (s..=e)
                .filter(|&i| !series[i].is_nan())
                .map(|i| (i, series[i]))
                .fold((s, f64::MIN), |a, b| if b.1 > a.1 { b } else { a });
            let base = baseline[peak_i];
            let ratio = peak / base.max(1e-9);
            // Seconds above the limit, not the span: two lone blips a gap
            // apart are not a spike.
            let blip = (s..=e).filter(|&i| flags[i]).count() < p.spike_min_duration_s;
            if blip && ratio < p.blip_min_ratio {
                return None;
            }
            let severity = match ratio {
                _ if blip => Severity::Info,
                r if r >= 10.0 => Severity::Critical,
                r if r >= 3.0 => Severity::Warning,
                _ => Severity::Info,
            };
            let (kind, rule) = if blip {
                (
                    FindingKind::LatencyBlip,
                    format!(
                        "latency_blip: shorter than {} s, at least {}x the rolling median of {} s",
                        p.spike_min_duration_s, p.blip_min_ratio, p.spike_window_s
                    ),
                )
            } else {
                (
                    FindingKind::LatencySpike,
                    format!(
                        "latency_spike: >= {} s above the rolling median of {} s by {} robust deviations, {} ms and {}x",
                        p.spike_min_duration_s, p.spike_window_s, p.spike_mad, p.spike_min_ms, p.spike_min_ratio
                    ),
                )
            };
            let mut description = format!(
                "{subject} rose to {peak:.2} ms ({ratio:.1}x the baseline of {base:.2} ms) for {} s{}",
                e - s + 1,
                if blip { ": a blip" } else { "" }
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
            Some(Finding {
                run: t.label.clone(),
                kind,
                subject: subject.to_string(),
                start_s: t.elapsed_s[s],
                end_s: t.elapsed_s[e],
                phase: phase_of(t, s),
                magnitude: peak - base,
                unit: "ms".into(),
                severity,
                confidence: confidence(peak - base, spread[peak_i]),
                rule,
                description,
            })
        })
        .collect()
}

/// 1 minus the one-sided normal tail at `excess / spread` robust
/// deviations: how unlikely the run's own noise makes an excess this large.
/// (The noise is not exactly normal; the figure ranks findings, it is not
/// a calibrated probability.)
fn confidence(excess: f64, spread: f64) -> f64 {
    1.0 - crate::trend::upper_tail(excess / spread.max(1e-9))
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
            // Not inferred: the worker says it could not keep its schedule.
            confidence: 1.0,
            rule: "generator_stalled: the rows' generator_stalled flag, set by the workers".into(),
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

/// Connection drops: open connections falling short of the plan within a
/// few seconds, or connections the server ended (close frames, resets),
/// beyond both a floor (`--drop-min-connections`, `--drop-min-fraction` of
/// those open) and the run's own churn: `--drop-mad` robust deviations of
/// its second-to-second losses. Failed attempts to (re)connect are not
/// connections lost: they are counted beside, so a target that restarts
/// reads as the connections it dropped plus the attempts it refused.
pub fn connection_drops(
    t: &Timeline,
    causes: &str,
    p: &DetectorParams,
    include_warmup: bool,
) -> Vec<Finding> {
    let n = t.len();
    let w = p.drop_window_s.max(1);
    // Shortfall against the plan now, minus the smallest shortfall a moment
    // ago; or the connections the server ended in the second (close
    // frames, resets, EOF), whichever is larger.
    let short = |j: usize| (t.connections_target[j] - t.connections_active[j]).max(0.0);
    let lost: Vec<f64> = (0..n)
        .map(|i| {
            if !in_scope(t, i, include_warmup) {
                return 0.0;
            }
            let before = (i.saturating_sub(w)..i).map(short).fold(f64::INFINITY, f64::min);
            let fell = if before.is_finite() { short(i) - before } else { 0.0 };
            let dropped = t.connections_dropped.get(i).copied().unwrap_or(0.0);
            fell.max(t.connections_closed_by_server[i] + dropped)
        })
        .collect();
    // The run's own churn: the median and robust deviation of the losses
    // of the seconds in scope.
    let mut usual: Vec<f64> = (0..n).filter(|&i| in_scope(t, i, include_warmup)).map(|i| lost[i]).collect();
    let churn = median(&mut usual.clone());
    for v in usual.iter_mut() {
        *v = (*v - churn).abs();
    }
    // At least one connection's worth, so a run without churn does not
    // make every loss infinitely unlikely.
    let spread = (median(&mut usual) * 1.4826).max(1.0);
    let open_before = |i: usize| t.connections_active[i.saturating_sub(1)].max(1.0);
    let flags: Vec<bool> = (0..n)
        .map(|i| {
            let base = (t.connections_active[i] + lost[i]).max(t.connections_target[i]).max(1.0);
            lost[i] >= p.drop_min_connections as f64
                && lost[i] >= p.drop_min_fraction * base
                && lost[i] > churn + p.drop_mad * spread
        })
        .collect();
    spans(&flags, 1)
        .into_iter()
        .map(|(s, e)| {
            let peak = (s..=e).map(|i| lost[i]).fold(0.0, f64::max);
            let before = open_before(s).max(t.connections_target[s]).max(1.0);
            let fraction = (peak / before).min(1.0);
            let severity = match fraction {
                f if f >= 0.5 => Severity::Critical,
                f if f >= 0.2 => Severity::Warning,
                _ => Severity::Info,
            };
            let failed: f64 = (s..=e).map(|i| t.connections_failed[i]).sum();
            let failed_text =
                if failed > 0.0 { format!("; {failed:.0} attempts to connect failed meanwhile") } else { String::new() };
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
                confidence: confidence(peak - churn, spread),
                rule: format!(
                    "connection_drop: lost within {w} s beyond the plan, >= {} connections, >= {} % of those open and {} robust deviations above the run's churn ({churn:.1} +- {spread:.1} a second)",
                    p.drop_min_connections,
                    p.drop_min_fraction * 100.0,
                    p.drop_mad
                ),
                description: format!(
                    "{peak:.0} connections lost ({:.0}% of {before:.0}) within {} s{failed_text}{cause_text}",
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
}
