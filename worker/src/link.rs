//! The worker's side of the fleet protocol: dial the controller (with
//! backoff), join, carry out its commands, and deliver every snapshot. A
//! snapshot stays in the outbox until the controller acknowledges it, so a
//! worker that loses its link mid-run resends them after rejoining.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use stampede_proto::fleet::fleet_client::FleetClient;
use stampede_proto::fleet::{
    self, ControllerMessage, Hello, WorkerMessage, controller_message::Body as Cmd,
    worker_message::Body as Msg,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Streaming;

use crate::engine::Engine;
use crate::{WorkerError, WorkerOptions};

/// Snapshots kept for resending: an hour of them.
const OUTBOX_LIMIT: usize = 3600;

/// One run this worker takes part in.
struct Run {
    id: String,
    engine: Engine,
    snapshots: mpsc::Receiver<fleet::Snapshot>,
    outbox: VecDeque<fleet::Snapshot>,
    last_seq: u64,
    done: bool,
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

/// Serves runs until shutdown (or, with `--once`, until the first run ends).
pub async fn serve(
    opts: &WorkerOptions,
    hello: Hello,
    token: Option<stampede_proto::auth::FleetToken>,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let mut run: Option<Run> = None;
    let mut backoff = Duration::from_millis(100);
    let give_up = opts.join_timeout.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    loop {
        let client = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            c = FleetClient::connect(opts.controller.clone()) => c,
        };
        let mut client = match client {
            Ok(c) => c,
            Err(err) => {
                if give_up.is_some_and(|t| tokio::time::Instant::now() >= t) {
                    return Err(WorkerError::Unreachable(opts.controller.clone(), err.to_string()));
                }
                tracing::debug!("controller not reachable yet: {err}");
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        let (tx, rx) = mpsc::channel(64);
        let mut hello = hello.clone();
        hello.sent_at_unix_us = stampede_model::clock::unix_us(SystemTime::now());
        hello.token_proof =
            token.as_ref().map(|t| t.prove(&hello.worker_id, hello.sent_at_unix_us)).unwrap_or_default();
        hello.resume_run_id = run.as_ref().map(|r| r.id.clone()).unwrap_or_default();
        send(&tx, Msg::Hello(hello)).await;
        if let Some(r) = &run {
            for snap in &r.outbox {
                send(&tx, Msg::Snapshot(snap.clone())).await;
            }
        }
        let inbound = match client.join(ReceiverStream::new(rx)).await {
            Ok(resp) => resp.into_inner(),
            Err(status) => {
                tracing::warn!("controller refused to join: {}", status.message());
                if opts.once {
                    return Err(WorkerError::Refused(status.message().to_string()));
                }
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        tracing::info!("joined controller {}", opts.controller);
        match session(inbound, &tx, &mut run, opts, &shutdown).await {
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
                tracing::warn!("lost the controller link: {why}");
                if opts.once {
                    if let Some(r) = run {
                        close_gracefully(r).await;
                    }
                    return Err(WorkerError::LinkLost(why));
                }
            }
        }
    }
}

/// Closes a run's connections with close frames before the worker exits;
/// its last snapshots have nowhere to go and are dropped.
async fn close_gracefully(mut r: Run) {
    r.snapshots.close();
    while r.snapshots.try_recv().is_ok() {}
    if !r.engine.stop_and_wait(Duration::from_secs(5)).await {
        tracing::warn!("connections still closing after 5 s; exiting anyway");
    }
}

async fn send(tx: &mpsc::Sender<WorkerMessage>, body: Msg) -> bool {
    tx.send(WorkerMessage { body: Some(body) }).await.is_ok()
}

async fn next_snapshot(run: &mut Option<Run>) -> Option<fleet::Snapshot> {
    match run {
        Some(r) if !r.done => r.snapshots.recv().await,
        _ => std::future::pending().await,
    }
}

async fn session(
    mut inbound: Streaming<ControllerMessage>,
    tx: &mpsc::Sender<WorkerMessage>,
    run: &mut Option<Run>,
    opts: &WorkerOptions,
    shutdown: &CancellationToken,
) -> SessionEnd {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return SessionEnd::Shutdown,
            msg = inbound.message() => {
                let cmd = match msg {
                    Ok(Some(ControllerMessage { body: Some(cmd) })) => cmd,
                    Ok(Some(_)) => continue,
                    Ok(None) if run.as_ref().is_none_or(|r| r.done) => return SessionEnd::Finished,
                    Ok(None) => return SessionEnd::LinkLost("controller closed the stream".into()),
                    Err(status) => return SessionEnd::LinkLost(status.message().to_string()),
                };
                handle(cmd, tx, run, opts).await;
            }
            snap = next_snapshot(run) => {
                let r = run.as_mut().expect("snapshots come only from a run");
                match snap {
                    Some(snap) => {
                        r.last_seq = snap.seq;
                        if r.outbox.len() == OUTBOX_LIMIT {
                            r.outbox.pop_front();
                        }
                        r.outbox.push_back(snap.clone());
                        if !send(tx, Msg::Snapshot(snap)).await {
                            return SessionEnd::LinkLost("stream closed".into());
                        }
                    }
                    None => {
                        r.done = true;
                        let last_seq = r.last_seq;
                        send(tx, Msg::Finished(fleet::Finished { last_seq })).await;
                    }
                }
            }
        }
    }
}

async fn handle(cmd: Cmd, tx: &mpsc::Sender<WorkerMessage>, run: &mut Option<Run>, opts: &WorkerOptions) {
    match cmd {
        Cmd::Assign(assign) => {
            if run.as_ref().is_some_and(|r| r.id == assign.run_id) {
                return; // a resumed run: already running
            }
            if let Err(why) = allowed(&assign.target_url, opts).await {
                send(tx, Msg::Error(fleet::WorkerError { message: why, fatal: true })).await;
                return;
            }
            let (snap_tx, snap_rx) = mpsc::channel(8);
            match Engine::start(
                &assign,
                opts.id.as_deref().unwrap_or("worker"),
                &opts.source_addresses,
                snap_tx,
            )
            .await
            {
                Ok(engine) => {
                    *run = Some(Run {
                        id: assign.run_id,
                        engine,
                        snapshots: snap_rx,
                        outbox: VecDeque::new(),
                        last_seq: 0,
                        done: false,
                    });
                }
                Err(err) => {
                    let error = fleet::WorkerError { message: err.to_string(), fatal: true };
                    send(tx, Msg::Error(error)).await;
                }
            }
        }
        Cmd::PhaseStart(phase) => {
            if let Some(r) = run {
                let index = phase.index;
                r.engine.phase(phase).await;
                send(tx, Msg::PhaseAck(fleet::PhaseAck { index })).await;
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
    }
}

/// Whether this worker's allowlist lets it load `url`; the error is what
/// the controller shows.
async fn allowed(url: &str, opts: &WorkerOptions) -> Result<(), String> {
    let list = crate::allow::Allowlist::parse(&opts.allow_targets)?;
    let target = crate::target::Target::resolve(url).await.map_err(|e| e.to_string())?;
    list.check(&target)
}
