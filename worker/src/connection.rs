//! A connection's lifecycle: one slot is a task that opens a WebSocket
//! connection, drives its socket (reading while it writes) and its session's
//! timer, closes it gracefully, classifies how it ended, and (when the run
//! asks for it) opens a new one with backoff, until it is cancelled. What the
//! connection sends and what its frames mean is its session's business
//! ([`crate::session`]); the byte stream under the WebSocket is any
//! [`Transport`], so TLS slots in beside TCP.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::websocket::WebSocket;
use futures_util::{SinkExt, StreamExt};
use stampede_model::Cause;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::broadcast::BroadcastSession;
use crate::echo::EchoSession;
use crate::feed::FeedSession;
pub use crate::handshake::Transport;
use crate::handshake::{connect_tcp, upgrade};
use crate::recorder::{ConnectTimes, Recorder};
use crate::request::RequestSession;
use crate::session::{Session, SessionPlan};
use crate::target::Target;
use crate::tls::Stream;

/// How long we wait for the server's answer to our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a closing connection waits for echoes still on their way.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What every connection of a run shares.
pub struct RunContext {
    /// Where every measurement goes.
    pub recorder: Arc<Recorder>,
    /// Where to connect.
    pub target: Target,
    /// Zero of the monotonic clock that payload send times count from.
    pub epoch: Instant,
    /// Time between two messages on one connection at the run's start;
    /// `None`: connect only. Phases may change it: sessions follow `pace`.
    pub interval: Option<Duration>,
    /// The per-connection message interval now.
    pub pace: crate::pace::Pace,
    /// Payload size, bytes.
    pub payload_bytes: usize,
    /// Limit for TCP connect plus upgrade.
    pub connect_timeout: Duration,
    /// Replace failed and dropped connections.
    pub reconnect: bool,
    /// Local addresses to connect from, round robin by slot.
    pub sources: Vec<IpAddr>,
    /// Frame buffer sizes.
    pub ws_config: WebSocketConfig,
    /// How connections are opened and what they do.
    pub spec: stampede_model::ConnectSpec,
    /// This worker's id (`{{worker}}` in templates).
    pub worker_id: String,
    /// What an open connection does, prepared once from `spec.session`.
    pub session: crate::session::SessionPlan,
    /// Controller clock minus worker clock, µs (one-way latency of pushed
    /// messages is measured on the controller's clock).
    pub clock_offset_us: i64,
    /// What each connection sends to open (headers, token, first message).
    pub opener: crate::opening::Opener,
}

/// How one connection ended.
enum End {
    /// We closed it (cancelled): the slot is done.
    ByUs,
    /// The attempt failed or the server ended it.
    Failed,
    /// It was open and then the server ended it, after `lived`.
    Dropped { lived: Duration },
}

/// Runs slot `slot` until `cancel` fires (or, without reconnect, until its
/// connection ends).
pub async fn run_slot(ctx: Arc<RunContext>, slot: u64, cancel: CancellationToken) {
    // Pairs and flows drive their connections themselves (boxed: the echo
    // slot's future stays small).
    match &ctx.session {
        SessionPlan::Pairs(_) => return Box::pin(crate::pair::run_pair(ctx, slot, cancel)).await,
        SessionPlan::Flow(_) | SessionPlan::Browser(_) => {
            return Box::pin(crate::flow::run_flow(ctx, slot, cancel)).await;
        }
        _ => {}
    }
    let mut backoff = BACKOFF_MIN;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // Boxed: the handshake's state must not stay inside this task's
        // future for the connection's whole life (DEPENDENCIES.md). `ws` is
        // a whole local moved into the session, so its bytes are not kept
        // beside the session's future (a match on the attempt would be).
        let end = 'attempt: {
            let ws = match Box::pin(open(&ctx, slot, &cancel)).await {
                Some(Ok(ws)) => ws,
                Some(Err(())) => break 'attempt End::Failed,
                None => return,
            };
            // The other sessions hold more state: boxed, so the echo slot's
            // future stays small.
            match &ctx.session {
                SessionPlan::Echo => live::<EchoSession, _>(&ctx, slot, ws, &cancel).await,
                SessionPlan::Request(_) => Box::pin(live::<RequestSession, _>(&ctx, slot, ws, &cancel)).await,
                SessionPlan::Receive(_) => Box::pin(live::<FeedSession, _>(&ctx, slot, ws, &cancel)).await,
                SessionPlan::Broadcast(_) => {
                    Box::pin(live::<BroadcastSession, _>(&ctx, slot, ws, &cancel)).await
                }
                SessionPlan::Pairs(_) | SessionPlan::Flow(_) | SessionPlan::Browser(_) => {
                    unreachable!("driven by their own modules")
                }
            }
        };
        match end {
            End::ByUs => return,
            _ if !ctx.reconnect => return,
            End::Dropped { lived } if lived > Duration::from_secs(10) => backoff = BACKOFF_MIN,
            _ => {}
        }
        let jitter = backoff.mul_f64(0.5 + stagger(slot ^ backoff.as_millis() as u64));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = sleep(jitter) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens one connection; `None` if cancelled meanwhile.
