//! The send schedule of one connection (open model): message `n` is due `n`
//! intervals after the connection's first, which is staggered over the
//! interval by slot. The interval is the run's current one
//! ([`crate::pace::Pace`]): when a phase changes it (`load.message_rate`),
//! the connection starts a new segment at its next send, and the messages
//! before keep the times they were due at. Every session that sends on the run's interval (echo,
//! request/response) takes its intended send times from here, never from
//! when a send actually left, so latency counts from when a message should
//! have gone and stalls are not hidden (no coordinated omission).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use stampede_model::Cause;

use crate::connection::{RunContext, stagger};
use crate::recorder::Recorder;

/// A send this far behind its intended time is late.
const LATE: Duration = Duration::from_millis(1);
/// A send this far behind means the generator stalled (a frozen or starved
/// process): the latency it adds is ours, not the target's.
const STALLED: Duration = Duration::from_millis(100);

/// Interval changes a connection remembers: an answer to a message sent
/// before more changes than this (tens of seconds of phases) can no longer
/// be placed, and counts as not matching its stamp.
const SEGMENTS_KEPT: usize = 16;

/// Messages sent at one interval: message `seq` (from `first_seq` on) is
/// due `seq - first_seq` intervals after `first_due`.
#[derive(Debug, Clone, Copy)]
struct Segment {
    first_seq: u64,
    /// Since the run's epoch.
    first_due: Duration,
    interval: Duration,
}

/// One connection's send times.
#[derive(Debug)]
pub struct Schedule {
    /// The segment sends follow now.
    current: Segment,
    /// Earlier segments, oldest first (empty until the interval changes).
    earlier: Vec<Segment>,
    /// Sends scheduled so far: the next message's sequence number.
    scheduled: u64,
    /// The next intended send time; `None`: connect only.
    next: Option<Instant>,
}

impl Schedule {
    /// The schedule of connection `slot`, opened at `opened`.
    pub fn open(ctx: &RunContext, slot: u64, opened: Instant) -> Schedule {
        let interval = ctx.pace.get();
        // Staggered over the interval, so connections opened together do
        // not send together.
        let first = opened + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(stagger(slot)));
        let current = Segment {
            first_seq: 0,
            first_due: first.duration_since(ctx.epoch),
            interval: interval.unwrap_or_default(),
        };
        Schedule { current, earlier: Vec::new(), scheduled: 0, next: interval.map(|_| first) }
    }

    /// The next intended send time; `None`: connect only.
    pub fn next(&self) -> Option<Instant> {
        self.next
    }

    /// Intended send time of message `seq`, microseconds since the epoch.
    pub fn due_us(&self, seq: u64) -> u64 {
        let s = if seq >= self.current.first_seq {
            &self.current
        } else {
            // The oldest kept segment stands in for forgotten ones.
            let known = self.earlier.iter().rev().find(|s| s.first_seq <= seq);
            known.or(self.earlier.first()).unwrap_or(&self.current)
        };
        let n = u128::from(seq.saturating_sub(s.first_seq));
        (s.first_due.as_nanos() + s.interval.as_nanos() * n).div_euclid(1000) as u64
    }

    /// Moves on to the next send whatever happens to this one (message
    /// number [`Schedule::scheduled`] before the call); returns this one's
    /// intended time and the interval it follows.
    pub fn advance(&mut self, ctx: &RunContext) -> Option<(Instant, Duration)> {
        self.advance_at(ctx.pace.get(), ctx.epoch)
    }

    /// [`Schedule::advance`] with the run's interval now and its epoch.
    fn advance_at(&mut self, pace: Option<Duration>, epoch: Instant) -> Option<(Instant, Duration)> {
        let intended = self.next?;
        let iv = pace.unwrap_or(self.current.interval);
        if iv != self.current.interval {
            // This message keeps the time it was due at; the new interval
            // counts from it.
            if self.earlier.len() == SEGMENTS_KEPT {
                self.earlier.remove(0);
            }
            self.earlier.push(self.current);
            let first_due = intended.duration_since(epoch);
            self.current = Segment { first_seq: self.scheduled, first_due, interval: iv };
        }
        self.scheduled += 1;
        self.next = Some(intended + iv);
        Some((intended, iv))
    }

    /// Messages scheduled so far.
    pub fn scheduled(&self) -> u64 {
        self.scheduled
    }
}

/// Counts a send that leaves `intended` as late or stalled, if it does.
pub fn record_lag(rec: &Recorder, intended: Instant) {
    let lag = Instant::now().saturating_duration_since(intended);
    if lag > LATE {
        rec.counters.sends_late.fetch_add(1, Relaxed);
    }
    if lag > STALLED {
        rec.counters.sends_stalled.fetch_add(1, Relaxed);
    }
}

/// Counts a send that could not leave: the previous message is still being
/// written, so the link or the server cannot take the schedule. Counted,
/// never queued.
pub fn record_unsent(rec: &Recorder) {
    rec.counters.messages_unsent.fetch_add(1, Relaxed);
    rec.record_error(Cause::MessageUnsent);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_interval_counts_from_the_next_send_and_earlier_messages_keep_their_times() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        let current = Segment { first_seq: 0, first_due: ms(100), interval: ms(10) };
        let mut s = Schedule { current, earlier: Vec::new(), scheduled: 0, next: Some(epoch + ms(100)) };
        for _ in 0..3 {
            s.advance_at(Some(ms(10)), epoch);
        }
        assert_eq!(s.due_us(2), 120_000);
        // Message 3 was due at 130 ms; from it on, every 50 ms.
        let (intended, iv) = s.advance_at(Some(ms(50)), epoch).unwrap();
        assert_eq!((intended, iv), (epoch + ms(130), ms(50)));
        assert_eq!(s.next(), Some(epoch + ms(180)));
        s.advance_at(Some(ms(50)), epoch);
        assert_eq!((s.due_us(3), s.due_us(4), s.due_us(5)), (130_000, 180_000, 230_000));
        assert_eq!((s.due_us(0), s.due_us(2)), (100_000, 120_000), "earlier messages keep their times");
        assert_eq!(s.scheduled(), 5);
        // Connect only (no pace yet) keeps the interval it has.
        s.advance_at(None, epoch);
        assert_eq!(s.next(), Some(epoch + ms(280)));
        for i in 0..(SEGMENTS_KEPT as u64 + 4) {
            s.advance_at(Some(ms(60 + i)), epoch);
        }
        assert_eq!(s.earlier.len(), SEGMENTS_KEPT, "memory stays bounded");
    }
}
