//! Channels: who is subscribed to what, the sequence numbers, and history.
//!
//! One lock guards every channel of the process. Under it, a publish takes
//! its channel's next sequence number, pushes the frame (built once,
//! shared by reference) into each subscriber's bounded [`Outbox`] without
//! waiting, and stores it in history; a subscribe registers the
//! subscriber and notes the last sequence number at that instant, so the
//! history replayed to it (up to that number, read later in chunks by the
//! connection's task) and the live messages (after it) meet without a gap
//! or an overlap.
//!
//! History is bounded three ways: per channel by count, by age, and across
//! all channels by bytes (an entry costs its frame plus
//! [`ENTRY_OVERHEAD`]). Entries leave in publish order: a global queue
//! lists every entry oldest first, so the age and byte limits pop from its
//! front, the same entry that is its channel's oldest. The count limit
//! removes a channel's oldest out of that order; such an entry stays in the
//! global queue as a stale mark, skipped when reached and compacted away
//! once stale marks are half of the queue, so the queue stays within twice
//! the live entries. A channel with no subscribers and no history is
//! removed (its sequence numbers start over if it comes back).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::Stats;
use crate::config::PubsubConfig;
use crate::ops::MessageFrame;
use crate::outbox::{Outbox, Pushed};

/// What a history entry costs beyond its frame's bytes: the entry, its
/// place in the global queue and the frame's allocation header, rounded up.
pub(crate) const ENTRY_OVERHEAD: usize = 128;
/// Stale marks tolerated in the global queue before a compaction is
/// considered.
const MIN_COMPACT: usize = 1024;
/// Longest pause between sweeps of expired history.
const MAX_SWEEP: Duration = Duration::from_secs(1);

/// Why the hub said no (the `reason` of an `error` frame, or of a `503`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ChannelLimit,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::ChannelLimit => "channel limit reached",
        }
    }
}

/// A subscription's history still to be written: sequence numbers
/// `next..=until` (those evicted meanwhile are skipped).
#[derive(Debug)]
pub(crate) struct Replay {
    pub(crate) channel: Arc<str>,
    next: u64,
    until: u64,
}

/// A subscribe that succeeded.
#[derive(Debug)]
pub(crate) struct Subscribed {
    /// The channel's last sequence number when the subscription started.
    pub(crate) seq: u64,
    pub(crate) channel: Arc<str>,
    /// History to write before the live messages, when `since` asked for
    /// some that is retained.
    pub(crate) replay: Option<Replay>,
}

/// Every channel of this relay process.
pub(crate) struct Hub {
    state: Mutex<State>,
    history_messages: usize,
    history_age: Duration,
    history_bytes: usize,
    max_channels: usize,
    stats: Arc<Stats>,
    next_conn: AtomicU64,
}

#[derive(Default)]
struct State {
    channels: HashMap<Arc<str>, Channel>,
    /// Every history entry (by id) with its channel, oldest first, plus
    /// stale marks of entries the count limit removed.
    order: VecDeque<(u64, Arc<str>)>,
    stale: usize,
    /// Cost of the retained entries.
    bytes: usize,
    next_entry: u64,
    subscriptions: u64,
}

struct Channel {
    name: Arc<str>,
    last_seq: u64,
    /// Consecutive sequence numbers, oldest first.
    history: VecDeque<Entry>,
    subscribers: HashMap<u64, Arc<Outbox>>,
}

struct Entry {
    seq: u64,
    /// Unique in the process and increasing with time, also across a
    /// channel that was removed and came back.
    id: u64,
    at: Instant,
    frame: Utf8Bytes,
    cost: usize,
}

