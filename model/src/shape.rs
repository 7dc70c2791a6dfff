//! Phases and the load shape. The controller's plan computes the level it
//! expects and each worker moves its connections with the same functions
//! ([`Shape::level_at`], [`Churn::due_between`], [`Arrivals::due_between`]),
//! so "planned" and "asked for" cannot drift apart.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The phases of a run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// A few connections, to warm caches and connection pools.
    Warmup,
    /// Linear ramp to the full connection count.
    RampUp,
    /// Hold the full count.
    Sustained,
    /// Ramp down to zero, closing connections gracefully.
    Cooldown,
}

impl Phase {
    /// Every phase, in run order.
    pub const ALL: [Phase; 4] = [Phase::Warmup, Phase::RampUp, Phase::Sustained, Phase::Cooldown];

    /// The name used in scenarios, results files and flags.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Warmup => "warmup",
            Phase::RampUp => "ramp-up",
            Phase::Sustained => "sustained",
            Phase::Cooldown => "cooldown",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Phase {
    type Err = String;

    /// Parses a phase name; the error lists the valid ones.
    fn from_str(s: &str) -> Result<Phase, String> {
        Phase::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Phase::ALL.iter().map(|p| p.name()).collect();
            format!("unknown phase {s:?}: the phases are {}", names.join(", "))
        })
    }
}

/// A linear move of the connection count from `from` to `to` over `ramp`,
/// then a hold at `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// Connections at the start.
    pub from: u64,
    /// Connections at the end of the ramp and after.
    pub to: u64,
    /// Time to move from `from` to `to` (zero: a step).
    pub ramp: Duration,
}

impl Ramp {
    /// Connections asked for `elapsed` after the ramp began (rounded to the
    /// nearest whole connection).
    pub fn level_at(&self, elapsed: Duration) -> u64 {
        if self.ramp.is_zero() || elapsed >= self.ramp {
            return self.to;
        }
        let f = elapsed.as_secs_f64() / self.ramp.as_secs_f64();
        (self.from as f64 + (self.to as f64 - self.from as f64) * f).round() as u64
    }
}

/// The kinds of stage a scenario's `[[stage]]` list may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StageKind {
    /// A linear move to a level.
    Ramp,
    /// Keep the level.
    Hold,
    /// An instant jump, a hold, an instant return.
    Spike,
    /// A list of levels, each held for a step (each its own phase and verdict).
    Steps,
    /// Up and down between two levels, periodically.
    Wave,
    /// Hold a level while closing and reopening connections at a rate.
    Churn,
    /// A long hold.
    Soak,
    /// Sessions arriving at a rate, each living a fixed time (open model).
    Arrivals,
    /// Rising steps until a threshold fails: the breaking point.
    Stress,
}

impl StageKind {
    /// Every kind, in documentation order.
    pub const ALL: [StageKind; 9] = [
        StageKind::Ramp,
        StageKind::Hold,
        StageKind::Spike,
        StageKind::Steps,
        StageKind::Wave,
        StageKind::Churn,
        StageKind::Soak,
        StageKind::Arrivals,
        StageKind::Stress,
    ];

    /// The name written in scenarios (`kind = "ramp"`).
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Ramp => "ramp",
            StageKind::Hold => "hold",
            StageKind::Spike => "spike",
            StageKind::Steps => "steps",
            StageKind::Wave => "wave",
            StageKind::Churn => "churn",
            StageKind::Soak => "soak",
            StageKind::Arrivals => "arrivals",
            StageKind::Stress => "stress",
        }
    }
}

impl fmt::Display for StageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for StageKind {
    type Err = String;

    /// Parses a kind; `progressive` is another name for `steps`. The error
    /// lists the kinds.
    fn from_str(s: &str) -> Result<StageKind, String> {
        if s == "progressive" {
            return Ok(StageKind::Steps);
        }
        StageKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = StageKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown stage kind {s:?}: the kinds are {}", names.join(", "))
        })
    }
}

/// A triangle wave: from `from` linearly to `to` in half a `period`, back
/// to `from` in the other half, and again. Linear legs keep the rate of
/// connects (and of closes) steady, as a ramp does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wave {
    /// Level at the start of each period.
    pub from: u64,
    /// Level half way through each period.
    pub to: u64,
    /// Length of one up-and-down (above zero).
    pub period: Duration,
}

