//! Whether a series trends, judged against its own noise: the Mann-Kendall
//! test (is there a monotone trend, and how sure are we) and the Theil-Sen
//! slope with its confidence interval (how steep). Both rank-based, so an
//! outlier or a skewed noise does not make a trend, and neither assumes a
//! straight line. References: Kendall, *Rank Correlation Methods* (1975);
//! Sen, J. Am. Stat. Assoc. 63 (1968) 1379-1389; Gilbert, *Statistical
//! Methods for Environmental Pollution Monitoring* (1987), ch. 16.

/// A trend in `(x, y)` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Trend {
    /// Theil-Sen slope: the median of the pairwise slopes, y per x.
    pub slope: f64,
    /// Its confidence interval at [`Trend::level`].
    pub slope_low: f64,
    pub slope_high: f64,
    /// The level of that interval (0.95).
    pub level: f64,
    /// Mann-Kendall one-sided p-value for a rise: the chance that points
    /// without any trend rank at least this monotone.
    pub p_rising: f64,
}

/// The confidence level of the slope's interval.
pub const LEVEL: f64 = 0.95;

/// The trend of `points` (at most a few thousand: the work is quadratic);
/// `None` for fewer than 4 points or all at one `x`.
pub fn trend(points: &[(f64, f64)]) -> Option<Trend> {
    let n = points.len();
    if n < 4 {
        return None;
    }
    let mut s = 0i64;
    let mut slopes = Vec::with_capacity(n * (n - 1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            s += match (b.1 - a.1).partial_cmp(&0.0) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(f64::total_cmp);
    let var_s = variance_of_s(points);
    // Continuity-corrected normal approximation (Gilbert 16.4).
    let z = if s > 0 {
        (s - 1) as f64 / var_s.sqrt()
    } else if s < 0 {
        (s + 1) as f64 / var_s.sqrt()
    } else {
        0.0
    };
    let p_rising = upper_tail(z);
    // Sen's interval: the ranks of the pairwise slopes that bound it.
    let m = slopes.len() as f64;
    let c = z_of(1.0 - (1.0 - LEVEL) / 2.0) * var_s.sqrt();
    let rank = |r: f64| slopes[(r.round().max(1.0) as usize - 1).min(slopes.len() - 1)];
    Some(Trend {
        slope: median_sorted(&slopes),
        slope_low: rank((m - c) / 2.0),
        slope_high: rank((m + c) / 2.0 + 1.0),
        level: LEVEL,
        p_rising,
    })
}

/// Var(S) under no trend, corrected for tied values.
fn variance_of_s(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mut ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    ys.sort_by(f64::total_cmp);
    let mut ties = 0.0;
    let mut run = 1.0;
    for w in ys.windows(2) {
        if w[0] == w[1] {
            run += 1.0;
        } else {
            ties += run * (run - 1.0) * (2.0 * run + 5.0);
            run = 1.0;
        }
    }
    ties += run * (run - 1.0) * (2.0 * run + 5.0);
    ((n * (n - 1.0) * (2.0 * n + 5.0) - ties) / 18.0).max(1e-12)
}

fn median_sorted(v: &[f64]) -> f64 {
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

/// P(Z > z) for a standard normal Z.
pub fn upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The standard normal quantile: `z` with P(Z <= z) = `q`, by bisection on
/// [`upper_tail`] (exact to 1e-9; only a few values are ever asked).
pub fn z_of(q: f64) -> f64 {
    let (mut lo, mut hi) = (-40.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if 1.0 - upper_tail(mid) < q { lo = mid } else { hi = mid }
    }
    (lo + hi) / 2.0
}

/// The complementary error function, to ~1e-7 relative (Numerical Recipes'
/// Chebyshev fit, `erfcc`, Press et al. 1992, 6.2).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_tail_matches_its_table() {
        for (z, p) in
            [(0.0, 0.5), (1.0, 0.158_655_25), (1.959_964, 0.025), (3.090_232, 0.001), (-1.0, 0.841_344_75)]
        {
            assert!((upper_tail(z) - p).abs() < 1e-6, "P(Z > {z}) = {} not {p}", upper_tail(z));
        }
        assert!((z_of(0.975) - 1.959_964).abs() < 1e-5);
    }

    #[test]
    fn a_line_has_its_slope_and_a_tiny_p() {
        let points: Vec<(f64, f64)> = (0..30).map(|i| (i as f64 * 10.0, 5.0 + i as f64 * 2.0)).collect();
        let t = trend(&points).unwrap();
        assert_eq!((t.slope, t.slope_low, t.slope_high), (0.2, 0.2, 0.2));
        assert!(t.p_rising < 1e-9, "{t:?}");
    }

    #[test]
    fn a_fall_or_no_trend_is_not_a_rise() {
        let falling: Vec<(f64, f64)> = (0..30).map(|i| (i as f64, -(i as f64))).collect();
        assert!(trend(&falling).unwrap().p_rising > 0.999);
        // Alternating values: S is 0 or close to it.
        let flat: Vec<(f64, f64)> = (0..30).map(|i| (i as f64, (i % 2) as f64)).collect();
        let t = trend(&flat).unwrap();
        assert!(t.p_rising > 0.3 && t.slope_low <= 0.0 && t.slope_high >= 0.0, "{t:?}");
        let constant: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0)).collect();
        assert!((trend(&constant).unwrap().p_rising - 0.5).abs() < 1e-6);
    }

    #[test]
    fn degenerate_input_gives_none() {
        assert_eq!(trend(&[(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]), None);
        assert_eq!(trend(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0), (1.0, 4.0)]), None);
    }

    #[test]
    fn one_outlier_does_not_move_the_slope() {
        let mut points: Vec<(f64, f64)> = (0..40).map(|i| (i as f64, i as f64 * 0.5)).collect();
        points[20].1 = 1e6;
        assert!((trend(&points).unwrap().slope - 0.5).abs() < 1e-9);
    }
}
