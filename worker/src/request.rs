//! The request/response session, for servers that answer instead of
//! echoing (JSON-RPC, chat and game servers): a message rendered from the
//! run's template on the echo schedule (intended send times from the
//! schedule, never from when a send left), each reply matched to its
//! request by a [`Matcher`], latency measured from the request's intended
//! send time.
//!
//! Every reply is exactly one of: received (the first reply to a request
//! still tracked), duplicated (a further reply to it), unmatched (a reply
//! to nothing tracked: unknown ids, text that is not JSON for a JSON
//! matcher, a reply after its request timed out, unsolicited frames). A
//! request is tracked from its send until its reply timeout; one without
//! a reply by then is lost. At most [`MAX_PENDING`] requests are tracked
//! per connection, so a server that never answers a fast schedule cannot
//! grow memory without bound: beyond that, the oldest is given up as lost.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use regex::bytes::{CaptureLocations, Regex};
use ring::rand::SystemRandom;
use stampede_model::spec::{Matcher, RequestSpec};
use stampede_model::{Cause, Template};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::connection::RunContext;
use crate::extract::{JsonPath, Key, KeyLeaf, first_capture};
use crate::opening::{Vars, resolve_env};
use crate::schedule::{Schedule, record_lag, record_unsent};
use crate::session::{Session, SessionPlan};

/// Most requests one connection tracks at once (answered ones included,
/// until their timeout, to tell duplicates from strangers).
pub const MAX_PENDING: usize = 1 << 16;

/// How replies are matched, compiled once per run.
#[derive(Debug)]
pub enum ReplyMatcher {
    /// The scalar at this path, in the request and in the reply.
    Json(JsonPath),
    /// The first capture group holds the request's `{{seq}}`.
    Regex(Regex),
    /// A reply answers the oldest request waiting.
    AnyNext,
}

/// A run's request session, prepared once: templates with `{{env.NAME}}`
/// resolved, the matcher compiled.
#[derive(Debug)]
pub struct RequestPlan {
    message: Template,
    binary: bool,
    matcher: ReplyMatcher,
    reply_timeout_us: u64,
    rng: SystemRandom,
}

impl RequestPlan {
    /// Prepares `spec`; the error names what cannot be used.
    pub fn new(spec: &RequestSpec) -> Result<RequestPlan, String> {
        let matcher = match &spec.matcher {
            Matcher::JsonField(path) => ReplyMatcher::Json(JsonPath::parse(path)?),
            Matcher::Regex(re) => {
                let re = Regex::new(re).map_err(|e| format!("reply regex {re:?}: {e}"))?;
                if re.captures_len() < 2 {
                    return Err(format!(
                        "reply regex {:?} has no capture group for the request's seq",
                        re.as_str()
                    ));
                }
                ReplyMatcher::Regex(re)
            }
            Matcher::AnyNext => ReplyMatcher::AnyNext,
        };
        Ok(RequestPlan {
            message: resolve_env(&spec.message)?,
            binary: spec.binary,
            matcher,
            reply_timeout_us: spec.reply_timeout_us.max(1),
            rng: SystemRandom::new(),
        })
    }
}

/// Where a tracked request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Sent, no reply yet.
    Waiting,
    /// Its first reply came.
    Answered,
    /// Never sent (the previous message was still being written).
    Unsent,
}

/// A tracked request; its sequence number is its place in the queue.
#[derive(Debug, Clone, Copy)]
struct Pending {
    key: Key,
    state: State,
}

/// What a reply turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Received(u64),
    Duplicated,
    Unmatched,
}

/// The requests one connection tracks, numbered by sequence from 0 (every
/// number is tracked, sent or not, so a number's place in the queue is
/// `seq - base`).
#[derive(Debug, Default)]
struct Tracker {
    /// Sequence number of `pending[0]`.
    base: u64,
    /// Requests within their reply timeout, in sequence order.
    pending: VecDeque<Pending>,
    /// How many of them are waiting for their reply.
    waiting: u64,
    /// No request below this sequence number is waiting.
    first_waiting: u64,
    /// JSON matcher: request key to sequence number.
    by_key: HashMap<Key, u64>,
    /// Highest sequence number answered so far.
    highest: Option<u64>,
}

