//! Session pairs (the MetaMask seed): a dApp (side `a`) and a wallet (side
//! `b`) that talk through a relay which must not read what they say. A pair
//! slot is one task owning both connections, so the two sides share their
//! key and their delivery records without any locking.
//!
//! Each side subscribes to its own inbox channel (`<prefix>/<worker>/<slot>.
//! <session>/a` or `/b`) and publishes to the other's, using the relay's
//! channel protocol (README, "The relay's channels"). Every message is
//! sealed with the session's key ([`crate::sealed`]); the receiving side
//! opens it, and its sequence number is accounted exactly per direction
//! ([`crate::delivery`]): delivered, duplicated, out of order, lost, and
//! undecryptable (a message that does not authenticate: another key,
//! another pair's, altered on the way). Latency runs from the message's
//! intended send time, which travels inside the ciphertext, to its
//! decryption.
//!
//! What a session does ([`PairsMode`]):
//! - realistic-session: both connect and subscribe; each sends
//!   `messages_per_side` on the message interval; both wait for what the
//!   other sent (at most the delivery timeout), close, and a new session
//!   with a new key begins.
//! - steady-messaging: both send every interval for as long as the slot is
//!   held.
//! - async-delivery: both connect and subscribe; `b` closes and stays away
//!   for `away`, while `a` sends `messages_per_side` on the interval; `b`
//!   reconnects and subscribes from the last relay sequence number it had
//!   (`since`), and every message `a` sent must arrive. With the relay's
//!   history off, exactly the messages sent while `b` was away are lost.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use crate::websocket::WebSocket;
use serde_json::Value;
use stampede_model::Cause;
use stampede_model::spec::{PairsMode, PairsSpec};
use tokio::time::{sleep, timeout};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::connection::{Io, RunContext, classify, open, poll_io, stagger};
use crate::delivery::{Delivery, Echo};
use crate::schedule::{Schedule, record_lag, record_unsent};
use crate::sealed::{Envelope, PairCipher, Side};
use crate::session::SessionPlan;
use crate::tls::Stream;

