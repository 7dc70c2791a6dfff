//! Scripted sessions: runs a [`FlowSpec`]'s steps on one slot.
//!
//! # Sessions
//! [`run_flow`] runs sessions one after another until the slot is
//! cancelled. A session runs the steps in order with fresh variables
//! (`{{var.NAME}}` unset, `{{seq}}` from 0, no connection open). When every
//! step succeeded it counts `sessions_completed` and the next session
//! starts at once. A failed step ends its session (`sessions_failed`); the
//! next one starts after a backoff of 100 ms doubling up to 5 s (reset by a
//! completed session), so a broken server is not hammered. Either way a
//! WebSocket still open is closed gracefully first (not a step).
//!
//! When the slot is cancelled mid-step, the step stops at once and is not
//! recorded, the session is neither completed nor failed, and an open
//! WebSocket is closed gracefully (close frame 1000, up to 2 s for the
//! server's).
//!
//! # Recording
//! Every run of a step is recorded under its metric: a success with its
//! duration, or a failure, whose cause is counted once (in the error
//! counts). A `loop` fails when a step of its body fails; the cause is
//! counted under that step only.
//!
//! # The connection
//! While the session's WebSocket is open its frames are read during every
//! step (`sleep`, `http`, `send`, ...): pings are answered, text and binary
//! frames are counted (`messages_received`, `bytes_received`) and kept in
//! a bounded buffer ([`MAX_BUFFERED`] messages, [`MAX_BUFFERED_BYTES`]
//! bytes; beyond either, the oldest are dropped) until an `expect` takes
//! them. Every frame received is either matched by an `expect` or counted
//! `messages_unmatched`: skipped by an `expect`, dropped from the full
//! buffer, or still buffered when the connection ended. A close frame or
//! an error from the server fails the step running (cause as
//! [`crate::connection`] classifies it: `closed_<code>`, `eof`, `reset`,
//! ...; the connection counts as closed by the server or dropped), except
//! for `close`, which waits for exactly that. The connection counts in
//! `connections_active` while it is open.
//!
//! # Steps
//! - `connect`: opens the WebSocket as every other session kind does
//!   ([`crate::connection`]: connect metrics and counts, opening headers,
//!   TLS); duration: the connect time. A `connect` while a connection is
//!   open closes that one first.
//! - `send`: renders the template (`{{conn}}` the slot, `{{worker}}`,
//!   `{{seq}}` the session's requests so far (sends and HTTP requests), `{{uuid}}`, `{{now_ms}}`,
//!   `{{now_us}}`, `{{var.NAME}}` a captured value or empty) and sends it;
//!   duration: write and flush. Counts `messages_sent`, `bytes_sent`.
//! - `expect`: takes buffered messages in order, then new ones as they
//!   come: the first that passes the check matches, the others are
//!   dropped (unmatched). None in `timeout_us`: fails with
//!   `expect_timeout`. Duration: from the start of the last `send` or
//!   `http` before it in the session (the request it answers), else from
//!   its own start. Then its captures are applied as a `capture` step's.
//! - `capture`: sets variables from the newest of the last message an
//!   `expect` matched and the last HTTP response body. A JSON path that is
//!   missing, text that is not JSON, a regex that does not match, or
//!   nothing to read from fails the step (cause `protocol`: the server did
//!   not say what the flow expects).
//! - `sleep`: a uniformly random time in `[min_us, max_us]`; duration: the
//!   time slept.
//! - `loop`: runs its body `count` times and/or while `duration_us` has
//!   not passed since it started (checked before each iteration: a step is
//!   never cut short; with neither, until the slot closes). Its duration is
//!   the whole loop's. Every iteration yields to the runtime, so a body of
//!   steps that never wait cannot hold a thread.
//! - `http`: one HTTP/1.1 request on its own connection to the target's
//!   host and port (TLS with the run's client for `wss://`), see
//!   [`crate::http`]. Duration: request start to response read. Fails with
//!   `step_http_<code>` for another status than the expected one,
//!   `timeout` when `timeout_us` (the whole exchange) passes, and
//!   `step_http_failed` for anything else (connect, I/O, a head over
//!   16 KiB, a body over [`MAX_HTTP_BODY`], not HTTP). The body is kept
//!   for `capture`.
//! - `close`: close frame 1000, then waits up to 2 s for the server's close
//!   frame or the end of the connection (frames arriving meanwhile count
//!   as received and unmatched); none: fails with `timeout`. With no
//!   connection open it succeeds at once.
//!
//! A `send` or `expect` without an open connection fails with `eof`.
//!
//! Waits longer than 30 days (timeouts, sleeps, loop durations) are taken
//! as 30 days.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::websocket::WebSocket;
use futures_util::StreamExt;
use serde_json::Value;
use stampede_model::flow::MAX_HTTP_BODY;
use stampede_model::jsonpath;
use stampede_model::template::Var;
use stampede_model::{Cause, Template};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::connection::{Io, RunContext, classify, open, poll_io, stagger};
use crate::opening::Vars;
use crate::recorder::Recorder;
use crate::session::SessionPlan;
use crate::tls::Stream;