impl Tracker {
    /// The next request's sequence number.
    fn next_seq(&self) -> u64 {
        self.base + self.pending.len() as u64
    }

    /// Starts tracking the next request, with the key its reply must carry
    /// (JSON matcher); returns how many were given up as lost to make room.
    fn track(&mut self, key: Option<Key>, state: State) -> u64 {
        let lost = if self.pending.len() >= MAX_PENDING { self.pop_oldest() } else { 0 };
        let seq = self.next_seq();
        self.pending.push_back(Pending { key: key.unwrap_or(Key(0)), state });
        if state == State::Waiting {
            self.waiting += 1;
            if let Some(key) = key {
                // A key still used by an older request now finds this one;
                // the older can no longer be told apart and times out.
                self.by_key.insert(key, seq);
            }
        }
        self.settle_first_waiting();
        lost
    }

    /// Stops tracking requests whose deadline (µs, from `deadline_us(seq)`)
    /// is not after `now_us`; returns how many of them were still waiting.
    fn expire(&mut self, now_us: u64, deadline_us: impl Fn(u64) -> u64) -> u64 {
        let mut lost = 0;
        while !self.pending.is_empty() && deadline_us(self.base) <= now_us {
            lost += self.pop_oldest();
        }
        lost
    }

    /// Drops the oldest tracked request; 1 if it was still waiting.
    fn pop_oldest(&mut self) -> u64 {
        let Some(p) = self.pending.pop_front() else { return 0 };
        let seq = self.base;
        self.base += 1;
        if self.by_key.get(&p.key) == Some(&seq) {
            self.by_key.remove(&p.key);
        }
        self.settle_first_waiting();
        if p.state == State::Waiting {
            self.waiting -= 1;
            return 1;
        }
        0
    }

    /// Moves `first_waiting` to the oldest request still waiting (or past
    /// the last one); it only moves forward: O(1) amortized.
    fn settle_first_waiting(&mut self) {
        self.first_waiting = self.first_waiting.max(self.base);
        while let Some(p) = self.pending.get((self.first_waiting - self.base) as usize) {
            if p.state == State::Waiting {
                break;
            }
            self.first_waiting += 1;
        }
    }

    /// The oldest request waiting for its reply.
    fn oldest_waiting(&self) -> Option<u64> {
        (self.waiting > 0).then_some(self.first_waiting)
    }

    /// What a reply to request `seq` is.
    fn classify(&self, seq: u64) -> Reply {
        let Some(p) = seq.checked_sub(self.base).and_then(|i| self.pending.get(i as usize)) else {
            return Reply::Unmatched;
        };
        match p.state {
            State::Waiting => Reply::Received(seq),
            State::Answered => Reply::Duplicated,
            State::Unsent => Reply::Unmatched,
        }
    }

    /// Request `seq` (waiting, per [`Tracker::classify`]) got its reply;
    /// true if a later request's reply came first.
    fn answer(&mut self, seq: u64) -> bool {
        if let Some(p) = seq.checked_sub(self.base).and_then(|i| self.pending.get_mut(i as usize)) {
            p.state = State::Answered;
            self.waiting -= 1;
        }
        self.settle_first_waiting();
        let reordered = self.highest.is_some_and(|h| seq < h);
        if !reordered {
            self.highest = Some(seq);
        }
        reordered
    }
}

/// One connection's requests and their replies.
pub struct RequestSession {
    slot: u64,
    plan: Arc<RequestPlan>,
    schedule: Schedule,
    /// Zero of the run's monotonic clock (intended times count from it).
    epoch: Instant,
    tracker: Tracker,
    /// The message being rendered (kept, so rendering does not allocate).
    text: String,
    /// Frames handed to the socket, carved out of one buffer that is
    /// reclaimed once the socket has copied the previous frame out.
    frames: BytesMut,
    /// Regex matcher: capture slots, reused.
    locs: Option<CaptureLocations>,
}

impl RequestSession {
    /// When request `seq` times out, µs since the epoch.
    fn deadline_us(&self, seq: u64) -> u64 {
        self.schedule.due_us(seq).saturating_add(self.plan.reply_timeout_us)
    }

