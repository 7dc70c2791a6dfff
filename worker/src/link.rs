//! The worker's side of the fleet protocol: dial the controller (with
//! backoff), join, carry out its commands, and deliver every snapshot.
//!
//! A snapshot stays in the outbox until the controller acknowledges it, so
//! a worker that loses its link mid-run keeps its phase, keeps collecting,
//! and resends them after rejoining. It never runs unsupervised for long:
//! without a controller for `--grace` seconds it closes its connections on
//! its own. Heartbeats go both ways every second; three seconds without a
//! word from the controller is a lost link, whatever TCP says.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use stampede_model::clock::unix_us;
use stampede_proto::auth::FleetToken;
use stampede_proto::fleet::fleet_client::FleetClient;
use stampede_proto::fleet::{
    self, ControllerMessage, Heartbeat, Hello, WorkerMessage, controller_message::Body as Cmd,
    worker_message::Body as Msg,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;
use tonic::transport::Endpoint;

use crate::engine::Engine;
use crate::{WorkerError, WorkerOptions};

/// Snapshots kept for resending: an hour of them.
const OUTBOX_LIMIT: usize = 3600;
/// How often a heartbeat goes to the controller.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// While snapshots flow and the controller answers them, they show both
/// sides alive: a heartbeat then only goes this often, for the clock
/// offset. A thousand workers' heartbeats and answers were a third of the
/// controller's messages (bench (e)).
const CLOCK_SAMPLE: Duration = Duration::from_secs(5);
/// Silence from the controller after which the link counts as lost.
const SILENCE: Duration = Duration::from_secs(3);
/// Longest wait between two dials while a run goes on (the grace is
/// short; a rejoin must not wait for the backoff).
const RUN_BACKOFF: Duration = Duration::from_secs(1);

/// One run this worker takes part in.
struct Run {
    id: String,
    engine: Engine,
    snapshots: mpsc::Receiver<fleet::Snapshot>,
    /// Snapshots not acknowledged yet, oldest first.
    outbox: VecDeque<fleet::Snapshot>,
    /// The engine sent its last snapshot.
    done: bool,
    /// When the link was lost, while it is.
    orphaned_since: Option<Instant>,
    /// Its load stopped for want of a controller: its measurements are
    /// dropped at this time unless one takes the worker back.
    keep_until: Option<Instant>,
    /// Its load was stopped that way (it only delivers from now on).
    load_stopped: bool,
}

impl Run {
    /// Takes a snapshot from the engine into the outbox.
    fn keep(&mut self, snap: Option<fleet::Snapshot>) {
        match snap {
            Some(mut snap) => {
                snap.run_id.clone_from(&self.id);
                if self.outbox.len() == OUTBOX_LIMIT {
                    let dropped = self.outbox.pop_front().map_or(0, |s| s.second);
                    tracing::warn!("outbox full: second {dropped} dropped unacknowledged");
                }
                self.outbox.push_back(snap);
            }
            None => self.done = true,
        }
    }

    fn last_seq(&self) -> u64 {
        self.outbox.back().map_or(0, |s| s.seq)
    }
}

/// How a session with the controller ended.
enum SessionEnd {
    /// The run finished and the controller closed the stream.
    Finished,
    /// The link broke.
    LinkLost(String),
    /// We were asked to shut down.
    Shutdown,
}

/// A join attempt that failed.
enum JoinError {
    /// Not reachable (yet): try again.
    Unreachable(String),
    /// The controller said no.
    Refused(String),
}

/// Serves runs until shutdown (or, with `--once`, until the first run ends).
pub async fn serve(
    opts: &WorkerOptions,
    endpoint: Endpoint,
    hello: Hello,
    token: Option<FleetToken>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let grace = Duration::from_secs_f64(opts.grace);
    // What this worker said it holds: no command makes it open more.
    let capacity = hello.capacity.map_or(0, |c| c.max_connections);
    let mut run: Option<Run> = None;
    let mut backoff = Duration::ZERO;
    // Counted from the start, then from each lost link.
    let join_timeout = opts.join_timeout.map(Duration::from_secs);
    let mut give_up = join_timeout.map(|t| Instant::now() + t);
    let mut last_error: Option<String> = None;
    loop {
        // Dial while the load goes on: snapshots keep coming into the
        // outbox, and the grace keeps counting.
        let resume = run.as_ref().map(|r| (r.id.clone(), r.load_stopped));
        let joined = {
            let attempt = async {
                sleep(backoff).await;
                join(&endpoint, &hello, token.as_ref(), resume).await
            };
            tokio::pin!(attempt);
            loop {
                let orphaned_until = run.as_ref().and_then(|r| r.orphaned_since).map(|t| t + grace);
                let keep_until = run.as_ref().and_then(|r| r.keep_until);
                tokio::select! {
                    _ = shutdown.cancelled() => {
                        if let Some(r) = run {
                            close_gracefully(r).await;
                        }
                        return Ok(());
                    }
                    joined = &mut attempt => break Some(joined),
                    snap = next_snapshot(&mut run) => {
                        if let Some(r) = run.as_mut() {
                            r.keep(snap);
                        }
                    }
                    _ = until(orphaned_until) => {
                        // Unsupervised no longer: the load stops, but what
                        // it measured is kept for another grace, for a
                        // controller that takes the worker back late.
                        tracing::warn!(
                            "no controller for {:.0} s: closing every connection and stopping the load; \
                             its measurements are kept {:.0} s more",
                            grace.as_secs_f64(),
                            grace.as_secs_f64()
                        );
                        if let Some(r) = run.as_mut() {
                            r.engine.stop();
                            r.orphaned_since = None;
                            r.keep_until = Some(Instant::now() + grace);
                            r.load_stopped = true;
                        }
                    }
                    _ = until(keep_until) => {
                        if let Some(r) = run.take() {
                            close_gracefully(r).await;
                        }
                        if opts.once {
                            return Err(WorkerError::LinkLost(format!(
                                "no controller took this worker back within {:.0} s; its load is stopped",
                                grace.as_secs_f64()
                            )));
                        }
                        // Dial again, no longer claiming the run.
                        break None;
                    }
                }
            }
        };
        let max_backoff = if run.is_some() { RUN_BACKOFF } else { Duration::from_secs(5) };
        let (inbound, tx) = match joined {
            None => continue,
            Some(Ok(joined)) => joined,
            Some(Err(JoinError::Unreachable(err))) => {
                if run.is_none() && give_up.is_some_and(|t| Instant::now() >= t) {
                    return Err(WorkerError::Unreachable(opts.controller.clone(), err));
                }
                // Said once per different reason: a wrong CA or a closed
                // port should be visible without flooding the log.
                if last_error.as_deref() != Some(err.as_str()) {
                    tracing::warn!("cannot join the controller at {}: {err}", opts.controller);
                    last_error = Some(err);
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(100), max_backoff);
                continue;
            }
            Some(Err(JoinError::Refused(why))) => {
                tracing::warn!("controller refused to join: {why}");
                if opts.once && run.is_none() {
                    return Err(WorkerError::Refused(why));
                }
                backoff = (backoff * 2).clamp(Duration::from_millis(500), max_backoff);
                continue;
            }
        };
        backoff = Duration::ZERO;
        last_error = None;
        tracing::info!("joined controller {}", opts.controller);
        if let Some(r) = run.as_mut() {
            r.orphaned_since = None;
            r.keep_until = None;
        }
        let ended = session(inbound, tx, &mut run, opts, capacity, &shutdown).await;
        give_up = join_timeout.map(|t| Instant::now() + t);
        match ended {
            SessionEnd::Finished => {
                run = None;
                if opts.once {
                    return Ok(());
                }
            }
            SessionEnd::Shutdown => {
                if let Some(r) = run {
                    close_gracefully(r).await;
                }
                return Ok(());
            }
            SessionEnd::LinkLost(why) => {
                match run.as_mut() {
                    Some(r) => {
                        tracing::warn!(
                            "lost the controller link: {why}; keeping the load for up to {:.0} s",
                            grace.as_secs_f64()
                        );
                        r.orphaned_since.get_or_insert_with(Instant::now);
                    }
                    None => tracing::warn!("lost the controller link: {why}"),
                }
                if opts.once && run.is_none() {
                    return Err(WorkerError::LinkLost(why));
                }
            }
        }
    }
}

/// Dials and says Hello; the stream both ways once the controller took it.
async fn join(
    endpoint: &Endpoint,
    hello: &Hello,
    token: Option<&FleetToken>,
    resume: Option<(String, bool)>,
) -> Result<(Streaming<ControllerMessage>, mpsc::Sender<WorkerMessage>), JoinError> {
    let channel = endpoint.connect().await.map_err(|e| JoinError::Unreachable(describe(&e)))?;
    let mut client = FleetClient::new(channel);
    let (tx, rx) = mpsc::channel(64);
    let mut hello = hello.clone();
    hello.sent_at_unix_us = unix_us(SystemTime::now());
    hello.token_proof = token.map(|t| t.prove(&hello.worker_id, hello.sent_at_unix_us)).unwrap_or_default();
    (hello.resume_run_id, hello.load_stopped) = resume.unwrap_or_default();
    let _ = tx.try_send(WorkerMessage { body: Some(Msg::Hello(hello)) });
    match client.join(ReceiverStream::new(rx)).await {
        Ok(resp) => Ok((resp.into_inner(), tx)),
        Err(status) if status.code() == tonic::Code::Unavailable => {
            Err(JoinError::Unreachable(status.message().to_string()))
        }
        Err(status) => Err(JoinError::Refused(status.message().to_string())),
    }
}

/// An error with its causes (a TLS failure hides under "transport error").
fn describe(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Closes a run's connections with close frames; its last snapshots have
/// nowhere to go and are dropped.
async fn close_gracefully(mut r: Run) {
    r.snapshots.close();
    while r.snapshots.try_recv().is_ok() {}
    if !r.engine.stop_and_wait(Duration::from_secs(5)).await {
        tracing::warn!("connections still closing after 5 s; leaving them");
    }
}

async fn next_snapshot(run: &mut Option<Run>) -> Option<fleet::Snapshot> {
    match run {
        Some(r) if !r.done => r.snapshots.recv().await,
        _ => std::future::pending().await,
    }
}

/// Sleeps until `deadline`; forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// The clock offset to the controller (controller minus ours, us), from
/// heartbeat round trips: each answer gives the offset to within half its
/// round trip, so the one with the shortest trip among the recent ones is
/// the best estimate.
#[derive(Default)]
struct ClockFilter {
    /// (round trip, offset), us; the last few.
    samples: VecDeque<(i64, i64)>,
}

impl ClockFilter {
    fn sample(&mut self, sent_us: i64, controller_us: i64, received_us: i64) -> Option<i64> {
        let round_trip = received_us - sent_us;
        // An answer to a heartbeat we never sent, or from the future.
        if !(0..=10_000_000).contains(&round_trip) || controller_us == 0 {
            return None;
        }
        if self.samples.len() == 8 {
            self.samples.pop_front();
        }
        self.samples.push_back((round_trip, controller_us - (sent_us + round_trip / 2)));
        self.samples.iter().min_by_key(|(rt, _)| *rt).map(|(_, offset)| *offset)
    }
}

async fn session(
    mut inbound: Streaming<ControllerMessage>,
    tx: mpsc::Sender<WorkerMessage>,
    run: &mut Option<Run>,
    opts: &WorkerOptions,
    capacity: u64,
    shutdown: &CancellationToken,
) -> SessionEnd {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heard = Instant::now();
    let mut clock = ClockFilter::default();
    // Outbox snapshots already sent on this stream (all are resent on a
    // new one); Finished follows the last.
    let mut sent_up_to = 0u64;
    let mut finished_sent = false;
    let mut snapshot_sent: Option<Instant> = None;
    let mut beat_sent: Option<Instant> = None;
    loop {
        let unsent = run.as_ref().is_some_and(|r| {
            r.outbox.back().is_some_and(|s| s.seq > sent_up_to) || (r.done && !finished_sent)
        });
        tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            _ = beat.tick() => {
                if heard.elapsed() >= SILENCE {
                    return SessionEnd::LinkLost(format!(
                        "no word from the controller for {:.0} s", heard.elapsed().as_secs_f64()
                    ));
                }
                let recent = |t: Option<Instant>, within: Duration| t.is_some_and(|t| t.elapsed() < within);
                if recent(snapshot_sent, HEARTBEAT) && heard.elapsed() < HEARTBEAT && recent(beat_sent, CLOCK_SAMPLE) {
                    continue;
                }
                beat_sent = Some(Instant::now());
                let beat = Heartbeat { worker_sent_at_unix_us: unix_us(SystemTime::now()), controller_at_unix_us: 0 };
                // A full stream skips a beat: the controller hears our
                // snapshots meanwhile, or notices the silence.
                let _ = tx.try_send(WorkerMessage { body: Some(Msg::Heartbeat(beat)) });
            }
            msg = inbound.message() => {
                heard = Instant::now();
                let cmd = match msg {
                    Ok(Some(ControllerMessage { body: Some(cmd) })) => cmd,
                    Ok(Some(_)) => continue,
                    Ok(None) if run.as_ref().is_none_or(|r| r.done) => return SessionEnd::Finished,
                    Ok(None) => return SessionEnd::LinkLost("the controller closed the stream".into()),
                    Err(status) => return SessionEnd::LinkLost(status.message().to_string()),
                };
                if let Cmd::Heartbeat(answer) = &cmd {
                    let now = unix_us(SystemTime::now());
                    let offset = clock.sample(answer.worker_sent_at_unix_us, answer.controller_at_unix_us, now);
                    if let (Some(offset), Some(r)) = (offset, run.as_ref()) {
                        r.engine.set_clock_offset(offset);
                    }
                    continue;
                }
                if let Cmd::Assign(assign) = &cmd
                    && run.as_ref().is_some_and(|r| r.id != assign.run_id)
                {
                    // Another run: the old one's load and outbox go.
                    if let Some(old) = run.take() {
                        tracing::warn!("joined run {}: dropping what was left of run {}", assign.run_id, old.id);
                        close_gracefully(old).await;
                    }
                    sent_up_to = 0;
                    finished_sent = false;
                }
                handle(cmd, &tx, run, opts, capacity).await;
            }
            permit = tx.reserve(), if unsent => {
                let Ok(permit) = permit else { return SessionEnd::LinkLost("stream closed".into()) };
                let r = run.as_mut().expect("unsent implies a run");
                match r.outbox.iter().find(|s| s.seq > sent_up_to) {
                    Some(snap) => {
                        sent_up_to = snap.seq;
                        snapshot_sent = Some(Instant::now());
                        permit.send(WorkerMessage { body: Some(Msg::Snapshot(snap.clone())) });
                    }
                    None => {
                        finished_sent = true;
                        permit.send(WorkerMessage { body: Some(Msg::Finished(fleet::Finished { last_seq: r.last_seq() })) });
                    }
                }
            }
            snap = next_snapshot(run) => {
                if let Some(r) = run.as_mut() {
                    r.keep(snap);
                }
            }
        }
    }
}

/// Sends a reply without waiting (a stalled link must not stall the
/// session; the heartbeat timeout ends it instead).
fn reply(tx: &mpsc::Sender<WorkerMessage>, body: Msg) {
    if tx.try_send(WorkerMessage { body: Some(body) }).is_err() {
        tracing::warn!("reply to the controller dropped: the link is full or closed");
    }
}

async fn handle(
    cmd: Cmd,
    tx: &mpsc::Sender<WorkerMessage>,
    run: &mut Option<Run>,
    opts: &WorkerOptions,
    capacity: u64,
) {
    match cmd {
        Cmd::Assign(assign) => {
            if run.as_ref().is_some_and(|r| r.id == assign.run_id) {
                return; // a resumed run: already running
            }
            if let Err(why) = crate::orders::check_assign(&assign) {
                reply(tx, Msg::Error(fleet::WorkerError { message: why, fatal: true }));
                return;
            }
            if let Err(why) = allowed(&assign.target_url, opts).await {
                reply(tx, Msg::Error(fleet::WorkerError { message: why, fatal: true }));
                return;
            }
            let (snap_tx, snap_rx) = mpsc::channel(8);
            let worker_id = opts.id.as_deref().unwrap_or("worker");
            match Engine::start(&assign, worker_id, &opts.source_addresses, snap_tx).await {
                Ok(engine) => {
                    *run = Some(Run {
                        id: assign.run_id,
                        engine,
                        snapshots: snap_rx,
                        outbox: VecDeque::new(),
                        done: false,
                        orphaned_since: None,
                        keep_until: None,
                        load_stopped: false,
                    });
                }
                Err(err) => {
                    reply(tx, Msg::Error(fleet::WorkerError { message: err.to_string(), fatal: true }));
                }
            }
        }
        Cmd::PhaseStart(mut phase) => {
            if let Err(why) = crate::orders::check_phase(&mut phase, capacity) {
                reply(tx, Msg::Error(fleet::WorkerError { message: why, fatal: true }));
                return;
            }
            if let Some(r) = run {
                let index = phase.index;
                r.engine.phase(phase).await;
                reply(tx, Msg::PhaseAck(fleet::PhaseAck { index }));
            }
        }
        Cmd::Stop(stop) => {
            if let Some(r) = run {
                tracing::info!("stopping: {}", stop.reason);
                r.engine.stop();
            }
        }
        Cmd::SnapshotAck(ack) => {
            if let Some(r) = run {
                while r.outbox.front().is_some_and(|s| s.seq <= ack.seq) {
                    r.outbox.pop_front();
                }
            }
        }
        Cmd::Heartbeat(_) => {}
    }
}

/// Whether this worker's allowlist lets it load `url`; the error is what
/// the controller shows.
async fn allowed(url: &str, opts: &WorkerOptions) -> Result<(), String> {
    let list = crate::allow::Allowlist::parse(&opts.allow_targets)?;
    let target = crate::target::Target::resolve(url).await.map_err(|e| e.to_string())?;
    list.check(&target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shortest_round_trip_gives_the_offset() {
        let mut c = ClockFilter::default();
        // Controller 1 s ahead; 10 ms out and back.
        assert_eq!(c.sample(0, 1_005_000, 10_000), Some(1_000_000));
        // A slow answer (200 ms, asymmetric) does not move the estimate.
        assert_eq!(c.sample(20_000, 1_030_000, 220_000), Some(1_000_000));
        // Answers to nothing, or from the future, are ignored.
        assert_eq!(c.sample(500_000, 1_000_000, 400_000), None);
        assert_eq!(c.sample(500_000, 0, 501_000), None);
        // Eight newer samples push the old best out.
        for i in 1..=8 {
            let sent = i * 1_000_000;
            c.sample(sent, sent + 1_002_000 + 20_000, sent + 40_000);
        }
        assert_eq!(c.sample(10_000_000, 11_002_000 + 20_000, 10_040_000), Some(1_002_000));
    }
}
