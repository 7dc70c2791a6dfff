//! The WebSocket session: echo with an optional injected delay.
//!
//! One task per connection, no channels: a bounded queue of pending echoes
//! plus a `select!` over "next message", "next echo due" and "shutdown".
//! That keeps per-connection memory to one task and lets the delay overlap
//! across messages instead of serialising the connection.
//!
//! Faults: inside a slow window a message's echo is due at receive time +
//! delay + extra. The queue stays FIFO (echo order is kept per connection),
//! so right after a window a message whose echo would be due earlier waits
//! behind the slowed ones still queued: the window's tail delays a few later
//! echoes by up to `extra`. A session picked by the drop fault closes with
//! 1011, its queued echoes discarded.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::faults::Registration;
use crate::server::Shared;

/// Stop reading once this many echoes are waiting: the client's sends then
/// back up in TCP instead of in relay memory.
const MAX_PENDING: usize = 1024;
/// Same back-pressure, by payload bytes, so 1024 large messages cannot pin
/// gigabytes.
const MAX_PENDING_BYTES: usize = 8 << 20;
/// How long the relay waits for the client's closing frame after its own.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Close reason of a session ended by the drop fault.
const DROP_REASON: &str = "stampede fault: drop";

pub(crate) type Ws = WebSocketStream<crate::tls::Stream>;
type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

/// Runs the session until the peer leaves, an error occurs, or shutdown.
pub(crate) async fn run(mut ws: Ws, shared: &Shared, shutdown: &CancellationToken) {
    let mut pending: VecDeque<(Instant, Message)> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let delay = shared.delay;
    let stats = &shared.stats;
    let faults = shared.faults.as_ref();
    // Only when a drop fault is still to come; otherwise nothing to watch.
    let registration = faults.and_then(|f| f.register());
    // tokio's 1 ms timer would add 0.5-2 ms to every injected delay; the
    // relay is the reference target of accuracy tests, so it must be exact.
    let mut echo_timer = stampede_timer::sleep_until(Instant::now());

    let close = loop {
        let next_due = pending.front().map(|(due, _)| *due);
        if let Some(due) = next_due {
            echo_timer.reset(due);
        }
        let can_read = pending.len() < MAX_PENDING && pending_bytes < MAX_PENDING_BYTES;
        // Each arm yields the write to perform, so writes happen outside the
        // select (one `&mut ws` at a time) but still race shutdown below.
        let step: WsResult = tokio::select! {
            biased;
            () = shutdown.cancelled() => break going_away(),
            () = dropped(registration.as_ref()) => {
                break CloseFrame { code: CloseCode::Error, reason: DROP_REASON.into() };
            }
            () = &mut echo_timer, if next_due.is_some() => {
                let now = Instant::now();
                let due = pending.iter().take_while(|(due, _)| *due <= now).count();
                let batch = pending.drain(..due);
                let write = async {
                    for (_, msg) in batch {
                        let len = msg.len();
                        pending_bytes -= len;
                        ws.feed(msg).await?;
                        stats.sent(len);
                    }
                    ws.flush().await
                };
                match race(write, shutdown).await {
                    Some(r) => r,
                    None => break going_away(),
                }
            }
            msg = ws.next(), if can_read => match msg {
                None => return,
                Some(Err(e)) => match refused(&e) {
                    Some(frame) => break frame,
                    None => return tracing::debug!("websocket read: {e}"),
                },
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    let len = msg.len();
                    stats.received(len);
                    let delay = match faults {
                        Some(f) => delay + f.extra_delay(Instant::now()),
                        None => delay,
                    };
                    // Straight back only with nothing queued: order is kept.
                    if delay.is_zero() && pending.is_empty() {
                        let write = async {
                            ws.send(msg).await?;
                            stats.sent(len);
                            Ok(())
                        };
                        match race(write, shutdown).await {
                            Some(r) => r,
                            None => break going_away(),
                        }
                    } else {
                        pending_bytes += len;
                        pending.push_back((Instant::now() + delay, msg));
                        Ok(())
                    }
                }
                // tungstenite queued the pong; push it out now rather than
                // on our next write, which may be far away.
                Some(Ok(Message::Ping(_))) => match race(ws.flush(), shutdown).await {
                    Some(r) => r,
                    None => break going_away(),
                },
                // The close reply is queued; echoes can no longer be sent.
                // Keep polling: the next read flushes it and ends the stream.
                Some(Ok(Message::Close(_))) => {
                    pending.clear();
                    pending_bytes = 0;
                    Ok(())
                }
                Some(Ok(Message::Pong(_) | Message::Frame(_))) => Ok(()),
            },
        };
        if let Err(e) = step {
            return tracing::debug!("websocket write: {e}");
        }
    };
    close_session(ws, close).await;
}

/// The close a peer's bad frame earns (RFC 6455 section 7.4.1): 1009 for
/// a message over the limit (refused from its header, never read), 1002
/// for a protocol violation. Other errors (the socket's) end the session
/// without one.
pub(crate) fn refused(e: &tokio_tungstenite::tungstenite::Error) -> Option<CloseFrame> {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        // Fixed reasons: a close frame's reason must fit in 123 bytes.
        Error::Capacity(_) => Some(CloseFrame { code: CloseCode::Size, reason: "message too big".into() }),
        Error::Protocol(_) => Some(CloseFrame { code: CloseCode::Protocol, reason: "protocol error".into() }),
        _ => None,
    }
}

pub(crate) fn going_away() -> CloseFrame {
    CloseFrame { code: CloseCode::Away, reason: "relay shutting down".into() }
}

/// Resolves when the drop fault picked this session; never without one.
async fn dropped(registration: Option<&Registration>) {
    match registration {
        Some(r) => r.dropped().await,
        None => std::future::pending().await,
    }
}

/// Runs a write unless shutdown wins; `None` means shutdown. Aborting a
/// write is safe: tungstenite keeps queued bytes in its own buffer.
async fn race<F: Future<Output = WsResult>>(write: F, shutdown: &CancellationToken) -> Option<WsResult> {
    tokio::select! {
        r = write => Some(r),
        () = shutdown.cancelled() => None,
    }
}

/// Closing handshake initiated by the relay (1001 Going Away on shutdown,
/// 1011 for the drop fault; `/pubsub` sessions use it too), then wait (bounded) for the client's close so
/// it sees a clean close rather than a reset.
pub(crate) async fn close_session(mut ws: Ws, frame: CloseFrame) {
    let handshake = async {
        ws.send(Message::Close(Some(frame))).await?;
        while let Some(msg) = ws.next().await {
            msg?;
        }
        WsResult::Ok(())
    };
    match timeout(CLOSE_GRACE, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("closing: {e}"),
        Err(_) => tracing::debug!("client did not answer close within {CLOSE_GRACE:?}"),
    }
}