    /// Stops tracking requests past their reply timeout: the ones still
    /// waiting are lost.
    fn expire(&mut self, ctx: &RunContext, now: Instant) {
        let now_us = now.saturating_duration_since(self.epoch).as_micros() as u64;
        let (schedule, timeout) = (&self.schedule, self.plan.reply_timeout_us);
        let lost = self.tracker.expire(now_us, |seq| schedule.due_us(seq).saturating_add(timeout));
        count_lost(ctx, lost);
    }

    /// The request `payload` answers, by the run's matcher.
    fn classify(&mut self, payload: &[u8]) -> Reply {
        let seq = match &self.plan.matcher {
            ReplyMatcher::AnyNext => self.tracker.oldest_waiting(),
            ReplyMatcher::Json(path) => {
                path.find(payload, &KeyLeaf).and_then(|k| self.tracker.by_key.get(&k)).copied()
            }
            ReplyMatcher::Regex(re) => {
                let locs = self.locs.get_or_insert_with(|| re.capture_locations());
                first_capture(re, locs, payload)
                    .and_then(|digits| std::str::from_utf8(digits).ok())
                    .and_then(|digits| digits.parse::<u64>().ok())
            }
        };
        seq.map_or(Reply::Unmatched, |seq| self.tracker.classify(seq))
    }
}

fn count_lost(ctx: &RunContext, lost: u64) {
    if lost > 0 {
        ctx.recorder.counters.messages_lost.fetch_add(lost, Relaxed);
        ctx.recorder.record_errors(Cause::MessageLost, lost);
    }
}

