//! A page (tab) on its own flat session: navigation, DOM actions, script,
//! screenshots, its WebSocket traffic and its JS heap.
//!
//! Selectors are CSS, resolved with `document.querySelector` inside
//! `Runtime.evaluate` (the selector is passed as a JSON string literal, so
//! any selector text is safe). Actions use real input where it matters:
//! `click` dispatches `Input.dispatchMouseEvent` press and release at the
//! element's centre, not `element.click()`. That is what a user does: the
//! events are trusted, go through hit testing (an overlay over the button
//! takes the click, as it would for a person, and we report it) and the
//! browser's input pipeline, whose cost is part of the action latency a
//! load test should measure. `Input.dispatchMouseEvent` answers once the
//! renderer has handled the event, so when `click` returns, the page's
//! synchronous click handlers have run.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;
use tokio::time::Instant;

use crate::cdp::{
    AttachToTarget, CaptureScreenshot, CloseTarget, Command, CreateTarget, DispatchMouseEvent, Evaluate,
    GetHeapUsage, InsertText, InspectorEnable, Navigate, NetworkEnable, PageEnable,
    SetLifecycleEventsEnabled,
};
use crate::conn::{Connection, SessionId};
use crate::error::{Error, Result};
use crate::events::{Event, EventStream, WebSocketEvents};

/// How much longer than an in-page wait its command may take (the script
/// resolves at its own timeout; this covers the round trip).
const WAIT_SLACK: Duration = Duration::from_secs(2);

/// A browser tab. Cheap to clone (clones drive the same tab). Dropping it
/// leaves the tab open until [`Page::close`], its context's close or the
/// browser's end.
#[derive(Clone, Debug)]
pub struct Page {
    conn: Connection,
    session: SessionId,
    target_id: Arc<str>,
    timeout: Duration,
}

/// A page's JavaScript heap (`Runtime.getHeapUsage`), bytes. Chromium
/// reports the heap of the page's V8 isolate: pages sharing a renderer
/// process (default context, same site) report the same shared heap, so
/// divide by the pages on it rather than summing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageMetrics {
    /// Heap in use.
    pub js_heap_used_bytes: u64,
    /// Heap allocated.
    pub js_heap_total_bytes: u64,
}

impl Page {
    /// Opens `about:blank` in the context (`None`: the default one),
    /// attaches a flat session and enables the domains the driver relies on.
    pub(crate) async fn open(conn: Connection, context: Option<&str>) -> Result<Page> {
        let timeout = conn.default_timeout();
        let create =
            CreateTarget { url: "about:blank".into(), browser_context_id: context.map(str::to_owned) };
        let target_id = conn.call(None, &create, timeout).await?.target_id;
        let attach = AttachToTarget { target_id: target_id.clone(), flatten: true };
        let session = match conn.call(None, &attach, timeout).await {
            Ok(attached) => attached.session_id,
            Err(e) => return Err(close_after_failure(&conn, target_id, e).await),
        };
        let page = Page { conn, session: session.into(), target_id: target_id.into(), timeout };
        // All four in flight together: one round trip of setup, not four.
        let enabled = tokio::try_join!(
            page.execute(&PageEnable {}),
            page.execute(&SetLifecycleEventsEnabled { enabled: true }),
            page.execute(&NetworkEnable {}),
            page.execute(&InspectorEnable {}),
        );
        match enabled {
            Ok(_) => Ok(page),
            Err(e) => Err(close_after_failure(&page.conn, page.target_id.to_string(), e).await),
        }
    }

    /// The target id (what `Target.*` commands call this page).
    pub fn target_id(&self) -> &str {
        &self.target_id
    }

    /// The flat session's id (on every message of this page).
    pub fn session_id(&self) -> &str {
        &self.session
    }

    /// This page's command deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the deadline of this handle's commands (and of `goto`).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends any typed command to this page's session.
    pub async fn execute<C: Command>(&self, command: &C) -> Result<C::Response> {
        self.conn.call(Some(&self.session), command, self.timeout).await
    }

    /// Like [`Page::execute`] with its own deadline.
    pub async fn execute_with_timeout<C: Command>(
        &self,
        command: &C,
        timeout: Duration,
    ) -> Result<C::Response> {
        self.conn.call(Some(&self.session), command, timeout).await
    }