/// How long a side waits for the relay to confirm its subscription.
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(10);
/// How long a closing side waits for the relay's close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How long a pair held by the load shape drains when it is closed.
const DRAIN_WAIT: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs pair slot `slot`: session after session until `cancel` fires.
pub async fn run_pair(ctx: Arc<RunContext>, slot: u64, cancel: CancellationToken) {
    let SessionPlan::Pairs(spec) = &ctx.session else { return };
    let tag = worker_tag(&ctx.worker_id);
    let mut backoff = BACKOFF_MIN;
    for number in 0u64.. {
        let mut pair = Pair::new(&ctx, spec, slot, number, &tag);
        let end = pair.run(&cancel).await;
        pair.close_all().await;
        pair.settle();
        match end {
            End::Cancelled => return,
            End::Done => backoff = BACKOFF_MIN,
            End::Failed => {
                let jitter = backoff.mul_f64(0.5 + stagger(slot ^ number));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = sleep(jitter) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// A short, stable tag for this worker in channel names (ids may be long
/// or hold characters channel names refuse).
fn worker_tag(worker_id: &str) -> String {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let hash = worker_id
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{hash:016x}")
}

/// How a session ended.
enum End {
    /// It ran its course.
    Done,
    /// A side could not connect or subscribe, or the relay ended it.
    Failed,
    /// The load shape closed the slot.
    Cancelled,
}

/// One side's connection.
struct Link {
    ws: WebSocket<Stream>,
    /// The relay confirmed the inbox subscription.
    subscribed: bool,
}

/// One side: its connection (while connected), its inbox and its sends.
struct SideState {
    side: Side,
    link: Option<Link>,
    /// This side's inbox channel.
    inbox: String,
    /// Highest relay sequence number received on the inbox: a returning
    /// side subscribes from it.
    relay_seq: u64,
    /// When this side's messages are due; `None`: it sends nothing now.
    schedule: Option<Schedule>,
    /// Messages it still has to send this session (`u64::MAX`: no limit).
    to_send: u64,
    /// What the other side has received of this side's messages.
    sent: Delivery,
    cipher: Arc<PairCipher>,
}

/// A session of one pair.
struct Pair<'a> {
    ctx: &'a RunContext,
    spec: &'a PairsSpec,
    slot: u64,
    sides: [SideState; 2],
    /// Side `b` is away (async-delivery): the last relay sequence number
    /// it had.
    away: Option<u64>,
}

impl<'a> Pair<'a> {
    fn new(ctx: &'a RunContext, spec: &'a PairsSpec, slot: u64, number: u64, tag: &str) -> Pair<'a> {
        // The pair number goes into every message's associated data: a
        // relay handing one pair's message to another is caught.
        let pair_id = (slot << 24) ^ number;
        let key = Arc::new(PairCipher::random(pair_id));
        // The test aid: `b` holds a key of its own, so neither side can
        // read the other.
        let b_key = if spec.wrong_key { Arc::new(PairCipher::random(pair_id)) } else { key.clone() };
        let inbox = |side: Side| format!("{}/{tag}/{slot}.{number}/{}", spec.channel_prefix, side.name());
        let side = |side: Side, cipher: Arc<PairCipher>| SideState {
            side,
            link: None,
            inbox: inbox(side),
            relay_seq: 0,
            schedule: None,
            to_send: 0,
            sent: Delivery::default(),
            cipher,
        };
        Pair { ctx, spec, slot, sides: [side(Side::A, key), side(Side::B, b_key)], away: None }
    }

    /// Runs the session's script; a session the load shape ends midway
    /// winds down first, so what was sent is still accounted.
    async fn run(&mut self, cancel: &CancellationToken) -> End {
        let end = self.script(cancel).await;
        if let End::Cancelled = end {
            self.wind_down().await;
        }
        end
    }

    async fn script(&mut self, cancel: &CancellationToken) -> End {
        for i in 0..2 {
            if let Err(end) = self.connect(i, 0, cancel).await {
                return end;
            }
        }
        let n = self.spec.messages_per_side;
        match self.spec.mode {
            PairsMode::SteadyMessaging => {
                self.start_sending(0, u64::MAX);
                self.start_sending(1, u64::MAX);
                // Until the slot is closed or a side fails.
                match self.pump(cancel, None, |_| false).await {
                    Pump::Cancelled => End::Cancelled,
                    Pump::Failed => End::Failed,
                    Pump::Done => End::Done,
                }
            }
            PairsMode::RealisticSession => {
                self.start_sending(0, n);
                self.start_sending(1, n);
                self.finish(cancel).await
            }
            PairsMode::AsyncDelivery => {
                // `b` leaves; `a` writes to it while it is away.
                self.away = Some(self.sides[1].relay_seq);
                self.close_side(1).await;
                self.start_sending(0, n);
                let back_at = Instant::now() + Duration::from_micros(self.spec.away_us);
                match self.pump(cancel, Some(back_at), |_| false).await {
                    Pump::Cancelled => return End::Cancelled,
                    Pump::Failed => return End::Failed,
                    Pump::Done => {}
                }
                if let Err(end) = self.come_back(cancel).await {
                    return end;
                }
                self.finish(cancel).await
            }
        }
    }

    /// Side `b` reconnects and subscribes from the last message it had.
    async fn come_back(&mut self, cancel: &CancellationToken) -> Result<(), End> {
        let since = self.away.take().unwrap_or(0);
        self.connect(1, since, cancel).await
    }

    /// The slot was closed midway: nothing more is sent, an away side comes
    /// back early to collect what it is owed, and what is on its way is
    /// waited for (at most [`DRAIN_WAIT`] after that).
    async fn wind_down(&mut self) {
        self.stop_sending();
        let never = CancellationToken::new();
        if self.away.is_some() && timeout(SUBSCRIBE_WAIT, self.come_back(&never)).await.is_err() {
            return;
        }
        self.drain(DRAIN_WAIT).await;
    }

    /// Sends what is left, then waits for every message to arrive (at most
    /// the delivery timeout after the last send).
    async fn finish(&mut self, cancel: &CancellationToken) -> End {
        let sending = |p: &Pair| p.sides.iter().any(|s| s.to_send > 0);
        match self.pump(cancel, None, |p| !sending(p)).await {
            Pump::Cancelled => return End::Cancelled,
            Pump::Failed => return End::Failed,
            Pump::Done => {}
        }
        let wait = Duration::from_micros(self.spec.delivery_timeout_us);
        let deadline = Instant::now() + wait;
        match self.pump(cancel, Some(deadline), |p| p.outstanding() == 0).await {
            Pump::Cancelled => End::Cancelled,
            Pump::Failed => End::Failed,
            Pump::Done => {
                self.ctx.recorder.counters.sessions_completed.fetch_add(1, Relaxed);
                End::Done
            }
        }
    }

    /// Messages sent and not yet delivered, both ways.
    fn outstanding(&self) -> u64 {
        self.sides.iter().map(|s| s.sent.outstanding()).sum()
    }

    fn start_sending(&mut self, i: usize, count: u64) {
        let ctx = self.ctx;
        let s = &mut self.sides[i];
        // The two sides are staggered apart as two slots would be.
        s.schedule = Some(Schedule::open(ctx, self.slot * 2 + i as u64, Instant::now()));
        s.to_send = count;
    }

    fn stop_sending(&mut self) {
        // Nothing is due any more.
        for s in &mut self.sides {
            s.to_send = 0;
        }
    }

    /// Opens side `i`'s connection and subscribes it to its inbox from
    /// relay sequence `since` (0: everything the channel still holds).
    async fn connect(&mut self, i: usize, since: u64, cancel: &CancellationToken) -> Result<(), End> {
        let ctx = self.ctx;
        let ws = match open(ctx, self.slot * 2 + i as u64, cancel).await {
            None => return Err(End::Cancelled),
            Some(Err(())) => return Err(End::Failed),
            Some(Ok(ws)) => ws,
        };
        ctx.recorder.active.fetch_add(1, Relaxed);
        let s = &mut self.sides[i];
        let subscribe = serde_json::json!({"op": "subscribe", "channel": s.inbox, "since": since});
        let mut ws = ws;
        // Queued on a connection just opened: cannot be refused.
        let _ = ws.queue(Message::text(subscribe.to_string()));
        s.link = Some(Link { ws, subscribed: false });
        s.relay_seq = since;
        let deadline = Instant::now() + SUBSCRIBE_WAIT;
        let subscribed = |p: &Pair| p.sides[i].link.as_ref().is_some_and(|l| l.subscribed);
        match self.pump(cancel, Some(deadline), subscribed).await {
            Pump::Cancelled => Err(End::Cancelled),
            Pump::Failed => Err(End::Failed),
            Pump::Done if subscribed(self) => Ok(()),
            Pump::Done => {
                ctx.recorder.record_error(Cause::Timeout);
                Err(End::Failed)
            }
        }
    }

    /// Drives both connections (reads, sends on schedule) until `done`
    /// says so, `until` passes, the slot is cancelled or a side fails.
    async fn pump(
        &mut self,
        cancel: &CancellationToken,
        until: Option<Instant>,
        done: impl Fn(&Pair) -> bool,
    ) -> Pump {
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut deadline = stampede_timer::sleep_until(until.unwrap_or(far));
        // One sleep, moved to each next due time: a new one per event would
        // register a deadline with the clock every time.
        let mut timer = stampede_timer::sleep_until(far);
        loop {
            if done(self) {
                return Pump::Done;
            }
            let due = self.next_due();
            timer.reset(due.unwrap_or(far));
            let [sa, sb] = &mut self.sides;
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Pump::Cancelled,
                io = io_of(&mut sa.link) => (0, Some(io)),
                io = io_of(&mut sb.link) => (1, Some(io)),
                _ = &mut timer, if due.is_some() => (usize::MAX, None),
                _ = &mut deadline, if until.is_some() => return Pump::Done,
            };
            match event {
                (i, Some(io)) => {
                    if !self.on_io(i, io) {
                        return Pump::Failed;
                    }
                }
                _ => self.send_due(),
            }
        }
    }

    /// The soonest send due on either side.
    fn next_due(&self) -> Option<Instant> {
        self.sides.iter().filter(|s| s.to_send > 0).filter_map(|s| s.schedule.as_ref()?.next()).min()
    }

    /// Sends every message that is due; a side whose previous message is
    /// still being written skips (counted unsent, never queued).
    fn send_due(&mut self) {
        let now = Instant::now();
        let (ctx, size) = (self.ctx, self.ctx.payload_bytes);
        let rec = &ctx.recorder;
        for i in 0..2 {
            let [a, b] = &mut self.sides;
            let (me, other) = if i == 0 { (a, &*b) } else { (b, &*a) };
            let Some(schedule) = me.schedule.as_mut() else { continue };
            while me.to_send > 0 && schedule.next().is_some_and(|t| t <= now) {
                let Some((intended, _)) = schedule.advance(ctx) else { break };
                me.to_send -= 1;
                let seq = me.sent.next_seq();
                let Some(link) = me.link.as_mut().filter(|l| !l.ws.busy()) else {
                    me.sent.skipped(seq);
                    record_unsent(rec);
                    continue;
                };
                record_lag(rec, intended);
                let intended_us = intended.saturating_duration_since(ctx.epoch).as_micros() as i64;
                let envelope = me.cipher.seal(me.side, seq, intended_us, size);
                let publish =
                    serde_json::json!({"op": "publish", "channel": other.inbox, "data": envelope.to_json()});
                let text = publish.to_string();
                let len = text.len() as u64;
                if link.ws.queue(Message::text(text)).is_err() {
                    me.sent.skipped(seq);
                    record_unsent(rec);
                    continue;
                }
                rec.counters.messages_sent.fetch_add(1, Relaxed);
                rec.counters.bytes_sent.fetch_add(len, Relaxed);
            }
        }
    }

    /// Handles what side `i`'s connection did; false: it ended.
    fn on_io(&mut self, i: usize, io: Io) -> bool {
        let rec = &self.ctx.recorder;
        match io {
            Io::Read(Some(Ok(Message::Text(t)))) => self.received(i, t.as_bytes()),
            Io::Read(Some(Ok(Message::Binary(b)))) => self.received(i, &b),
            // The codec queued the pong; it goes out as we read or flush.
            Io::Read(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))))
            | Io::Written(Ok(())) => {}
            Io::Read(Some(Ok(Message::Close(frame)))) => {
                let code = frame.map(|f| u16::from(f.code)).unwrap_or(1005);
                rec.counters.connections_closed_by_server.fetch_add(1, Relaxed);
                rec.record_error(Cause::ClosedByServer(code));
                self.drop_link(i);
                return false;
            }
            Io::Read(Some(Err(err))) | Io::Written(Err(err)) => {
                rec.counters.connections_dropped.fetch_add(1, Relaxed);
                rec.record_error(classify(&err));
                self.drop_link(i);
                return false;
            }
            Io::Read(None) => {
                rec.counters.connections_dropped.fetch_add(1, Relaxed);
                rec.record_error(Cause::Eof);
                self.drop_link(i);
                return false;
            }
        }
        true
    }

    /// A frame for side `i`: a relay reply, or a message from the other side.
    fn received(&mut self, i: usize, payload: &[u8]) {
        let now = Instant::now();
        let rec = &self.ctx.recorder;
        let frame: Option<Value> = serde_json::from_slice(payload).ok();
        let op = frame.as_ref().and_then(|f| f.get("op")?.as_str());
        let [a, b] = &mut self.sides;
        let (me, other) = if i == 0 { (a, b) } else { (b, a) };
        match op {
            Some("connection_established") => {}
            Some("subscribed") => {
                if let Some(link) = me.link.as_mut() {
                    link.subscribed = true;
                }
            }
            Some("message") => {
                let frame = frame.as_ref().expect("op came from it");
                if frame.get("channel").and_then(Value::as_str) != Some(&me.inbox) {
                    rec.counters.messages_unmatched.fetch_add(1, Relaxed);
                    return;
                }
                if let Some(seq) = frame.get("seq").and_then(Value::as_u64) {
                    me.relay_seq = me.relay_seq.max(seq);
                }
                let envelope =
                    frame.get("data").and_then(Envelope::from_json).filter(|e| e.from == other.side);
                let Some(envelope) = envelope else {
                    rec.counters.messages_unmatched.fetch_add(1, Relaxed);
                    return;
                };
                let opened = me.cipher.open(&envelope);
                // The sender's record says whether this message was sent,
                // and whether it came already.
                match other.sent.echo(envelope.seq, opened.is_some()) {
                    Echo::Delivered { reordered } => {
                        let intended_us = opened.map_or(0, |o| o.intended_us.max(0) as u64);
                        let intended = self.ctx.epoch + Duration::from_micros(intended_us);
                        rec.record_delivered(
                            Some(now.saturating_duration_since(intended)),
                            payload.len(),
                            reordered,
                        );
                    }
                    Echo::Duplicate => _ = rec.counters.messages_duplicated.fetch_add(1, Relaxed),
                    Echo::Corrupted => {
                        rec.counters.messages_undecryptable.fetch_add(1, Relaxed);
                        rec.record_error(Cause::MessageUndecryptable);
                    }
                    Echo::Unmatched => _ = rec.counters.messages_unmatched.fetch_add(1, Relaxed),
                }
            }
            // An error reply, or something that is not the relay's protocol.
            _ => _ = rec.counters.messages_unmatched.fetch_add(1, Relaxed),
        }
    }

    /// Waits up to `wait` for what is on its way, without sending more.
    async fn drain(&mut self, wait: Duration) {
        let never = CancellationToken::new();
        let _ = timeout(wait, self.pump(&never, None, |p| p.outstanding() == 0)).await;
    }

    /// Counts what never arrived as lost (the session is over).
    fn settle(&mut self) {
        let rec = &self.ctx.recorder;
        for s in &mut self.sides {
            let lost = s.sent.outstanding() + s.sent.take_given_up();
            rec.counters.messages_lost.fetch_add(lost, Relaxed);
            rec.record_errors(Cause::MessageLost, lost);
            s.sent = Delivery::default();
        }
    }

    /// Forgets side `i`'s connection after the relay ended it.
    fn drop_link(&mut self, i: usize) {
        if self.sides[i].link.take().is_some() {
            self.ctx.recorder.active.fetch_sub(1, Relaxed);
        }
    }

    /// Closes side `i` the way a well-behaved client does.
    async fn close_side(&mut self, i: usize) {
        self.close([i == 0, i == 1]).await;
    }

    /// Closes both sides at once.
    async fn close_all(&mut self) {
        self.close([true, true]).await;
    }

    /// Closes the sides picked: a close frame (1000) each, then their
    /// frames are read (and accounted: a message may still be on its way)
    /// until the relay's close frames, for at most [`CLOSE_WAIT`].
    async fn close(&mut self, which: [bool; 2]) {
        let rec = self.ctx.recorder.clone();
        for i in (0..2).filter(|i| which[*i]) {
            let Some(link) = self.sides[i].link.as_mut() else { continue };
            rec.counters.connections_closed_by_client.fetch_add(1, Relaxed);
            let frame = CloseFrame { code: CloseCode::Normal, reason: "stampede: done".into() };
            if link.ws.close(Some(frame)).await.is_err() {
                self.drop_link(i);
            }
        }
        let closing = |p: &Pair| p.sides.iter().zip(which).any(|(s, w)| w && s.link.is_some());
        let _ = timeout(CLOSE_WAIT, async {
            while closing(self) {
                let [sa, sb] = &mut self.sides;
                let (i, io) = tokio::select! {
                    io = io_of(&mut sa.link), if which[0] => (0, io),
                    io = io_of(&mut sb.link), if which[1] => (1, io),
                };
                match io {
                    Io::Read(Some(Ok(Message::Text(t)))) => self.received(i, t.as_bytes()),
                    Io::Read(Some(Ok(Message::Binary(b)))) => self.received(i, &b),
                    Io::Read(Some(Ok(Message::Close(_)) | Err(_)) | None) | Io::Written(Err(_)) => {
                        self.drop_link(i)
                    }
                    Io::Read(Some(Ok(_))) | Io::Written(Ok(())) => {}
                }
            }
        })
        .await;
        for (i, w) in which.into_iter().enumerate() {
            if w {
                self.drop_link(i);
            }
        }
    }
}

/// What [`Pair::pump`] stopped for.
enum Pump {
    Done,
    Failed,
    Cancelled,
}

/// The next thing side's connection does; pending forever without one.
async fn io_of(link: &mut Option<Link>) -> Io {
    match link {
        Some(l) => std::future::poll_fn(|cx| poll_io(&mut l.ws, cx)).await,
        None => std::future::pending().await,
    }
}