impl Wave {
    /// Connections asked for `elapsed` after the wave began (rounded).
    pub fn level_at(&self, elapsed: Duration) -> u64 {
        if self.period.is_zero() {
            return self.from;
        }
        let phase = (elapsed.as_secs_f64() / self.period.as_secs_f64()).fract();
        let up = if phase < 0.5 { phase * 2.0 } else { (1.0 - phase) * 2.0 };
        (self.from as f64 + (self.to as f64 - self.from as f64) * up).round() as u64
    }
}

/// Connections closed (gracefully) and replaced at a steady rate while a
/// level holds. Counting whole events from the cumulative count, not per
/// tick, keeps a fractional rate exact over time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// Connections replaced per second.
    pub per_s: f64,
}

impl Churn {
    /// Replacements due in `(t0, t1]` of the phase.
    pub fn due_between(&self, t0: Duration, t1: Duration) -> u64 {
        whole_between(|t| self.per_s * t.as_secs_f64(), t0, t1)
    }
}

/// Whole events between two points of a cumulative count.
fn whole_between(cumulative: impl Fn(Duration) -> f64, t0: Duration, t1: Duration) -> u64 {
    if t1 <= t0 {
        return 0;
    }
    (cumulative(t1).floor() - cumulative(t0).floor()).max(0.0) as u64
}

/// The open model (k6's ramping-arrival-rate): new sessions arrive at a rate
/// moving linearly from `from_rate` to `rate` over `ramp` (then staying at
/// `rate`), each lives `session`, and at most `max` are open at once. The
/// number of connections is an outcome; [`Arrivals::level_at`] is what the
/// plan expects of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrivals {
    /// Arrivals per second at the start.
    pub from_rate: f64,
    /// Arrivals per second at the end of the ramp and after.
    pub rate: f64,
    /// Time to move from `from_rate` to `rate` (zero: `rate` at once).
    pub ramp: Duration,
    /// How long each session lives.
    pub session: Duration,
    /// Most sessions open at once; arrivals beyond are dropped (and counted).
    pub max: u64,
}

impl Arrivals {
    /// Arrivals per second `t` into the phase.
    pub fn rate_at(&self, t: Duration) -> f64 {
        if self.ramp.is_zero() || t >= self.ramp {
            return self.rate;
        }
        let f = t.as_secs_f64() / self.ramp.as_secs_f64();
        self.from_rate + (self.rate - self.from_rate) * f
    }

    /// Sessions arrived by `t` (the integral of the rate), fractional.
    pub fn arrived_by(&self, t: Duration) -> f64 {
        let ramp = self.ramp.as_secs_f64();
        let t = t.as_secs_f64();
        let within = t.min(ramp);
        // Trapezoid under the linear part, then a rectangle.
        let during = if ramp > 0.0 {
            self.from_rate * within + (self.rate - self.from_rate) * within * within / (2.0 * ramp)
        } else {
            0.0
        };
        during + self.rate * (t - within).max(0.0)
    }

    /// Whole arrivals due in `(t0, t1]` of the phase.
    pub fn due_between(&self, t0: Duration, t1: Duration) -> u64 {
        whole_between(|t| self.arrived_by(t), t0, t1)
    }

    /// Sessions expected open `t` into the phase: those that arrived in the
    /// last `session` (Little's law), at most `max`.
    pub fn level_at(&self, t: Duration) -> u64 {
        let open = self.arrived_by(t) - self.arrived_by(t.saturating_sub(self.session));
        (open.round().max(0.0) as u64).min(self.max)
    }
}

/// How a phase moves the connection count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// A linear move, then a hold (ramp, hold, soak, spike, steps, churn, stress).
    Ramp(Ramp),
    /// Up and down periodically.
    Wave(Wave),
    /// Sessions arriving at a rate; the level is an outcome.
    Arrivals(Arrivals),
}

impl Shape {
    /// Connections asked for (for arrivals: expected) `elapsed` into the phase.
    pub fn level_at(&self, elapsed: Duration) -> u64 {
        match self {
            Shape::Ramp(r) => r.level_at(elapsed),
            Shape::Wave(w) => w.level_at(elapsed),
            Shape::Arrivals(a) => a.level_at(elapsed),
        }
    }

