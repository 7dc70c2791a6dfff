//! Memory growth judged against the series' own noise: the onset of a
//! rise, the lowest value of each block (a sawtooth's floor stays put, a
//! leak raises it) and a trend test on those ([`crate::trend`]).

use crate::detect::{DetectorParams, median, phase_of, steady_window};
use crate::model::{Finding, FindingKind, Severity, Timeline};
use crate::trend::trend;

/// Memory growth of `series` (MB per second sample) over the steady window,
/// from the best change point on (flat, then rising): see [`growth`].
pub fn memory_growth(t: &Timeline, subject: &str, series: &[f64], p: &DetectorParams) -> Option<Finding> {
    let (first, last) = steady_window(t)?;
    let points: Vec<(f64, f64)> =
        (first..=last).filter(|&i| !series[i].is_nan()).map(|i| (t.elapsed_s[i], series[i])).collect();
    if points.len() < p.leak_min_duration_s.max(8) {
        return None;
    }
    let rising = &points[onset(&points, block_s(points.last()?.0 - points[0].0, p) / 2.0)..];
    let (start, end) = (rising.first()?.0, rising.last()?.0);
    let i_start = t.elapsed_s.iter().position(|&e| e == start).unwrap_or(first);
    let blocks = block_minima(rising, block_s(end - start, p));
    growth(&t.label, subject, &phase_of(t, i_start), &blocks, (start, end), p)
}

/// Most blocks a window is cut into: the trend test is quadratic in them
/// (1,000 blocks: 500,000 pairs, 4 MB), whatever the run's length.
const MAX_BLOCKS: f64 = 1000.0;

/// The block length for a window of `span_s`: a twentieth of it, between
/// 5 s and `--leak-block-s`, and never more than [`MAX_BLOCKS`] blocks.
pub fn block_s(span_s: f64, p: &DetectorParams) -> f64 {
    (span_s / 20.0).clamp(5.0, p.leak_block_s.max(5.0)).max(span_s / MAX_BLOCKS)
}

/// The lowest point of each `block_s` block of `points` (x ascending), at
/// the block's first x. A sawtooth (an allocator or a GC filling and
/// freeing) has the same floor in every block; a leak raises the floor.
pub fn block_minima(points: &[(f64, f64)], block_s: f64) -> Vec<(f64, f64)> {
    let Some(&(x0, _)) = points.first() else { return Vec::new() };
    let mut out: Vec<(f64, f64)> = Vec::new();
    let mut current = f64::NAN;
    for &(x, y) in points {
        let block = ((x - x0) / block_s).floor();
        match out.last_mut() {
            Some(last) if block == current => last.1 = last.1.min(y),
            _ => {
                current = block;
                out.push((x0 + block * block_s, y));
            }
        }
    }
    out
}

/// Whether `blocks` (block minima, MB, of `subject` over `span`) rise
/// beyond their noise: a Mann-Kendall p-value of at most `--leak-alpha`,
/// a Theil-Sen slope whose 95 % interval excludes zero, the later half of
/// the blocks rising too (p < 0.05) at half the pace or more (a leak goes
/// on; a one-off step up does not, nor a process warming up, whose growth
/// slows), and at least `--leak-min-mb-per-hour` projected. Graded by the
/// growth an hour against the memory held: half of it or more is
/// critical, a tenth a warning.
pub fn growth(
    run: &str,
    subject: &str,
    phase: &str,
    blocks: &[(f64, f64)],
    span: (f64, f64),
    p: &DetectorParams,
) -> Option<Finding> {
    let span_s = span.1 - span.0 + 1.0;
    if span_s < p.leak_min_duration_s as f64 || blocks.len() < 8 {
        return None;
    }
    let all = trend(blocks)?;
    let later = trend(&blocks[blocks.len() / 2..])?;
    let per_hour = all.slope * 3600.0;
    if all.p_rising > p.leak_alpha
        || all.slope_low <= 0.0
        || later.p_rising >= 0.05
        || later.slope < all.slope / 2.0
        || per_hour < p.leak_min_mb_per_hour
    {
        return None;
    }
    let mut levels: Vec<f64> = blocks.iter().map(|b| b.1).collect();
    let held = median(&mut levels).max(1e-9);
    let share = per_hour / held;
    let severity = match share {
        s if s >= 0.5 => Severity::Critical,
        s if s >= 0.1 => Severity::Warning,
        _ => Severity::Info,
    };
    let per_min = all.slope * 60.0;
    let block = blocks.get(1).map_or(0.0, |b| b.0 - blocks[0].0);
    Some(Finding {
        run: run.to_string(),
        kind: FindingKind::MemoryGrowth,
        subject: subject.to_string(),
        start_s: span.0,
        end_s: span.1,
        phase: phase.to_string(),
        magnitude: per_min,
        unit: "MB/min".into(),
        severity,
        confidence: 1.0 - all.p_rising,
        rule: format!(
            "memory_growth: Mann-Kendall p <= {} over the lowest value of each {block:.0} s, Theil-Sen 95 % interval above 0, later half rising (p < 0.05) at half the pace or more, >= {} MB per hour",
            p.leak_alpha, p.leak_min_mb_per_hour
        ),
        description: format!(
            "{subject} grows {per_min:.2} MB/min (95 %: {:.2} to {:.2}) over {span_s:.0} s: {per_hour:.0} MB per hour if it goes on, {:.0} % of the {held:.0} MB it holds; Mann-Kendall p = {:.1e}; likely leak",
            all.slope_low * 60.0,
            all.slope_high * 60.0,
            share * 100.0,
            all.p_rising,
        ),
    })
}

