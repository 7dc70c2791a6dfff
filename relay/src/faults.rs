//! Fault injection: the runtime side of [`Faults`].
//!
//! A relay without faults has no [`FaultState`] at all, so normal runs pay
//! nothing. With faults, the state holds the fault clock (when fault times
//! count from), the slow window (read by each echo), and, for the drop
//! fault, a registry of the open WebSocket sessions, which the drop task
//! empties when it fires. The drop and leak faults run as tasks of their
//! own under the relay's tracker and shutdown token.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{DropAt, Faults, LEAK_CAP_BYTES, SlowWindow};

/// How often the leak fault allocates.
const LEAK_TICK: Duration = Duration::from_millis(100);
/// Memory pages are touched at this stride so the leak is resident.
const PAGE: usize = 4096;

/// What the echo sessions and the fault tasks share.
#[derive(Debug)]
pub(crate) struct FaultState {
    slow: Option<SlowWindow>,
    /// Set once, when the fault clock starts; read on every echo while a
    /// slow window is configured.
    epoch: OnceLock<Instant>,
    /// Wakes the fault tasks when the clock starts.
    epoch_tx: watch::Sender<Option<Instant>>,
    /// Open sessions that the drop fault may close; `None` once it fired
    /// (or when no drop fault is configured), so later sessions are exempt.
    live: Mutex<Option<BTreeMap<u64, CancellationToken>>>,
    next_id: AtomicU64,
}

impl FaultState {
    /// The state for `faults`, or `None` when none is configured.
    pub(crate) fn new(faults: &Faults) -> Option<Arc<FaultState>> {
        if !faults.any() {
            return None;
        }
        Some(Arc::new(FaultState {
            slow: faults.slow,
            epoch: OnceLock::new(),
            epoch_tx: watch::Sender::new(None),
            live: Mutex::new(faults.drop.map(|_| BTreeMap::new())),
            next_id: AtomicU64::new(0),
        }))
    }

    /// Starts the fault clock at `epoch`; only the first call counts.
    pub(crate) fn start_clock(&self, epoch: Instant) {
        if self.epoch.set(epoch).is_ok() {
            self.epoch_tx.send_replace(Some(epoch));
            tracing::info!("fault clock started");
        }
    }

    /// Extra echo delay for a message received at `now`.
    pub(crate) fn extra_delay(&self, now: Instant) -> Duration {
        let (Some(slow), Some(epoch)) = (&self.slow, self.epoch.get()) else {
            return Duration::ZERO;
        };
        let from = *epoch + slow.start;
        if now >= from && now < from + slow.length { slow.extra } else { Duration::ZERO }
    }

    /// Registers a session that just opened, if a drop fault is still to
    /// come; the session closes with 1011 when the returned token fires.
    pub(crate) fn register(self: &Arc<Self>) -> Option<Registration> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let map = live.as_mut()?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let token = CancellationToken::new();
        map.insert(id, token.clone());
        Some(Registration { state: self.clone(), id, token })
    }

    /// Resolves when the clock starts (`None` on shutdown first).
    async fn epoch(&self, shutdown: &CancellationToken) -> Option<Instant> {
        let mut rx = self.epoch_tx.subscribe();
        tokio::select! {
            r = rx.wait_for(Option::is_some) => r.ok().and_then(|e| *e),
            () = shutdown.cancelled() => None,
        }
    }
}

/// A session the drop fault may close; leaves the registry when dropped.
pub(crate) struct Registration {
    state: Arc<FaultState>,
    id: u64,
    token: CancellationToken,
}

impl Registration {
    /// Resolves when the drop fault picked this session.
    pub(crate) async fn dropped(&self) {
        self.token.cancelled().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut live = self.state.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(map) = live.as_mut() {
            map.remove(&self.id);
        }
    }
}

/// Spawns the fault tasks of `faults` under `tracker`.
pub(crate) fn spawn(
    state: &Arc<FaultState>,
    faults: &Faults,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    if let Some(drop) = faults.drop {
        tracker.spawn(drop_task(state.clone(), drop, shutdown.clone()));
    }
    if let Some(mb) = faults.leak_mb_per_min {
        tracker.spawn(leak_task(state.clone(), mb, shutdown.clone()));
    }
}

