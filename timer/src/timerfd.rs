//! One runtime's clock: a timerfd in the runtime's I/O driver, armed at the
//! earliest deadline, and a driver task that wakes the tasks due.
//!
//! Needs a runtime with I/O enabled (`enable_all`, as `#[tokio::main]` and
//! `#[tokio::test]` build them): tokio refuses to register a file otherwise.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;

use crate::Deadlines;

/// The least wait the timerfd is re-armed for after it fired. Arming it
/// reprograms the CPU's timer, which in a VM traps to the hypervisor: at
/// 100,000 deadlines a second (100 connections, a message each per ms)
/// that was 17 % of a worker's CPU. Deadlines due within this of each
/// other are woken together, at most this late (never early, and the
/// lateness is in the latency, which counts from the intended time): the
/// worker's CPU fell 12 % at 100,000 msg/s, and its p50 with it.
const COALESCE: Duration = Duration::from_micros(50);

pub(crate) struct Clock {
    state: Mutex<State>,
    fd: Arc<OwnedFd>,
}

struct State {
    deadlines: Deadlines,
    /// The deadline the timerfd is armed for; `None`: disarmed.
    armed: Option<Instant>,
}

impl Clock {
    /// A clock for the runtime of `handle`, its driver task spawned there.
    pub(crate) fn start(handle: &tokio::runtime::Handle) -> io::Result<Arc<Clock>> {
        // SAFETY: timerfd_create takes no pointers; a result >= 0 is a new
        // file descriptor that nothing else owns.
        let fd = unsafe {
            let raw = libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC);
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            Arc::new(OwnedFd::from_raw_fd(raw))
        };
        let _runtime = handle.enter();
        // SAFETY: the descriptor is valid and stays open while the AsyncFd
        // lives: both hold it through an Arc, and nothing closes it early.
        let ready = unsafe { AsyncFd::register_with_interest(fd.clone(), tokio::io::Interest::READABLE)? };
        let clock =
            Arc::new(Clock { state: Mutex::new(State { deadlines: Deadlines::default(), armed: None }), fd });
        handle.spawn(drive(clock.clone(), ready));
        Ok(clock)
    }

    pub(crate) fn register(&self, deadline: Instant, waker: Waker) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.deadlines.push(deadline, waker);
        if state.armed.is_none_or(|armed| deadline < armed) {
            self.arm(deadline);
            state.armed = Some(deadline);
        }
    }

    /// Takes the wakers due now and arms the timerfd for the next deadline.
    fn fire(&self, due: &mut Vec<Waker>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let next = state.deadlines.take_due(Instant::now(), due);
        // A timerfd that fired is disarmed (it is not periodic).
        // Deadlines packed closer than COALESCE are served together.
        let next = next.map(|n| n.max(Instant::now() + COALESCE));
        state.armed = next;
        if let Some(next) = next {
            self.arm(next);
        }
    }

    fn arm(&self, deadline: Instant) {
        // Relative to now; zero would disarm it, so at least a nanosecond.
        let wait = deadline.saturating_duration_since(Instant::now()).max(Duration::from_nanos(1));
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: wait.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked
        // for. It cannot fail for our own timerfd and a valid spec.
        unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }
}

/// Wakes the tasks due each time the timerfd fires, until the runtime
/// shuts down (which drops this task, and with it the clock).
async fn drive(clock: Arc<Clock>, ready: AsyncFd<Arc<OwnedFd>>) {
    let mut due = Vec::new();
    loop {
        let Ok(mut guard) = ready.readable().await else { return };
        // Read the expiration count: the timerfd then reads empty until it
        // fires again, so its readiness is cleared (a later expiration
        // sets it anew).
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer of 8.
        unsafe {
            libc::read(ready.get_ref().as_raw_fd(), expirations.as_mut_ptr().cast(), expirations.len());
        }
        guard.clear_ready();
        clock.fire(&mut due);
        due.drain(..).for_each(Waker::wake);
    }
}
