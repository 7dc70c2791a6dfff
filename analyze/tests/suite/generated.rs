//! Recall and false alarms of the detectors, measured on many generated
//! runs rather than single cases. Each run has realistic noise: a latency
//! baseline that drifts, one-second blips, memory that fills and frees in
//! a sawtooth (an allocator or a GC), connections that churn, ramps in and
//! out; and at most one subtle anomaly, at a random time. The figures are
//! printed (`cargo test -p stampede-analyze generated -- --nocapture`).

use stampede_analyze::detect::{self, DetectorParams};
use stampede_analyze::model::{Finding, FindingKind, Timeline};

use crate::common::{phase_of, planned};

/// A deterministic generator (SplitMix64), one per run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn between(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * self.uniform()).cos()
    }

    /// Poisson with a small mean (Knuth).
    fn poisson(&mut self, mean: f64) -> f64 {
        let (limit, mut k, mut p) = ((-mean).exp(), 0.0, 1.0);
        loop {
            p *= self.uniform();
            if p <= limit {
                return k;
            }
            k += 1.0;
        }
    }
}

/// The one anomaly a run may carry.
#[derive(Debug, Clone, Copy)]
enum Anomaly {
    /// p95 times `factor` for `length_s` seconds from `at`.
    Latency { at: usize, length_s: usize, factor: f64 },
    /// Workers' memory rising `mb_per_min` from `at` on.
    Leak { at: usize, mb_per_min: f64 },
    /// `fraction` of the connections closed by the server at `at`, not reopened.
    Drop { at: usize, fraction: f64 },
}

/// A run of `seconds` with the noise of seed `seed`, and `anomaly`.
fn generate(seconds: usize, seed: u64, anomaly: Option<Anomaly>) -> Timeline {
    let mut rng = Rng(seed);
    let mut t = Timeline { label: format!("generated-{seed}"), ..Default::default() };
    // Each run its own noise: how much the baseline drifts, the sawtooth's
    // period and height, how many connections churn.
    let base = rng.between(1.0, 5.0);
    let jitter = rng.between(0.03, 0.1);
    let period = rng.between(20.0, 90.0);
    let tooth = rng.between(1.0, 8.0);
    let held = rng.between(40.0, 400.0);
    let churn = rng.between(0.2, 3.0);
    let (mut drift, mut lost, mut phase_in_tooth) = (0.0f64, 0.0, rng.between(0.0, period));
    for s in 0..seconds {
        let (phase, target) = (phase_of(s, seconds), planned(s, seconds));
        // Churn: connections reset and reopened, a few not yet back.
        let churned = rng.poisson(churn);
        let pending = (churned * rng.uniform()).round();
        let mut closed = 0.0;
        if let Some(Anomaly::Drop { at, fraction }) = anomaly
            && s == at
        {
            closed = (t.connections_active.last().copied().unwrap_or(target) * fraction).round();
            lost += closed;
        }
        let active = (target - lost - pending).max(0.0);
        // Latency: a mean-reverting drift of the baseline, noise, blips.
        drift = 0.995 * drift + 0.01 * rng.normal();
        let mut p95 = base * drift.exp() * (1.0 + jitter * rng.normal()).max(0.2);
        if rng.uniform() < 1.0 / 300.0 {
            p95 *= rng.between(1.5, 4.0);
        }
        if let Some(Anomaly::Latency { at, length_s, factor }) = anomaly
            && (at..at + length_s).contains(&s)
        {
            p95 *= factor;
        }
        // Memory: a sawtooth (fill, then free at once) over what is held.
        phase_in_tooth = (phase_in_tooth + 1.0) % period;
        let mut rss = held + tooth * phase_in_tooth / period + 0.2 * rng.normal() + active * 0.004;
        if let Some(Anomaly::Leak { at, mb_per_min }) = anomaly
            && s >= at
        {
            rss += (s - at) as f64 * mb_per_min / 60.0;
        }
        t.elapsed_s.push(s as f64);
        t.phase.push(phase.into());
        t.latency_p50_ms.push(p95 / 2.0);
        t.latency_p95_ms.push(p95);
        t.latency_p99_ms.push(p95 * 1.3);
        t.latency_max_ms.push(p95 * 2.0);
        t.connections_target.push(target);
        t.connections_active.push(active);
        t.connections_opened.push(churned);
        t.connections_failed.push(0.0);
        t.connections_closed_by_server.push(closed);
        t.connections_dropped.push(churned);
        t.messages_sent.push(active);
        t.messages_received.push(active);
        t.errors.push(churned + closed);
        t.worker_rss_mb.push(rss);
        t.worker_cpu_pct.push(20.0);
        t.target_rss_mb.push(f64::NAN);
        t.target_cpu_pct.push(f64::NAN);
        t.generator_stalled.push(false);
    }
    t
}

/// What the detectors find in `t`, as `analyze` runs them.
fn findings(t: &Timeline) -> Vec<Finding> {
    let p = DetectorParams::default();
    let mut f = detect::latency_spikes(t, "latency_p95_ms", &t.latency_p95_ms, &p, false);
    f.extend(detect::memory_growth(t, "worker_rss_mb", &t.worker_rss_mb, &p));
    f.extend(detect::connection_drops(t, "", &p, false));
    f
}