pub(crate) async fn open(
    ctx: &RunContext,
    slot: u64,
    cancel: &CancellationToken,
) -> Option<Result<WebSocket<Stream>, ()>> {
    let rec = &ctx.recorder;
    let started = Instant::now();
    let source = (!ctx.sources.is_empty()).then(|| ctx.sources[slot as usize % ctx.sources.len()]);
    // One connect timeout covers TCP, TLS and the upgrade together.
    let left = || ctx.connect_timeout.saturating_sub(started.elapsed());
    let attempt = async {
        let tcp = connect_tcp(&ctx.target, source, ctx.connect_timeout).await?;
        let tcp_done = Instant::now();
        let stream = match &ctx.target.tls {
            None => Stream::Plain(tcp),
            Some(tls) => {
                Stream::Tls(Box::new(timeout(left(), tls.connect(tcp)).await.map_err(|_| Cause::Timeout)??))
            }
        };
        let tls_done = Instant::now();
        let opening = ctx.opener.open(slot)?;
        let (ws, picked) =
            timeout(left(), upgrade(stream, &ctx.target, &generate_key(), &opening, ctx.ws_config))
                .await
                .map_err(|_| Cause::Timeout)??;
        let times = ConnectTimes {
            total: started.elapsed(),
            tcp: tcp_done - started,
            tls: ctx.target.tls.is_some().then(|| tls_done - tcp_done),
            upgrade: tls_done.elapsed(),
        };
        if let Some(p) = picked {
            rec.record_subprotocol(&p);
        }
        Ok::<_, Cause>((ws, times))
    };
    let result = tokio::select! {
        // The run ended before the attempt did: not counted at all (an
        // attempt is counted when it ends, so no later snapshot takes back
        // what an earlier one reported).
        _ = cancel.cancelled() => return None,
        result = attempt => result,
    };
    rec.counters.connections_attempted.fetch_add(1, Relaxed);
    Some(match result {
        Ok((ws, times)) => {
            rec.record_connect(times);
            rec.counters.connections_opened.fetch_add(1, Relaxed);
            Ok(ws)
        }
        Err(cause) => {
            rec.counters.connections_failed.fetch_add(1, Relaxed);
            rec.record_error(cause);
            Err(())
        }
    })
}

/// What woke the connection up.
pub(crate) enum Io {
    Read(Option<Result<Message, tungstenite::Error>>),
    /// What was queued is written and flushed (or failed).
    Written(Result<(), tungstenite::Error>),
}

/// Reads the next frame while writing out what is queued: a large message
/// being written must never stop us from reading (the server may be
/// blocked writing its echoes to us), and reading never waits for the write.
pub(crate) fn poll_io<S: Transport>(ws: &mut WebSocket<S>, cx: &mut std::task::Context<'_>) -> Poll<Io> {
    let was_busy = ws.busy();
    if let Poll::Ready(frame) = ws.poll_next_unpin(cx) {
        return Poll::Ready(Io::Read(frame));
    }
    if ws.busy() {
        return ws.poll_flush_unpin(cx).map(Io::Written);
    }
    // Reading wrote the rest out.
    if was_busy { Poll::Ready(Io::Written(Ok(()))) } else { Poll::Pending }
}

/// Drives an open connection with session `S` until it ends. Not an `async
/// fn`: those keep a second copy of every argument (the socket) in their
/// future; an `async move` block holds the one it captured.
#[expect(clippy::manual_async_fn, reason = "an async fn would hold the socket twice")]
fn live<'a, S: Session, T: Transport>(
    ctx: &'a RunContext,
    slot: u64,
    mut ws: WebSocket<T>,
    cancel: &'a CancellationToken,
) -> impl Future<Output = End> + 'a {
    async move {
        let rec = &ctx.recorder;
        rec.active.fetch_add(1, Relaxed);
        let opened = Instant::now();
        let mut session = S::open(ctx, slot, opened);
        let mut timer = stampede_timer::sleep_until(session.next_due().unwrap_or(opened));

        let end = loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    Box::pin(close_by_us(ctx, &mut ws, &mut session)).await;
                    break End::ByUs;
                }
                io = std::future::poll_fn(|cx| poll_io(&mut ws, cx)) => match io {
                    Io::Read(Some(Ok(Message::Text(t)))) => session.received(ctx, t.as_bytes()),
                    Io::Read(Some(Ok(Message::Binary(b)))) => session.received(ctx, &b),
                    Io::Read(Some(Ok(Message::Close(frame)))) => {
                        let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                        rec.counters.connections_closed_by_server.fetch_add(1, Relaxed);
                        rec.record_error(Cause::ClosedByServer(code));
                        // The codec has queued our reply; flush it and let the
                        // server close TCP (RFC 6455 section 7.1.1).
                        let _ = Box::pin(timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = ws.next().await {} })).await;
                        break End::Dropped { lived: opened.elapsed() };
                    }
                    // The codec queued the pong; it goes out as we read or flush.
                    Io::Read(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => {}
                    Io::Written(Ok(())) => {}
                    Io::Read(Some(Err(err))) | Io::Written(Err(err)) => {
                        rec.counters.connections_dropped.fetch_add(1, Relaxed);
                        rec.record_error(classify(&err));
                        break End::Dropped { lived: opened.elapsed() };
                    }
                    Io::Read(None) => {
                        rec.counters.connections_dropped.fetch_add(1, Relaxed);
                        rec.record_error(Cause::Eof);
                        break End::Dropped { lived: opened.elapsed() };
                    }
                },
                _ = &mut timer, if session.next_due().is_some() => {
                    if let Some(msg) = session.due(ctx, ws.busy())
                        && let Err(err) = ws.queue(msg)
                    {
                        rec.counters.connections_dropped.fetch_add(1, Relaxed);
                        rec.record_error(classify(&err));
                        break End::Dropped { lived: opened.elapsed() };
                    }
                    if let Some(next) = session.next_due() {
                        timer.reset(next);
                    }
                }
            }
        };
        session.ended(ctx);
        rec.active.fetch_sub(1, Relaxed);
        end
    }
}

