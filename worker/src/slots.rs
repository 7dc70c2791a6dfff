//! The engine of one run: keeps this worker's slots on the commanded shape
//! (ramp, wave, churn, arrivals), and emits one snapshot per second of the
//! run's clock until every slot has closed after Stop. A slot is a Rust
//! WebSocket client (a pair of them for pairs), or a browser session
//! ([`crate::browser`]): the shape, the clock and the snapshots are the
//! same for both, which is what puts native and browser load on one
//! timeline.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use stampede_model::clock::RunClock;
use stampede_model::{Churn, Ramp, Shape};
use stampede_proto::fleet::{Assign, Gauges, PhaseStart, Snapshot};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior, sleep_until};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::browser::BrowserPlan;
use crate::connection::{RunContext, run_slot};
use crate::engine::EngineError;
use crate::opening::Opener;
use crate::pace::Pace;
use crate::payload::MIN_PAYLOAD;
use crate::process::{CpuMeter, rss_bytes};
use crate::recorder::{Recorder, Snapshotter};
use crate::session::SessionPlan;
use crate::shards::Shards;
use crate::target::Target;

/// How often the ramp is re-evaluated.
const RAMP_TICK: Duration = Duration::from_millis(10);

/// A running native engine; dropping it does not stop it,
/// [`SlotEngine::stop`] does.
pub struct SlotEngine {
    phases: mpsc::Sender<PhaseStart>,
    stop: CancellationToken,
    /// Controller clock minus ours, us, as last measured: seconds are
    /// numbered by it.
    offset_us: Arc<AtomicI64>,
    /// The ramp manager and the reporter; they await every connection task.
    tasks: TaskTracker,
}

