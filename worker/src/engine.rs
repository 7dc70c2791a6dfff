//! The native engine of one run: keeps this worker's number of connection
//! slots on the commanded ramp, and emits one snapshot per second of the
//! run's clock until every connection has closed after Stop.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stampede_proto::fleet::{Assign, Gauges, PhaseStart, Snapshot};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{RunContext, run_slot};
use crate::payload::MIN_PAYLOAD;
use crate::process::{CpuMeter, rss_bytes};
use crate::recorder::{Recorder, Snapshotter};
use crate::target::{Target, TargetError};

/// How often the ramp is re-evaluated.
const RAMP_TICK: Duration = Duration::from_millis(10);

/// Why a run's assignment cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad target URL.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// Bad source address.
    #[error("source address {0:?} is not an IP address")]
    Source(String),
}

/// A running engine; dropping it does not stop it, [`Engine::stop`] does.
pub struct Engine {
    phases: mpsc::Sender<PhaseStart>,
    stop: CancellationToken,
}

impl Engine {
    /// Starts the engine for `assign`; snapshots go to `snapshots`, which is
    /// closed after the last one.
    pub fn start(
        assign: &Assign,
        sources: &[IpAddr],
        snapshots: mpsc::Sender<Snapshot>,
    ) -> Result<Engine, EngineError> {
        let target = Target::parse(&assign.target_url)?;
        let mut addrs = sources.to_vec();
        for a in &assign.source_addresses {
            addrs.push(a.parse().map_err(|_| EngineError::Source(a.clone()))?);
        }
        let buffer = (assign.buffer_bytes as usize).max(512);
        let mut ws_config = WebSocketConfig::default();
        ws_config.read_buffer_size = buffer;
        ws_config.write_buffer_size = 0;
        ws_config.max_write_buffer_size = usize::MAX;
        ws_config.max_message_size = Some(16 << 20);
        ws_config.max_frame_size = Some(16 << 20);
        let recorder = Arc::new(Recorder::default());
        let ctx = Arc::new(RunContext {
            recorder: recorder.clone(),
            target,
            epoch: std::time::Instant::now(),
            interval: (assign.message_interval_us > 0)
                .then(|| Duration::from_micros(assign.message_interval_us)),
            payload_bytes: (assign.payload_bytes as usize).max(MIN_PAYLOAD),
            connect_timeout: Duration::from_micros(assign.connect_timeout_us.max(1000)),
            reconnect: assign.reconnect,
            sources: addrs,
            ws_config,
        });
        let run_start = local_instant(assign.run_start_unix_us, assign.clock_offset_us);
        let (phase_tx, phase_rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let slots = TaskTracker::new();
        let phase_index = Arc::new(AtomicU32::new(0));
        tokio::spawn(manage(ctx, phase_rx, stop.clone(), slots.clone(), phase_index.clone()));
        tokio::spawn(report(recorder, run_start, phase_index, stop.clone(), slots, snapshots));
        Ok(Engine { phases: phase_tx, stop })
    }

    /// Starts a phase now.
    pub async fn phase(&self, phase: PhaseStart) {
        let _ = self.phases.send(phase).await;
    }

    /// Closes every connection; the last snapshot follows once all are closed.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Converts the controller-clock instant `unix_us` to this process's clock.
fn local_instant(unix_us: i64, offset_us: i64) -> Instant {
    let now = Instant::now();
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i64;
    let ahead = unix_us - (wall + offset_us);
    if ahead >= 0 {
        now + Duration::from_micros(ahead as u64)
    } else {
        now.checked_sub(Duration::from_micros(ahead.unsigned_abs())).unwrap_or(now)
    }
}

/// A linear move of the slot count from `from` to `to` over `ramp`.
#[derive(Debug, Clone, Copy)]
struct Ramp {
    from: u64,
    to: u64,
    start: Instant,
    ramp: Duration,
}

impl Ramp {
    fn at(&self, now: Instant) -> u64 {
        let done = now.saturating_duration_since(self.start);
        if self.ramp.is_zero() || done >= self.ramp {
            return self.to;
        }
        let f = done.as_secs_f64() / self.ramp.as_secs_f64();
        let v = self.from as f64 + (self.to as f64 - self.from as f64) * f;
        v.round() as u64
    }
}

/// Keeps the number of slots on the ramp: spawns slots to go up, cancels the
/// newest to go down.
async fn manage(
    ctx: Arc<RunContext>,
    mut phases: mpsc::Receiver<PhaseStart>,
    stop: CancellationToken,
    tracker: TaskTracker,
    phase_index: Arc<AtomicU32>,
) {
    let mut slots: Vec<CancellationToken> = Vec::new();
    let mut next_slot = 0u64;
    let mut ramp = Ramp { from: 0, to: 0, start: Instant::now(), ramp: Duration::ZERO };
    let mut tick = tokio::time::interval(RAMP_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            phase = phases.recv() => match phase {
                Some(p) => {
                    phase_index.store(p.index, Relaxed);
                    ramp = Ramp {
                        from: slots.len() as u64,
                        to: p.connections,
                        start: Instant::now(),
                        ramp: Duration::from_micros(p.ramp_us),
                    };
                }
                None => break,
            },
            _ = tick.tick() => {
                let want = ramp.at(Instant::now());
                ctx.recorder.target.store(want, Relaxed);
                while (slots.len() as u64) < want {
                    let token = stop.child_token();
                    tracker.spawn(run_slot(ctx.clone(), next_slot, token.clone()));
                    slots.push(token);
                    next_slot += 1;
                }
                while (slots.len() as u64) > want {
                    if let Some(token) = slots.pop() {
                        token.cancel();
                    }
                }
            }
        }
    }
    ctx.recorder.target.store(0, Relaxed);
    stop.cancel();
    tracker.close();
}

/// Emits a snapshot at every whole second of the run clock, and a last one
/// once every slot has ended after Stop.
async fn report(
    recorder: Arc<Recorder>,
    run_start: Instant,
    phase_index: Arc<AtomicU32>,
    stop: CancellationToken,
    slots: TaskTracker,
    out: mpsc::Sender<Snapshot>,
) {
    let mut snapshotter = Snapshotter::new();
    let mut cpu = CpuMeter::new();
    let mut second = Instant::now().saturating_duration_since(run_start).as_secs();
    let finished = async {
        stop.cancelled().await;
        slots.wait().await;
    };
    tokio::pin!(finished);
    loop {
        let due = run_start + Duration::from_secs(second + 1);
        let last = tokio::select! {
            _ = sleep_until(due) => false,
            _ = &mut finished => true,
        };
        let gauges = Gauges { rss_bytes: rss_bytes(), cpu_us: cpu.delta_us(), ..Default::default() };
        let snap = snapshotter.take(&recorder, second, phase_index.load(Relaxed), gauges);
        if out.send(snap).await.is_err() || last {
            return;
        }
        second += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ramp_is_linear_and_ends_at_its_target() {
        let start = Instant::now();
        let up = Ramp { from: 10, to: 110, start, ramp: Duration::from_secs(10) };
        assert_eq!(up.at(start), 10);
        assert_eq!(up.at(start + Duration::from_secs(5)), 60);
        assert_eq!(up.at(start + Duration::from_secs(11)), 110);
        let down = Ramp { from: 100, to: 0, start, ramp: Duration::from_secs(4) };
        assert_eq!(down.at(start + Duration::from_secs(1)), 75);
        let jump = Ramp { from: 0, to: 7, start, ramp: Duration::ZERO };
        assert_eq!(jump.at(start), 7);
    }
}
