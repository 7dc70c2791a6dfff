//! Broadcast (the 10K suite's flash sale, live event and IoT; Odin): the
//! first `publishers` slots of each worker publish to their channels on the
//! message interval, every other slot subscribes to its channels, and every
//! message must reach every subscriber of its channel, using the relay's
//! channel protocol (README, "The relay's channels").
//!
//! A publisher's message carries `{"t": intended send time, µs on the
//! controller's clock, "pub": who, "n": its number}`, so fan-out latency
//! (intended publish -> each subscriber's receipt) is exact across workers:
//! each side moves its clock onto the controller's by its measured offset.
//!
//! A subscriber accounts each subscription by the relay's sequence numbers:
//! the `subscribed` reply says where the channel stood (S0), and from then
//! on every number S0+1, S0+2, ... is owed to it once (`deliveries_expected`
//! grows with the highest number seen). A number that never comes is lost,
//! one that comes twice duplicated, one below a number already seen out of
//! order. Losses after the last message a subscriber received cannot be
//! seen by it (nothing says how many more were published); when it closes,
//! a subscriber keeps reading for a while first, so messages already on
//! their way arrive.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;
use stampede_model::Cause;
use stampede_model::clock::unix_us;
use stampede_model::results::MAX_CHANNEL_FIGURES;
use tokio_tungstenite::tungstenite::Message;

use crate::connection::RunContext;
use crate::delivery::{Delivery, Echo, WINDOW};
use crate::feed::FUTURE_SLACK_US;
use crate::schedule::{Schedule, record_lag, record_unsent};
use crate::session::{Session, SessionPlan};

/// One subscription's accounting.
struct Subscription {
    /// The channel's number and name.
    n: u64,
    channel: String,
    /// The channel's sequence number when the subscription began; `None`
    /// until the relay says.
    start: Option<u64>,
    /// Numbers owed, counted from `start + 1` as 0.
    owed: Delivery,
}

/// What a connection is in a broadcast run.
enum Role {
    Publisher {
        /// Numbers and names.
        channels: Vec<(u64, String)>,
        /// The next channel to publish to (round robin).
        next: usize,
        schedule: Schedule,
        /// `"<worker>/<slot>"`, in every message.
        id: String,
    },
    Subscriber {
        subs: Vec<Subscription>,
        /// Subscribe requests still to send.
        to_subscribe: VecDeque<String>,
    },
}

/// One connection of a broadcast run.
pub struct BroadcastSession {
    role: Role,
    /// Counts go per channel too (runs of few enough channels).
    per_channel: bool,
}

impl Session for BroadcastSession {
    fn open(ctx: &RunContext, slot: u64, opened: Instant) -> Self {
        let SessionPlan::Broadcast(spec) = &ctx.session else {
            unreachable!("a broadcast session in a broadcast run only")
        };
        let channels: Vec<(u64, String)> =
            spec.channels_of(slot).map(|n| (n, spec.channel_name(n))).collect();
        let role = if slot < spec.publishers {
            let start = opened + Duration::from_micros(spec.publish_delay_us);
            Role::Publisher {
                channels,
                next: 0,
                schedule: Schedule::open(ctx, slot, start),
                id: format!("{}/{slot}", ctx.worker_id),
            }
        } else {
            let subs = channels
                .iter()
                .map(|(n, c)| Subscription {
                    n: *n,
                    channel: c.clone(),
                    start: None,
                    owed: Delivery::default(),
                })
                .collect();
            Role::Subscriber { subs, to_subscribe: channels.into_iter().map(|(_, c)| c).collect() }
        };
        BroadcastSession { role, per_channel: spec.channels <= MAX_CHANNEL_FIGURES }
    }

    fn next_due(&self) -> Option<Instant> {
        match &self.role {
            Role::Publisher { channels, schedule, .. } if !channels.is_empty() => schedule.next(),
            Role::Publisher { .. } => None,
            Role::Subscriber { to_subscribe, .. } => (!to_subscribe.is_empty()).then(Instant::now),
        }
    }

    fn due(&mut self, ctx: &RunContext, busy: bool) -> Option<Message> {
        let rec = &ctx.recorder;
        match &mut self.role {
            Role::Subscriber { to_subscribe, .. } => {
                if busy {
                    // Tried again at the next wake-up; never dropped.
                    return None;
                }
                let channel = to_subscribe.pop_front()?;
                let op = serde_json::json!({"op": "subscribe", "channel": channel});
                Some(Message::text(op.to_string()))
            }
            Role::Publisher { channels, next, schedule, id } => {
                let seq = schedule.scheduled();
                let (intended, _) = schedule.advance(ctx)?;
                if busy {
                    record_unsent(rec);
                    return None;
                }
                record_lag(rec, intended);
                let (n, channel) = &channels[*next % channels.len()];
                *next += 1;
                if self.per_channel {
                    rec.record_channel(*n, |c| c.published += 1);
                }
                let t = controller_us(ctx, intended);
                let data = serde_json::json!({"t": t, "pub": id, "n": seq});
                let text = serde_json::json!({"op": "publish", "channel": channel, "data": data}).to_string();
                rec.counters.messages_sent.fetch_add(1, Relaxed);
                rec.counters.bytes_sent.fetch_add(text.len() as u64, Relaxed);
                Some(Message::text(text))
            }
        }
    }

