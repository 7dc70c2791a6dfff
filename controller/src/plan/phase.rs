//! One phase of the schedule: when it runs, how its connection level moves
//! and how its part is split over the workers.

use std::time::Duration;

use stampede_model::{Arrivals, Churn, Ramp, Shape, StageKind, Wave};
use stampede_proto::fleet::PhaseStart;
use stampede_proto::{us, us_or_zero};

use crate::fleet_plan::split;

/// One phase of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    /// Its name in metrics.csv, summary.json and logs (unique in the run).
    pub name: String,
    /// The stage kind that made it; `None`: the fixed `[phases]` table.
    pub kind: Option<StageKind>,
    /// Offset from the run start.
    pub start: Duration,
    /// Length.
    pub duration: Duration,
    /// How the connection count moves, from the phase's start (what its
    /// workers follow).
    pub shape: Shape,
    /// Connections replaced per second while the level holds.
    pub churn: Option<Churn>,
    /// Gets its own verdict from the thresholds over its seconds (the steps
    /// of `steps` and `stress` stages).
    pub judged: bool,
    /// The per-connection message interval of the phase under an open
    /// message model (`load.message_rate`); `None`: the run's.
    pub message_interval: Option<Duration>,
}

impl PhasePlan {
    /// Its name in files and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// End offset from the run start.
    pub fn end(&self) -> Duration {
        self.start + self.duration
    }

    /// Connections it asks for at offset `t` of the run.
    pub(super) fn level_at(&self, t: Duration) -> u64 {
        self.shape.level_at(t.saturating_sub(self.start))
    }

    /// Connections planned at the phase's start.
    pub fn from(&self) -> u64 {
        self.shape.level_at(Duration::ZERO)
    }

    /// Connections planned at the phase's end.
    pub fn to(&self) -> u64 {
        self.shape.level_at(self.duration)
    }

    /// Most connections the phase plans at once.
    pub fn peak(&self) -> u64 {
        self.shape.peak()
    }

    /// The part of this phase that group `g` of groups weighing `weights`
    /// runs: counts split by weight ([`crate::groups::by_weight`], so the
    /// groups' parts add up to the phase's), rates by the same fraction.
    pub fn part(&self, weights: &[u64], g: usize) -> PhasePlan {
        if weights.len() <= 1 {
            return self.clone();
        }
        let count = |n: u64| crate::groups::by_weight(n, weights)[g];
        let fraction = weights[g] as f64 / weights.iter().map(|w| *w as f64).sum::<f64>();
        let shape = match self.shape {
            Shape::Ramp(r) => Shape::Ramp(Ramp { from: count(r.from), to: count(r.to), ..r }),
            Shape::Wave(w) => Shape::Wave(Wave { from: count(w.from), to: count(w.to), ..w }),
            Shape::Arrivals(a) => Shape::Arrivals(Arrivals {
                from_rate: a.from_rate * fraction,
                rate: a.rate * fraction,
                max: count(a.max),
                ..a
            }),
        };
        let churn = self.churn.map(|c| Churn { per_s: c.per_s * fraction });
        PhasePlan { shape, churn, ..self.clone() }
    }

    /// What the phase does, in words, for test.log.
    pub fn describe(&self) -> String {
        let d = self.duration.as_secs_f64();
        let what = match self.shape {
            Shape::Ramp(r) => {
                format!("{} -> {} connections over {:.1} s", r.from, r.to, r.ramp.as_secs_f64())
            }
            Shape::Wave(w) => {
                format!("wave {} <-> {} connections every {:.1} s", w.from, w.to, w.period.as_secs_f64())
            }
            Shape::Arrivals(a) => format!(
                "arrivals {} -> {}/s, each session {:.1} s, at most {} open",
                a.from_rate,
                a.rate,
                a.session.as_secs_f64(),
                a.max
            ),
        };
        let churn = self.churn.map_or(String::new(), |c| format!(", churn {}/s", c.per_s));
        let interval = self
            .message_interval
            .map_or(String::new(), |iv| format!(", message interval {:.3} s", iv.as_secs_f64()));
        format!("{what}{churn}{interval}, lasts {d:.1} s")
    }

    /// The PhaseStart of each worker, `into` the phase (0 unless a worker
    /// rejoined): counts split by capacity ([`split`], so the shares add
    /// up to the fleet's), rates in proportion to each worker's share of the
    /// count they go with, so the fleet's rates are the phase's.
    pub fn commands(&self, index: usize, capacities: &[u64], into: Duration) -> Vec<PhaseStart> {
        let shares = |total: u64| split(total, capacities).unwrap_or_else(|| capacities.to_vec());
        let base = PhaseStart {
            index: index as u32,
            name: self.name.clone(),
            duration_us: us(self.duration),
            message_interval_us: us_or_zero(self.message_interval),
            offset_us: us(into),
            ..Default::default()
        };
        let part = |rate: f64, share: u64, total: u64| {
            if total > 0 { rate * share as f64 / total as f64 } else { 0.0 }
        };
        match self.shape {
            Shape::Ramp(r) => shares(r.to)
                .into_iter()
                .map(|share| PhaseStart {
                    connections: share,
                    ramp_us: us(r.ramp.saturating_sub(into)),
                    churn_per_s: self.churn.map_or(0.0, |c| part(c.per_s, share, r.to)),
                    ..base.clone()
                })
                .collect(),
            Shape::Wave(w) => shares(w.from)
                .into_iter()
                .zip(shares(w.to))
                .map(|(low, high)| PhaseStart {
                    connections: high,
                    wave_low: low,
                    wave_period_us: us(w.period),
                    ..base.clone()
                })
                .collect(),
            Shape::Arrivals(a) => shares(a.max)
                .into_iter()
                .map(|max| PhaseStart {
                    connections: max,
                    arrival_from_per_s: part(a.from_rate, max, a.max),
                    arrival_per_s: part(a.rate, max, a.max),
                    session_us: us(a.session),
                    duration_us: us(a.ramp),
                    ..base.clone()
                })
                .collect(),
        }
    }
}
