//! The list of counters. Each line of [`counters!`]'s invocation below is a
//! counter: the worker's recorder increments it, the wire carries it by
//! name, the aggregator sums it, and the summary, CSV columns and thresholds
//! read it from [`Counters`]. Adding a counter is one line here plus the
//! place that increments it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// Defines [`Counters`] (plain `u64`s) and [`AtomicCounters`] (the same as
/// atomics for the hot path) from one list of names.
macro_rules! counters {
    ($($(#[doc = $doc:literal])+ $name:ident,)+) => {
        /// Event counts of an interval, a phase or a run.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub struct Counters {
            $($(#[doc = $doc])+ pub $name: u64,)+
        }

        /// The same counters as atomics, incremented by connection tasks.
        #[derive(Debug, Default)]
        pub struct AtomicCounters {
            $($(#[doc = $doc])+ pub $name: AtomicU64,)+
        }

        impl Counters {
            /// Every counter's name, in definition order.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),+];

            /// (name, value) of every counter, in definition order.
            pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($name), self.$name)),+].into_iter()
            }

            /// The counter called `name`, for setting it by name.
            pub fn get_mut(&mut self, name: &str) -> Option<&mut u64> {
                match name {
                    $(stringify!($name) => Some(&mut self.$name),)+
                    _ => None,
                }
            }

            /// Adds `other` field by field (saturating: a hostile peer's
            /// huge values cannot wrap a total).
            pub fn add(&mut self, other: &Counters) {
                $(self.$name = self.$name.saturating_add(other.$name);)+
            }

            /// `self - before` field by field; counters only grow, so a
            /// field that went down is reported as 0, never wrapped.
            pub fn since(&self, before: &Counters) -> Counters {
                Counters { $($name: self.$name.saturating_sub(before.$name),)+ }
            }
        }

        impl AtomicCounters {
            /// Reads every counter (each atomically, not all at one instant).
            pub fn read(&self) -> Counters {
                Counters { $($name: self.$name.load(Relaxed),)+ }
            }
        }
    };
}

counters! {
    /// Connection attempts that ended: opened plus failed (an attempt the
    /// run cancelled before it ended is not counted).
    connections_attempted,
    /// Attempts that completed the WebSocket upgrade.
    connections_opened,
    /// Attempts that failed (by cause in the error counts).
    connections_failed,
    /// Open connections the server closed with a close frame.
    connections_closed_by_server,
    /// Connections we closed (ramp-down, end of run).
    connections_closed_by_client,
    /// Open connections that ended without a close frame (reset, EOF, protocol error).
    connections_dropped,
    /// Messages sent.
    messages_sent,
    /// Messages whose echo came back intact (the first time).
    messages_received,
    /// Messages whose echo never came back.
    messages_lost,
    /// Echoes of a message that was already echoed.
    messages_duplicated,
    /// Echoes that carry our stamp but not the bytes we sent (truncated, altered).
    messages_corrupted,
    /// Echoes that arrived after the echo of a later message.
    messages_out_of_order,
    /// Frames received that are not an echo of anything sent on the connection.
    messages_unmatched,
    /// Sends the schedule asked for that never left (the previous send was
    /// still being written, or the connection was not open).
    messages_unsent,
    /// Sends that left more than 1 ms after their intended time.
    sends_late,
    /// Sends that left more than 100 ms after their intended time: the load
    /// generator, not the target, held them up.
    sends_stalled,
    /// Payload bytes sent.
    bytes_sent,
    /// Payload bytes received.
    bytes_received,
    /// Receive mode: silences on one connection longer than the gap limit.
    receive_gaps,
    /// Receive mode: pushed messages without a timestamp that can be read.
    timestamps_missing,
    /// Receive mode: timestamps ahead of our clock by more than the clock
    /// offset's error (their latency is recorded as 0).
    timestamps_future,
    /// Sessions of an arrivals stage that arrived while its `max` sessions
    /// were open, and so were never opened (the open model's backlog).
    sessions_dropped,
    /// Pairs: messages that did not authenticate under the pair's key
    /// (another key, another pair's message, altered by the relay).
    messages_undecryptable,
    /// Broadcast: deliveries the subscribers were owed, each message once
    /// per subscription it was published to (the base of the loss rate).
    deliveries_expected,
    /// Pairs and flows: sessions that ran to their end (every message
    /// accounted for, every step done).
    sessions_completed,
    /// Flows: sessions that ended at a failed step.
    sessions_failed,
    /// WebSockets the app in a browser session opened (Network events).
    app_ws_opened,
    /// The app's WebSockets that closed.
    app_ws_closed,
    /// Frames the app in a browser session sent on its WebSockets.
    app_frames_sent,
    /// Frames the app in a browser session received on its WebSockets.
    app_frames_received,
    /// Chromium events of a page's WebSockets we could not read in time
    /// (the page made them faster): the app_* counts are short by up to
    /// this many.
    app_events_lost,
}

impl Counters {
    /// Sets counters from (name, value) pairs, as the wire carries them; an
    /// unknown name is returned as the error.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, u64)>) -> Result<Counters, String> {
        let mut c = Counters::default();
        for (name, value) in pairs {
            *c.get_mut(name).ok_or_else(|| name.to_string())? = value;
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_values_and_arithmetic_come_from_one_list() {
        let a = AtomicCounters::default();
        a.messages_sent.fetch_add(3, Relaxed);
        a.messages_duplicated.fetch_add(1, Relaxed);
        let now = a.read();
        let pairs: Vec<(&str, u64)> = now.iter().filter(|(_, v)| *v > 0).collect();
        assert_eq!(pairs, [("messages_sent", 3), ("messages_duplicated", 1)]);
        assert_eq!(Counters::from_pairs(pairs).unwrap(), now);
        assert_eq!(Counters::from_pairs([("no_such", 1)]), Err("no_such".to_string()));
        assert_eq!(Counters::NAMES.len(), now.iter().count());

        let mut total = Counters { messages_sent: u64::MAX - 1, ..Default::default() };
        total.add(&now);
        assert_eq!(total.messages_sent, u64::MAX, "saturates, never wraps");
        let earlier = Counters { messages_sent: 5, ..Default::default() };
        assert_eq!(now.since(&earlier).messages_sent, 0, "a counter that went down is 0, not 2^64-2");
    }
}
