//! The CDP connection: one task owns both ends of the pipe to Chromium
//! (`--remote-debugging-pipe`: we write commands to its fd 3 and read its
//! answers and events from its fd 4, each message JSON followed by a NUL).
//!
//! Callers hold a cheap, cloneable [`Connection`]: a bounded channel into
//! the task. The task gives each call an id, keeps it in a map with its
//! deadline and answers it exactly once: with Chromium's response, with a
//! timeout error when the deadline passes first, or with "connection
//! closed" when the pipe ends. Events are parsed once and routed by
//! `sessionId` to that session's bounded broadcast channel, so a slow page
//! reader loses its oldest events rather than stalling everyone.
//!
//! The task never blocks on anything but its own `select!`: writes are
//! queued and written as the pipe accepts them, so Chromium writing a large
//! answer while we write a large command cannot deadlock.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cdp::Command;
use crate::error::{Error, Result};
use crate::events::{Event, EventStream};

#[cfg(test)]
mod tests;

/// A flat session's id, shared between the page and the task's routes.
pub(crate) type SessionId = Arc<str>;

/// Calls waiting for the task. Callers wait (within their deadline) when
/// it is full: backpressure instead of an unbounded queue.
const REQUEST_QUEUE: usize = 256;
/// Bytes of commands queued for the pipe beyond which the task stops taking
/// new calls until Chromium has read some.
const MAX_OUTBOUND: usize = 16 << 20;
/// A message without its NUL beyond this is taken as a broken peer.
/// Full-page screenshots of tall pages reach tens of MB.
const MAX_MESSAGE: usize = 256 << 20;
const READ_CHUNK: usize = 64 << 10;
/// The task evicts calls at their deadline; the caller's own timer fires
/// this much later and only matters if the task stopped running.
const CALLER_GRACE: Duration = Duration::from_secs(1);

type Reply = oneshot::Sender<Result<Box<RawValue>>>;

enum Request {
    Call {
        method: &'static str,
        params: Box<RawValue>,
        session: Option<SessionId>,
        deadline: Instant,
        timeout: Duration,
        reply: Reply,
    },
    Subscribe {
        session: Option<SessionId>,
        reply: oneshot::Sender<broadcast::Receiver<Arc<Event>>>,
    },
}

/// Settings of the connection task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnOptions {
    /// Deadline of calls that do not give their own.
    pub default_timeout: Duration,
    /// Capacity of each session's event channel.
    pub event_capacity: usize,
}

/// A handle to the connection task; clones share it. When the task has
/// ended, every call fails at once with [`Error::ConnectionClosed`].
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    tx: mpsc::Sender<Request>,
    closed: Arc<OnceLock<String>>,
    default_timeout: Duration,
}

impl Connection {
    /// Starts the task owning `reader` and `writer`. The handle ends it by
    /// being dropped (with all clones) or by the pipe closing.
    pub(crate) fn spawn(
        reader: pipe::Receiver,
        writer: pipe::Sender,
        options: ConnOptions,
    ) -> (Connection, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
        let closed = Arc::new(OnceLock::new());
        let task = Task {
            writer,
            next_id: 1,
            pending: HashMap::new(),
            deadlines: BTreeSet::new(),
            outbound: VecDeque::new(),
            written: 0,
            outbound_bytes: 0,
            root: broadcast::channel(options.event_capacity).0,
            routes: HashMap::new(),
            event_capacity: options.event_capacity,
            closed: closed.clone(),
        };
        let handle = tokio::spawn(task.run(reader, rx));
        (Connection { tx, closed, default_timeout: options.default_timeout }, handle)
    }

    /// The deadline calls get unless they say otherwise.
    pub(crate) fn default_timeout(&self) -> Duration {
        self.default_timeout
    }

