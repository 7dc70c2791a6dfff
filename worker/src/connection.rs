//! One connection slot: a task that opens a WebSocket connection, sends on
//! schedule, matches echoes, and (when the run asks for it) opens a new
//! connection with backoff after a failure or a drop, until it is cancelled.
//!
//! Latency is measured from each message's intended send time, fixed by the
//! schedule (open model): a send that leaves late still counts from when it
//! should have gone, so stalls are not hidden (no coordinated omission).

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use std::task::Poll;
use std::time::Instant;

use futures_util::{SinkExt, StreamExt};
use stampede_model::Cause;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::delivery::{Delivery, Echo};
use crate::handshake::{connect_tcp, upgrade};
use crate::payload::Stamp;
use crate::recorder::Recorder;
use crate::target::Target;

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
    /// Time between two messages on one connection; `None`: connect only.
    pub interval: Option<Duration>,
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
    let mut backoff = BACKOFF_MIN;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        // Boxed: the handshake's state must not stay inside this task's
        // future for the connection's whole life (DEPENDENCIES.md).
        let end = match Box::pin(open(&ctx, slot, &cancel)).await {
            Some(Ok(ws)) => live(&ctx, slot, ws, &cancel).await,
            Some(Err(())) => End::Failed,
            None => return,
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
async fn open(
    ctx: &RunContext,
    slot: u64,
    cancel: &CancellationToken,
) -> Option<Result<WebSocketStream<TcpStream>, ()>> {
    let rec = &ctx.recorder;
    let started = Instant::now();
    let source = (!ctx.sources.is_empty()).then(|| ctx.sources[slot as usize % ctx.sources.len()]);
    let attempt = async {
        let tcp = connect_tcp(&ctx.target, source, ctx.connect_timeout).await?;
        let left = ctx.connect_timeout.saturating_sub(started.elapsed());
        timeout(left, upgrade(tcp, &ctx.target, &generate_key(), ctx.ws_config))
            .await
            .map_err(|_| Cause::Timeout)?
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
        Ok(ws) => {
            rec.record_connect(started.elapsed());
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

/// Where a connection is in its message exchange.
struct Exchange {
    /// Which messages came back.
    delivery: Delivery,
    /// Messages actually sent.
    sent: u64,
    /// Intended time of message 0 since the epoch; message `n` was due
    /// `n` intervals later.
    first_due: Duration,
    /// A message accepted by the schedule, waiting for room in the sink.
    pending: Option<Message>,
    /// Something (a message, a pong) is written but not yet flushed.
    unflushed: bool,
}

impl Exchange {
    fn new(first_due: Duration) -> Self {
        Exchange { delivery: Delivery::default(), sent: 0, first_due, pending: None, unflushed: false }
    }

    fn busy(&self) -> bool {
        self.pending.is_some() || self.unflushed
    }
}

/// What woke the connection up.
enum Io {
    Read(Option<Result<Message, tungstenite::Error>>),
    Written(Result<(), tungstenite::Error>),
}

/// Reads the next frame while writing out what is pending: a large message
/// being written must never stop us from reading (the server may be
/// blocked writing its echoes to us), and reading never waits for the write.
fn poll_io(
    ws: &mut WebSocketStream<TcpStream>,
    ex: &mut Exchange,
    cx: &mut std::task::Context<'_>,
) -> Poll<Io> {
    if let Poll::Ready(frame) = ws.poll_next_unpin(cx) {
        return Poll::Ready(Io::Read(frame));
    }
    if let Some(msg) = ex.pending.take() {
        match ws.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {
                if let Err(e) = ws.start_send_unpin(msg) {
                    return Poll::Ready(Io::Written(Err(e)));
                }
                ex.unflushed = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Io::Written(Err(e))),
            Poll::Pending => {
                ex.pending = Some(msg);
                return Poll::Pending;
            }
        }
    }
    if ex.unflushed
        && let Poll::Ready(r) = ws.poll_flush_unpin(cx)
    {
        ex.unflushed = false;
        return Poll::Ready(Io::Written(r));
    }
    Poll::Pending
}

/// Drives an open connection until it ends.
async fn live(
    ctx: &RunContext,
    slot: u64,
    mut ws: WebSocketStream<TcpStream>,
    cancel: &CancellationToken,
) -> End {
    let rec = &ctx.recorder;
    rec.active.fetch_add(1, Relaxed);
    let opened = Instant::now();
    // The schedule: intended send times, kept whatever happens to the sends.
    let mut next_send = opened + ctx.interval.map_or(Duration::ZERO, |iv| iv.mul_f64(stagger(slot)));
    let mut ex = Exchange::new(next_send.duration_since(ctx.epoch));
    let mut send_timer = stampede_timer::sleep_until(next_send);
    let mut payload = String::new();

    let end = loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                Box::pin(close_by_us(ctx, slot, &mut ws, &mut ex)).await;
                break End::ByUs;
            }
            io = std::future::poll_fn(|cx| poll_io(&mut ws, &mut ex, cx)) => match io {
                Io::Read(Some(Ok(Message::Text(t)))) => on_echo(ctx, slot, &mut ex, t.as_bytes()),
                Io::Read(Some(Ok(Message::Binary(b)))) => on_echo(ctx, slot, &mut ex, &b),
                Io::Read(Some(Ok(Message::Close(frame)))) => {
                    let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                    rec.counters.connections_closed_by_server.fetch_add(1, Relaxed);
                    rec.record_error(Cause::ClosedByServer(code));
                    // tungstenite has queued our reply; flush it and let the
                    // server close TCP (RFC 6455 section 7.1.1).
                    let _ = Box::pin(timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = ws.next().await {} })).await;
                    break End::Dropped { lived: opened.elapsed() };
                }
                // tungstenite queues the pong; it goes out with the next flush.
                Io::Read(Some(Ok(Message::Ping(_)))) => ex.unflushed = true,
                Io::Read(Some(Ok(Message::Pong(_) | Message::Frame(_)))) => {}
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
            _ = &mut send_timer, if ctx.interval.is_some() => {
                let iv = ctx.interval.expect("sends are scheduled only with an interval");
                let intended = next_send;
                next_send += iv;
                send_timer.reset(next_send);
                let seq = ex.delivery.next_seq();
                if ex.busy() {
                    // The previous message is still being written: the link
                    // or the server cannot take the schedule. Count it, do
                    // not queue it (memory stays bounded).
                    ex.delivery.skipped(seq);
                    rec.counters.messages_unsent.fetch_add(1, Relaxed);
                    rec.record_error(Cause::MessageUnsent);
                    continue;
                }
                if Instant::now().duration_since(intended) > Duration::from_millis(1) {
                    rec.counters.sends_late.fetch_add(1, Relaxed);
                }
                let stamp = Stamp { conn: slot, seq, intended_us: due_us(&ex, seq, iv) };
                stamp.encode(ctx.payload_bytes, &mut payload);
                ex.sent += 1;
                rec.counters.messages_sent.fetch_add(1, Relaxed);
                rec.counters.bytes_sent.fetch_add(payload.len() as u64, Relaxed);
                ex.pending = Some(Message::text(std::mem::take(&mut payload)));
            }
        }
    };
    let lost = ex.delivery.outstanding() + ex.delivery.take_given_up();
    rec.counters.messages_lost.fetch_add(lost, Relaxed);
    rec.record_errors(Cause::MessageLost, lost);
    rec.active.fetch_sub(1, Relaxed);
    end
}

