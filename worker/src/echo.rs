//! The echo session: a stamped message on a fixed schedule (open model),
//! each echo matched against what was sent. Latency is measured from each
//! message's intended send time, fixed by the schedule: a send that leaves
//! late still counts from when it should have gone, so stalls are not
//! hidden (no coordinated omission). Delivery is accounted exactly
//! ([`crate::delivery`]).

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use stampede_model::Cause;
use tokio_tungstenite::tungstenite::Message;

use crate::connection::{RunContext, stagger};
use crate::delivery::{Delivery, Echo};
use crate::payload::Stamp;
use crate::session::Session;

/// A send this far behind its intended time is late.
const LATE: Duration = Duration::from_millis(1);
/// A send this far behind means the generator stalled (a frozen or starved
/// process): the latency it adds is ours, not the target's.
const STALLED: Duration = Duration::from_millis(100);

/// One connection's echo exchange.
pub struct EchoSession {
    slot: u64,
    /// Which messages came back.
    delivery: Delivery,
    /// Intended time of message 0 since the epoch; message `n` was due `n`
    /// intervals later.
    first_due: Duration,
    /// The next intended send time.
    next: Option<Instant>,
}

impl EchoSession {
    /// Intended send time of message `seq`, microseconds since the epoch.
    fn due_us(&self, seq: u64, interval: Duration) -> u64 {
        (self.first_due.as_nanos() + interval.as_nanos() * u128::from(seq)).div_euclid(1000) as u64
    }
}

impl Session for EchoSession {
    fn open(ctx: &RunContext, slot: u64, opened: Instant) -> Self {
        // Staggered over the interval, so connections opened together do
        // not send together.
        let first = opened + ctx.interval.map_or(Duration::ZERO, |iv| iv.mul_f64(stagger(slot)));
        EchoSession {
            slot,
            delivery: Delivery::default(),
            first_due: first.duration_since(ctx.epoch),
            next: ctx.interval.map(|_| first),
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.next
    }

    fn due(&mut self, ctx: &RunContext, busy: bool) -> Option<Message> {
        let (intended, iv) = (self.next?, ctx.interval?);
        // The schedule moves on whatever happens to this send.
        self.next = Some(intended + iv);
        let rec = &ctx.recorder;
        let seq = self.delivery.next_seq();
        if busy {
            // The previous message is still being written: the link or the
            // server cannot take the schedule. Counted, not queued.
            self.delivery.skipped(seq);
            rec.counters.messages_unsent.fetch_add(1, Relaxed);
            rec.record_error(Cause::MessageUnsent);
            return None;
        }
        let lag = Instant::now().saturating_duration_since(intended);
        if lag > LATE {
            rec.counters.sends_late.fetch_add(1, Relaxed);
        }
        if lag > STALLED {
            rec.counters.sends_stalled.fetch_add(1, Relaxed);
        }
        let stamp = Stamp { conn: self.slot, seq, intended_us: self.due_us(seq, iv) };
        let mut payload = String::with_capacity(ctx.payload_bytes);
        stamp.encode(ctx.payload_bytes, &mut payload);
        rec.counters.messages_sent.fetch_add(1, Relaxed);
        rec.counters.bytes_sent.fetch_add(payload.len() as u64, Relaxed);
        Some(Message::text(payload))
    }

    fn received(&mut self, ctx: &RunContext, payload: &[u8]) {
        let rec = &ctx.recorder;
        let now = Instant::now();
        let Some((stamp, iv)) = Stamp::decode(payload).filter(|s| s.conn == self.slot).zip(ctx.interval)
        else {
            rec.counters.messages_unmatched.fetch_add(1, Relaxed);
            return;
        };
        // The intended time comes from the schedule, never from the echo: a
        // corrupted stamp cannot fake a latency.
        let due = self.due_us(stamp.seq, iv);
        let intact = stamp.intended_us == due && stamp.is_encoded_in(ctx.payload_bytes, payload);
        match self.delivery.echo(stamp.seq, intact) {
            Echo::Delivered { reordered } => {
                let intended = ctx.epoch + Duration::from_micros(due);
                rec.record_latency(now.saturating_duration_since(intended));
                rec.counters.messages_received.fetch_add(1, Relaxed);
                rec.counters.bytes_received.fetch_add(payload.len() as u64, Relaxed);
                if reordered {
                    rec.counters.messages_out_of_order.fetch_add(1, Relaxed);
                }
            }
            Echo::Duplicate => _ = rec.counters.messages_duplicated.fetch_add(1, Relaxed),
            Echo::Corrupted => {
                rec.counters.messages_corrupted.fetch_add(1, Relaxed);
                rec.record_error(Cause::MessageCorrupted);
            }
            Echo::Unmatched => _ = rec.counters.messages_unmatched.fetch_add(1, Relaxed),
        }
    }

    fn awaiting(&self) -> bool {
        self.delivery.outstanding() > 0
    }

    fn ended(&mut self, ctx: &RunContext) {
        let lost = self.delivery.outstanding() + self.delivery.take_given_up();
        ctx.recorder.counters.messages_lost.fetch_add(lost, Relaxed);
        ctx.recorder.record_errors(Cause::MessageLost, lost);
    }
}