impl Session for RequestSession {
    fn open(ctx: &RunContext, slot: u64, opened: Instant) -> Self {
        let SessionPlan::Request(plan) = &ctx.session else {
            unreachable!("run_slot opens a request session only for a request plan")
        };
        RequestSession {
            slot,
            plan: plan.clone(),
            schedule: Schedule::open(ctx, slot, opened),
            epoch: ctx.epoch,
            tracker: Tracker::default(),
            text: String::new(),
            frames: BytesMut::new(),
            locs: None,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        let send = self.schedule.next();
        // Woken at the oldest waiting request's timeout too, so a loss is
        // counted in the second it happens, not at the next send.
        let timeout = self
            .tracker
            .oldest_waiting()
            .map(|seq| self.epoch + Duration::from_micros(self.deadline_us(seq)));
        match (send, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn due(&mut self, ctx: &RunContext, busy: bool) -> Option<Message> {
        let now = Instant::now();
        self.expire(ctx, now);
        if self.schedule.next().is_none_or(|next| now < next) {
            // Woken for a timeout, not a send.
            return None;
        }
        let (intended, _) = self.schedule.advance(ctx)?;
        let rec = &ctx.recorder;
        if busy {
            let lost = self.tracker.track(None, State::Unsent);
            count_lost(ctx, lost);
            record_unsent(rec);
            return None;
        }
        record_lag(rec, intended);
        let seq = self.tracker.next_seq();
        let vars = Vars { conn: self.slot, worker: &ctx.worker_id, seq, jwt: None };
        self.text.clear();
        let plan = &self.plan;
        plan.message.render_into(&mut self.text, |v, out| vars.write(v, &plan.rng, out));
        // A JSON request whose rendering lacks the path (an environment
        // value changed its shape) can get no reply: it is tracked without
        // a key and times out as lost.
        let key = match &plan.matcher {
            ReplyMatcher::Json(path) => path.find(self.text.as_bytes(), &KeyLeaf),
            ReplyMatcher::Regex(_) | ReplyMatcher::AnyNext => None,
        };
        let binary = plan.binary;
        let lost = self.tracker.track(key, State::Waiting);
        count_lost(ctx, lost);
        self.frames.extend_from_slice(self.text.as_bytes());
        let frame = self.frames.split().freeze();
        rec.counters.messages_sent.fetch_add(1, Relaxed);
        rec.counters.bytes_sent.fetch_add(frame.len() as u64, Relaxed);
        if binary {
            return Some(Message::Binary(frame));
        }
        // Copied from a String, so the check cannot fail.
        Utf8Bytes::try_from(frame).ok().map(Message::Text)
    }

    fn received(&mut self, ctx: &RunContext, payload: &[u8]) {
        let now = Instant::now();
        // A reply after its request's timeout is not a late delivery: the
        // request was already counted lost.
        self.expire(ctx, now);
        let rec = &ctx.recorder;
        match self.classify(payload) {
            Reply::Received(seq) => {
                if self.tracker.answer(seq) {
                    rec.counters.messages_out_of_order.fetch_add(1, Relaxed);
                }
                // From the intended send time, never from when it left
                // (only requests that were sent are ever answered).
                let intended = self.epoch + Duration::from_micros(self.schedule.due_us(seq));
                rec.record_latency(now.saturating_duration_since(intended));
                rec.counters.messages_received.fetch_add(1, Relaxed);
                rec.counters.bytes_received.fetch_add(payload.len() as u64, Relaxed);
            }
            Reply::Duplicated => _ = rec.counters.messages_duplicated.fetch_add(1, Relaxed),
            Reply::Unmatched => _ = rec.counters.messages_unmatched.fetch_add(1, Relaxed),
        }
    }

    fn awaiting(&self) -> bool {
        self.tracker.waiting > 0
    }

    fn ended(&mut self, ctx: &RunContext) {
        let lost = std::mem::take(&mut self.tracker.waiting);
        count_lost(ctx, lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> Option<Key> {
        Some(Key(n))
    }

    #[test]
    fn replies_are_received_once_then_duplicated_and_strangers_are_unmatched() {
        let mut t = Tracker::default();
        for n in 0..4 {
            assert_eq!(t.track(key(100 + n), State::Waiting), 0);
        }
        t.track(None, State::Unsent);
        assert_eq!(t.next_seq(), 5);
        assert_eq!(t.by_key.get(&Key(102)), Some(&2));
        assert_eq!(t.classify(2), Reply::Received(2));
        assert!(!t.answer(2));
        assert_eq!(t.classify(2), Reply::Duplicated);
        assert_eq!(t.classify(4), Reply::Unmatched, "never sent: nothing can answer it");
        assert_eq!(t.classify(5), Reply::Unmatched, "not sent yet");
        assert_eq!(t.oldest_waiting(), Some(0));
        assert!(t.answer(0), "0 answered after 2");
        assert_eq!(t.oldest_waiting(), Some(1));
        assert_eq!(t.waiting, 2);
        // 0..=2 reach their deadline: only 1 was still waiting.
        assert_eq!(t.expire(1000, |seq| if seq <= 2 { 1000 } else { 2000 }), 1);
        assert_eq!(t.classify(0), Reply::Unmatched, "no longer tracked");
        assert_eq!(t.by_key.get(&Key(100)), None, "its key is forgotten with it");
        assert_eq!(t.oldest_waiting(), Some(3));
        assert_eq!(t.expire(5000, |_| 2000), 1);
        assert_eq!((t.waiting, t.pending.len(), t.by_key.len()), (0, 0, 0));
    }

    #[test]
    fn a_reused_key_finds_the_newest_request() {
        let mut t = Tracker::default();
        t.track(key(7), State::Waiting);
        t.track(key(7), State::Waiting);
        assert_eq!(t.by_key.get(&Key(7)), Some(&1));
        assert_eq!(t.expire(50, |seq| seq * 100), 1, "request 0 is lost at its deadline");
        assert_eq!(t.by_key.get(&Key(7)), Some(&1), "the newer request keeps the key");
    }

    #[test]
    fn a_server_that_never_answers_cannot_grow_the_tracker() {
        let mut t = Tracker::default();
        let total = 3 * MAX_PENDING as u64 + 5;
        let mut lost = 0;
        for n in 0..total {
            lost += t.track(key(n), State::Waiting);
        }
        assert_eq!(t.pending.len(), MAX_PENDING);
        assert_eq!(t.by_key.len(), MAX_PENDING);
        assert_eq!(lost + t.waiting, total, "every request is lost exactly once");
        assert_eq!(t.oldest_waiting(), Some(total - MAX_PENDING as u64));
        // Replies to anything, known or not, add nothing.
        for n in 0..100_000 {
            let _ = t.classify(n * 7);
        }
        assert_eq!(t.pending.len(), MAX_PENDING);
    }
}
