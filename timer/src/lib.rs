//! A precise sleep for async tasks.
//!
//! tokio's timer rounds every deadline up to its next 1 ms tick and then
//! parks in `epoll_wait`, whose timeout is rounded up to whole milliseconds
//! again: a sleep ends 0.5-2 ms late. A load generator measures latency from
//! each message's intended send time, so that lateness lands in every
//! sample; against a server that answers in 100 us it is a 10x error.
//!
//! Here each tokio runtime gets one clock: the deadlines in a heap, and a
//! timerfd armed at the earliest and registered in the runtime's own I/O
//! driver. The kernel fires a timerfd on time (it is an hrtimer; timer
//! slack does not apply), its readiness ends the runtime's `epoll_wait`, and
//! a driver task wakes the tasks that are due, on the runtime's own
//! threads. (A timer thread sleeping on a futex, the first design, cost two
//! thread switches per deadline: a fifth of a busy worker's CPU went to it.)
//! Outside a tokio runtime with I/O, a timer thread does the same job.
//!
//! [`Sleep`] is meant to live across loop iterations and be [`Sleep::reset`]
//! (like `tokio::time::Sleep`), so a deadline is registered once, not on
//! every poll.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

mod thread;
mod timerfd;

struct Entry {
    deadline: Instant,
    waker: Waker,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed: the heap's top is the earliest deadline.
    fn cmp(&self, other: &Self) -> Ordering {
        other.deadline.cmp(&self.deadline)
    }
}

/// Deadlines waiting, earliest on top.
#[derive(Default)]
struct Deadlines(BinaryHeap<Entry>);

impl Deadlines {
    /// Adds one; whether it is now the earliest.
    fn push(&mut self, deadline: Instant, waker: Waker) -> bool {
        let earliest = self.0.peek().is_none_or(|e| deadline < e.deadline);
        self.0.push(Entry { deadline, waker });
        earliest
    }

    /// Moves the wakers due at `now` into `due`; returns the next deadline.
    fn take_due(&mut self, now: Instant, due: &mut Vec<Waker>) -> Option<Instant> {
        while self.0.peek().is_some_and(|e| e.deadline <= now) {
            due.push(self.0.pop().expect("peeked").waker);
        }
        self.0.peek().map(|e| e.deadline)
    }
}

/// A clock: where a [`Sleep`] registers its deadline.
enum Clock {
    /// One runtime's timerfd.
    Runtime(Arc<timerfd::Clock>),
    /// The process's timer thread.
    Thread,
}

impl Clock {
    /// The clock of the runtime polling us (made on first use), or the
    /// timer thread outside one.
    fn current() -> Clock {
        type Known = (tokio::runtime::Id, Weak<timerfd::Clock>);
        static CLOCKS: Mutex<Vec<Known>> = Mutex::new(Vec::new());
        thread_local! {
            // This thread's last answer: sessions make new sleeps often.
            static LAST: std::cell::RefCell<Option<Known>> = const { std::cell::RefCell::new(None) };
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return Clock::Thread };
        let id = handle.id();
        let last =
            LAST.with_borrow(|last| last.as_ref().filter(|(i, _)| *i == id).and_then(|(_, c)| c.upgrade()));
        if let Some(clock) = last {
            return Clock::Runtime(clock);
        }
        let clock = Clock::of_runtime(&handle, &CLOCKS);
        if let Clock::Runtime(c) = &clock {
            LAST.set(Some((id, Arc::downgrade(c))));
        }
        clock
    }

    fn of_runtime(
        handle: &tokio::runtime::Handle,
        known: &Mutex<Vec<(tokio::runtime::Id, Weak<timerfd::Clock>)>>,
    ) -> Clock {
        let id = handle.id();
        let mut clocks = known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(clock) = clocks.iter().find(|(i, _)| *i == id).and_then(|(_, c)| c.upgrade()) {
            return Clock::Runtime(clock);
        }
        // A runtime that has shut down dropped its driver and its clock.
        clocks.retain(|(_, c)| c.strong_count() > 0);
        match timerfd::Clock::start(handle) {
            Ok(clock) => {
                clocks.push((id, Arc::downgrade(&clock)));
                Clock::Runtime(clock)
            }
            // A runtime without I/O (or no timerfd): the thread still works.
            Err(_) => Clock::Thread,
        }
    }

    fn register(&self, deadline: Instant, waker: Waker) {
        match self {
            Clock::Runtime(clock) => clock.register(deadline, waker),
            Clock::Thread => thread::register(deadline, waker),
        }
    }
}

/// A future that completes at its deadline (within tens of microseconds).
pub struct Sleep {
    deadline: Instant,
    registered: Option<Instant>,
    clock: Option<Clock>,
}

impl std::fmt::Debug for Sleep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sleep").field("deadline", &self.deadline).finish()
    }
}

/// Sleeps until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, registered: None, clock: None }
}

impl Sleep {
    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline; the future can be polled again after completing.
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    /// Whether the deadline has passed.
    pub fn is_elapsed(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        // One registration per deadline: a task's waker does not change
        // between polls, and a stale entry only causes a spurious wake.
        if self.registered != Some(self.deadline) {
            self.registered = Some(self.deadline);
            let deadline = self.deadline;
            self.clock.get_or_insert_with(Clock::current).register(deadline, cx.waker().clone());
        }
        Poll::Pending
    }
}