/// Ends a connection the way a well-behaved client does: stop sending, let
/// the answers still on their way arrive (for up to [`DRAIN_WAIT`]), then
/// send a close frame (1000) and wait for the server's. A server may drop
/// data queued behind a close frame, so closing at once would count as lost
/// what the server never had the chance to answer.
async fn close_by_us<S: Session, T: Transport>(ctx: &RunContext, ws: &mut WebSocket<T>, session: &mut S) {
    ctx.recorder.counters.connections_closed_by_client.fetch_add(1, Relaxed);
    for goodbye in session.farewell(ctx) {
        if ws.send(goodbye).await.is_err() {
            return;
        }
    }
    let _ = timeout(DRAIN_WAIT, async {
        while ws.busy() || session.awaiting() {
            match std::future::poll_fn(|cx| poll_io(ws, cx)).await {
                Io::Read(Some(Ok(Message::Text(t)))) => session.received(ctx, t.as_bytes()),
                Io::Read(Some(Ok(Message::Binary(b)))) => session.received(ctx, &b),
                Io::Read(Some(Ok(Message::Close(_)) | Err(_)) | None) | Io::Written(Err(_)) => return,
                Io::Read(Some(Ok(_))) | Io::Written(Ok(())) => {}
            }
        }
    })
    .await;
    let frame = CloseFrame { code: CloseCode::Normal, reason: "stampede: done".into() };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let _ = timeout(CLOSE_WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => session.received(ctx, t.as_bytes()),
                Some(Ok(Message::Binary(b))) => session.received(ctx, &b),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

pub(crate) fn classify(err: &tungstenite::Error) -> Cause {
    use tungstenite::error::ProtocolError;
    match err {
        tungstenite::Error::Io(e) => Cause::from_io(e),
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => Cause::Eof,
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => Cause::Eof,
        _ => Cause::Protocol,
    }
}

/// A fraction in [0, 1) spread evenly over slots (golden ratio), so that
/// connections opened together do not send together.
pub(crate) fn stagger(slot: u64) -> f64 {
    (slot as f64 * 0.618_033_988_749_895).fract()
}

#[cfg(test)]
mod tests {
    /// Each open connection is one spawned task holding this future: its size
    /// is most of the worker's memory per idle connection (DEPENDENCIES.md).
    #[test]
    fn a_connection_slot_stays_small() {
        let target_url = stampede_model::TargetUrl::parse("ws://127.0.0.1:9/ws").unwrap();
        let target = crate::target::Target {
            url: target_url.clone(),
            addr: "127.0.0.1:9".parse().unwrap(),
            tls: None,
        };
        let ctx = std::sync::Arc::new(super::RunContext {
            recorder: Default::default(),
            target,
            epoch: std::time::Instant::now(),
            interval: None,
            pace: Default::default(),
            payload_bytes: 64,
            connect_timeout: std::time::Duration::from_secs(1),
            reconnect: false,
            sources: vec![],
            ws_config: Default::default(),
            spec: Default::default(),
            worker_id: "w".into(),
            session: Default::default(),
            clock_offset_us: 0,
            opener: crate::opening::Opener::new(&Default::default(), &target_url, "w").unwrap(),
        });
        let slot = super::run_slot(ctx, 0, Default::default());
        let size = std::mem::size_of_val(&slot);
        eprintln!("slot future: {size} bytes");
        assert!(size <= 700, "the slot future grew to {size} bytes: box what is rarely awaited");
    }

    #[test]
    fn stagger_spreads_slots_over_the_interval() {
        let mut fractions: Vec<f64> = (0..100).map(super::stagger).collect();
        assert!(fractions.iter().all(|f| (0.0..1.0).contains(f)));
        fractions.sort_by(f64::total_cmp);
        let widest_gap = fractions.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        assert!(widest_gap < 0.05, "100 slots leave no gap wider than 5% of the interval: {widest_gap}");
    }
}