    /// Most connections the phase may hold at once.
    pub fn peak(&self) -> u64 {
        match self {
            Shape::Ramp(r) => r.from.max(r.to),
            Shape::Wave(w) => w.from.max(w.to),
            Shape::Arrivals(a) => a.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_is_linear_and_ends_at_its_target() {
        let s = Duration::from_secs;
        let up = Ramp { from: 10, to: 110, ramp: s(10) };
        assert_eq!(up.level_at(s(0)), 10);
        assert_eq!(up.level_at(s(5)), 60);
        assert_eq!(up.level_at(s(11)), 110);
        let down = Ramp { from: 100, to: 0, ramp: s(4) };
        assert_eq!(down.level_at(s(1)), 75);
        let step = Ramp { from: 0, to: 7, ramp: Duration::ZERO };
        assert_eq!(step.level_at(s(0)), 7);
    }

    #[test]
    fn wave_goes_up_and_down_each_period() {
        let ms = Duration::from_millis;
        let w = Wave { from: 10, to: 110, period: ms(4000) };
        let levels: Vec<u64> = [0, 1000, 2000, 3000, 4000, 5000, 6000].map(|t| w.level_at(ms(t))).to_vec();
        assert_eq!(levels, [10, 60, 110, 60, 10, 60, 110]);
        let down = Wave { from: 100, to: 0, period: ms(2000) };
        assert_eq!(down.level_at(ms(500)), 50);
        assert_eq!(down.level_at(ms(1000)), 0);
    }

    #[test]
    fn churn_counts_whole_replacements_without_drift() {
        let c = Churn { per_s: 2.5 };
        let ms = Duration::from_millis;
        // 10 ms ticks over 4 s add up to exactly 10, whatever the tick.
        let total: u64 = (0..400).map(|i| c.due_between(ms(i * 10), ms(i * 10 + 10))).sum();
        assert_eq!(total, 10);
        assert_eq!(c.due_between(ms(0), ms(399)), 0);
        assert_eq!(c.due_between(ms(0), ms(400)), 1);
        assert_eq!(c.due_between(ms(500), ms(400)), 0, "time never runs back");
    }

    #[test]
    fn arrivals_ramp_their_rate_and_expect_littles_law() {
        let s = Duration::from_secs;
        let a = Arrivals { from_rate: 0.0, rate: 10.0, ramp: s(10), session: s(2), max: 1000 };
        assert_eq!(a.rate_at(s(5)), 5.0);
        assert_eq!(a.rate_at(s(20)), 10.0);
        assert!((a.arrived_by(s(10)) - 50.0).abs() < 1e-9, "half of 10/s over the 10 s ramp");
        assert!((a.arrived_by(s(12)) - 70.0).abs() < 1e-9);
        assert_eq!(a.due_between(s(10), s(12)), 20);
        let ticks: u64 = (0..1200u32).map(|i| a.due_between(i * s(1) / 100, (i + 1) * s(1) / 100)).sum();
        assert_eq!(ticks, 70, "10 ms ticks add up to the integral");
        assert_eq!(a.level_at(s(20)), 20, "10/s living 2 s: 20 open");
        assert_eq!(a.level_at(s(5)), 8, "arrived in (3 s, 5 s]: 12.5 - 4.5");
        let capped = Arrivals { max: 15, ..a };
        assert_eq!(capped.level_at(s(20)), 15, "never above the cap");
        let flat = Arrivals { from_rate: 3.0, rate: 3.0, ramp: Duration::ZERO, session: s(10), max: 100 };
        assert_eq!(flat.level_at(s(4)), 12, "before a whole session has passed");
        assert_eq!(flat.level_at(s(40)), 30);
    }

    #[test]
    fn shapes_give_their_level_and_peak() {
        let s = Duration::from_secs;
        let ramp = Shape::Ramp(Ramp { from: 100, to: 0, ramp: s(10) });
        assert_eq!((ramp.level_at(s(5)), ramp.peak()), (50, 100));
        let wave = Shape::Wave(Wave { from: 5, to: 50, period: s(10) });
        assert_eq!((wave.level_at(s(5)), wave.peak()), (50, 50));
        let arrivals =
            Shape::Arrivals(Arrivals { from_rate: 1.0, rate: 1.0, ramp: s(0), session: s(5), max: 3 });
        assert_eq!((arrivals.level_at(s(9)), arrivals.peak()), (3, 3));
    }

    #[test]
    fn stage_kinds_round_trip_and_errors_list_them() {
        for k in StageKind::ALL {
            assert_eq!(k.name().parse::<StageKind>(), Ok(k));
        }
        assert_eq!("progressive".parse::<StageKind>(), Ok(StageKind::Steps));
        let err = "surge".parse::<StageKind>().unwrap_err();
        assert!(err.contains("ramp, hold, spike, steps, wave, churn, soak, arrivals, stress"), "{err}");
    }

    #[test]
    fn phase_names_round_trip_and_errors_list_them() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>(), Ok(p));
        }
        let err = "steady".parse::<Phase>().unwrap_err();
        assert!(err.contains("warmup, ramp-up, sustained, cooldown"), "{err}");
    }
}
