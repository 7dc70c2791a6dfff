//! Exact delivery accounting for one connection: which of the messages sent
//! came back, so that duplicates, losses, reordering, corruption and frames
//! nobody asked for are each counted and never cancel each other out.
//!
//! A message is identified by its sequence number, which is its slot in the
//! connection's send schedule. A bitmap covers the sequence numbers from the
//! oldest unresolved one up to the next to send; it grows only while echoes
//! are outstanding (an idle connection holds none) and is capped at
//! [`WINDOW`] messages, so a server that never answers cannot make it grow
//! without bound.

use std::collections::VecDeque;

/// Most messages a connection tracks while their echoes are outstanding.
/// Older ones are counted lost; an echo of one arriving later counts as
/// unmatched.
pub const WINDOW: u64 = 1 << 16;

/// What an echo turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Echo {
    /// The first intact echo of a message; `reordered` if a later message's
    /// echo came first.
    Delivered {
        /// Arrived after the echo of a later message.
        reordered: bool,
    },
    /// A second (or later) echo of a message.
    Duplicate,
    /// Our stamp, but not the bytes we sent.
    Corrupted,
    /// Not an echo of anything this connection has sent.
    Unmatched,
}

/// The delivery record of one connection.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Sequence numbers handed out so far (sent or skipped).
    next: u64,
    /// Oldest sequence number not known to be resolved; bit 0 of `words[0]`.
    base: u64,
    /// Below this, messages were given up as lost when the window was full.
    given_up: u64,
    /// Bit set: resolved (echoed, corrupted or never sent).
    words: VecDeque<u64>,
    /// Highest sequence number delivered so far.
    highest: Option<u64>,
    /// Messages given up on since the last [`Delivery::take_given_up`].
    newly_given_up: u64,
}

impl Delivery {
    /// The next message's sequence number; every number is handed out once.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next += 1;
        if self.next - self.base > WINDOW {
            self.give_up_oldest_word();
        }
        while self.words.len() as u64 * 64 < self.next - self.base {
            self.words.push_back(0);
        }
        seq
    }

    /// A sequence number that was scheduled but never sent: nothing will
    /// come back for it, and it is not lost.
    pub fn skipped(&mut self, seq: u64) {
        if seq >= self.base && seq < self.next {
            self.set(seq);
        }
    }

    /// Classifies an echo of `seq`; `intact` says whether its bytes are
    /// exactly what was sent.
    pub fn echo(&mut self, seq: u64, intact: bool) -> Echo {
        if seq >= self.next || seq < self.given_up {
            return Echo::Unmatched;
        }
        if seq < self.base || self.is_set(seq) {
            return Echo::Duplicate;
        }
        self.set(seq);
        if !intact {
            return Echo::Corrupted;
        }
        let reordered = self.highest.is_some_and(|h| seq < h);
        if !reordered {
            self.highest = Some(seq);
        }
        Echo::Delivered { reordered }
    }

    /// Sequence numbers handed out so far (the next one to hand out).
    pub fn handed_out(&self) -> u64 {
        self.next
    }

    /// Messages sent whose echo has not come back (yet).
    pub fn outstanding(&self) -> u64 {
        let resolved: u64 = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
        (self.next - self.base) - resolved
    }

    /// Messages given up on (window full) since the last call.
    pub fn take_given_up(&mut self) -> u64 {
        std::mem::take(&mut self.newly_given_up)
    }

    fn index(&self, seq: u64) -> (usize, u64) {
        let off = seq - self.base;
        ((off / 64) as usize, 1 << (off % 64))
    }

    fn is_set(&self, seq: u64) -> bool {
        let (i, bit) = self.index(seq);
        self.words.get(i).is_some_and(|w| w & bit != 0)
    }

    fn set(&mut self, seq: u64) {
        let (i, bit) = self.index(seq);
        self.words[i] |= bit;
        // Slide past fully resolved words, so the window holds only what is
        // outstanding. (A word is full only when all its 64 numbers were
        // handed out: bits at or past `next` are never set.)
        while self.words.front() == Some(&u64::MAX) {
            self.words.pop_front();
            self.base += 64;
        }
    }

    fn give_up_oldest_word(&mut self) {
        if let Some(w) = self.words.pop_front() {
            self.newly_given_up += u64::from(w.count_zeros());
            self.base += 64;
            self.given_up = self.base;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(d: &mut Delivery, n: u64) {
        for _ in 0..n {
            d.next_seq();
        }
    }

    #[test]
    fn duplicates_losses_and_reordering_are_counted_apart() {
        let mut d = Delivery::default();
        sent(&mut d, 10);
        assert_eq!(d.echo(0, true), Echo::Delivered { reordered: false });
        assert_eq!(d.echo(0, true), Echo::Duplicate, "the same echo twice");
        assert_eq!(d.echo(3, true), Echo::Delivered { reordered: false });
        assert_eq!(d.echo(2, true), Echo::Delivered { reordered: true });
        assert_eq!(d.echo(4, false), Echo::Corrupted);
        assert_eq!(d.echo(4, true), Echo::Duplicate, "a message is resolved once");
        assert_eq!(d.echo(10, true), Echo::Unmatched, "not sent yet");
        d.skipped(9);
        // 1, 5, 6, 7, 8 never came back.
        assert_eq!(d.outstanding(), 5);
    }

    #[test]
    fn the_window_slides_and_an_idle_connection_holds_nothing() {
        let mut d = Delivery::default();
        for _ in 0..1000 {
            let s = d.next_seq();
            assert!(matches!(d.echo(s, true), Echo::Delivered { .. }));
        }
        assert!(d.words.len() <= 1, "resolved words are dropped: {}", d.words.len());
        assert_eq!(d.outstanding(), 0);
        assert_eq!(d.echo(5, true), Echo::Duplicate, "below the window: already delivered");
    }

    #[test]
    fn a_server_that_never_answers_cannot_grow_the_window() {
        let mut d = Delivery::default();
        sent(&mut d, WINDOW * 3);
        assert!(d.words.len() as u64 <= WINDOW / 64 + 1);
        let given_up = d.take_given_up();
        assert_eq!(given_up + d.outstanding(), WINDOW * 3, "every message is lost exactly once");
        assert_eq!(d.echo(0, true), Echo::Unmatched, "an echo of a message given up on");
    }
}
