//! The message interval connections follow now. It starts as the run's
//! (`Assign`) and, under an open message model (`load.message_rate`), each
//! phase replaces it with the fleet's rate spread over the phase's planned
//! connections; every open connection takes the new interval from its next
//! send ([`crate::schedule::Schedule`]), so the fleet's rate follows the
//! phases without reopening anything.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The current per-connection interval, shared by every connection.
#[derive(Debug, Default)]
pub struct Pace {
    /// Microseconds; 0: connect only.
    interval_us: AtomicU64,
}

impl Pace {
    /// A pace starting at `interval` (`None`: connect only).
    pub fn new(interval: Option<Duration>) -> Pace {
        Pace { interval_us: AtomicU64::new(interval.map_or(0, micros)) }
    }

    /// The interval now; `None`: connect only.
    pub fn get(&self) -> Option<Duration> {
        match self.interval_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Sets the interval (at least a microsecond).
    pub fn set(&self, interval: Duration) {
        self.interval_us.store(micros(interval).max(1), Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phase_replaces_the_interval() {
        let pace = Pace::new(None);
        assert_eq!(pace.get(), None, "connect only");
        pace.set(Duration::from_millis(20));
        assert_eq!(pace.get(), Some(Duration::from_millis(20)));
        assert_eq!(Pace::new(Some(Duration::from_secs(1))).get(), Some(Duration::from_secs(1)));
    }
}
