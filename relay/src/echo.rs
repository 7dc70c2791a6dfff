//! The WebSocket session: echo with an optional injected delay.
//!
//! One task per connection, no channels: a bounded queue of pending echoes
//! plus a `select!` over "next message", "next echo due" and "shutdown".
//! That keeps per-connection memory to one task and lets the delay overlap
//! across messages instead of serialising the connection.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::server::Shared;

/// Stop reading once this many echoes are waiting: the client's sends then
/// back up in TCP instead of in relay memory.
const MAX_PENDING: usize = 1024;
/// Same back-pressure, by payload bytes, so 1024 large messages cannot pin
/// gigabytes.
const MAX_PENDING_BYTES: usize = 8 << 20;
/// How long a shutting-down relay waits for the client's closing frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type Ws = WebSocketStream<TcpStream>;
type WsResult = Result<(), tokio_tungstenite::tungstenite::Error>;

/// Runs the session until the peer leaves, an error occurs, or shutdown.
pub(crate) async fn run(mut ws: Ws, shared: &Shared, shutdown: &CancellationToken) {
    let mut pending: VecDeque<(Instant, Message)> = VecDeque::new();
    let mut pending_bytes = 0usize;
    let delay = shared.delay;
    let stats = &shared.stats;
    // tokio's 1 ms timer would add 0.5-2 ms to every injected delay; the
    // relay is the reference target of accuracy tests, so it must be exact.
    let mut echo_timer = stampede_timer::sleep_until(Instant::now());

    loop {
        let next_due = pending.front().map(|(due, _)| *due);
        if let Some(due) = next_due {
            echo_timer.reset(due);
        }
        let can_read = pending.len() < MAX_PENDING && pending_bytes < MAX_PENDING_BYTES;
        // Each arm yields the write to perform, so writes happen outside the
        // select (one `&mut ws` at a time) but still race shutdown below.
        let step: WsResult = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
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
                    None => break,
                }
            }
            msg = ws.next(), if can_read => match msg {
                None => return,
                Some(Err(e)) => return tracing::debug!("websocket read: {e}"),
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    let len = msg.len();
                    stats.received(len);
                    if delay.is_zero() {
                        let write = async {
                            ws.send(msg).await?;
                            stats.sent(len);
                            Ok(())
                        };
                        match race(write, shutdown).await {
                            Some(r) => r,
                            None => break,
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
                    None => break,
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
    }
    go_away(ws).await;
}

/// Runs a write unless shutdown wins; `None` means shutdown. Aborting a
/// write is safe: tungstenite keeps queued bytes in its own buffer.
async fn race<F: Future<Output = WsResult>>(write: F, shutdown: &CancellationToken) -> Option<WsResult> {
    tokio::select! {
        r = write => Some(r),
        () = shutdown.cancelled() => None,
    }
}

/// Closing handshake initiated by the relay on shutdown: 1001 Going Away,
/// then wait (bounded) for the client's close so it sees a clean close
/// rather than a reset.
async fn go_away(mut ws: Ws) {
    let frame = CloseFrame { code: CloseCode::Away, reason: "relay shutting down".into() };
    let handshake = async {
        ws.send(Message::Close(Some(frame))).await?;
        while let Some(msg) = ws.next().await {
            msg?;
        }
        WsResult::Ok(())
    };
    match timeout(CLOSE_GRACE, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("closing on shutdown: {e}"),
        Err(_) => tracing::debug!("client did not answer close within {CLOSE_GRACE:?}"),
    }
}
