//! The `/pubsub` WebSocket session: the channel protocol (see [`ops`] and
//! the README's "The relay's channels").
//!
//! One task per connection owns the socket. It answers the client's
//! operations inline, in the order they arrive, and writes channel messages
//! from two sources: history being replayed (read from the [`Hub`] in
//! chunks, never copied ahead) and the connection's bounded [`Outbox`],
//! which publishers fill. While a replay is pending the outbox waits, so a
//! channel's live messages always follow its replayed ones. Writes go in
//! batches between reads, so a busy subscriber still reads its client's
//! operations, and a client that does not read is closed as a slow consumer
//! once its outbox overflows (the write in progress is abandoned).
//!
//! Faults apply to every message frame written (live or replayed):
//! `--fault-duplicate` writes a picked one twice in a row;
//! `--fault-reorder` holds a picked one until the next message of the same
//! channel has been written (at most [`REORDER_HOLD`]; released in order
//! after that, and then not counted as reordered).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use crate::echo::{Ws, close_session, going_away};
use crate::faults::DeliveryFaults;
use crate::hub::{Hub, Replay};
use crate::ops::{self, Op};
use crate::outbox::Outbox;
use crate::server::Shared;
use crate::stats::PubsubStats;

/// Subscriptions a connection may make (its own `conn/<id>` aside).
pub(crate) const MAX_SUBSCRIPTIONS: usize = 64;
/// Error replies a connection may cause; one more closes it with 1008.
pub(crate) const MAX_ERRORS: u32 = 100;
/// Message frames written between two looks at the client's input.
const BATCH: usize = 64;
/// Longest a frame picked by the reorder fault waits for a later one.
pub(crate) const REORDER_HOLD: Duration = Duration::from_millis(500);

/// Runs the session until the peer leaves, an error occurs, or shutdown.
pub(crate) async fn run(mut ws: Ws, shared: &Shared, shutdown: &CancellationToken) {
    let hub = &*shared.hub;
    let stats = &shared.stats.pubsub;
    let _open = stats.open_session();
    let (conn, id) = hub.new_connection();
    let outbox = Arc::new(Outbox::new(conn));
    let mut session = Session {
        hub,
        stats,
        faults: &shared.delivery_faults,
        outbox: outbox.clone(),
        member: Membership { hub, outbox, channels: HashSet::new(), own: Arc::from(format!("conn/{id}")) },
        replays: VecDeque::new(),
        replay_buf: VecDeque::new(),
        held: None,
        errors: 0,
        closing: false,
    };
    let close = match hub.subscribe(&session.outbox, &session.member.own.clone(), None) {
        Err(refusal) => Some(CloseFrame { code: CloseCode::Again, reason: refusal.reason().into() }),
        Ok(own) => {
            session.member.channels.insert(own.channel);
            match session.start(&mut ws, &id, shutdown).await {
                Err(e) => match crate::echo::refused(&e) {
                    Some(frame) => Some(frame),
                    None => return tracing::debug!("pubsub session: {e}"),
                },
                Ok(close) => close,
            }
        }
    };
    // Out of every channel before the closing handshake.
    drop(session);
    if let Some(frame) = close {
        close_session(ws, frame).await;
    }
}

/// The connection's subscriptions; leaves them all when dropped, however
/// the session ends.
struct Membership<'a> {
    hub: &'a Hub,
    outbox: Arc<Outbox>,
    channels: HashSet<Arc<str>>,
    /// `conn/<id>`.
    own: Arc<str>,
}

impl Membership<'_> {
    /// Subscriptions the client made (its own channel does not count).
    fn made(&self) -> usize {
        self.channels.len() - usize::from(self.channels.contains(&self.own))
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        self.outbox.close();
        self.hub.leave(&self.outbox, &self.channels);
    }
}

/// A message frame on its way to the client.
struct Delivery {
    channel: Arc<str>,
    frame: Utf8Bytes,
    replayed: bool,
}

/// A delivery the reorder fault holds back.
struct Held {
    delivery: Delivery,
    until: Instant,
}

/// What woke the session.
enum Event {
    Read(Option<Result<Message, WsError>>),
    /// Frames are waiting to be written.
    Work,
    /// The reorder fault's hold ran out.
    Release,
}

/// What an operation answers.
enum Reply {
    Nothing,
    Send(Message),
    /// The connection has caused more than [`MAX_ERRORS`] errors.
    TooManyErrors,
}