    /// True once the task has ended (browser gone or closed).
    pub(crate) fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Sends a typed command (to a page's session, or the browser when
    /// `session` is `None`) and parses its result.
    pub(crate) async fn call<C: Command>(
        &self,
        session: Option<&SessionId>,
        command: &C,
        timeout: Duration,
    ) -> Result<C::Response> {
        let params = serde_json::value::to_raw_value(command)
            .map_err(|source| Error::Decode { method: C::METHOD, source })?;
        let raw = self.call_raw(C::METHOD, params, session.cloned(), timeout).await?;
        serde_json::from_str(raw.get()).map_err(|source| Error::Decode { method: C::METHOD, source })
    }

    /// Sends a command and returns its result unparsed.
    pub(crate) async fn call_raw(
        &self,
        method: &'static str,
        params: Box<RawValue>,
        session: Option<SessionId>,
        timeout: Duration,
    ) -> Result<Box<RawValue>> {
        let deadline = Instant::now() + timeout;
        let timed_out = || Error::Timeout { what: method.to_owned(), after: timeout };
        let (reply, answer) = oneshot::channel();
        let request = Request::Call { method, params, session, deadline, timeout, reply };
        match tokio::time::timeout_at(deadline, self.tx.send(request)).await {
            Err(_) => return Err(timed_out()),
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(())) => {}
        }
        match tokio::time::timeout_at(deadline + CALLER_GRACE, answer).await {
            Ok(Ok(result)) => result,
            // The task ended and dropped the reply without answering.
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => Err(timed_out()),
        }
    }

    /// Subscribes to a session's events (`None`: browser-level events).
    /// Only events after this call are seen.
    pub(crate) async fn subscribe(&self, session: Option<SessionId>) -> Result<EventStream> {
        let (reply, answer) = oneshot::channel();
        let request = Request::Subscribe { session, reply };
        let sent = tokio::time::timeout(self.default_timeout, self.tx.send(request)).await;
        match sent {
            Err(_) => return Err(Error::Timeout { what: "subscribing".into(), after: self.default_timeout }),
            Ok(Err(_)) => return Err(self.closed_error()),
            Ok(Ok(())) => {}
        }
        answer.await.map(EventStream::new).map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> Error {
        let reason = self.closed.get().cloned().unwrap_or_else(|| "connection task ended".into());
        Error::ConnectionClosed { reason }
    }
}

/// A call written (or queued) and not yet answered.
struct Pending {
    reply: Reply,
    method: &'static str,
    session: Option<SessionId>,
    deadline: Instant,
    timeout: Duration,
}

/// Where a session's events go.
struct Route {
    events: broadcast::Sender<Arc<Event>>,
    target_id: Option<String>,
    /// Its renderer crashed: calls fail at once instead of waiting out
    /// their deadline for answers that will not come.
    crashed: bool,
}

/// The connection task's state (everything but the reader and the request
/// channel, which the loop owns).
struct Task {
    writer: pipe::Sender,
    next_id: u64,
    pending: HashMap<u64, Pending>,
    /// Deadlines in order, so the earliest is at hand for the timer.
    deadlines: BTreeSet<(Instant, u64)>,
    outbound: VecDeque<Vec<u8>>,
    /// Bytes of `outbound`'s front already written.
    written: usize,
    outbound_bytes: usize,
    root: broadcast::Sender<Arc<Event>>,
    routes: HashMap<SessionId, Route>,
    event_capacity: usize,
    closed: Arc<OnceLock<String>>,
}

#[derive(Serialize)]
struct Outgoing<'a> {
    id: u64,
    method: &'a str,
    #[serde(rename = "sessionId", skip_serializing_if = "Option::is_none")]
    session_id: Option<&'a str>,
    params: &'a RawValue,
}

/// Any message from Chromium: a response has `id`, an event `method`.
#[derive(Deserialize)]
struct Incoming<'a> {
    id: Option<u64>,
    method: Option<String>,
    #[serde(rename = "sessionId")]
    session_id: Option<String>,
    #[serde(borrow)]
    params: Option<&'a RawValue>,
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    error: Option<WireError>,
}

#[derive(Deserialize)]
struct WireError {
    code: i64,
    message: String,
    data: Option<serde_json::Value>,
}