impl SlotEngine {
    /// Starts the engine for `assign`; snapshots go to `snapshots`, which is
    /// closed after the last one.
    pub async fn start(
        assign: &Assign,
        worker_id: &str,
        sources: &[IpAddr],
        snapshots: mpsc::Sender<Snapshot>,
    ) -> Result<SlotEngine, EngineError> {
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
        // The TLS client is built here, once per run, and shared by every
        // connection; a bad PEM fails the assignment instead of each connect.
        let target = target.with_tls(&spec.tls).map_err(|e| EngineError::Spec(e.to_string()))?;
        let opener = Opener::new(&spec, &target.url, worker_id).map_err(EngineError::Spec)?;
        // Session templates resolved ({{env.NAME}}) and regexes compiled
        // once: a missing variable fails the assignment, not each message.
        let session = SessionPlan::new(&spec.session).map_err(EngineError::Spec)?;
        let recorder = Arc::new(match &spec.session {
            stampede_model::spec::SessionSpec::Flow(flow) => Recorder::with_steps(&flow.names),
            stampede_model::spec::SessionSpec::Browser(b) => Recorder::with_steps(&b.flow.names),
            _ => Recorder::default(),
        });
        let ctx = Arc::new(RunContext {
            recorder: recorder.clone(),
            target,
            epoch: std::time::Instant::now(),
            interval: assign.message_interval(),
            pace: Pace::new(assign.message_interval()),
            payload_bytes: (assign.payload_bytes as usize).max(MIN_PAYLOAD),
            connect_timeout: assign.connect_timeout().max(Duration::from_millis(1)),
            reconnect: assign.reconnect,
            sources: addrs,
            ws_config,
            opener,
            spec,
            worker_id: worker_id.to_string(),
            session,
            clock_offset_us: assign.clock_offset_us,
        });
        let clock = RunClock::from_unix_us(assign.run_start_unix_us, assign.clock_offset_us);
        let (phase_tx, phase_rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let slots = TaskTracker::new();
        let tasks = TaskTracker::new();
        let browsers = match &ctx.session {
            SessionPlan::Browser(b) => Some(b.clone()),
            _ => None,
        };
        tasks.spawn(manage(ctx, phase_rx, stop.clone(), slots.clone()));
        let offset_us = Arc::new(AtomicI64::new(assign.clock_offset_us));
        let clock = Clock {
            zero: Instant::from_std(clock.mono),
            assigned_us: assign.clock_offset_us,
            now_us: offset_us.clone(),
        };
        tasks.spawn(report(recorder, clock, stop.clone(), slots, snapshots, browsers));
        tasks.close();
        Ok(SlotEngine { phases: phase_tx, stop, offset_us, tasks })
    }

    /// Starts a phase now.
    pub async fn phase(&self, phase: PhaseStart) {
        let _ = self.phases.send(phase).await;
    }

    /// Takes a fresh measurement of the controller's clock (controller
    /// minus ours, us): the next seconds end by it.
    pub fn set_clock_offset(&self, offset_us: i64) {
        self.offset_us.store(offset_us, Relaxed);
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

/// Keeps this worker's connections on the commanded shape: spawns slots to
/// go up and cancels the newest to go down (a ramp, a wave); replaces the
/// oldest at the churn rate; opens arriving sessions and closes each when
/// its life is over (arrivals). Counts come from the model's functions, the
/// ones the controller's plan uses.
async fn manage(
    ctx: Arc<RunContext>,
    mut phases: mpsc::Receiver<PhaseStart>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let mut slots = Slots { ctx, tracker, stop: stop.clone(), next: 0 };
    // Held connections, oldest first.
    let mut held: VecDeque<CancellationToken> = VecDeque::new();
    // Sessions of an arrivals phase, with when each ends, oldest first (all
    // live equally long, so they end in order).
    let mut sessions: VecDeque<(Instant, CancellationToken)> = VecDeque::new();
    let mut shape = Shape::Ramp(Ramp { from: 0, to: 0, ramp: Duration::ZERO });
    let mut churn: Option<Churn> = None;
    let mut phase_start = Instant::now();
    // Phase time of the last tick: churn and arrivals count what is due
    // between ticks.
    let mut last = Duration::ZERO;
    let mut tick = tokio::time::interval(RAMP_TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            phase = phases.recv() => match phase {
                Some(p) => {
                    // An arrivals phase's sessions end with it.
                    for (_, token) in sessions.drain(..) {
                        token.cancel();
                    }
                    if let Some(interval) = p.message_interval() {
                        slots.ctx.pace.set(interval);
                    }
                    shape = p.shape_from(held.len() as u64);
                    if matches!(shape, Shape::Arrivals(_)) {
                        // Sessions are the load now: connections held from
                        // before close.
                        held.drain(..).for_each(|token| token.cancel());
                    }
                    churn = p.churn();
                    last = p.offset();
                    let now = Instant::now();
                    phase_start = now.checked_sub(p.offset()).unwrap_or(now);
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let t = now.saturating_duration_since(phase_start);
                match shape {
                    Shape::Arrivals(a) => {
                        while sessions.front().is_some_and(|(end, _)| *end <= now) {
                            if let Some((_, token)) = sessions.pop_front() {
                                token.cancel();
                            }
                        }
                        let due = a.due_between(last, t);
                        let room = a.max.saturating_sub(sessions.len() as u64);
                        for _ in 0..due.min(room) {
                            sessions.push_back((now + a.session, slots.open()));
                        }
                        let dropped = due.saturating_sub(room);
                        if dropped > 0 {
                            slots.ctx.recorder.counters.sessions_dropped.fetch_add(dropped, Relaxed);
                        }
                    }
                    Shape::Ramp(_) | Shape::Wave(_) => {
                        // Levels count connections; a pair slot holds two.
                        let want = shape.level_at(t) / slots.ctx.session.connections_per_slot();
                        while (held.len() as u64) < want {
                            held.push_back(slots.open());
                        }
                        while (held.len() as u64) > want {
                            if let Some(token) = held.pop_back() {
                                token.cancel();
                            }
                        }
                        // Churn: the oldest closes gracefully (a close frame,
                        // counted closed by client), a new one opens.
                        let replace = churn.map_or(0, |c| c.due_between(last, t)).min(held.len() as u64);
                        for _ in 0..replace {
                            if let Some(token) = held.pop_front() {
                                token.cancel();
                            }
                            held.push_back(slots.open());
                        }
                    }
                }
                last = t;
            }
        }
    }
    stop.cancel();
    slots.tracker.close();
    // The engine's tasks end when its connections have closed.
    slots.tracker.wait().await;
}

/// Opens connection slots, each numbered once.
struct Slots {
    ctx: Arc<RunContext>,
    tracker: TaskTracker,
    stop: CancellationToken,
    next: u64,
}

impl Slots {
    /// Starts the next slot; cancelling the token closes it.
    fn open(&mut self) -> CancellationToken {
        let token = self.stop.child_token();
        let slot = run_slot(self.ctx.clone(), self.next, token.clone());
        // Browser sessions stay on the engine's runtime, beside the browser
        // pool they share; native connections go to their shard.
        match (&self.ctx.session, Shards::get().for_slot(self.next)) {
            (SessionPlan::Browser(_), _) | (_, None) => self.tracker.spawn(slot),
            (_, Some(shard)) => self.tracker.spawn_on(slot, shard),
        };
        self.next += 1;
        token
    }
}

/// The run's clock on this worker: its zero as assigned, moved by how much
/// the measured offset to the controller's clock has changed since.
struct Clock {
    zero: Instant,
    assigned_us: i64,
    now_us: Arc<AtomicI64>,
}

impl Clock {
    /// The run's zero on our monotonic clock now: a controller clock
    /// further ahead of ours puts it earlier.
    fn zero(&self) -> Instant {
        let moved = self.now_us.load(Relaxed) - self.assigned_us;
        let by = Duration::from_micros(moved.unsigned_abs());
        if moved >= 0 { self.zero.checked_sub(by).unwrap_or(self.zero) } else { self.zero + by }
    }
}

/// How often the scheduling probe wakes.
const PROBE_EVERY: Duration = Duration::from_millis(10);

/// Wakes every [`PROBE_EVERY`] and records how late it woke: the time a
/// ready task waits for a runtime thread, which is what a saturated
/// generator adds to every latency it measures.
async fn probe_scheduling(recorder: Arc<Recorder>) {
    let mut due = Instant::now() + PROBE_EVERY;
    loop {
        sleep_until(due).await;
        let late = Instant::now().saturating_duration_since(due);
        recorder.sched_lag_max_us.fetch_max(late.as_micros() as u64, Relaxed);
        due = Instant::now() + PROBE_EVERY;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Emits a snapshot at every whole second of the run clock, and a last one
/// once every slot has ended after Stop. Seconds are numbered one after
/// the other whatever the clock does: a refreshed offset moves where the
/// next second ends, never skips or repeats one.
async fn report(
    recorder: Arc<Recorder>,
    clock: Clock,
    stop: CancellationToken,
    slots: TaskTracker,
    out: mpsc::Sender<Snapshot>,
    browsers: Option<Arc<BrowserPlan>>,
) {
    let mut snapshotter = Snapshotter::new();
    let mut cpu = CpuMeter::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    // Every runtime that runs connections is probed: the engine's and
    // each shard's.
    let _probes: Vec<AbortOnDrop> = std::iter::once(tokio::spawn(probe_scheduling(recorder.clone())))
        .chain(Shards::get().all().iter().map(|shard| shard.spawn(probe_scheduling(recorder.clone()))))
        .map(AbortOnDrop)
        .collect();
    let mut second = Instant::now().saturating_duration_since(clock.zero()).as_secs();
    let finished = async {
        stop.cancelled().await;
        slots.wait().await;
    };
    tokio::pin!(finished);
    loop {
        let due = clock.zero() + Duration::from_secs(second + 1);
        let last = tokio::select! {
            _ = sleep_until(due) => false,
            _ = &mut finished => true,
        };
        // Woken much later than due: this process was frozen or starved,
        // and the controller flags these seconds as a generator stall.
        let taken_late = if last { Duration::ZERO } else { Instant::now().saturating_duration_since(due) };
        let mut gauges = Gauges {
            rss_bytes: rss_bytes(),
            cpu_us: cpu.delta_us(),
            sched_lag_us: recorder.sched_lag_max_us.swap(0, Relaxed),
            cores,
            ..Default::default()
        };
        if let Some(b) = &browsers {
            let m = b.pool.memory().await;
            gauges.browser_pss_bytes = m.pss_bytes;
            gauges.browser_sessions = m.sessions;
            gauges.browser_js_heap_bytes = recorder.js_heap_max.swap(0, Relaxed);
        }
        let mut snap = snapshotter.take(&recorder, second, taken_late, gauges);
        snap.clock_offset_us = clock.now_us.load(Relaxed);
        if out.send(snap).await.is_err() || last {
            return;
        }
        second += 1;
    }
}
