//! The clock outside a tokio runtime with I/O: one thread per process keeps
//! the deadlines and sleeps on a futex with the timer slack set to 1 ns.

use std::sync::{Condvar, Mutex, OnceLock};
use std::task::Waker;
use std::time::Instant;

use crate::Deadlines;

struct Clock {
    deadlines: Mutex<Deadlines>,
    earlier: Condvar,
}

fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    static THREAD: OnceLock<()> = OnceLock::new();
    let clock = CLOCK.get_or_init(|| Clock { deadlines: Mutex::default(), earlier: Condvar::new() });
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
    let mut deadlines = clock.deadlines.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let now = Instant::now();
        let next = deadlines.take_due(now, &mut due);
        if !due.is_empty() {
            drop(deadlines);
            due.drain(..).for_each(Waker::wake);
            deadlines = clock.deadlines.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        deadlines = match next {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(now);
                clock.earlier.wait_timeout(deadlines, wait).unwrap_or_else(|e| e.into_inner()).0
            }
            None => clock.earlier.wait(deadlines).unwrap_or_else(|e| e.into_inner()),
        };
    }
}

pub(crate) fn register(deadline: Instant, waker: Waker) {
    let clock = clock();
    let earliest = clock.deadlines.lock().unwrap_or_else(|e| e.into_inner()).push(deadline, waker);
    if earliest {
        clock.earlier.notify_one();
    }
}