impl Hub {
    pub(crate) fn new(config: &PubsubConfig, stats: Arc<Stats>) -> Hub {
        Hub {
            state: Mutex::default(),
            history_messages: config.history_messages,
            history_age: config.history_age,
            history_bytes: config.history_bytes,
            max_channels: config.max_channels,
            stats,
            next_conn: AtomicU64::new(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A number for a new connection and its id: the number, a dash and
    /// 16 random hex digits (unique in the process, hard to guess, safe in
    /// a URL path).
    pub(crate) fn new_connection(&self) -> (u64, String) {
        let n = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let mut random = [0u8; 8];
        // The system generator does not fail on Linux once seeded; the
        // counter alone keeps ids unique if it ever did.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random);
        (n, format!("{n}-{:016x}", u64::from_be_bytes(random)))
    }

    /// Subscribes `outbox`'s connection to `channel` (not already
    /// subscribed: the caller checks), creating the channel if needed.
    pub(crate) fn subscribe(
        &self,
        outbox: &Arc<Outbox>,
        channel: &str,
        since: Option<u64>,
    ) -> Result<Subscribed, Refusal> {
        let mut state = self.state();
        state.expire(Instant::now(), self.history_age);
        let ch = self.channel(&mut state, channel)?;
        ch.subscribers.insert(outbox.conn, outbox.clone());
        let seq = ch.last_seq;
        let replay = since.filter(|n| ch.history.back().is_some_and(|e| e.seq > *n)).map(|n| Replay {
            channel: ch.name.clone(),
            next: n + 1,
            until: seq,
        });
        let channel = ch.name.clone();
        state.subscriptions += 1;
        self.gauges(&state);
        Ok(Subscribed { seq, channel, replay })
    }

    /// Ends a subscription; its frames still queued are dropped. Whether
    /// there was one.
    pub(crate) fn unsubscribe(&self, outbox: &Outbox, channel: &str) -> bool {
        let mut state = self.state();
        let Some(ch) = state.channels.get_mut(channel) else { return false };
        if ch.subscribers.remove(&outbox.conn).is_none() {
            return false;
        }
        // Under the lock: no frame of the channel can arrive after this.
        outbox.purge(channel);
        state.subscriptions -= 1;
        state.remove_if_unused(channel);
        self.gauges(&state);
        true
    }

    /// Ends every subscription of a connection that is going away.
    pub(crate) fn leave<'c>(&self, outbox: &Outbox, channels: impl IntoIterator<Item = &'c Arc<str>>) {
        let mut state = self.state();
        for channel in channels {
            if let Some(ch) = state.channels.get_mut(channel)
                && ch.subscribers.remove(&outbox.conn).is_some()
            {
                state.subscriptions -= 1;
                state.remove_if_unused(channel);
            }
        }
        self.gauges(&state);
    }

    /// Publishes `data` (JSON text) to `channel` from connection `from`
    /// (`None`: HTTP), which does not receive it. Returns the sequence
    /// number and how many subscribers it was queued for.
    pub(crate) fn publish(
        &self,
        from: Option<u64>,
        channel: &str,
        data: &str,
    ) -> Result<(u64, usize), Refusal> {
        let message = MessageFrame::new(channel, data);
        let mut state = self.state();
        let now = Instant::now();
        state.expire(now, self.history_age);
        let ch = self.channel(&mut state, channel)?;
        ch.last_seq += 1;
        let seq = ch.last_seq;
        let frame: Utf8Bytes = message.with_seq(seq).into();
        let mut delivered = 0;
        for (conn, outbox) in &ch.subscribers {
            if Some(*conn) == from {
                continue;
            }
            match outbox.push(&ch.name, &frame) {
                Pushed::Queued => delivered += 1,
                Pushed::BecameSlow => {
                    self.stats.pubsub.slow_closed.fetch_add(1, Ordering::Relaxed);
                }
                Pushed::Refused => {}
            }
        }
        let name = ch.name.clone();
        if self.history_messages > 0 {
            state.keep(name, seq, now, frame, self.history_messages);
            while state.bytes > self.history_bytes && state.evict_oldest() {}
            state.compact();
        } else {
            state.remove_if_unused(&name);
        }
        self.stats.pubsub.published.fetch_add(1, Ordering::Relaxed);
        self.gauges(&state);
        Ok((seq, delivered))
    }

    /// Moves up to `max` history frames of `replay` to `out`. Whether the
    /// replay is complete.
    pub(crate) fn replay(&self, replay: &mut Replay, max: usize, out: &mut Vec<Utf8Bytes>) -> bool {
        let mut state = self.state();
        state.expire(Instant::now(), self.history_age);
        let Some(front) = state.channels.get(&replay.channel).and_then(|c| c.history.front()) else {
            return true;
        };
        // Evicted meanwhile: lost to this subscriber, as to any other.
        replay.next = replay.next.max(front.seq);
        let history = &state.channels[&replay.channel].history;
        let start = usize::try_from(replay.next - front.seq).unwrap_or(usize::MAX).min(history.len());
        let before = out.len();
        for entry in history.range(start..).take_while(|e| e.seq <= replay.until).take(max) {
            out.push(entry.frame.clone());
            replay.next = entry.seq + 1;
        }
        replay.next > replay.until || out.len() == before
    }

    /// Drops expired history now (publishes and subscribes also do, in
    /// passing).
    pub(crate) fn sweep(&self) {
        let mut state = self.state();
        state.expire(Instant::now(), self.history_age);
        state.compact();
        self.gauges(&state);
    }

    /// The channel, created if it does not exist and the limit allows.
    fn channel<'s>(&self, state: &'s mut State, name: &str) -> Result<&'s mut Channel, Refusal> {
        if !state.channels.contains_key(name) {
            if state.channels.len() >= self.max_channels {
                return Err(Refusal::ChannelLimit);
            }
            let name: Arc<str> = name.into();
            let channel = Channel {
                name: name.clone(),
                last_seq: 0,
                history: VecDeque::new(),
                subscribers: HashMap::new(),
            };
            state.channels.insert(name, channel);
        }
        Ok(state.channels.get_mut(name).expect("present or just inserted"))
    }

