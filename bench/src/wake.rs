//! (h) what this machine charges a thread for one sleep and wake: a thread
//! sleeps 100 us at a time for 5 s (some 7,000 wakes a second here, what a
//! worker sending 20,000 msg/s does), and its own CPU clock says what that
//! cost.
//!
//! On bare metal it is a few microseconds. In a VM the timer it arms, the
//! idle halt and the wake-up may each trap to the hypervisor, and nested
//! (a VM in a VM) each trap costs tens of microseconds: measured here,
//! 36-45 us a wake, so 10,000 wakes a second are ~40 % of a core before
//! any work. A generator pays it on every wake that finds one message to send
//! or one echo to read, so it sets the CPU per message of (c) at low rates
//! and tells which kind of machine a figure of (c) came from.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::figures::Figure;
use crate::runs::Context;

const NAP: Duration = Duration::from_micros(100);
const FOR: Duration = Duration::from_secs(5);

pub fn wake_cost(_ctx: &Context) -> Result<Vec<Figure>> {
    let (cpu, wakes) = std::thread::spawn(|| {
        // Sleeps end on time, as a worker's timerfd does (no 50 us slack).
        // SAFETY: PR_SET_TIMERSLACK takes a number and changes only this thread.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1) };
        let (cpu0, start) = (thread_cpu(), Instant::now());
        let mut wakes = 0u64;
        while start.elapsed() < FOR {
            std::thread::sleep(NAP);
            wakes += 1;
        }
        (thread_cpu() - cpu0, wakes)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the sleeping thread panicked"))?;
    if wakes == 0 {
        bail!("(h): the thread never woke");
    }
    let per_wake_us = cpu.as_secs_f64() * 1e6 / wakes as f64;
    let per_s = wakes as f64 / FOR.as_secs_f64();
    Ok(vec![
        Figure::new("h", "CPU a thread is charged per sleep and wake (100 us sleeps)", per_wake_us, "us"),
        Figure::new("h", "wakes a second in that loop", per_s, "1/s"),
    ])
}

/// This thread's CPU time (user and system), from the scheduler's own
/// nanosecond account (not ticks).
pub(crate) fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