/// Whether `f` is `anomaly`, found at the right time.
fn is_found(f: &Finding, anomaly: Anomaly) -> bool {
    let covers = |at: usize, slack: f64| f.start_s <= at as f64 + slack && f.end_s >= at as f64 - slack;
    match anomaly {
        Anomaly::Latency { at, length_s, .. } => {
            f.kind == FindingKind::LatencySpike && covers(at, 2.0) && covers(at + length_s - 1, 2.0)
        }
        // Its slope within a quarter; the onset found within two judging
        // blocks (120 s before, 90 s after: a short flat start before a
        // slow rise is not told apart from noise), the rise to the end.
        Anomaly::Leak { at, mb_per_min } => {
            f.kind == FindingKind::MemoryGrowth
                && (f.magnitude - mb_per_min).abs() <= mb_per_min / 4.0
                && (-120.0..=90.0).contains(&(f.start_s - at as f64))
                && f.end_s >= at as f64 + 1000.0
        }
        Anomaly::Drop { at, .. } => f.kind == FindingKind::ConnectionDrop && covers(at, 2.0),
    }
}

/// Recall over `runs` runs of `seconds` with `make(rng)`'s anomaly; also
/// counts findings other than the anomaly (false alarms).
fn recall(name: &str, runs: u64, seconds: usize, make: impl Fn(&mut Rng) -> Anomaly) -> (f64, usize) {
    let (mut found, mut false_alarms) = (0, 0);
    for seed in 0..runs {
        let anomaly = make(&mut Rng(seed ^ 0xA5A5));
        let f = findings(&generate(seconds, 1000 + seed, Some(anomaly)));
        let hits = f.iter().filter(|f| is_found(f, anomaly)).count();
        if hits > 0 {
            found += 1;
        } else {
            eprintln!("{name}: missed {anomaly:?} (seed {seed}): {f:#?}");
        }
        false_alarms += f.len() - hits;
    }
    let rate = found as f64 / runs as f64;
    eprintln!(
        "{name}: found in {found} of {runs} runs ({:.1} %), {false_alarms} other findings",
        rate * 100.0
    );
    (rate, false_alarms)
}

#[test]
fn clean_runs_give_at_most_one_false_alarm_an_hour() {
    let hours = 12;
    let mut alarms = Vec::new();
    for seed in 0..hours {
        alarms.extend(findings(&generate(3600, seed, None)));
    }
    eprintln!("clean: {} findings in {hours} generated hours", alarms.len());
    assert!(alarms.len() <= hours as usize, "{alarms:#?}");
}

#[test]
fn a_2x_latency_rise_for_5_s_is_found() {
    let (rate, others) = recall("2x latency for 5 s", 60, 900, |r| Anomaly::Latency {
        at: r.between(120.0, 840.0) as usize,
        length_s: 5,
        factor: 2.0,
    });
    assert!(rate >= 0.95, "recall {rate}");
    assert!(others <= 2, "{others} other findings in 60 runs of 15 min");
}

#[test]
fn a_leak_of_0_8_mb_per_min_over_20_minutes_is_found() {
    // 25 minutes in all: the leak starts in the first 3 minutes of the
    // sustained phase and lasts at least 20.
    let (rate, others) = recall("0.8 MB/min leak", 40, 1500, |r| Anomaly::Leak {
        at: r.between(90.0, 270.0) as usize,
        mb_per_min: 0.8,
    });
    assert!(rate >= 0.95, "recall {rate}");
    assert!(others <= 2, "{others} other findings in 40 runs of 25 min");
}

#[test]
fn a_6_percent_connection_drop_is_found() {
    let (rate, others) = recall("6 % drop", 60, 900, |r| Anomaly::Drop {
        at: r.between(120.0, 840.0) as usize,
        fraction: 0.06,
    });
    assert!(rate >= 0.95, "recall {rate}");
    assert!(others <= 2, "{others} other findings in 60 runs of 15 min");
}

#[test]
fn a_short_tall_spike_is_a_blip_of_low_severity() {
    let mut hits = 0;
    for seed in 0..20 {
        let at = 300 + seed as usize * 10;
        let t = generate(900, 500 + seed, Some(Anomaly::Latency { at, length_s: 2, factor: 12.0 }));
        let f = findings(&t);
        let blips: Vec<_> = f.iter().filter(|f| f.kind == FindingKind::LatencyBlip).collect();
        if blips.iter().any(|b| (b.start_s - at as f64).abs() <= 1.0) {
            hits += 1;
            assert!(
                blips.iter().all(|b| b.severity == stampede_analyze::model::Severity::Info),
                "{blips:#?}"
            );
        }
        assert!(!f.iter().any(|f| f.kind == FindingKind::LatencySpike), "not promoted to a spike: {f:#?}");
    }
    eprintln!("blip: found in {hits} of 20 runs");
    assert!(hits >= 19, "{hits} of 20");
}

#[test]
fn every_finding_says_how_sure_and_which_rule() {
    let t = generate(1500, 7, Some(Anomaly::Leak { at: 120, mb_per_min: 3.0 }));
    let mut f = findings(&t);
    f.extend(findings(&generate(900, 8, Some(Anomaly::Drop { at: 400, fraction: 0.2 }))));
    f.extend(findings(&generate(900, 9, Some(Anomaly::Latency { at: 400, length_s: 8, factor: 5.0 }))));
    let kinds: std::collections::BTreeSet<_> = f.iter().map(|f| f.kind).collect();
    assert_eq!(kinds.len(), 3, "{f:#?}");
    for f in &f {
        assert!(f.confidence > 0.99 && f.confidence <= 1.0, "{f:#?}");
        assert!(f.rule.starts_with(f.kind.name()), "{f:#?}");
    }
}