/// Most messages buffered for `expect` steps per connection.
pub const MAX_BUFFERED: usize = 1024;
/// Most bytes buffered for `expect` steps per connection (the newest
/// message is always kept, whatever its size: the WebSocket's message
/// limit bounds it).
pub const MAX_BUFFERED_BYTES: usize = 16 << 20;
/// How long we wait for the server's answer to our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest wait a step takes from its spec; keeps `Instant` arithmetic far
/// from overflowing whatever a spec says.
const LONGEST_WAIT_US: u64 = 30 * 24 * 3600 * 1_000_000;

pub(crate) mod page;
mod plan;

use page::PageSession;
pub use plan::FlowPlan;
use plan::{Capture, CheckPlan, ExtractPlan, HttpPlan, Kind, Planned};

/// The frames kept for `expect` steps, oldest first, bounded by count and
/// bytes.
#[derive(Default)]
struct Inbox {
    frames: VecDeque<Vec<u8>>,
    bytes: usize,
}

impl Inbox {
    /// Keeps `frame`; returns how many older frames were dropped to make
    /// room.
    fn push(&mut self, frame: Vec<u8>) -> u64 {
        self.bytes += frame.len();
        self.frames.push_back(frame);
        let mut dropped = 0;
        while self.frames.len() > MAX_BUFFERED || (self.bytes > MAX_BUFFERED_BYTES && self.frames.len() > 1) {
            if let Some(old) = self.frames.pop_front() {
                self.bytes -= old.len();
                dropped += 1;
            }
        }
        dropped
    }

    fn pop(&mut self) -> Option<Vec<u8>> {
        let frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        Some(frame)
    }
}

/// An open WebSocket of a session. Counted in `connections_active` while
/// it exists; frames still buffered when it goes are counted unmatched.
struct Conn {
    ws: WebSocket<Stream>,
    inbox: Inbox,
    recorder: Arc<Recorder>,
}

/// What reading the connection produced.
enum Wake {
    /// A text or binary frame, now buffered.
    Data,
    /// Everything pending is written.
    Written,
    /// The server ended the connection.
    Ended(Ending),
}

/// How the server ended a connection.
enum Ending {
    /// With a close frame of this code (1005: none given).
    Closed(u16),
    /// Without one.
    Dropped(Cause),
}

impl Conn {
    fn new(ws: WebSocket<Stream>, recorder: Arc<Recorder>) -> Conn {
        recorder.active.fetch_add(1, Relaxed);
        Conn { ws, inbox: Inbox::default(), recorder }
    }

