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

use crate::connection::RunContext;
use crate::delivery::{Delivery, Echo};
use crate::payload::Stamp;
use crate::schedule::{Schedule, record_lag, record_unsent};
use crate::session::Session;

/// One connection's echo exchange.
pub struct EchoSession {
    slot: u64,
    /// Which messages came back.
    delivery: Delivery,
    /// When each message is due.
    schedule: Schedule,
}

impl Session for EchoSession {
    fn open(ctx: &RunContext, slot: u64, opened: Instant) -> Self {
        EchoSession { slot, delivery: Delivery::default(), schedule: Schedule::open(ctx, slot, opened) }
    }

    fn next_due(&self) -> Option<Instant> {
        self.schedule.next()
    }

    fn due(&mut self, ctx: &RunContext, busy: bool) -> Option<Message> {
        let (intended, _) = self.schedule.advance(ctx)?;
        let rec = &ctx.recorder;
        let seq = self.delivery.next_seq();
        if busy {
            self.delivery.skipped(seq);
            record_unsent(rec);
            return None;
        }
        record_lag(rec, intended);
        let stamp = Stamp { conn: self.slot, seq, intended_us: self.schedule.due_us(seq) };
        let mut payload = String::with_capacity(ctx.payload_bytes);
        stamp.encode(ctx.payload_bytes, &mut payload);
        rec.counters.messages_sent.fetch_add(1, Relaxed);
        rec.counters.bytes_sent.fetch_add(payload.len() as u64, Relaxed);
        Some(Message::text(payload))
    }

    fn received(&mut self, ctx: &RunContext, payload: &[u8]) {
        let rec = &ctx.recorder;
        let now = Instant::now();
        let Some((stamp, _)) = Stamp::decode(payload).filter(|s| s.conn == self.slot).zip(ctx.interval)
        else {
            rec.counters.messages_unmatched.fetch_add(1, Relaxed);
            return;
        };
        // The intended time comes from the schedule, never from the echo: a
        // corrupted stamp cannot fake a latency.
        let due = self.schedule.due_us(stamp.seq);
        let intact = stamp.intended_us == due && stamp.is_encoded_in(ctx.payload_bytes, payload);
        match self.delivery.echo(stamp.seq, intact) {
            Echo::Delivered { reordered } => {
                let intended = ctx.epoch + Duration::from_micros(due);
                rec.record_delivered(Some(now.saturating_duration_since(intended)), payload.len(), reordered);
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