/// At `drop.at`, closes the first `round(fraction * open)` sessions (in
/// the order they opened) of those open at that moment.
async fn drop_task(state: Arc<FaultState>, drop: DropAt, shutdown: CancellationToken) {
    let Some(epoch) = state.epoch(&shutdown).await else { return };
    tokio::select! {
        () = stampede_timer::sleep_until(epoch + drop.at) => {}
        () = shutdown.cancelled() => return,
    }
    let live = state.live.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
    let n = (drop.fraction * live.len() as f64).round() as usize;
    for token in live.values().take(n) {
        token.cancel();
    }
    tracing::info!("fault: dropping {n} of {} open connections (close 1011)", live.len());
}

/// Grows memory steadily from the clock's start until shutdown: every
/// [`LEAK_TICK`], allocates what the rate asks for by now and writes to
/// every page of it, so resident memory really grows.
async fn leak_task(state: Arc<FaultState>, mb_per_min: f64, shutdown: CancellationToken) {
    let Some(epoch) = state.epoch(&shutdown).await else { return };
    let bytes_per_s = mb_per_min * 1e6 / 60.0;
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut total = 0u64;
    let mut tick = tokio::time::interval_at(epoch.into(), LEAK_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => break,
        }
        let due = (bytes_per_s * epoch.elapsed().as_secs_f64()).min(LEAK_CAP_BYTES as f64) as u64;
        if due <= total {
            if total >= LEAK_CAP_BYTES {
                tracing::info!("fault: leak reached its cap of {LEAK_CAP_BYTES} bytes");
                break;
            }
            continue;
        }
        let mut chunk = vec![0u8; (due - total) as usize];
        for byte in chunk.iter_mut().step_by(PAGE) {
            *byte = 1;
        }
        total = due;
        kept.push(std::hint::black_box(chunk));
    }
    // Held until shutdown, also once the cap is reached.
    shutdown.cancelled().await;
    drop(kept);
}

/// Picks an exact share of a sequence of events, spread evenly: of the
/// first N calls to [`pick`](Share::pick), exactly
/// `floor(N * fraction)` answer yes (fraction in parts per million, so the
/// count is integer arithmetic, free of rounding drift). Shared by every
/// connection of the relay, so the share holds over the whole process.
#[derive(Debug)]
pub(crate) struct Share {
    ppm: u64,
    calls: AtomicU64,
}

impl Share {
    pub(crate) fn new(fraction: f64) -> Share {
        Share { ppm: (fraction.clamp(0.0, 1.0) * 1e6).round() as u64, calls: AtomicU64::new(0) }
    }

    /// Whether this event is one of the share.
    pub(crate) fn pick(&self) -> bool {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        n * self.ppm / 1_000_000 != (n - 1) * self.ppm / 1_000_000
    }
}

/// The delivery faults of channels (`--fault-duplicate`, `--fault-reorder`).
#[derive(Debug, Default)]
pub(crate) struct DeliveryFaults {
    pub(crate) duplicate: Option<Share>,
    pub(crate) reorder: Option<Share>,
}

impl DeliveryFaults {
    pub(crate) fn new(config: &crate::config::PubsubConfig) -> DeliveryFaults {
        DeliveryFaults {
            duplicate: config.fault_duplicate.map(Share::new),
            reorder: config.fault_reorder.map(Share::new),
        }
    }

    pub(crate) fn duplicate(&self) -> bool {
        self.duplicate.as_ref().is_some_and(Share::pick)
    }

    pub(crate) fn reorder(&self) -> bool {
        self.reorder.as_ref().is_some_and(Share::pick)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_picks_exactly_floor_n_times_fraction_spread_evenly() {
        for (fraction, n, want) in [(0.1, 200, 20), (0.25, 10, 2), (1.0, 7, 7), (0.333333, 1000, 333)] {
            let share = Share::new(fraction);
            let picks: Vec<bool> = (0..n).map(|_| share.pick()).collect();
            assert_eq!(picks.iter().filter(|p| **p).count(), want, "{fraction} of {n}");
        }
        let share = Share::new(0.1);
        let picked: Vec<usize> = (1..=30).filter(|_| share.pick()).collect();
        assert_eq!(picked, [10, 20, 30], "every 10th");
    }
}
