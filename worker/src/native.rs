//! The native engine of one run: Rust WebSocket clients. Keeps this
//! worker's number of connection slots on the commanded ramp, and emits one
//! snapshot per second of the run's clock until every connection has closed
//! after Stop.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use stampede_model::Ramp;
use stampede_model::clock::RunClock;
use stampede_proto::fleet::{Assign, Gauges, PhaseStart, Snapshot};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{RunContext, run_slot};
use crate::engine::EngineError;
use crate::payload::MIN_PAYLOAD;
use crate::process::{CpuMeter, rss_bytes};
use crate::recorder::{Recorder, Snapshotter};
use crate::target::Target;

/// How often the ramp is re-evaluated.
const RAMP_TICK: Duration = Duration::from_millis(10);

/// A running native engine; dropping it does not stop it,
/// [`NativeEngine::stop`] does.
pub struct NativeEngine {
    phases: mpsc::Sender<PhaseStart>,
    stop: CancellationToken,
    /// The ramp manager and the reporter; they await every connection task.
    tasks: TaskTracker,
}

impl NativeEngine {
    /// Starts the engine for `assign`; snapshots go to `snapshots`, which is
    /// closed after the last one.
    pub async fn start(
        assign: &Assign,
        worker_id: &str,
        sources: &[IpAddr],
        snapshots: mpsc::Sender<Snapshot>,
    ) -> Result<NativeEngine, EngineError> {
        let target = Target::resolve(&assign.target_url).await?;
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
        let spec = assign.connect_spec().map_err(EngineError::Spec)?;
        let recorder = Arc::new(Recorder::default());
        let ctx = Arc::new(RunContext {
            recorder: recorder.clone(),
            target,
            epoch: std::time::Instant::now(),
            interval: assign.message_interval(),
            payload_bytes: (assign.payload_bytes as usize).max(MIN_PAYLOAD),
            connect_timeout: assign.connect_timeout().max(Duration::from_millis(1)),
            reconnect: assign.reconnect,
            sources: addrs,
            ws_config,
            spec,
            worker_id: worker_id.to_string(),
        });
        let clock = RunClock::from_unix_us(assign.run_start_unix_us, assign.clock_offset_us);
        let (phase_tx, phase_rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let slots = TaskTracker::new();
        let tasks = TaskTracker::new();
        tasks.spawn(manage(ctx, phase_rx, stop.clone(), slots.clone()));
        tasks.spawn(report(recorder, Instant::from_std(clock.mono), stop.clone(), slots, snapshots));
        tasks.close();
        Ok(NativeEngine { phases: phase_tx, stop, tasks })
    }

    /// Starts a phase now.
    pub async fn phase(&self, phase: PhaseStart) {
        let _ = self.phases.send(phase).await;
    }

    /// Closes every connection; the last snapshot follows once all are closed.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Stops, and waits up to `grace` for every connection to close (the
    /// last snapshot must be read from the channel meanwhile, or dropped).
    pub async fn stop_and_wait(&self, grace: Duration) -> bool {
        self.stop();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Keeps the number of slots on the ramp: spawns slots to go up, cancels the
/// newest to go down.
async fn manage(
    ctx: Arc<RunContext>,
    mut phases: mpsc::Receiver<PhaseStart>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut slots: Vec<CancellationToken> = Vec::new();
    let mut next_slot = 0u64;
    let mut ramp = Ramp { from: 0, to: 0, ramp: Duration::ZERO };
    let mut ramp_start = Instant::now();
    let mut tick = tokio::time::interval(RAMP_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            phase = phases.recv() => match phase {
                Some(p) => {
                    ramp = p.ramp_from(slots.len() as u64);
                    ramp_start = Instant::now();
                }
                None => break,
            },
            _ = tick.tick() => {
                let want = ramp.level_at(ramp_start.elapsed());
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
    stop.cancel();
    tracker.close();
    // The engine's tasks end when its connections have closed.
    tracker.wait().await;
}

/// Emits a snapshot at every whole second of the run clock, and a last one
/// once every slot has ended after Stop.
async fn report(
    recorder: Arc<Recorder>,
    run_start: Instant,
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
        // Woken much later than due: this process was frozen or starved,
        // and the controller flags these seconds as a generator stall.
        let taken_late = if last { Duration::ZERO } else { Instant::now().saturating_duration_since(due) };
        let gauges = Gauges { rss_bytes: rss_bytes(), cpu_us: cpu.delta_us(), ..Default::default() };
        let snap = snapshotter.take(&recorder, second, taken_late, gauges);
        if out.send(snap).await.is_err() || last {
            return;
        }
        second += 1;
    }
}
