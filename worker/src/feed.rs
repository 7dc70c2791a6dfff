//! The receive session, for servers that push (tickers, notifications,
//! broadcast): after opening, each subscription message is sent once; then
//! every frame the server pushes is counted (`messages_received`,
//! `bytes_received`). With a gap limit, a silence longer than it on one
//! connection counts once in `receive_gaps`, in the second it passes the
//! limit. With a timestamp field, each message's one-way latency is our
//! wall clock, moved onto the controller's by the run's clock offset,
//! minus the time the message says it was sent; a message without a
//! readable timestamp counts in `timestamps_missing`, and one stamped
//! ahead of us by more than the offset can be wrong counts in
//! `timestamps_future` with latency 0 (never negative, never a panic).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant, SystemTime};

use regex::bytes::{CaptureLocations, Regex};
use ring::rand::SystemRandom;
use stampede_model::Template;
use stampede_model::clock::unix_us;
use stampede_model::spec::{ReceiveSpec, TimeUnit, TimestampField};
use tokio_tungstenite::tungstenite::Message;

use crate::connection::RunContext;
use crate::extract::{JsonPath, Number, NumberLeaf, Scale, first_capture};
use crate::opening::{Vars, resolve_env};
use crate::session::{Session, SessionPlan};

/// How far ahead of our clock (moved by the clock offset) a timestamp may
/// be and still be taken as clock error rather than a wrong timestamp: the
/// offset is measured over the controller link, whose one-way delay it
/// may be off by. Up to this it is latency 0 without further count.
pub const FUTURE_SLACK_US: i64 = 1_000;

/// When a subscription could not be sent because a frame was still being
/// written, it is tried again this much later (never dropped).
const SUBSCRIBE_RETRY: Duration = Duration::from_millis(1);

/// Where a pushed message carries its send time, compiled once per run.
#[derive(Debug)]
enum Stamp {
    Json(JsonPath),
    Regex(Regex),
}

/// A run's receive session, prepared once.
#[derive(Debug)]
pub struct FeedPlan {
    subscribe: Vec<Template>,
    stamp: Option<(Stamp, Scale)>,
    gap: Option<Duration>,
    rng: SystemRandom,
}

impl FeedPlan {
    /// Prepares `spec`; the error names what cannot be used.
    pub fn new(spec: &ReceiveSpec) -> Result<FeedPlan, String> {
        let subscribe = spec.subscribe.iter().map(resolve_env).collect::<Result<_, _>>()?;
        let stamp = match &spec.timestamp {
            None => None,
            Some(ts) => {
                let how = match &ts.field {
                    TimestampField::JsonPath(path) => Stamp::Json(JsonPath::parse(path)?),
                    TimestampField::Regex(re) => {
                        let re = Regex::new(re).map_err(|e| format!("timestamp regex {re:?}: {e}"))?;
                        if re.captures_len() < 2 {
                            return Err(format!("timestamp regex {:?} has no capture group", re.as_str()));
                        }
                        Stamp::Regex(re)
                    }
                };
                Some((how, to_us(ts.unit)))
            }
        };
        let gap = (spec.gap_us > 0).then(|| Duration::from_micros(spec.gap_us));
        Ok(FeedPlan { subscribe, stamp, gap, rng: SystemRandom::new() })
    }
}

/// From `unit` to microseconds, exactly for integers.
fn to_us(unit: TimeUnit) -> Scale {
    match unit {
        TimeUnit::S => Scale::Mul(1_000_000),
        TimeUnit::Ms => Scale::Mul(1_000),
        TimeUnit::Us => Scale::Mul(1),
        TimeUnit::Ns => Scale::Div(1_000),
    }
}

/// One connection's pushed messages.
pub struct FeedSession {
    slot: u64,
    plan: Arc<FeedPlan>,
    /// Subscriptions sent so far.
    subscribed: usize,
    /// When to send the next subscription.
    subscribe_at: Instant,
    /// The last message (or the opening): where the current silence began.
    last: Instant,
    /// The current silence was counted as a gap already.
    gap_counted: bool,
    /// Regex timestamps: capture slots, reused.
    locs: Option<CaptureLocations>,
}

