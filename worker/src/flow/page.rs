//! The page of a browser session ([`crate::browser`]): opened in a pooled
//! browser, its app's WebSocket traffic read from Chromium's Network events
//! while the flow runs, and the page actions of [`Kind::Page`] steps.
//!
//! - `goto`: a path is loaded from the target's host and port (`http://`
//!   for a `ws://` target, `https://` for `wss://`), a whole `http(s)://`
//!   URL as is; duration: `Page.navigate` to the load event.
//! - `click`: a trusted mouse click at the element's centre; with
//!   `wait_for`, then the wait for that selector: the duration is click
//!   until the app changed its DOM. `{{seq}}` in the step is rendered
//!   before the click is counted, so the first click of a session sees 0.
//! - `fill`, `wait_for`, `evaluate`: as their names say; `evaluate`'s
//!   value (as JSON) is what a later `capture` reads.
//! - `expect`: matches the frames the app received, oldest first (kept in
//!   a bounded buffer as a native flow keeps its socket's); duration from
//!   the start of the last page action.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use playwright_driver::{Context, Page, WebSocketEvent, WebSocketEvents};
use stampede_model::Cause;
use stampede_model::target::Scheme;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::plan::{Capture, CheckPlan, PageAction, json_eq};
use super::{Inbox, Session, StepError};
use crate::browser::{BrowserPlan, Lease};
use crate::connection::RunContext;
use crate::recorder::Recorder;

/// Sockets of one page whose ids are kept to match their close.
const MAX_TRACKED_SOCKETS: usize = 4096;
/// How long a closed page's last events (its sockets closing) are waited for.
const EVENTS_DRAIN: Duration = Duration::from_secs(1);

/// An open browser session: its page, and the reader of its app's frames.
/// Counted in `connections_active` while it exists.
pub(crate) struct PageSession {
    page: Page,
    /// The session's isolated context, closed with it.
    context: Option<Context>,
    /// Origin paths of `goto` steps are loaded from.
    origin: String,
    app: Arc<AppFrames>,
    reader: JoinHandle<()>,
    recorder: Arc<Recorder>,
    // Last: the place in the browser is given back after the page closed.
    _lease: Lease,
}

/// Frames the app received, for `expect` steps.
#[derive(Default)]
struct AppFrames {
    inbox: std::sync::Mutex<Inbox>,
    arrived: Notify,
}

impl AppFrames {
    fn inbox(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The cause a failed browser command is counted under.
fn cause_of(e: &playwright_driver::Error) -> Cause {
    use playwright_driver::Error as E;
    match e {
        E::Timeout { .. } => Cause::Timeout,
        E::ConnectionClosed { .. } | E::TargetCrashed { .. } | E::TargetClosed { .. } => {
            Cause::BrowserCrashed
        }
        E::Navigation { .. } => Cause::NavigationFailed,
        _ => Cause::ActionFailed,
    }
}

impl PageSession {
    /// Opens a page (in a context of its own when the plan isolates
    /// sessions) and starts reading its WebSocket events.
    pub(crate) async fn open(plan: &BrowserPlan, ctx: &RunContext) -> Result<PageSession, Cause> {
        let lease = plan.pool.acquire().await?;
        let context = match plan.pool.isolated() {
            true => Some(lease.browser.new_context().await.map_err(|e| cause_of(&e))?),
            false => None,
        };
        let opened = async {
            let page = match &context {
                Some(c) => c.new_page().await?,
                None => lease.browser.new_page().await?,
            };
            // Subscribed before any goto: the app's sockets from the start.
            let events = page.websocket_events().await?;
            Ok::<_, playwright_driver::Error>((page, events))
        }
        .await;
        let (page, events) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                if let Some(c) = &context {
                    let _ = c.close().await;
                }
                return Err(cause_of(&e));
            }
        };
        let app = Arc::new(AppFrames::default());
        let reader = tokio::spawn(read_app(events, app.clone(), ctx.recorder.clone()));
        ctx.recorder.active.fetch_add(1, Relaxed);
        let url = &ctx.target.url;
        let scheme = if url.scheme == Scheme::Wss { "https" } else { "http" };
        Ok(PageSession {
            page,
            context,
            origin: format!("{scheme}://{}", url.authority),
            app,
            reader,
            recorder: ctx.recorder.clone(),
            _lease: lease,
        })
    }

    /// A PNG of the page as it is now.
    pub(crate) async fn screenshot(&self) -> Option<Vec<u8>> {
        self.page.screenshot().await.ok()
    }

    /// Samples the page's JS heap, closes the page (and its context), then
    /// lets the reader count the app's last events.
    pub(crate) async fn close(mut self) {
        // The page's own memory, once per session: the heap its app built.
        if let Ok(m) = self.page.metrics().await {
            self.recorder.js_heap_max.fetch_max(m.js_heap_used_bytes, Relaxed);
        }
        let closed = match &self.context {
            Some(c) => c.close().await,
            None => self.page.close().await,
        };
        if closed.is_ok() {
            let _ = tokio::time::timeout(EVENTS_DRAIN, &mut self.reader).await;
        }
    }

    /// A `goto` URL: a path joined to the target's origin.
    fn url(&self, written: &str) -> String {
        match written.starts_with('/') {
            true => format!("{}{written}", self.origin),
            false => written.to_string(),
        }
    }
}