struct Session<'a> {
    hub: &'a Hub,
    stats: &'a PubsubStats,
    faults: &'a DeliveryFaults,
    outbox: Arc<Outbox>,
    member: Membership<'a>,
    /// Subscriptions with history still to write, in subscribe order.
    replays: VecDeque<Replay>,
    /// Frames of the first replay, read from the hub, not yet written.
    replay_buf: VecDeque<Delivery>,
    held: Option<Held>,
    errors: u32,
    /// The client's close arrived: nothing more is written but the reply.
    closing: bool,
}

impl Session<'_> {
    /// Greets the client, then runs until the relay closes (`Some`: the
    /// close frame to send) or the peer is gone (`None`).
    async fn start(
        &mut self,
        ws: &mut Ws,
        id: &str,
        shutdown: &CancellationToken,
    ) -> Result<Option<CloseFrame>, WsError> {
        let outbox = self.outbox.clone();
        let hello = ws.send(Message::text(ops::connection_established(id)));
        if let Err(close) = race(hello, shutdown, &outbox).await? {
            return Ok(Some(close));
        }
        let mut hold = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
        loop {
            if self.has_work()
                && let Err(close) = race(self.write_batch(ws), shutdown, &outbox).await?
            {
                return Ok(Some(close));
            }
            let has_work = self.has_work();
            let held_until = self.held.as_ref().filter(|_| !self.closing).map(|h| h.until);
            if let Some(until) = held_until {
                hold.as_mut().reset(until.into());
            }
            let event = tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(Some(going_away())),
                () = outbox.slowed() => return Ok(Some(slow_consumer())),
                msg = ws.next() => Event::Read(msg),
                () = &mut hold, if held_until.is_some() => Event::Release,
                () = outbox.pushed(), if !has_work && !self.closing => Event::Work,
                () = std::future::ready(()), if has_work => Event::Work,
            };
            let reply = match event {
                Event::Work => continue,
                Event::Release => {
                    let Some(held) = self.held.take() else { continue };
                    let release = async {
                        self.write(ws, held.delivery).await?;
                        ws.flush().await
                    };
                    match race(release, shutdown, &outbox).await? {
                        Ok(()) => continue,
                        Err(close) => return Ok(Some(close)),
                    }
                }
                Event::Read(None) => return Ok(None),
                Event::Read(Some(msg)) => match msg? {
                    Message::Text(text) => self.handle(text.as_str()),
                    Message::Binary(_) => {
                        self.error("binary frames are not part of the protocol; send JSON text")
                    }
                    // tungstenite queued the pong; push it out now.
                    Message::Ping(_) => match race(ws.flush(), shutdown, &outbox).await? {
                        Ok(()) => continue,
                        Err(close) => return Ok(Some(close)),
                    },
                    // The close reply is queued; the next read flushes it
                    // and ends the stream. Nothing else goes out.
                    Message::Close(_) => {
                        self.closing = true;
                        self.held = None;
                        continue;
                    }
                    Message::Pong(_) | Message::Frame(_) => continue,
                },
            };
            match reply {
                Reply::Nothing => {}
                Reply::Send(msg) => {
                    if let Err(close) = race(ws.send(msg), shutdown, &outbox).await? {
                        return Ok(Some(close));
                    }
                }
                Reply::TooManyErrors => {
                    return Ok(Some(CloseFrame {
                        code: CloseCode::Policy,
                        reason: "too many errors".into(),
                    }));
                }
            }
        }
    }

    fn has_work(&self) -> bool {
        !self.closing && (!self.replay_buf.is_empty() || !self.replays.is_empty() || !self.outbox.is_empty())
    }

    /// The `error` reply for `reason`, unless the connection has had too
    /// many.
    fn error(&mut self, reason: &str) -> Reply {
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            Reply::TooManyErrors
        } else {
            Reply::Send(Message::text(ops::error(reason)))
        }
    }

    /// Carries out one operation; its reply is written next.
    fn handle(&mut self, text: &str) -> Reply {
        match ops::parse(text) {
            Err(reason) => self.error(&reason),
            Ok(Op::Subscribe { channel, since }) => self.subscribe(&channel, since),
            Ok(Op::Unsubscribe { channel }) => self.unsubscribe(&channel),
            Ok(Op::Publish { channel, data, ack }) => {
                match self.hub.publish(Some(self.outbox.conn), &channel, data.get()) {
                    Ok((seq, delivered)) if ack => {
                        Reply::Send(Message::text(ops::published(&channel, seq, delivered)))
                    }
                    Ok(_) => Reply::Nothing,
                    Err(refusal) => self.error(refusal.reason()),
                }
            }
        }
    }

    fn subscribe(&mut self, channel: &str, since: Option<u64>) -> Reply {
        if self.member.channels.contains(channel) {
            return self.error(&format!("already subscribed to {}", ops::string(channel)));
        }
        if self.member.made() >= MAX_SUBSCRIPTIONS {
            return self.error("at most 64 subscriptions per connection");
        }
        match self.hub.subscribe(&self.outbox, channel, since) {
            Ok(sub) => {
                self.member.channels.insert(sub.channel);
                self.replays.extend(sub.replay);
                Reply::Send(Message::text(ops::subscribed(channel, sub.seq)))
            }
            Err(refusal) => self.error(refusal.reason()),
        }
    }

    fn unsubscribe(&mut self, channel: &str) -> Reply {
        if !self.member.channels.remove(channel) {
            return self.error(&format!("not subscribed to {}", ops::string(channel)));
        }
        self.hub.unsubscribe(&self.outbox, channel);
        self.replays.retain(|r| &*r.channel != channel);
        self.replay_buf.retain(|d| &*d.channel != channel);
        if self.held.as_ref().is_some_and(|h| &*h.delivery.channel == channel) {
            self.held = None;
        }
        Reply::Send(Message::text(ops::unsubscribed(channel)))
    }

    /// The next message frame: replayed history first, then the outbox.
    fn next_delivery(&mut self) -> Option<Delivery> {
        loop {
            if let Some(d) = self.replay_buf.pop_front() {
                return Some(d);
            }
            let Some(replay) = self.replays.front_mut() else { break };
            let mut frames = Vec::with_capacity(BATCH);
            let done = self.hub.replay(replay, BATCH, &mut frames);
            let channel = replay.channel.clone();
            self.replay_buf.extend(frames.into_iter().map(|frame| Delivery {
                channel: channel.clone(),
                frame,
                replayed: true,
            }));
            if done {
                self.replays.pop_front();
            }
        }
        self.outbox.pop().map(|q| Delivery { channel: q.channel, frame: q.frame, replayed: false })
    }

    /// Writes up to [`BATCH`] message frames, then flushes.
    async fn write_batch(&mut self, ws: &mut Ws) -> Result<(), WsError> {
        for _ in 0..BATCH {
            let Some(delivery) = self.next_delivery() else { break };
            self.deliver(ws, delivery).await?;
        }
        ws.flush().await
    }

    /// Writes one delivery, applying the reorder fault.
    async fn deliver(&mut self, ws: &mut Ws, delivery: Delivery) -> Result<(), WsError> {
        if let Some(held) = self.held.take_if(|h| h.delivery.channel == delivery.channel) {
            self.write(ws, delivery).await?;
            self.write(ws, held.delivery).await?;
            self.stats.reordered.fetch_add(1, Ordering::Relaxed);
        } else if self.held.is_none() && self.faults.reorder() {
            self.held = Some(Held { delivery, until: Instant::now() + REORDER_HOLD });
        } else {
            self.write(ws, delivery).await?;
        }
        Ok(())
    }

    /// Writes one delivery (twice if the duplicate fault picks it) and
    /// counts it.
    async fn write(&self, ws: &mut Ws, delivery: Delivery) -> Result<(), WsError> {
        ws.feed(Message::Text(delivery.frame.clone())).await?;
        let counter = if delivery.replayed { &self.stats.replayed } else { &self.stats.delivered };
        counter.fetch_add(1, Ordering::Relaxed);
        if self.faults.duplicate() {
            ws.feed(Message::Text(delivery.frame)).await?;
            self.stats.duplicated.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

type WsError = tokio_tungstenite::tungstenite::Error;

/// Runs a write unless shutdown or a slow-consumer verdict comes first;
/// then the inner `Err` is the close frame to send. Abandoning a write is
/// safe: tungstenite keeps the bytes it accepted in its own buffer.
async fn race<T>(
    write: impl Future<Output = Result<T, WsError>>,
    shutdown: &CancellationToken,
    outbox: &Outbox,
) -> Result<Result<T, CloseFrame>, WsError> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Ok(Err(going_away())),
        () = outbox.slowed() => Ok(Err(slow_consumer())),
        r = write => r.map(Ok),
    }
}

fn slow_consumer() -> CloseFrame {
    CloseFrame { code: CloseCode::Policy, reason: "slow consumer".into() }
}