    /// Reads frames (answering pings) and writes what is pending until
    /// something worth a look happens.
    fn poll(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Wake> {
        // Control frames are handled here; after this many in a row, let
        // others run (a ping flood must not hold the thread).
        for _ in 0..64 {
            let wake = match std::task::ready!(poll_io(&mut self.ws, cx)) {
                Io::Read(Some(Ok(Message::Text(t)))) => self.received(t.as_bytes()),
                Io::Read(Some(Ok(Message::Binary(b)))) => self.received(&b),
                // The codec queued the pong; it goes out as we read or flush.
                Io::Read(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
                Io::Read(Some(Ok(Message::Close(frame)))) => {
                    Wake::Ended(Ending::Closed(frame.map_or(1005, |f| u16::from(f.code))))
                }
                Io::Read(Some(Err(e))) | Io::Written(Err(e)) => Wake::Ended(Ending::Dropped(classify(&e))),
                Io::Read(None) => Wake::Ended(Ending::Dropped(Cause::Eof)),
                Io::Written(Ok(())) => Wake::Written,
            };
            return Poll::Ready(wake);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// A data frame arrived: counted and buffered.
    fn received(&mut self, data: &[u8]) -> Wake {
        let c = &self.recorder.counters;
        c.messages_received.fetch_add(1, Relaxed);
        c.bytes_received.fetch_add(data.len() as u64, Relaxed);
        // A copy sized to the frame: what is kept never pins a larger buffer.
        let dropped = self.inbox.push(data.to_vec());
        c.messages_unmatched.fetch_add(dropped, Relaxed);
        Wake::Data
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.recorder.active.fetch_sub(1, Relaxed);
        self.recorder.counters.messages_unmatched.fetch_add(self.inbox.frames.len() as u64, Relaxed);
    }
}

/// A cheap xorshift64* generator for sleep times, one per slot.
struct Rng(u64);

impl Rng {
    fn new(slot: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        // splitmix64 of the seed, so neighbouring slots start far apart.
        let mut z = (slot ^ nanos).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)).max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[lo, hi]` (modulo bias under 2^-40 for spans below a
    /// day in µs).
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        match hi.saturating_sub(lo).checked_add(1) {
            _ if hi <= lo => lo,
            Some(span) => lo + self.next() % span,
            None => self.next(),
        }
    }
}

/// A step failed; what was to be recorded is recorded.
struct Failed;

/// Why a step failed.
enum StepError {
    /// Count this cause.
    Cause(Cause),
    /// The cause is counted already (a failed connect, a loop's step).
    Recorded,
}

impl From<Cause> for StepError {
    fn from(c: Cause) -> StepError {
        StepError::Cause(c)
    }
}

/// Whether our close was answered.
enum Closing {
    NotOpen,
    Answered,
    Unanswered,
}

/// Runs slot `slot`'s sessions until `cancel` fires (see the module docs
/// for what a session does and how it is counted); a browser session runs
/// in a page of its own ([`crate::browser`]).
pub async fn run_flow(ctx: Arc<RunContext>, slot: u64, cancel: CancellationToken) {
    let (plan, browser) = match &ctx.session {
        SessionPlan::Flow(plan) => (plan.clone(), None),
        SessionPlan::Browser(b) => (b.flow.clone(), Some(b.clone())),
        _ => return,
    };
    let counters = &ctx.recorder.counters;
    let mut rng = Rng::new(slot);
    let mut backoff = BACKOFF_MIN;
    while !cancel.is_cancelled() {
        let page = match &browser {
            None => Ok(None),
            Some(b) => tokio::select! {
                _ = cancel.cancelled() => return,
                page = PageSession::open(b, &ctx) => page.map(Some),
            },
        };
        let outcome = match page {
            Ok(page) => {
                let mut session = Session {
                    ctx: &ctx,
                    plan: &plan,
                    slot,
                    cancel: &cancel,
                    rng: &mut rng,
                    conn: None,
                    page: page.as_ref(),
                    vars: vec![None; plan.var_names.len()],
                    seq: 0,
                    last_request: None,
                    last_source: None,
                };
                let outcome = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => None,
                    done = session.run(&plan.steps) => Some(done),
                };
                session.close().await;
                if let Some(page) = page {
                    if let (Some(Err(Failed)), Some(b)) = (&outcome, &browser) {
                        screenshot(b, &ctx.worker_id, slot, &page).await;
                    }
                    page.close().await;
                }
                outcome
            }
            Err(cause) => {
                ctx.recorder.record_error(cause);
                Some(Err(Failed))
            }
        };
        match outcome {
            None => return,
            Some(Ok(())) => {
                counters.sessions_completed.fetch_add(1, Relaxed);
                backoff = BACKOFF_MIN;
                // A flow of steps that never wait must not hold the thread.
                tokio::task::yield_now().await;
            }
            Some(Err(Failed)) => {
                counters.sessions_failed.fetch_add(1, Relaxed);
                let pause = backoff.mul_f64(0.5 + stagger(slot ^ backoff.as_millis() as u64));
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Saves a failed browser session's page, while the run may still take
/// screenshots.
async fn screenshot(plan: &crate::browser::BrowserPlan, worker: &str, slot: u64, page: &PageSession) {
    let Some(path) = plan.screenshot_path(worker, slot) else { return };
    let Some(png) = page.screenshot().await else { return };
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::create_dir_all(dir).await;
    }
    match tokio::fs::write(&path, png).await {
        Ok(()) => tracing::info!("failed browser session: screenshot {}", path.display()),
        Err(e) => tracing::warn!("cannot save screenshot {}: {e}", path.display()),
    }
}

/// One session's state.
struct Session<'a> {
    ctx: &'a RunContext,
    plan: &'a FlowPlan,
    slot: u64,
    cancel: &'a CancellationToken,
    rng: &'a mut Rng,
    conn: Option<Box<Conn>>,
    /// A browser session's page.
    page: Option<&'a PageSession>,
    /// Captured values, by [`FlowPlan::var_names`] index.
    vars: Vec<Option<String>>,
    /// Requests so far: sends and HTTP requests (`{{seq}}`).
    seq: u64,
    /// Start of the last `send` or `http` step.
    last_request: Option<Instant>,
    /// What `capture` reads: the newest of the last message an `expect`
    /// matched and the last HTTP response body.
    last_source: Option<Vec<u8>>,
}

type BoxedRun<'b> = Pin<Box<dyn Future<Output = Result<(), Failed>> + Send + 'b>>;

impl<'a> Session<'a> {
    async fn run(&mut self, steps: &'a [Planned]) -> Result<(), Failed> {
        for step in steps {
            self.step(step).await?;
        }
        Ok(())
    }

    /// [`Session::run`] behind a pointer, for a loop's body (recursion).
    fn run_boxed<'b>(&'b mut self, steps: &'a [Planned]) -> BoxedRun<'b> {
        Box::pin(self.run(steps))
    }

    /// Runs one step and records it.
    async fn step(&mut self, step: &'a Planned) -> Result<(), Failed> {
        let result = match &step.kind {
            Kind::Connect => self.connect().await,
            Kind::Send { message, binary } => self.send(message, *binary).await,
            Kind::Expect { check, timeout, capture } => self.expect(check, *timeout, capture).await,
            Kind::Capture(vars) => {
                let started = Instant::now();
                self.capture(vars).map(|()| started.elapsed())
            }
            Kind::Sleep { min_us, max_us } => {
                let started = Instant::now();
                let pause = Duration::from_micros(self.rng.between(*min_us, *max_us));
                self.drive(tokio::time::sleep(pause))
                    .await
                    .map(|()| started.elapsed())
                    .map_err(StepError::from)
            }
            Kind::Loop { count, duration, steps } => self.repeat(*count, *duration, steps).await,
            Kind::Http(h) => self.http(h).await,
            Kind::Page(action) => self.page_action(action).await,
            Kind::Close => {
                let started = Instant::now();
                match self.close().await {
                    Closing::NotOpen | Closing::Answered => Ok(started.elapsed()),
                    Closing::Unanswered => Err(StepError::Cause(Cause::Timeout)),
                }
            }
        };
        let rec = &self.ctx.recorder;
        match result {
            Ok(took) => {
                rec.record_step(step.metric, Some(took));
                Ok(())
            }
            Err(e) => {
                rec.record_step(step.metric, None);
                if let StepError::Cause(cause) = e {
                    rec.record_error(cause);
                }
                Err(Failed)
            }
        }
    }

    async fn connect(&mut self) -> Result<Duration, StepError> {
        self.close().await;
        let started = Instant::now();
        // Boxed: the handshake's state is large and short-lived.
        match Box::pin(open(self.ctx, self.slot, self.cancel)).await {
            Some(Ok(ws)) => {
                let took = started.elapsed();
                self.conn = Some(Box::new(Conn::new(ws, self.ctx.recorder.clone())));
                Ok(took)
            }
            // `open` counted the failure and its cause.
            Some(Err(())) => Err(StepError::Recorded),
            // Cancelled: the caller stops this session.
            None => std::future::pending().await,
        }
    }

    async fn send(&mut self, message: &Template, binary: bool) -> Result<Duration, StepError> {
        let started = Instant::now();
        self.last_request = Some(started);
        let mut text = String::new();
        self.render(message, &mut text);
        self.seq += 1;
        let len = text.len() as u64;
        let conn = self.conn.as_deref_mut().ok_or(Cause::Eof)?;
        let message = if binary { Message::binary(text.into_bytes()) } else { Message::text(text) };
        conn.ws.queue(message).map_err(|e| classify(&e))?;
        let ending = loop {
            match std::future::poll_fn(|cx| conn.poll(cx)).await {
                Wake::Ended(e) => break Some(e),
                Wake::Data | Wake::Written if !conn.ws.busy() => break None,
                Wake::Data | Wake::Written => {}
            }
        };
        if let Some(e) = ending {
            return Err(self.ended(e).await.into());
        }
        let c = &self.ctx.recorder.counters;
        c.messages_sent.fetch_add(1, Relaxed);
        c.bytes_sent.fetch_add(len, Relaxed);
        Ok(started.elapsed())
    }

    async fn expect(
        &mut self,
        check: &CheckPlan,
        wait: Duration,
        capture: &[Capture],
    ) -> Result<Duration, StepError> {
        if self.page.is_some() {
            return self.expect_app(check, wait, capture).await;
        }
        let started = Instant::now();
        let from = self.last_request.unwrap_or(started);
        let ctx = self.ctx;
        let counters = &ctx.recorder.counters;
        let conn = self.conn.as_deref_mut().ok_or(Cause::Eof)?;
        let mut deadline = std::pin::pin!(tokio::time::sleep(wait));
        let outcome = loop {
            let mut matched = None;
            while let Some(frame) = conn.inbox.pop() {
                if check.passes(&frame) {
                    matched = Some(frame);
                    break;
                }
                counters.messages_unmatched.fetch_add(1, Relaxed);
            }
            if let Some(frame) = matched {
                break Ok(frame);
            }
            tokio::select! {
                biased;
                _ = &mut deadline => break Err(None),
                wake = std::future::poll_fn(|cx| conn.poll(cx)) => if let Wake::Ended(e) = wake {
                    break Err(Some(e));
                },
            }
        };
        match outcome {
            Ok(frame) => {
                let took = from.elapsed();
                self.last_source = Some(frame);
                self.capture(capture)?;
                Ok(took)
            }
            Err(None) => Err(Cause::ExpectTimeout.into()),
            Err(Some(e)) => Err(self.ended(e).await.into()),
        }
    }

    /// Sets `vars` from [`Session::last_source`].
    fn capture(&mut self, vars: &[Capture]) -> Result<(), StepError> {
        if vars.is_empty() {
            return Ok(());
        }
        let source = self.last_source.as_deref().ok_or(Cause::CaptureFailed)?;
        // Parsed once, and only if a JSON path asks for it.
        let mut doc: Option<Option<Value>> = None;
        for c in vars {
            let value = match &c.how {
                ExtractPlan::Json(path) => doc
                    .get_or_insert_with(|| serde_json::from_slice(source).ok())
                    .as_ref()
                    .and_then(|d| jsonpath::lookup(d, path))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    }),
                ExtractPlan::Regex(re) => re
                    .captures(source)
                    .and_then(|caps| caps.get(1).or_else(|| caps.get(0)))
                    .map(|m| String::from_utf8_lossy(m.as_bytes()).into_owned()),
            };
            self.vars[c.var] = Some(value.ok_or(Cause::CaptureFailed)?);
        }
        Ok(())
    }

    async fn repeat(
        &mut self,
        count: Option<u64>,
        duration: Option<Duration>,
        steps: &'a [Planned],
    ) -> Result<Duration, StepError> {
        let started = Instant::now();
        let until = duration.map(|d| started + d);
        let mut done = 0u64;
        while count.is_none_or(|c| done < c) && until.is_none_or(|u| Instant::now() < u) {
            self.run_boxed(steps).await.map_err(|Failed| StepError::Recorded)?;
            done += 1;
            tokio::task::yield_now().await;
        }
        Ok(started.elapsed())
    }

    async fn http(&mut self, h: &HttpPlan) -> Result<Duration, StepError> {
        let ctx = self.ctx;
        let mut path = String::new();
        self.render(&h.path, &mut path);
        let headers: Vec<(String, String)> = h
            .headers
            .iter()
            .map(|(name, t)| {
                let mut value = String::new();
                self.render(t, &mut value);
                (name.clone(), value)
            })
            .collect();
        let body = h.body.as_ref().map(|t| {
            let mut b = String::new();
            self.render(t, &mut b);
            b
        });
        self.seq += 1;
        let request = crate::http::Request {
            method: &h.method,
            target: &path,
            host: &ctx.target.url.authority,
            headers: &headers,
            body: body.as_deref().map(str::as_bytes),
        };
        let source = (!ctx.sources.is_empty()).then(|| ctx.sources[self.slot as usize % ctx.sources.len()]);
        let started = Instant::now();
        self.last_request = Some(started);
        let fetch = crate::http::fetch(&ctx.target, source, &request, MAX_HTTP_BODY, h.timeout);
        let response = self.drive(fetch).await?.map_err(|e| e.cause())?;
        let took = started.elapsed();
        if response.status != h.status {
            return Err(Cause::StepHttpStatus(response.status).into());
        }
        self.last_source = Some(response.body);
        Ok(took)
    }

    /// Runs `fut` while reading the connection, if one is open; the
    /// connection ending first fails with its cause (and `fut` is dropped).
    async fn drive<F: Future>(&mut self, fut: F) -> Result<F::Output, Cause> {
        let mut fut = std::pin::pin!(fut);
        let ending = match self.conn.as_deref_mut() {
            None => return Ok(fut.await),
            Some(conn) => loop {
                tokio::select! {
                    biased;
                    out = &mut fut => return Ok(out),
                    wake = std::future::poll_fn(|cx| conn.poll(cx)) => if let Wake::Ended(e) = wake {
                        break e;
                    },
                }
            },
        };
        Err(self.ended(ending).await)
    }

    /// The server ended the connection: counts it as connection.rs does and
    /// returns the cause of the step's failure.
    async fn ended(&mut self, ending: Ending) -> Cause {
        let Some(mut conn) = self.conn.take() else { return Cause::Eof };
        let counters = &self.ctx.recorder.counters;
        match ending {
            Ending::Closed(code) => {
                counters.connections_closed_by_server.fetch_add(1, Relaxed);
                // The codec has queued our reply; flush it and let the
                // server close TCP (RFC 6455 section 7.1.1).
                let _ = timeout(CLOSE_WAIT, async {
                    while let Some(Ok(msg)) = conn.ws.next().await {
                        match msg {
                            Message::Text(t) => _ = conn.received(t.as_bytes()),
                            Message::Binary(b) => _ = conn.received(&b),
                            _ => {}
                        }
                    }
                })
                .await;
                Cause::ClosedByServer(code)
            }
            Ending::Dropped(cause) => {
                counters.connections_dropped.fetch_add(1, Relaxed);
                cause
            }
        }
    }

    /// Closes the connection if one is open: close frame 1000, then frames
    /// are read (and counted) until the server's close frame or the end of
    /// the connection, for at most [`CLOSE_WAIT`] in all.
    async fn close(&mut self) -> Closing {
        let Some(mut conn) = self.conn.take() else { return Closing::NotOpen };
        self.ctx.recorder.counters.connections_closed_by_client.fetch_add(1, Relaxed);
        // A send the step could not finish never leaves.
        conn.ws.discard_unsent();
        let answered = timeout(CLOSE_WAIT, async {
            let frame = CloseFrame { code: CloseCode::Normal, reason: "stampede: done".into() };
            if conn.ws.close(Some(frame)).await.is_err() {
                return;
            }
            while let Some(Ok(msg)) = conn.ws.next().await {
                match msg {
                    Message::Text(t) => _ = conn.received(t.as_bytes()),
                    Message::Binary(b) => _ = conn.received(&b),
                    Message::Close(_) => return,
                    _ => {}
                }
            }
        })
        .await;
        if answered.is_ok() { Closing::Answered } else { Closing::Unanswered }
    }

    /// Renders `t` for this session.
    fn render(&self, t: &Template, out: &mut String) {
        let vars = Vars { conn: self.slot, worker: &self.ctx.worker_id, seq: self.seq, jwt: None };
        t.render_into(out, |v, out| match v {
            Var::Captured(name) => {
                if let Some(Some(value)) = self.plan.var_index(name).map(|i| &self.vars[i]) {
                    out.push_str(value);
                }
            }
            other => vars.write(other, &self.plan.rng, out),
        });
    }
}

#[cfg(test)]
mod tests;