/// Intended send time of message `seq`, microseconds since the epoch.
fn due_us(ex: &Exchange, seq: u64, interval: Duration) -> u64 {
    (ex.first_due.as_nanos() + interval.as_nanos() * u128::from(seq)).div_euclid(1000) as u64
}

/// Ends a connection the way a well-behaved client does: stop sending, let
/// the echoes still on their way arrive (for up to [`DRAIN_WAIT`]), then send
/// a close frame (1000) and wait for the server's. A server may drop data
/// queued behind a close frame, so closing at once would count as lost what
/// the server never had the chance to answer.
async fn close_by_us(ctx: &RunContext, slot: u64, ws: &mut WebSocketStream<TcpStream>, ex: &mut Exchange) {
    ctx.recorder.counters.connections_closed_by_client.fetch_add(1, Relaxed);
    let _ = timeout(DRAIN_WAIT, async {
        while ex.busy() || ex.delivery.outstanding() > 0 {
            match std::future::poll_fn(|cx| poll_io(ws, ex, cx)).await {
                Io::Read(Some(Ok(Message::Text(t)))) => on_echo(ctx, slot, ex, t.as_bytes()),
                Io::Read(Some(Ok(Message::Binary(b)))) => on_echo(ctx, slot, ex, &b),
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
                Some(Ok(Message::Text(t))) => on_echo(ctx, slot, ex, t.as_bytes()),
                Some(Ok(Message::Binary(b))) => on_echo(ctx, slot, ex, &b),
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
}

/// Classifies a frame received on connection `slot` and counts it.
fn on_echo(ctx: &RunContext, slot: u64, ex: &mut Exchange, payload: &[u8]) {
    let rec = &ctx.recorder;
    let now = Instant::now();
    let Some((stamp, iv)) = Stamp::decode(payload).filter(|s| s.conn == slot).zip(ctx.interval) else {
        rec.counters.messages_unmatched.fetch_add(1, Relaxed);
        return;
    };
    // The intended time comes from the schedule, never from the echo: a
    // corrupted stamp cannot fake a latency.
    let due = due_us(ex, stamp.seq, iv);
    let intact = stamp.intended_us == due && stamp.is_encoded_in(ctx.payload_bytes, payload);
    match ex.delivery.echo(stamp.seq, intact) {
        Echo::Delivered { reordered } => {
            let intended = ctx.epoch + Duration::from_micros(due);
            rec.record_latency(now.saturating_duration_since(intended));
            rec.counters.messages_received.fetch_add(1, Relaxed);
            rec.counters.bytes_received.fetch_add(payload.len() as u64, Relaxed);
            if reordered {
                rec.counters.messages_out_of_order.fetch_add(1, Relaxed);
            }
        }
        Echo::Duplicate => _ = rec.counters.messages_duplicated.fetch_add(1, Relaxed),
        Echo::Corrupted => {
            rec.counters.messages_corrupted.fetch_add(1, Relaxed);
            rec.record_error(Cause::MessageCorrupted);
        }
        Echo::Unmatched => _ = rec.counters.messages_unmatched.fetch_add(1, Relaxed),
    }
}

fn classify(err: &tungstenite::Error) -> Cause {
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
fn stagger(slot: u64) -> f64 {
    (slot as f64 * 0.618_033_988_749_895).fract()
}

#[cfg(test)]
mod tests {
    /// Each open connection is one spawned task holding this future: its size
    /// is most of the worker's memory per idle connection (DEPENDENCIES.md).
    #[test]
    fn a_connection_slot_stays_small() {
        let target = crate::target::Target {
            url: stampede_model::TargetUrl::parse("ws://127.0.0.1:9/ws").unwrap(),
            addr: "127.0.0.1:9".parse().unwrap(),
        };
        let ctx = std::sync::Arc::new(super::RunContext {
            recorder: Default::default(),
            target,
            epoch: std::time::Instant::now(),
            interval: None,
            payload_bytes: 64,
            connect_timeout: std::time::Duration::from_secs(1),
            reconnect: false,
            sources: vec![],
            ws_config: Default::default(),
        });
        let slot = super::run_slot(ctx, 0, Default::default());
        let size = std::mem::size_of_val(&slot);
        assert!(size <= 2048, "the slot future grew to {size} bytes: box what is rarely awaited");
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