    /// Navigates and waits for the new document's `load` event (matched by
    /// its loader id, so an earlier document's load cannot end the wait).
    /// Returns the time from sending `Page.navigate` to that event. A
    /// same-document navigation (a `#fragment`) returns at once.
    pub async fn goto(&self, url: &str) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + self.timeout;
        // Subscribed before navigating, so the load event cannot slip by.
        let mut events = self.events().await?;
        let navigated = self.execute(&Navigate { url: url.to_owned() }).await?;
        if let Some(reason) = navigated.error_text.filter(|t| !t.is_empty()) {
            return Err(Error::Navigation { url: url.to_owned(), reason });
        }
        let Some(loader_id) = navigated.loader_id else { return Ok(started.elapsed()) };
        loop {
            let event = match tokio::time::timeout_at(deadline, events.recv()).await {
                Err(_) => return Err(Error::Timeout { what: format!("load of {url}"), after: self.timeout }),
                Ok(None) => return Err(self.gone().await),
                Ok(Some(event)) => event,
            };
            match &*event {
                Event::Lifecycle(e) if e.name == "load" && e.loader_id == loader_id => {
                    return Ok(started.elapsed());
                }
                Event::InspectorTargetCrashed => {
                    return Err(Error::TargetCrashed { target_id: self.target_id.to_string() });
                }
                Event::InspectorDetached { reason } => {
                    return Err(Error::TargetClosed { reason: reason.clone() });
                }
                _ => {}
            }
        }
    }

    /// Evaluates a JavaScript expression (awaiting it if it is a promise)
    /// and returns its value as JSON. `undefined` is `Null`; values JSON
    /// cannot carry (NaN, Infinity, -0, bigints) come as their string.
    /// A throw or a rejection is [`Error::Script`].
    pub async fn evaluate(&self, expression: &str) -> Result<serde_json::Value> {
        self.evaluate_with_timeout(expression, self.timeout).await
    }

    async fn evaluate_with_timeout(&self, expression: &str, timeout: Duration) -> Result<serde_json::Value> {
        let command =
            Evaluate { expression: expression.to_owned(), return_by_value: true, await_promise: true };
        let evaluated = self.execute_with_timeout(&command, timeout).await?;
        if let Some(details) = evaluated.exception_details {
            let thrown = details.exception.and_then(|e| e.description.or(e.value.map(|v| v.to_string())));
            return Err(Error::Script(thrown.unwrap_or(details.text)));
        }
        let result = evaluated.result;
        Ok(match (result.value, result.unserializable_value) {
            (Some(value), _) => value,
            (None, Some(text)) => serde_json::Value::String(text),
            (None, None) => serde_json::Value::Null,
        })
    }

    /// Clicks the first element matching `selector`: scrolls it into view
    /// and presses and releases the left button at its centre (see the
    /// module docs for why real mouse events). Fails when nothing matches,
    /// the element has no size, or another element covers its centre.
    pub async fn click(&self, selector: &str) -> Result<()> {
        let script = format!("({CENTRE_OF})({})", js_string(selector));
        let found = self.evaluate(&script).await?;
        let target: Target = match found {
            serde_json::Value::Null => return Err(Error::NoElement { selector: selector.to_owned() }),
            found => serde_json::from_value(found)
                .map_err(|source| Error::Decode { method: Evaluate::METHOD, source })?,
        };
        if let Some(reason) = target.problem {
            return Err(Error::NotInteractable { selector: selector.to_owned(), reason });
        }
        for (kind, buttons) in [("mousePressed", 1), ("mouseReleased", 0)] {
            let event = DispatchMouseEvent {
                kind,
                x: target.x,
                y: target.y,
                button: "left",
                buttons,
                click_count: 1,
            };
            self.execute(&event).await?;
        }
        Ok(())
    }

    /// Replaces the value of the input, textarea or contenteditable element
    /// matching `selector` with `text`: focuses it, selects its content and
    /// inserts the text with `Input.insertText` (trusted `input` events, as
    /// when a user pastes). An empty `text` clears it.
    pub async fn fill(&self, selector: &str, text: &str) -> Result<()> {
        let script = format!("({FOCUS_AND_SELECT})({}, {})", js_string(selector), text.is_empty());
        match self.evaluate(&script).await? {
            serde_json::Value::String(s) if s == "ok" => {}
            serde_json::Value::String(s) if s == "missing" => {
                return Err(Error::NoElement { selector: selector.to_owned() });
            }
            other => {
                let reason = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
                return Err(Error::NotInteractable { selector: selector.to_owned(), reason });
            }
        }
        if !text.is_empty() {
            self.execute(&InsertText { text: text.to_owned() }).await?;
        }
        Ok(())
    }

    /// Waits until an element matching `selector` is in the document, up
    /// to `timeout`; returns how long it took. The wait runs in the page (a
    /// `MutationObserver`), so it costs one command, not a polling loop, and
    /// reacts within the mutation that adds the element. A navigation
    /// during the wait ends it with an error (its document is gone).
    pub async fn wait_for_selector(&self, selector: &str, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let script = format!("({WAIT_FOR})({}, {})", js_string(selector), timeout.as_millis());
        match self.evaluate_with_timeout(&script, timeout + WAIT_SLACK).await? {
            serde_json::Value::Bool(true) => Ok(started.elapsed()),
            _ => Err(Error::Timeout { what: format!("waiting for {selector:?}"), after: timeout }),
        }
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        let shot = self.execute(&CaptureScreenshot { format: "png" }).await?;
        base64::engine::general_purpose::STANDARD.decode(shot.data.as_bytes()).map_err(|e| Error::Protocol {
            method: CaptureScreenshot::METHOD,
            code: 0,
            message: format!("bad base64: {e}"),
        })
    }

    /// The page's JS heap.
    pub async fn metrics(&self) -> Result<PageMetrics> {
        let heap = self.execute(&GetHeapUsage {}).await?;
        Ok(PageMetrics {
            js_heap_used_bytes: heap.used_size as u64,
            js_heap_total_bytes: heap.total_size as u64,
        })
    }

    /// Every event of this page from now on (the stream ends when the page
    /// or the browser does).
    pub async fn events(&self) -> Result<EventStream> {
        self.conn.subscribe(Some(self.session.clone())).await
    }

    /// The page's own WebSocket traffic from now on (`Network.webSocket*`):
    /// sockets created, handshakes, frames sent and received, closes.
    /// Subscribe before `goto` to see the page's sockets from the start.
    pub async fn websocket_events(&self) -> Result<WebSocketEvents> {
        Ok(WebSocketEvents::new(self.events().await?))
    }

    /// Closes the tab.
    pub async fn close(&self) -> Result<()> {
        self.conn.call(None, &CloseTarget { target_id: self.target_id.to_string() }, self.timeout).await?;
        Ok(())
    }

    /// Why this page's event stream ended: the browser or just the page.
    async fn gone(&self) -> Error {
        if self.conn.is_closed() {
            // Answers with the connection's own reason.
            match self.execute(&GetHeapUsage {}).await {
                Err(e) => e,
                Ok(_) => Error::TargetClosed { reason: "event stream ended".into() },
            }
        } else {
            Error::TargetClosed { reason: "page closed or detached".into() }
        }
    }
}

