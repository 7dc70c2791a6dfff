//! The controller <-> worker gRPC protocol (`fleet`), and the conversions
//! between its messages and the model's types: the one place where wire
//! microseconds become durations, 0 becomes "none" and counters travel by
//! name.
#![deny(missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use stampede_model::Counters;

/// Generated from `proto/fleet.proto`.
#[allow(missing_docs, clippy::all)]
pub mod fleet {
    tonic::include_proto!("stampede.fleet.v1");
}

/// Version of the fleet protocol a worker announces in its Hello; the
/// controller refuses workers that speak another one.
pub const PROTOCOL_VERSION: u32 = 2;

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
}
