//! Typed CDP commands: each is a serde struct of its parameters that names
//! its method and the type its result parses into. Only what the driver
//! uses is here; [`crate::Page::execute`] takes any other [`Command`] a
//! caller defines the same way. Field names follow the protocol
//! (camelCase on the wire); optional parameters are left out when `None`
//! so Chromium applies its own defaults.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A CDP command: its parameters (the struct itself), its method name and
/// the type of its result.
pub trait Command: Serialize {
    /// The method, e.g. `"Page.navigate"`.
    const METHOD: &'static str;
    /// What the result object parses into.
    type Response: DeserializeOwned;
}

/// The result of commands that return nothing (`{}`); unknown fields are
/// ignored, so a newer Chromium adding some does not break us.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct Empty {}

/// Declares a command struct's method and response type.
macro_rules! command {
    ($ty:ty, $method:literal, $response:ty) => {
        impl Command for $ty {
            const METHOD: &'static str = $method;
            type Response = $response;
        }
    };
}

// ---- Browser ----

/// `Browser.getVersion`: the first command after launch, proving the pipe works.
#[derive(Debug, Default, Serialize)]
pub struct GetVersion {}
command!(GetVersion, "Browser.getVersion", Version);

/// Result of [`GetVersion`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// CDP version, e.g. "1.3".
    pub protocol_version: String,
    /// e.g. "HeadlessChrome/156.0.0.0" or "Chrome/156...".
    pub product: String,
    /// The browser's user agent.
    pub user_agent: String,
}

/// `Browser.close`: a graceful exit (profile flushed).
#[derive(Debug, Default, Serialize)]
pub struct CloseBrowser {}
command!(CloseBrowser, "Browser.close", Empty);

// ---- Target ----

/// `Target.createBrowserContext`: an isolated profile (cookies, storage,
/// cache) like an incognito window.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateBrowserContext {
    /// Dispose of the context when the connection that made it closes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispose_on_detach: Option<bool>,
}
command!(CreateBrowserContext, "Target.createBrowserContext", CreatedBrowserContext);

/// Result of [`CreateBrowserContext`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedBrowserContext {
    /// The new context.
    pub browser_context_id: String,
}

/// `Target.disposeBrowserContext`: closes the context and all its pages.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DisposeBrowserContext {
    /// The context to dispose of.
    pub browser_context_id: String,
}
command!(DisposeBrowserContext, "Target.disposeBrowserContext", Empty);

/// `Target.createTarget`: a new page (tab).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateTarget {
    /// Initial URL; the driver uses `about:blank` and navigates afterwards,
    /// so the navigation is measured and its load awaited.
    pub url: String,
    /// The context to open it in; `None` is the default (shared) context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_context_id: Option<String>,
}
command!(CreateTarget, "Target.createTarget", CreatedTarget);

/// Result of [`CreateTarget`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTarget {
    /// The new target.
    pub target_id: String,
}

/// `Target.attachToTarget` with `flatten: true`: the page gets a session
/// id, and its commands and events travel on the browser connection
/// tagged with it (no nested `sendMessageToTarget` envelopes).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachToTarget {
    /// The target to attach to.
    pub target_id: String,
    /// Always true here: flat sessions.
    pub flatten: bool,
}
command!(AttachToTarget, "Target.attachToTarget", Attached);

/// Result of [`AttachToTarget`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    /// The flat session's id.
    pub session_id: String,
}

/// `Target.closeTarget`: closes a page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CloseTarget {
    /// The page to close.
    pub target_id: String,
}
command!(CloseTarget, "Target.closeTarget", Empty);

// ---- Page ----

/// `Page.enable`: page events (load, lifecycle).
#[derive(Debug, Default, Serialize)]
pub struct PageEnable {}
command!(PageEnable, "Page.enable", Empty);

/// `Page.setLifecycleEventsEnabled`: `Page.lifecycleEvent`s carry the
/// loader id, which lets `goto` wait for the load of *its* navigation
/// rather than any load event.
#[derive(Debug, Serialize)]
pub struct SetLifecycleEventsEnabled {
    /// On or off.
    pub enabled: bool,
}
command!(SetLifecycleEventsEnabled, "Page.setLifecycleEventsEnabled", Empty);