/// Closes a half-made target; the original error is what the caller sees.
async fn close_after_failure(conn: &Connection, target_id: String, error: Error) -> Error {
    if let Err(e) = conn.call(None, &CloseTarget { target_id }, conn.default_timeout()).await {
        tracing::debug!(error = %e, "closing a page that failed to open");
    }
    error
}

/// A string as a JavaScript (JSON) string literal.
fn js_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Where to click, or why not.
#[derive(Deserialize)]
struct Target {
    x: f64,
    y: f64,
    problem: Option<String>,
}

/// (selector) -> null | {x, y, problem}: scrolls the element to the centre
/// of the viewport and checks that it, not something over it, is hit there.
const CENTRE_OF: &str = r#"(selector) => {
  const el = document.querySelector(selector);
  if (!el) return null;
  el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
  const r = el.getBoundingClientRect();
  const x = r.left + r.width / 2, y = r.top + r.height / 2;
  let problem = null;
  if (r.width === 0 || r.height === 0) {
    problem = 'it has no size (hidden?)';
  } else {
    const hit = document.elementFromPoint(x, y);
    if (hit && hit !== el && !el.contains(hit)) problem = 'covered by <' + hit.tagName.toLowerCase() + '>';
  }
  return {x, y, problem};
}"#;

/// (selector, clear) -> 'ok' | 'missing' | why not: focuses and selects
/// the content so the inserted text replaces it.
const FOCUS_AND_SELECT: &str = r#"(selector, clear) => {
  const el = document.querySelector(selector);
  if (!el) return 'missing';
  if (el instanceof HTMLInputElement || el instanceof HTMLTextAreaElement) {
    if (el.disabled || el.readOnly) return 'it is disabled or read-only';
    el.focus();
    try { el.select(); } catch (e) { el.value = ''; }
    if (clear) { el.value = ''; el.dispatchEvent(new Event('input', {bubbles: true})); }
    return 'ok';
  }
  if (el.isContentEditable) {
    el.focus();
    const range = document.createRange();
    range.selectNodeContents(el);
    const sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    if (clear) { el.textContent = ''; el.dispatchEvent(new Event('input', {bubbles: true})); }
    return 'ok';
  }
  return 'not an input, textarea or contenteditable element';
}"#;

/// (selector, ms) -> Promise<bool>: true once an element matches, false
/// after `ms`.
const WAIT_FOR: &str = r#"(selector, ms) => new Promise((resolve) => {
  if (document.querySelector(selector)) return resolve(true);
  let timer = null;
  const observer = new MutationObserver(() => {
    if (document.querySelector(selector)) { observer.disconnect(); clearTimeout(timer); resolve(true); }
  });
  observer.observe(document, {childList: true, subtree: true, attributes: true});
  timer = setTimeout(() => { observer.disconnect(); resolve(false); }, ms);
})"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_become_safe_string_literals() {
        assert_eq!(js_string(r#"a[title="x'y"] \ b"#), r#""a[title=\"x'y\"] \\ b""#);
    }
}