impl Drop for PageSession {
    fn drop(&mut self) {
        self.reader.abort();
        self.recorder.active.fetch_sub(1, Relaxed);
    }
}

/// Counts the app's WebSocket events and keeps the frames it received for
/// `expect` steps, until the page's event stream ends. Sockets still open
/// then closed with the page (Chromium says nothing of them): they count
/// as closed, so opened and closed agree once every page is gone.
async fn read_app(mut events: WebSocketEvents, app: Arc<AppFrames>, recorder: Arc<Recorder>) {
    let c = &recorder.counters;
    let mut lost = 0;
    // Open sockets by request id; an app opening more than this many at
    // once is counted without its ids (and they count closed with the page).
    let mut open = std::collections::HashSet::new();
    let mut untracked = 0u64;
    while let Some(event) = events.recv().await {
        match event {
            WebSocketEvent::Created { request_id, .. } => {
                c.app_ws_opened.fetch_add(1, Relaxed);
                if open.len() < MAX_TRACKED_SOCKETS {
                    open.insert(request_id);
                } else {
                    untracked += 1;
                }
            }
            WebSocketEvent::Closed { request_id, .. } => {
                if open.remove(&request_id) {
                    c.app_ws_closed.fetch_add(1, Relaxed);
                } else if untracked > 0 {
                    untracked -= 1;
                    c.app_ws_closed.fetch_add(1, Relaxed);
                }
            }
            // Data frames only (text 1, binary 2): pings, pongs and close
            // frames are the browser's business.
            WebSocketEvent::FrameSent(f) if matches!(f.opcode, 1 | 2) => {
                _ = c.app_frames_sent.fetch_add(1, Relaxed);
            }
            WebSocketEvent::FrameReceived(f) if matches!(f.opcode, 1 | 2) => {
                c.app_frames_received.fetch_add(1, Relaxed);
                app.inbox().push(f.payload.into_bytes());
                app.arrived.notify_one();
            }
            _ => {}
        }
        let dropped = events.dropped();
        c.app_events_lost.fetch_add(dropped - lost, Relaxed);
        lost = dropped;
    }
    c.app_ws_closed.fetch_add(open.len() as u64 + untracked, Relaxed);
}

impl<'a> Session<'a> {
    /// Runs a page action; its duration as the module docs say.
    pub(super) async fn page_action(&mut self, action: &PageAction) -> Result<Duration, StepError> {
        let p = self.page.ok_or(Cause::ActionFailed)?;
        let page = &p.page;
        let started = Instant::now();
        let render = |t| {
            let mut out = String::new();
            self.render(t, &mut out);
            out
        };
        let failed = |e: playwright_driver::Error| StepError::Cause(cause_of(&e));
        let waited = |e: playwright_driver::Error| match e {
            playwright_driver::Error::Timeout { .. } => StepError::Cause(Cause::SelectorTimeout),
            e => StepError::Cause(cause_of(&e)),
        };
        match action {
            PageAction::Goto(url) => {
                let url = p.url(&render(url));
                self.last_request = Some(started);
                page.goto(&url).await.map_err(failed)?;
            }
            PageAction::Click { selector, wait_for, timeout } => {
                let (selector, wait_for) = (render(selector), wait_for.as_ref().map(render));
                self.seq += 1;
                self.last_request = Some(started);
                page.click(&selector).await.map_err(failed)?;
                if let Some(w) = wait_for {
                    page.wait_for_selector(&w, *timeout).await.map_err(waited)?;
                }
            }
            PageAction::Fill { selector, text } => {
                let (selector, text) = (render(selector), render(text));
                self.last_request = Some(started);
                page.fill(&selector, &text).await.map_err(failed)?;
            }
            PageAction::WaitFor { selector, timeout } => {
                page.wait_for_selector(&render(selector), *timeout).await.map_err(waited)?;
            }
            PageAction::Evaluate { expression, equals } => {
                let expression = render(expression);
                self.last_request = Some(started);
                let value = page.evaluate(&expression).await.map_err(failed)?;
                if equals.as_ref().is_some_and(|want| !json_eq(&value, want)) {
                    return Err(Cause::ActionFailed.into());
                }
                self.last_source = Some(value.to_string().into_bytes());
            }
        }
        Ok(started.elapsed())
    }

    /// An `expect` on the frames the app received.
    pub(super) async fn expect_app(
        &mut self,
        check: &CheckPlan,
        wait: Duration,
        capture: &[Capture],
    ) -> Result<Duration, StepError> {
        let app = self.page.ok_or(Cause::ActionFailed)?.app.clone();
        let started = Instant::now();
        let from = self.last_request.unwrap_or(started);
        let mut deadline = std::pin::pin!(tokio::time::sleep(wait));
        loop {
            let matched = {
                let mut inbox = app.inbox();
                std::iter::from_fn(|| inbox.pop()).find(|frame| check.passes(frame))
            };
            if let Some(frame) = matched {
                let took = from.elapsed();
                self.last_source = Some(frame);
                self.capture(capture)?;
                return Ok(took);
            }
            tokio::select! {
                biased;
                _ = &mut deadline => return Err(Cause::ExpectTimeout.into()),
                _ = app.arrived.notified() => {}
            }
        }
    }
}