    fn gauges(&self, state: &State) {
        let stats = &self.stats.pubsub;
        stats.channels.store(state.channels.len() as u64, Ordering::Relaxed);
        stats.subscriptions.store(state.subscriptions, Ordering::Relaxed);
    }
}

impl State {
    /// Stores a published frame in its channel's history (trimmed to
    /// `limit` entries) and in the global queue.
    fn keep(&mut self, channel: Arc<str>, seq: u64, at: Instant, frame: Utf8Bytes, limit: usize) {
        let id = self.next_entry;
        self.next_entry += 1;
        let cost = frame.len() + ENTRY_OVERHEAD;
        let ch = self.channels.get_mut(&channel).expect("the channel just published to");
        ch.history.push_back(Entry { seq, id, at, frame, cost });
        self.bytes += cost;
        while ch.history.len() > limit {
            let gone = ch.history.pop_front().expect("longer than the limit");
            self.bytes -= gone.cost;
            self.stale += 1;
        }
        self.order.push_back((id, channel));
    }

    /// Whether the global queue's entry `(id, channel)` is still retained.
    fn retained(channels: &HashMap<Arc<str>, Channel>, id: u64, channel: &str) -> bool {
        // A channel's entries leave oldest first, so all from its oldest
        // retained one on are still there.
        channels.get(channel).and_then(|c| c.history.front()).is_some_and(|f| f.id <= id)
    }

    /// The oldest retained entry of all channels (skipping stale marks):
    /// its channel, and when it was published.
    fn oldest(&mut self) -> Option<(Arc<str>, Instant)> {
        while let Some((id, channel)) = self.order.front() {
            if State::retained(&self.channels, *id, channel) {
                let at = self.channels[channel].history.front().expect("retained").at;
                return Some((channel.clone(), at));
            }
            self.order.pop_front();
            self.stale -= 1;
        }
        None
    }

    /// Drops the oldest retained entry of all channels; false if none.
    fn evict_oldest(&mut self) -> bool {
        let Some((channel, _)) = self.oldest() else { return false };
        self.order.pop_front();
        let ch = self.channels.get_mut(&channel).expect("retained");
        let gone = ch.history.pop_front().expect("retained");
        self.bytes -= gone.cost;
        self.remove_if_unused(&channel);
        true
    }