/// Index where a flat start turns into a linear rise: the hinge
/// `y = c + s * max(0, x - x_b)` with the least squared error over every
/// candidate `b` at least `min_len` from either end; 0 when one straight
/// line explains the points as well.
fn change_point(points: &[(f64, f64)], min_len: usize) -> usize {
    let n = points.len();
    if n < 4 {
        return 0;
    }
    let sse = hinge_errors(points);
    let min_len = min_len.min(n / 2).max(2);
    let best = (min_len..n - min_len).map(|b| (sse[b], b)).min_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((e, b)) if e < sse[0] * 0.98 => b,
        _ => 0,
    }
}

/// The hinge's squared error for each candidate `b` (index 0: one straight
/// line). Suffix sums keep it linear in the number of points.
fn hinge_errors(points: &[(f64, f64)]) -> Vec<f64> {
    let n = points.len();
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
    (0..n)
        .map(|b| {
            let xb = points[b].0;
            let m = (n - b) as f64;
            let [tx, txx, ty, txy] = suf[b];
            let su = tx - m * xb;
            let suu = txx - 2.0 * xb * tx + m * xb * xb;
            let suy = txy - xb * ty;
            let var_u = suu - su * su / k;
            let cov = suy - su * sy / k;
            if var_u <= 0.0 { var_y } else { var_y - cov * cov / var_u }
        })
        .collect()
}

/// The onset of a rise in `points` (per second), to the second: found on
/// block minima first (on raw seconds a sawtooth's teeth outweigh a slow
/// rise), then placed by the hinge on the seconds within a block of it.
fn onset(points: &[(f64, f64)], block_s: f64) -> usize {
    let coarse = block_minima(points, block_s);
    let b = change_point(&coarse, 3);
    if b == 0 {
        return 0;
    }
    let at = coarse[b].0;
    let near = |i: &usize| (points[*i].0 - at).abs() <= block_s;
    let sse = hinge_errors(points);
    (1..points.len()).filter(near).min_by(|a, b| sse[*a].total_cmp(&sse[*b])).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_week_long_window_is_cut_into_at_most_1000_blocks() {
        let p = DetectorParams::default();
        let week = 7.0 * 86_400.0;
        assert!(week / block_s(week, &p) <= MAX_BLOCKS + 1e-9);
        assert_eq!(block_s(1200.0, &p), 60.0, "20 minutes: a minute");
        assert_eq!(block_s(60.0, &p), 5.0, "a minute: 5 s");
        let points: Vec<(f64, f64)> = (0..604_800).map(|s| (s as f64, 50.0)).collect();
        assert!(block_minima(&points, block_s(week, &p)).len() <= 1000);
    }

    #[test]
    fn change_point_finds_the_onset() {
        let points: Vec<(f64, f64)> =
            (0..200).map(|i| (i as f64, if i < 80 { 50.0 } else { 50.0 + (i - 80) as f64 * 0.5 })).collect();
        let b = change_point(&points, 10);
        assert!((78..=82).contains(&b), "{b}");
        let line: Vec<(f64, f64)> = (0..200).map(|i| (i as f64, i as f64)).collect();
        assert_eq!(change_point(&line, 10), 0);
    }
}
