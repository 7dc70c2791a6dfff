//! The run clock: the run's time zero read once from the wall clock and the
//! monotonic clock together, so every conversion between "seconds into the
//! run", monotonic instants and UNIX time goes through one pair.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the UNIX epoch of `t` (negative before it).
pub fn unix_us(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// Seconds since the UNIX epoch of `t`.
pub fn unix_s(t: SystemTime) -> f64 {
    unix_us(t) as f64 / 1e6
}

/// A point in time known on both clocks.
#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    /// Wall-clock time of the run's zero.
    pub wall: SystemTime,
    /// Monotonic time of the run's zero.
    pub mono: Instant,
}

impl RunClock {
    /// A run that starts `lead` from now.
    pub fn starting_in(lead: Duration) -> RunClock {
        let (wall, mono) = (SystemTime::now(), Instant::now());
        RunClock { wall: wall + lead, mono: mono + lead }
    }

    /// The zero `unix_us` of another process's clock (which runs
    /// `offset_us` behind ours: theirs + offset = ours), on this process's
    /// monotonic clock.
    pub fn from_unix_us(unix_us_there: i64, offset_us: i64) -> RunClock {
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let ahead_us = unix_us_there - (unix_us(wall) + offset_us);
        let ahead = Duration::from_micros(ahead_us.unsigned_abs());
        let (wall_zero, mono_zero) = if ahead_us >= 0 {
            (wall + ahead, mono + ahead)
        } else {
            (wall - ahead, mono.checked_sub(ahead).unwrap_or(mono))
        };
        RunClock { wall: wall_zero, mono: mono_zero }
    }

    /// Microseconds since the epoch of the run's zero.
    pub fn unix_us(&self) -> i64 {
        unix_us(self.wall)
    }

    /// Seconds since the epoch of the run's zero.
    pub fn unix_s(&self) -> f64 {
        unix_s(self.wall)
    }

    /// Time since the run's zero (zero before it).
    pub fn elapsed(&self) -> Duration {
        self.mono.elapsed()
    }

    /// The whole second of the run `at` falls in.
    pub fn second_of(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.mono).as_secs()
    }

    /// Start of second `second` of the run, ISO 8601 UTC.
    pub fn timestamp_of(&self, second: u64) -> String {
        crate::time::iso8601(self.unix_s() + second as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_agree() {
        let clock = RunClock::starting_in(Duration::from_millis(200));
        assert_eq!(clock.second_of(clock.mono + Duration::from_millis(1500)), 1);
        assert_eq!(clock.second_of(clock.mono - Duration::from_millis(100)), 0);
        // The same zero seen from a process whose clock is 2 s behind.
        let there = RunClock::from_unix_us(clock.unix_us(), 0);
        let diff = there.mono.max(clock.mono) - there.mono.min(clock.mono);
        assert!(diff < Duration::from_millis(5), "{diff:?}");
        assert_eq!(unix_us(UNIX_EPOCH - Duration::from_secs(1)), -1_000_000);
        assert_eq!(clock.timestamp_of(0).len(), "2026-11-23T04:24:23.013Z".len());
    }
}