impl Task {
    async fn run(mut self, mut reader: pipe::Receiver, mut rx: mpsc::Receiver<Request>) {
        let mut chunk = vec![0u8; READ_CHUNK];
        let mut inbound: Vec<u8> = Vec::new();
        let reason = loop {
            let next_deadline = self.deadlines.first().map(|&(at, _)| at);
            let front = self.outbound.front().map(|m| &m[self.written..]);
            tokio::select! {
                read = reader.read(&mut chunk) => match read {
                    Ok(0) => break "end of pipe (browser exited)".to_owned(),
                    Ok(n) => {
                        let searched = inbound.len();
                        inbound.extend_from_slice(&chunk[..n]);
                        if let Err(reason) = self.take_messages(&mut inbound, searched) {
                            break reason;
                        }
                    }
                    Err(e) => break format!("reading the pipe: {e}"),
                },
                wrote = self.writer.write(front.unwrap_or_default()), if front.is_some() => match wrote {
                    Ok(0) => break "pipe closed for writing".to_owned(),
                    Ok(n) => self.advance_outbound(n),
                    Err(e) => break format!("writing the pipe: {e}"),
                },
                request = rx.recv(), if self.outbound_bytes < MAX_OUTBOUND => match request {
                    Some(request) => self.accept(request),
                    None => break "closed by the driver".to_owned(),
                },
                _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)),
                    if next_deadline.is_some() => self.expire(Instant::now()),
            }
        };
        self.shut_down(reason, rx);
    }

    /// Dispatches every complete message in `inbound` (bytes before
    /// `searched` are known to hold no NUL) and keeps the incomplete rest.
    fn take_messages(&mut self, inbound: &mut Vec<u8>, searched: usize) -> Result<(), String> {
        let mut start = 0;
        let mut from = searched;
        while let Some(pos) = inbound[from..].iter().position(|&b| b == 0) {
            let end = from + pos;
            self.dispatch(&inbound[start..end]);
            start = end + 1;
            from = start;
        }
        inbound.drain(..start);
        if inbound.len() > MAX_MESSAGE {
            return Err(format!("a message exceeded {MAX_MESSAGE} bytes without its terminator"));
        }
        // One huge screenshot should not pin its buffer for the browser's life.
        if inbound.capacity() > 4 << 20 && inbound.len() < READ_CHUNK {
            inbound.shrink_to(READ_CHUNK);
        }
        Ok(())
    }

    fn dispatch(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let message: Incoming = match serde_json::from_slice(bytes) {
            Ok(m) => m,
            Err(e) => {
                let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
                tracing::warn!(error = %e, message = %head, "unreadable CDP message ignored");
                return;
            }
        };
        if let Some(id) = message.id {
            self.answer(id, message.result, message.error);
        } else if let Some(method) = message.method {
            let event = Event::parse(&method, message.params).unwrap_or_else(|e| {
                tracing::warn!(%method, error = %e, "CDP event with unexpected parameters");
                Event::Other { method }
            });
            self.route(message.session_id, event);
        } else {
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]);
            tracing::warn!(message = %head, "CDP message with neither id nor method ignored");
        }
    }

    fn answer(&mut self, id: u64, result: Option<&RawValue>, error: Option<WireError>) {
        let Some(call) = self.pending.remove(&id) else {
            // It timed out (or its page crashed) before Chromium answered.
            tracing::debug!(id, "late CDP response ignored");
            return;
        };
        self.deadlines.remove(&(call.deadline, id));
        let outcome = match (error, result) {
            (Some(e), _) => Err(Error::Protocol {
                method: call.method,
                code: e.code,
                message: match e.data {
                    Some(data) => format!("{}: {data}", e.message),
                    None => e.message,
                },
            }),
            (None, Some(result)) => Ok(result.to_owned()),
            (None, None) => Ok(empty_object()),
        };
        // The caller may have stopped waiting (its future was dropped).
        let _ = call.reply.send(outcome);
    }

    /// Browser-level events maintain the routes; every event then goes to
    /// its session's subscribers (or the browser's).
    fn route(&mut self, session: Option<String>, event: Event) {
        let Some(session) = session else {
            match &event {
                Event::AttachedToTarget { session_id, target_id } => {
                    self.route_for(session_id.as_str().into()).target_id = Some(target_id.clone());
                }
                Event::DetachedFromTarget { session_id } => {
                    self.fail_session(session_id, || Error::TargetClosed { reason: "detached".into() });
                    if let Some(route) = self.routes.remove(session_id.as_str()) {
                        deliver(&route.events, Arc::new(event.clone()));
                    }
                }
                Event::TargetCrashed { target_id } => {
                    let session = self
                        .routes
                        .iter()
                        .find(|(_, r)| r.target_id.as_ref() == Some(target_id))
                        .map(|(s, _)| s);
                    if let Some(session) = session.cloned() {
                        self.crash(&session);
                    }
                }
                _ => {}
            }
            deliver(&self.root, Arc::new(event));
            return;
        };
        match &event {
            Event::InspectorTargetCrashed => self.crash(&session),
            Event::InspectorDetached { reason } => {
                let reason = reason.clone();
                self.fail_session(&session, || Error::TargetClosed { reason: reason.clone() });
            }
            _ => {}
        }
        match self.routes.get(session.as_str()) {
            Some(route) => deliver(&route.events, Arc::new(event)),
            None => tracing::debug!(%session, "event for a session without subscribers dropped"),
        }
    }

    fn route_for(&mut self, session: SessionId) -> &mut Route {
        let capacity = self.event_capacity;
        self.routes.entry(session).or_insert_with(|| Route {
            events: broadcast::channel(capacity).0,
            target_id: None,
            crashed: false,
        })
    }

    fn crash(&mut self, session: &str) {
        let target_id = match self.routes.get_mut(session) {
            Some(route) => {
                route.crashed = true;
                route.target_id.clone().unwrap_or_default()
            }
            None => String::new(),
        };
        tracing::warn!(%session, %target_id, "page crashed");
        self.fail_session(session, || Error::TargetCrashed { target_id: target_id.clone() });
    }

    /// Answers every pending call of `session` with `error()`.
    fn fail_session(&mut self, session: &str, error: impl Fn() -> Error) {
        let ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, c)| c.session.as_deref() == Some(session))
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            if let Some(call) = self.pending.remove(&id) {
                self.deadlines.remove(&(call.deadline, id));
                // The caller may have stopped waiting.
                let _ = call.reply.send(Err(error()));
            }
        }
    }

    fn accept(&mut self, request: Request) {
        let (method, params, session, deadline, timeout, reply) = match request {
            Request::Subscribe { session, reply } => {
                let receiver = match session {
                    None => self.root.subscribe(),
                    Some(session) => self.route_for(session).events.subscribe(),
                };
                // The subscriber may have given up already.
                let _ = reply.send(receiver);
                return;
            }
            Request::Call { method, params, session, deadline, timeout, reply } => {
                (method, params, session, deadline, timeout, reply)
            }
        };
        let crashed = session.as_ref().and_then(|s| self.routes.get(s)).filter(|r| r.crashed);
        if let Some(route) = crashed {
            let target_id = route.target_id.clone().unwrap_or_default();
            // As everywhere: a caller that left needs no answer.
            let _ = reply.send(Err(Error::TargetCrashed { target_id }));
            return;
        }
        if deadline <= Instant::now() {
            // It spent its whole time in the queue: do not send it at all.
            let _ = reply.send(Err(Error::Timeout { what: method.to_owned(), after: timeout }));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let outgoing = Outgoing { id, method, session_id: session.as_deref(), params: &params };
        let mut bytes = match serde_json::to_vec(&outgoing) {
            Ok(bytes) => bytes,
            Err(source) => {
                let _ = reply.send(Err(Error::Decode { method, source }));
                return;
            }
        };
        bytes.push(0);
        self.outbound_bytes += bytes.len();
        self.outbound.push_back(bytes);
        self.deadlines.insert((deadline, id));
        self.pending.insert(id, Pending { reply, method, session, deadline, timeout });
    }

    fn advance_outbound(&mut self, n: usize) {
        self.written += n;
        if self.outbound.front().is_some_and(|m| self.written >= m.len())
            && let Some(done) = self.outbound.pop_front()
        {
            self.outbound_bytes -= done.len();
            self.written = 0;
        }
    }

    /// Fails every call whose deadline has passed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            if let Some(call) = self.pending.remove(&id) {
                tracing::debug!(method = call.method, id, "CDP call timed out");
                let error = Error::Timeout { what: call.method.to_owned(), after: call.timeout };
                // The caller may have stopped waiting.
                let _ = call.reply.send(Err(error));
            }
        }
    }

    /// Fails everything still open: pending calls, queued calls, and
    /// (by dropping the routes) every event subscription.
    fn shut_down(mut self, reason: String, mut rx: mpsc::Receiver<Request>) {
        tracing::debug!(%reason, pending = self.pending.len(), "CDP connection closed");
        // Set before the channel closes, so callers that find it closed
        // report the reason.
        let _ = self.closed.set(reason.clone());
        rx.close();
        let closed = || Error::ConnectionClosed { reason: reason.clone() };
        for (_, call) in self.pending.drain() {
            let _ = call.reply.send(Err(closed()));
        }
        while let Ok(request) = rx.try_recv() {
            if let Request::Call { reply, .. } = request {
                let _ = reply.send(Err(closed()));
            }
        }
        self.routes.clear();
    }
}

/// Hands an event to a channel's subscribers. Having none is normal (no
/// one asked for this session's events), not a failure.
fn deliver(channel: &broadcast::Sender<Arc<Event>>, event: Arc<Event>) {
    if channel.receiver_count() > 0 {
        let _ = channel.send(event);
    }
}

fn empty_object() -> Box<RawValue> {
    RawValue::from_string("{}".to_owned()).expect("{} is JSON")
}