    fn received(&mut self, ctx: &RunContext, payload: &[u8]) {
        let rec = &ctx.recorder;
        let Role::Subscriber { subs, .. } = &mut self.role else {
            // The relay sends a publisher nothing but its greeting.
            return;
        };
        let Some(frame) = serde_json::from_slice::<Value>(payload).ok() else {
            rec.counters.messages_unmatched.fetch_add(1, Relaxed);
            return;
        };
        let channel = frame.get("channel").and_then(Value::as_str);
        let seq = frame.get("seq").and_then(Value::as_u64);
        let sub = channel.and_then(|c| subs.iter_mut().find(|s| s.channel == c));
        match (frame.get("op").and_then(Value::as_str), sub, seq) {
            (Some("connection_established"), _, _) => {}
            (Some("subscribed"), Some(sub), Some(seq)) if sub.start.is_none() => sub.start = Some(seq),
            (Some("message"), Some(sub), Some(seq)) => {
                let Some(index) = sub.start.and_then(|s0| seq.checked_sub(s0)?.checked_sub(1)) else {
                    // Before the subscription began, or before it was confirmed.
                    rec.counters.messages_unmatched.fetch_add(1, Relaxed);
                    return;
                };
                // Owe every number up to this one; a jump further than the
                // delivery window is not believed (a hostile relay cannot
                // make us count without end).
                if index >= sub.owed.handed_out() + WINDOW {
                    rec.counters.messages_unmatched.fetch_add(1, Relaxed);
                    return;
                }
                let owed = index + 1 - sub.owed.handed_out().min(index + 1);
                for _ in 0..owed {
                    sub.owed.next_seq();
                }
                rec.counters.deliveries_expected.fetch_add(owed, Relaxed);
                // Numbers the window had to give up on are lost.
                let given_up = sub.owed.take_given_up();
                record_lost(ctx, given_up);
                let echo = sub.owed.echo(index, true);
                match echo {
                    Echo::Delivered { reordered } => {
                        rec.record_delivered(fanout(ctx, &frame), payload.len(), reordered);
                    }
                    Echo::Duplicate => _ = rec.counters.messages_duplicated.fetch_add(1, Relaxed),
                    Echo::Corrupted | Echo::Unmatched => {
                        _ = rec.counters.messages_unmatched.fetch_add(1, Relaxed)
                    }
                }
                if self.per_channel {
                    rec.record_channel(sub.n, |c| {
                        c.expected += owed;
                        c.lost += given_up;
                        match echo {
                            Echo::Delivered { reordered } => {
                                c.received += 1;
                                c.out_of_order += u64::from(reordered);
                            }
                            Echo::Duplicate => c.duplicated += 1,
                            Echo::Corrupted | Echo::Unmatched => {}
                        }
                    });
                }
            }
            _ => _ = rec.counters.messages_unmatched.fetch_add(1, Relaxed),
        }
    }

    fn awaiting(&self) -> bool {
        // A closing subscriber reads until the drain time runs out: it
        // cannot know whether more is on its way.
        matches!(self.role, Role::Subscriber { .. })
    }

    fn ended(&mut self, ctx: &RunContext) {
        if let Role::Subscriber { subs, .. } = &mut self.role {
            for sub in subs {
                let lost = sub.owed.outstanding() + sub.owed.take_given_up();
                record_lost(ctx, lost);
                if self.per_channel && lost > 0 {
                    ctx.recorder.record_channel(sub.n, |c| c.lost += lost);
                }
            }
        }
    }
}

fn record_lost(ctx: &RunContext, lost: u64) {
    ctx.recorder.counters.messages_lost.fetch_add(lost, Relaxed);
    ctx.recorder.record_errors(Cause::MessageLost, lost);
}

/// `at` on the controller's clock, µs since the Unix epoch.
fn controller_us(ctx: &RunContext, at: Instant) -> i64 {
    let now = Instant::now();
    let wall = unix_us(SystemTime::now()).saturating_add(ctx.clock_offset_us);
    if at <= now {
        wall - now.duration_since(at).as_micros() as i64
    } else {
        wall + at.duration_since(now).as_micros() as i64
    }
}

/// The fan-out latency of a delivered message, from the intended publish
/// time it carries (a message without one has none, and is counted).
fn fanout(ctx: &RunContext, frame: &Value) -> Option<Duration> {
    let rec = &ctx.recorder;
    let Some(t) = frame.get("data").and_then(|d| d.get("t")).and_then(Value::as_i64) else {
        rec.counters.timestamps_missing.fetch_add(1, Relaxed);
        return None;
    };
    let latency_us = controller_us(ctx, Instant::now()).saturating_sub(t);
    if latency_us < -FUTURE_SLACK_US {
        rec.counters.timestamps_future.fetch_add(1, Relaxed);
    }
    Some(Duration::from_micros(latency_us.max(0) as u64))
}
