//! Phases and the load shape. The controller's plan computes the level it
//! expects and each worker ramps its connections with the same
//! [`Ramp::level_at`], so "planned" and "asked for" cannot drift apart.

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
    fn phase_names_round_trip_and_errors_list_them() {
        for p in Phase::ALL {
            assert_eq!(p.name().parse::<Phase>(), Ok(p));
        }
        let err = "steady".parse::<Phase>().unwrap_err();
        assert!(err.contains("warmup, ramp-up, sustained, cooldown"), "{err}");
    }
}
