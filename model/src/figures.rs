//! How each headline figure is computed from per-second rows and counters:
//! one definition, used by the controller's summary, progress line and
//! files, and by `analyze`, so they cannot disagree.

use crate::Counters;

/// Throughput: messages received per second of rows (each row of
/// metrics.csv is one second; a run's last, partial second counts whole).
pub fn throughput(received: u64, rows: u64) -> f64 {
    if rows > 0 { received as f64 / rows as f64 } else { 0.0 }
}

/// Error rate: errors (the sum of their causes) over everything that could
/// fail: connection attempts plus messages the schedule asked for.
pub fn error_rate(errors_total: u64, c: &Counters) -> f64 {
    let den = c.connections_attempted + c.messages_sent + c.messages_unsent;
    if den > 0 { errors_total as f64 / den as f64 } else { 0.0 }
}

/// Message loss rate: messages lost over the deliveries owed, which are
/// the sends (each echo, request or pair message is owed once) or, in
/// broadcast, each message once per subscriber it was published to.
pub fn loss_rate(c: &Counters) -> Option<f64> {
    let owed = if c.deliveries_expected > 0 { c.deliveries_expected } else { c.messages_sent };
    (owed > 0).then(|| c.messages_lost as f64 / owed as f64)
}

/// Peak connections of a span of seconds: the most open at the end of any
/// of its seconds, or at its start (the end of the second before it), so a
/// ramp-down phase shows the level it started from.
pub fn peak(open_at_start: u64, open_at_ends: impl IntoIterator<Item = u64>) -> u64 {
    open_at_ends.into_iter().fold(open_at_start, u64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions() {
        assert_eq!(throughput(100, 4), 25.0);
        assert_eq!(throughput(5, 0), 0.0);
        let c = Counters {
            connections_attempted: 10,
            messages_sent: 80,
            messages_unsent: 10,
            ..Default::default()
        };
        assert_eq!(error_rate(5, &c), 0.05);
        assert_eq!(peak(100, [80, 60, 0]), 100, "a cooldown starts at its peak");
        assert_eq!(peak(0, [10, 50, 40]), 50);
    }
}
