//! A precise sleep for async tasks.
//!
//! tokio's timer rounds every deadline up to its next 1 ms tick and then
//! parks in `epoll_wait`, whose timeout is rounded up to whole milliseconds
//! again: a sleep ends 0.5-2 ms late. A load generator measures latency from
//! each message's intended send time, so that lateness lands in every
//! sample; against a server that answers in 100 us it is a 10x error. Here
//! one thread per process keeps the deadlines in a heap and sleeps on a
//! futex with the timer slack set to 1 ns, waking tasks within tens of
//! microseconds of their deadline.
//!
//! [`Sleep`] is meant to live across loop iterations and be [`Sleep::reset`]
//! (like `tokio::time::Sleep`), so a deadline is registered once, not on
//! every poll.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

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

struct Clock {
    heap: Mutex<BinaryHeap<Entry>>,
    earlier: Condvar,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    static THREAD: OnceLock<()> = OnceLock::new();
    let clock = CLOCK.get_or_init(|| Clock { heap: Mutex::new(BinaryHeap::new()), earlier: Condvar::new() });
    THREAD.get_or_init(|| {
        std::thread::Builder::new()
            .name("precise-timer".into())
            .spawn(move || run(clock))
            .expect("cannot start the precise-timer thread");
    });
    clock
}

fn run(clock: &'static Clock) {
    // SAFETY: prctl with PR_SET_TIMERSLACK only changes this thread's slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
    let mut due = Vec::new();
    let mut heap = clock.heap.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|e| e.deadline <= now) {
            due.push(heap.pop().expect("peeked").waker);
        }
        if !due.is_empty() {
            drop(heap);
            due.drain(..).for_each(Waker::wake);
            heap = clock.heap.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        heap = match heap.peek().map(|e| e.deadline) {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(now);
                clock.earlier.wait_timeout(heap, wait).unwrap_or_else(|e| e.into_inner()).0
            }
            None => clock.earlier.wait(heap).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

fn register(deadline: Instant, waker: Waker) {
    let clock = clock();
    let mut heap = clock.heap.lock().unwrap_or_else(|e| e.into_inner());
    let earliest = heap.peek().is_none_or(|e| deadline < e.deadline);
    heap.push(Entry { deadline, waker });
    drop(heap);
    if earliest {
        clock.earlier.notify_one();
    }
}

/// A future that completes at its deadline (within tens of microseconds).
#[derive(Debug)]
pub struct Sleep {
    deadline: Instant,
    registered: Option<Instant>,
}

/// Sleeps until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep { deadline, registered: None }
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
            register(self.deadline, cx.waker().clone());
        }
        Poll::Pending
    }
}
