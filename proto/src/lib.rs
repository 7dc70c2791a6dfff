//! The controller <-> worker gRPC protocol (`fleet`), and the conversions
//! between its messages and the model's types: the one place where wire
//! microseconds become durations, 0 becomes "none" and counters travel by
//! name.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use stampede_model::Counters;

pub mod auth;
pub mod transport;

/// Generated from `proto/fleet.proto`.
#[allow(missing_docs, clippy::all)]
pub mod fleet {
    tonic::include_proto!("stampede.fleet.v1");
}

/// Version of the fleet protocol a worker announces in its Hello; the
/// controller refuses workers that speak another one.
pub const PROTOCOL_VERSION: u32 = 3;

/// A message that does not fit the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A counter name the model does not know (a worker of another version).
    #[error("unknown counter {0:?}")]
    UnknownCounter(String),
}

/// Counters as the wire carries them: by name, zeros left out.
pub fn counters_to_wire(c: &Counters) -> HashMap<String, u64> {
    c.iter().filter(|(_, v)| *v > 0).map(|(k, v)| (k.to_string(), v)).collect()
}

/// Counters from the wire.
pub fn counters_from_wire(m: &HashMap<String, u64>) -> Result<Counters, WireError> {
    Counters::from_pairs(m.iter().map(|(k, v)| (k.as_str(), *v))).map_err(WireError::UnknownCounter)
}

/// Microseconds on the wire as a duration, 0 as none.
pub fn optional_us(us: u64) -> Option<Duration> {
    (us > 0).then(|| Duration::from_micros(us))
}

/// A duration as wire microseconds, none as 0.
pub fn us_or_zero(d: Option<Duration>) -> u64 {
    d.map_or(0, us)
}

/// A duration as wire microseconds (saturating at the wire's range).
pub fn us(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

impl fleet::Assign {
    /// Time between two messages on one connection; `None`: connect only.
    pub fn message_interval(&self) -> Option<Duration> {
        optional_us(self.message_interval_us)
    }

    /// Limit for TCP connect plus upgrade.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_micros(self.connect_timeout_us)
    }

    /// How connections are opened and what they do.
    pub fn connect_spec(&self) -> Result<stampede_model::ConnectSpec, String> {
        stampede_model::ConnectSpec::from_json(&self.connect_spec_json)
    }
}

impl fleet::PhaseStart {
    /// The move this phase asks of the worker, from `from` connections.
    pub fn ramp_from(&self, from: u64) -> stampede_model::Ramp {
        stampede_model::Ramp { from, to: self.connections, ramp: Duration::from_micros(self.ramp_us) }
    }

    /// The shape this phase asks the worker to follow, from `from`
    /// connections: arrivals, a wave, or a linear move.
    pub fn shape_from(&self, from: u64) -> stampede_model::Shape {
        use stampede_model::{Arrivals, Shape, Wave};
        if self.arrival_per_s > 0.0 {
            return Shape::Arrivals(Arrivals {
                from_rate: self.arrival_from_per_s.max(0.0),
                rate: self.arrival_per_s,
                ramp: Duration::from_micros(self.duration_us),
                session: Duration::from_micros(self.session_us),
                max: self.connections,
            });
        }
        if self.wave_period_us > 0 {
            return Shape::Wave(Wave {
                from: self.wave_low,
                to: self.connections,
                period: Duration::from_micros(self.wave_period_us),
            });
        }
        Shape::Ramp(self.ramp_from(from))
    }

    /// Connections replaced per second while holding; `None`: no churn.
    pub fn churn(&self) -> Option<stampede_model::Churn> {
        (self.churn_per_s > 0.0).then_some(stampede_model::Churn { per_s: self.churn_per_s })
    }

    /// The per-connection message interval from now on; `None`: unchanged.
    pub fn message_interval(&self) -> Option<Duration> {
        optional_us(self.message_interval_us)
    }

    /// How far into the phase this command comes.
    pub fn offset(&self) -> Duration {
        Duration::from_micros(self.offset_us)
    }
}

impl fleet::Snapshot {
    /// The snapshot's counters.
    pub fn model_counters(&self) -> Result<Counters, WireError> {
        counters_from_wire(&self.counters)
    }

    /// How late the worker took it.
    pub fn taken_late(&self) -> Duration {
        Duration::from_micros(self.taken_late_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_cross_the_wire_by_name() {
        let c = Counters { messages_sent: 7, messages_duplicated: 2, ..Default::default() };
        let wire = counters_to_wire(&c);
        assert_eq!(wire.len(), 2, "zeros stay off the wire");
        assert_eq!(counters_from_wire(&wire), Ok(c));
        let foreign: HashMap<String, u64> = [("bogus".to_string(), 1)].into();
        assert_eq!(counters_from_wire(&foreign), Err(WireError::UnknownCounter("bogus".into())));
        assert_eq!(optional_us(0), None);
        assert_eq!(us_or_zero(optional_us(1500)), 1500);
    }

    #[test]
    fn a_phase_start_says_which_shape_to_follow() {
        use stampede_model::{Ramp, Shape};
        let plain = fleet::PhaseStart { connections: 50, ramp_us: 2_000_000, ..Default::default() };
        assert_eq!(
            plain.shape_from(10),
            Shape::Ramp(Ramp { from: 10, to: 50, ramp: Duration::from_secs(2) }),
            "zero extras: the linear move of protocol 2"
        );
        assert_eq!((plain.churn(), plain.message_interval()), (None, None));
        let wave = fleet::PhaseStart { connections: 50, wave_low: 5, wave_period_us: 4_000_000, ..plain };
        assert_eq!(wave.shape_from(10).level_at(Duration::from_secs(2)), 50);
        assert_eq!(wave.shape_from(10).level_at(Duration::ZERO), 5, "a wave starts at its low");
        let arrivals = fleet::PhaseStart {
            connections: 7,
            arrival_per_s: 2.0,
            session_us: 1_000_000,
            duration_us: 10_000_000,
            ..Default::default()
        };
        let Shape::Arrivals(a) = arrivals.shape_from(0) else { panic!("{:?}", arrivals.shape_from(0)) };
        assert_eq!((a.max, a.rate, a.session), (7, 2.0, Duration::from_secs(1)));
    }
}
