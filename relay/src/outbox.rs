//! One `/pubsub` connection's outbound queue of channel messages.
//!
//! Publishers push into it without waiting (under the hub's lock), the
//! connection's task pops and writes. It is bounded by frames and by
//! bytes; a push that does not fit marks the connection slow instead of
//! growing or waiting: the queue is emptied, later pushes are refused, and
//! the connection's task closes it with 1008 "slow consumer". So a reader
//! that stalls costs at most one full queue, and never holds up a publisher
//! or the other subscribers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// Frames a connection may have waiting.
pub(crate) const MAX_FRAMES: usize = 1024;
/// Bytes a connection may have waiting (one frame is always let in when
/// the queue is empty, however large, so a big message is not a slow
/// consumer by itself).
pub(crate) const MAX_BYTES: usize = 4 << 20;

/// A message frame waiting for its connection, with its channel (to purge
/// it on unsubscribe, and for the reorder fault).
#[derive(Debug, Clone)]
pub(crate) struct Queued {
    pub(crate) channel: Arc<str>,
    pub(crate) frame: Utf8Bytes,
}

/// How a push went.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// It did not fit: the connection is slow from now on (reported once).
    BecameSlow,
    /// The connection was already slow or gone.
    Refused,
}

#[derive(Debug)]
pub(crate) struct Outbox {
    /// The connection's number in this process (the publisher's own is
    /// skipped when delivering).
    pub(crate) conn: u64,
    queue: Mutex<Queue>,
    /// Wakes the connection's task after a push.
    wake: Notify,
    /// Cancelled when the connection became slow.
    slow: CancellationToken,
}

#[derive(Debug, Default)]
struct Queue {
    frames: VecDeque<Queued>,
    bytes: usize,
    refusing: bool,
}

impl Outbox {
    pub(crate) fn new(conn: u64) -> Outbox {
        Outbox { conn, queue: Mutex::default(), wake: Notify::new(), slow: CancellationToken::new() }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `frame` unless the queue is full (see [`Pushed`]).
    pub(crate) fn push(&self, channel: &Arc<str>, frame: &Utf8Bytes) -> Pushed {
        let mut q = self.queue();
        if q.refusing {
            return Pushed::Refused;
        }
        let fits = q.frames.is_empty() || (q.frames.len() < MAX_FRAMES && q.bytes + frame.len() <= MAX_BYTES);
        if !fits {
            *q = Queue { refusing: true, ..Queue::default() };
            drop(q);
            self.slow.cancel();
            return Pushed::BecameSlow;
        }
        q.bytes += frame.len();
        q.frames.push_back(Queued { channel: channel.clone(), frame: frame.clone() });
        drop(q);
        self.wake.notify_one();
        Pushed::Queued
    }

    /// The oldest waiting frame.
    pub(crate) fn pop(&self) -> Option<Queued> {
        let mut q = self.queue();
        let next = q.frames.pop_front()?;
        q.bytes -= next.frame.len();
        Some(next)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue().frames.is_empty()
    }

    /// Drops the waiting frames of `channel` (after an unsubscribe).
    pub(crate) fn purge(&self, channel: &str) {
        let mut q = self.queue();
        let mut bytes = q.bytes;
        q.frames.retain(|f| {
            let keep = &*f.channel != channel;
            if !keep {
                bytes -= f.frame.len();
            }
            keep
        });
        q.bytes = bytes;
    }

    /// Refuses every later push (the connection is going away).
    pub(crate) fn close(&self) {
        *self.queue() = Queue { refusing: true, ..Queue::default() };
    }

    /// Resolves after a push (at once if one happened since the last wait).
    pub(crate) async fn pushed(&self) {
        self.wake.notified().await;
    }

    /// Resolves once the connection became slow.
    pub(crate) async fn slowed(&self) {
        self.slow.cancelled().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Utf8Bytes {
        "x".repeat(len).into()
    }

    #[test]
    fn a_full_queue_makes_the_connection_slow_once_and_frees_it() {
        let outbox = Outbox::new(1);
        let c: Arc<str> = "c".into();
        for _ in 0..MAX_FRAMES {
            assert_eq!(outbox.push(&c, &frame(1)), Pushed::Queued);
        }
        assert_eq!(outbox.push(&c, &frame(1)), Pushed::BecameSlow);
        assert!(outbox.slow.is_cancelled());
        assert!(outbox.is_empty(), "the queue is freed at once");
        assert_eq!(outbox.push(&c, &frame(1)), Pushed::Refused, "reported once");
    }

    #[test]
    fn bytes_bound_the_queue_but_one_large_frame_always_fits() {
        let outbox = Outbox::new(1);
        let c: Arc<str> = "c".into();
        assert_eq!(outbox.push(&c, &frame(MAX_BYTES * 2)), Pushed::Queued, "alone, however large");
        assert_eq!(outbox.pop().unwrap().frame.len(), MAX_BYTES * 2);
        assert_eq!(outbox.push(&c, &frame(MAX_BYTES - 10)), Pushed::Queued);
        assert_eq!(outbox.push(&c, &frame(10)), Pushed::Queued);
        assert_eq!(outbox.push(&c, &frame(1)), Pushed::BecameSlow);
    }

    #[test]
    fn purge_drops_one_channel_and_its_bytes() {
        let outbox = Outbox::new(1);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        outbox.push(&a, &frame(3));
        outbox.push(&b, &frame(5));
        outbox.push(&a, &frame(7));
        outbox.purge("a");
        assert_eq!(outbox.queue().bytes, 5);
        assert_eq!(&*outbox.pop().unwrap().channel, "b");
        assert!(outbox.pop().is_none());
        assert_eq!(outbox.queue().bytes, 0);
    }
}