impl FeedSession {
    /// The send time `payload` carries, µs since the Unix epoch.
    fn stamp_us(&mut self, payload: &[u8]) -> Option<i64> {
        let (how, scale) = self.plan.stamp.as_ref()?;
        let number = match how {
            Stamp::Json(path) => path.find(payload, &NumberLeaf)?,
            Stamp::Regex(re) => {
                let locs = self.locs.get_or_insert_with(|| re.capture_locations());
                Number::parse(std::str::from_utf8(first_capture(re, locs, payload)?).ok()?)?
            }
        };
        number.scaled(*scale)
    }
}

impl Session for FeedSession {
    fn open(ctx: &RunContext, slot: u64, opened: Instant) -> Self {
        let SessionPlan::Receive(plan) = &ctx.session else {
            unreachable!("run_slot opens a receive session only for a receive plan")
        };
        FeedSession {
            slot,
            plan: plan.clone(),
            subscribed: 0,
            subscribe_at: opened,
            last: opened,
            gap_counted: false,
            locs: None,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        if self.subscribed < self.plan.subscribe.len() {
            return Some(self.subscribe_at);
        }
        let gap = self.plan.gap?;
        (!self.gap_counted).then_some(self.last + gap)
    }

    fn due(&mut self, ctx: &RunContext, busy: bool) -> Option<Message> {
        let now = Instant::now();
        let rec = &ctx.recorder;
        if let Some(template) = self.plan.subscribe.get(self.subscribed) {
            if busy {
                // A subscription is sent once and must not be skipped: wait
                // for the frame being written.
                self.subscribe_at = now + SUBSCRIBE_RETRY;
                return None;
            }
            let vars =
                Vars { conn: self.slot, worker: &ctx.worker_id, seq: self.subscribed as u64, jwt: None };
            let mut text = String::new();
            template.render_into(&mut text, |v, out| vars.write(v, &self.plan.rng, out));
            self.subscribed += 1;
            rec.counters.messages_sent.fetch_add(1, Relaxed);
            rec.counters.bytes_sent.fetch_add(text.len() as u64, Relaxed);
            return Some(Message::text(text));
        }
        if let Some(gap) = self.plan.gap
            && !self.gap_counted
            && now.saturating_duration_since(self.last) >= gap
        {
            self.gap_counted = true;
            rec.counters.receive_gaps.fetch_add(1, Relaxed);
        }
        None
    }

    fn received(&mut self, ctx: &RunContext, payload: &[u8]) {
        let now = Instant::now();
        let rec = &ctx.recorder;
        // A silence the timer did not get to (a busy process) still counts.
        if let Some(gap) = self.plan.gap
            && !self.gap_counted
            && now.saturating_duration_since(self.last) >= gap
        {
            rec.counters.receive_gaps.fetch_add(1, Relaxed);
        }
        self.last = now;
        self.gap_counted = false;
        rec.counters.messages_received.fetch_add(1, Relaxed);
        rec.counters.bytes_received.fetch_add(payload.len() as u64, Relaxed);
        if self.plan.stamp.is_none() {
            return;
        }
        let Some(sent_us) = self.stamp_us(payload) else {
            rec.counters.timestamps_missing.fetch_add(1, Relaxed);
            return;
        };
        // Our clock moved onto the controller's: "controller clock minus
        // worker clock" added to ours.
        let here_us = unix_us(SystemTime::now()).saturating_add(ctx.clock_offset_us);
        let latency_us = here_us.saturating_sub(sent_us);
        if latency_us < -FUTURE_SLACK_US {
            rec.counters.timestamps_future.fetch_add(1, Relaxed);
        }
        rec.record_latency(Duration::from_micros(latency_us.max(0) as u64));
    }

    fn awaiting(&self) -> bool {
        false
    }

    fn ended(&mut self, _ctx: &RunContext) {}
}