/// `Page.navigate`.
#[derive(Debug, Serialize)]
pub struct Navigate {
    /// Where to go.
    pub url: String,
}
command!(Navigate, "Page.navigate", Navigated);

/// Result of [`Navigate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Navigated {
    /// The frame navigated (the main frame).
    pub frame_id: String,
    /// The new document's loader; absent for same-document navigations.
    pub loader_id: Option<String>,
    /// Set when the navigation failed outright.
    pub error_text: Option<String>,
}

/// `Page.captureScreenshot`.
#[derive(Debug, Serialize)]
pub struct CaptureScreenshot {
    /// "png", "jpeg" or "webp".
    pub format: &'static str,
}
command!(CaptureScreenshot, "Page.captureScreenshot", Screenshot);

/// Result of [`CaptureScreenshot`].
#[derive(Debug, Clone, Deserialize)]
pub struct Screenshot {
    /// The image, base64.
    pub data: String,
}

// ---- Network, Inspector ----

/// `Network.enable`: needed for the WebSocket events.
#[derive(Debug, Default, Serialize)]
pub struct NetworkEnable {}
command!(NetworkEnable, "Network.enable", Empty);

/// `Inspector.enable`: `Inspector.targetCrashed` / `Inspector.detached`
/// on the page's own session, so a crash reaches the page's callers.
#[derive(Debug, Default, Serialize)]
pub struct InspectorEnable {}
command!(InspectorEnable, "Inspector.enable", Empty);

// ---- Runtime ----

/// `Runtime.evaluate`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluate {
    /// The JavaScript expression.
    pub expression: String,
    /// Return the value as JSON instead of a remote object handle.
    pub return_by_value: bool,
    /// Wait for a returned promise to settle.
    pub await_promise: bool,
}
command!(Evaluate, "Runtime.evaluate", Evaluated);

/// Result of [`Evaluate`].
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Evaluated {
    /// The value.
    pub result: RemoteObject,
    /// Set when the script threw or the promise rejected.
    pub exception_details: Option<ExceptionDetails>,
}

/// A JavaScript value as CDP describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteObject {
    /// "object", "number", "undefined", ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The value as JSON (with `returnByValue`).
    pub value: Option<serde_json::Value>,
    /// NaN, Infinity, -0 and bigints, which JSON cannot carry.
    pub unserializable_value: Option<String>,
    /// A printable description (e.g. an Error's stack).
    pub description: Option<String>,
}

/// Why a script failed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionDetails {
    /// Short text, e.g. "Uncaught".
    pub text: String,
    /// The thrown value.
    pub exception: Option<RemoteObject>,
}

/// `Runtime.getHeapUsage`: the page's JS heap, without enabling a domain.
#[derive(Debug, Default, Serialize)]
pub struct GetHeapUsage {}
command!(GetHeapUsage, "Runtime.getHeapUsage", HeapUsage);

/// Result of [`GetHeapUsage`] (bytes).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeapUsage {
    /// Used JS heap.
    pub used_size: f64,
    /// Allocated JS heap.
    pub total_size: f64,
}

// ---- Input ----

/// `Input.dispatchMouseEvent`: real (trusted) input through the browser's
/// input pipeline, answered once the renderer handled it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DispatchMouseEvent {
    /// "mousePressed", "mouseReleased", "mouseMoved".
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// CSS pixels from the viewport's left.
    pub x: f64,
    /// CSS pixels from the viewport's top.
    pub y: f64,
    /// "left", "none", ...
    pub button: &'static str,
    /// Buttons held, as a bit mask (1 = left).
    pub buttons: u32,
    /// 1 for a single click.
    pub click_count: u32,
}
command!(DispatchMouseEvent, "Input.dispatchMouseEvent", Empty);

/// `Input.insertText`: types text into the focused element as one input
/// (fires `input` like an IME commit; no per-key events).
#[derive(Debug, Serialize)]
pub struct InsertText {
    /// The text.
    pub text: String,
}
command!(InsertText, "Input.insertText", Empty);