    /// Drops every entry published `age` or longer before `now`.
    fn expire(&mut self, now: Instant, age: Duration) {
        while let Some((_, at)) = self.oldest()
            && now.saturating_duration_since(at) >= age
        {
            self.evict_oldest();
        }
    }

    /// Drops the stale marks once they are half of the global queue.
    fn compact(&mut self) {
        if self.stale < MIN_COMPACT || self.stale * 2 < self.order.len() {
            return;
        }
        let channels = &self.channels;
        self.order.retain(|(id, channel)| State::retained(channels, *id, channel));
        self.order.shrink_to(self.order.len() * 2);
        self.stale = 0;
    }

    fn remove_if_unused(&mut self, channel: &str) {
        if self.channels.get(channel).is_some_and(|c| c.subscribers.is_empty() && c.history.is_empty()) {
            self.channels.remove(channel);
        }
    }
}

/// Sweeps expired history every `min(1 s, age / 2)` until shutdown, so
/// idle channels release their memory and go.
pub(crate) async fn sweep_loop(hub: Arc<Hub>, shutdown: CancellationToken) {
    if hub.history_messages == 0 {
        return;
    }
    let every = (hub.history_age / 2).clamp(Duration::from_millis(10), MAX_SWEEP);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => hub.sweep(),
            () = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(history_messages: usize, history_bytes: usize, age: Duration) -> Hub {
        let config = PubsubConfig {
            history_messages,
            history_bytes,
            history_age: age,
            max_channels: 4,
            ..PubsubConfig::default()
        };
        Hub::new(&config, Arc::new(Stats::default()))
    }

    const LONG: Duration = Duration::from_secs(3600);

    /// Sequence numbers of `channel`'s history.
    fn history(hub: &Hub, channel: &str) -> Vec<u64> {
        let state = hub.state();
        state.channels.get(channel).map(|c| c.history.iter().map(|e| e.seq).collect()).unwrap_or_default()
    }

    fn replay_all(hub: &Hub, outbox: &Arc<Outbox>, channel: &str, since: u64) -> Vec<String> {
        let sub = hub.subscribe(outbox, channel, Some(since)).unwrap();
        let mut out = Vec::new();
        if let Some(mut replay) = sub.replay {
            while !hub.replay(&mut replay, 2, &mut out) {}
        }
        hub.unsubscribe(outbox, channel);
        out.iter().map(|f| f.as_str().to_string()).collect()
    }

    #[test]
    fn count_limit_keeps_the_newest_and_replay_starts_after_since() {
        let hub = hub(3, 1 << 20, LONG);
        for i in 0..5 {
            assert_eq!(hub.publish(None, "c", &i.to_string()), Ok((i + 1, 0)));
        }
        assert_eq!(history(&hub, "c"), [3, 4, 5]);
        let outbox = Arc::new(Outbox::new(1));
        let frames = replay_all(&hub, &outbox, "c", 3);
        assert_eq!(
            frames,
            [
                r#"{"op":"message","channel":"c","seq":4,"data":3}"#,
                r#"{"op":"message","channel":"c","seq":5,"data":4}"#
            ]
        );
        assert_eq!(replay_all(&hub, &outbox, "c", 0).len(), 3, "what is retained, from the oldest");
        assert!(replay_all(&hub, &outbox, "c", 5).is_empty());
    }

    #[test]
    fn bytes_limit_drops_the_oldest_of_any_channel() {
        let one = MessageFrame::new("a", "1").with_seq(1).len() + ENTRY_OVERHEAD;
        let hub = hub(100, one * 3, LONG);
        hub.publish(None, "a", "1").unwrap();
        hub.publish(None, "b", "1").unwrap();
        hub.publish(None, "a", "2").unwrap();
        assert_eq!((history(&hub, "a"), history(&hub, "b")), (vec![1, 2], vec![1]));
        hub.publish(None, "b", "2").unwrap();
        assert_eq!((history(&hub, "a"), history(&hub, "b")), (vec![2], vec![1, 2]), "a's first went first");
        assert!(hub.state().bytes <= one * 3);
    }

    #[test]
    fn expired_history_goes_and_an_unused_channel_with_it() {
        let hub = hub(100, 1 << 20, Duration::from_millis(50));
        hub.publish(None, "c", "1").unwrap();
        assert_eq!(hub.stats.pubsub.snapshot().channels, 1);
        std::thread::sleep(Duration::from_millis(60));
        hub.sweep();
        assert!(hub.state().channels.is_empty());
        assert_eq!(hub.stats.pubsub.snapshot().channels, 0);
        assert_eq!(hub.publish(None, "c", "2"), Ok((1, 0)), "a channel that came back starts over");
    }

    #[test]
    fn without_history_an_unused_channel_is_not_kept() {
        let hub = hub(0, 1 << 20, LONG);
        assert_eq!(hub.publish(None, "c", "1"), Ok((1, 0)));
        assert!(hub.state().channels.is_empty());
        let outbox = Arc::new(Outbox::new(1));
        let sub = hub.subscribe(&outbox, "c", Some(0)).unwrap();
        assert!(sub.replay.is_none());
        assert_eq!(hub.publish(None, "c", "2"), Ok((1, 1)));
        assert_eq!(hub.publish(None, "c", "3"), Ok((2, 1)), "kept while subscribed");
    }

    #[test]
    fn the_channel_limit_refuses_new_channels_only() {
        let hub = hub(10, 1 << 20, LONG);
        for c in ["a", "b", "c", "d"] {
            hub.publish(None, c, "1").unwrap();
        }
        assert_eq!(hub.publish(None, "e", "1"), Err(Refusal::ChannelLimit));
        let outbox = Arc::new(Outbox::new(1));
        assert_eq!(hub.subscribe(&outbox, "e", None).unwrap_err(), Refusal::ChannelLimit);
        assert!(hub.subscribe(&outbox, "a", None).is_ok());
        assert_eq!(hub.publish(None, "a", "2"), Ok((2, 1)));
    }

    #[test]
    fn the_publisher_is_skipped_and_a_full_outbox_is_counted_slow_once() {
        let hub = hub(0, 1 << 20, LONG);
        let (me, other) = (Arc::new(Outbox::new(1)), Arc::new(Outbox::new(2)));
        hub.subscribe(&me, "c", None).unwrap();
        hub.subscribe(&other, "c", None).unwrap();
        assert_eq!(hub.publish(Some(1), "c", "1"), Ok((1, 1)));
        assert!(me.is_empty());
        for _ in 1..crate::outbox::MAX_FRAMES {
            hub.publish(Some(1), "c", "1").unwrap();
        }
        assert_eq!(hub.publish(Some(1), "c", "1").unwrap().1, 0, "did not fit");
        assert_eq!(hub.publish(Some(1), "c", "1").unwrap().1, 0);
        assert_eq!(hub.stats.pubsub.snapshot().slow_closed, 1);
        hub.leave(&other, [&Arc::from("c")]);
        hub.leave(&me, [&Arc::from("c")]);
        let s = hub.stats.pubsub.snapshot();
        assert_eq!((s.channels, s.subscriptions), (0, 0));
    }

    #[test]
    fn stale_marks_are_compacted_and_bytes_stay_exact() {
        let hub = hub(2, 1 << 30, LONG);
        for i in 0..10_000u64 {
            hub.publish(None, &format!("c{}", i % 3), "1").unwrap();
        }
        let state = hub.state();
        let live: usize = state.channels.values().map(|c| c.history.len()).sum();
        assert_eq!(live, 6);
        assert!(state.order.len() <= 2 * MIN_COMPACT + live, "{} marks", state.order.len());
        let cost: usize = state.channels.values().flat_map(|c| &c.history).map(|e| e.cost).sum();
        assert_eq!(state.bytes, cost);
    }
}
