//! Browser sessions (a scenario group with `engine = "browser"`): each load
//! slot is one session, a page of a headless Chromium running the group's
//! flow of page actions ([`crate::flow`] runs the steps, `flow::page` does
//! the page's part). Sessions are packed into few browser processes
//! ([`BrowserPool`]): memory, not CPU, is what a browser session costs.
//!
//! What a session counts:
//! - its steps, as every flow does (`step_<name>_*`: a click's duration is
//!   click until the DOM shows the app's reaction, a goto's the navigation);
//! - the app's own WebSockets, from Chromium's Network events:
//!   `app_ws_opened`, `app_ws_closed`, `app_frames_sent`,
//!   `app_frames_received` (and `app_events_lost` when the page made
//!   events faster than we read them, so the counts are known to be short);
//! - `connections_active`: sessions with a page open;
//! - `sessions_completed`, `sessions_failed` and the causes
//!   (`browser_launch`, `browser_crashed`, `navigation_failed`,
//!   `selector_timeout`, `action_failed`, `expect_timeout`, ...).
//!
//! The engine reports the pool's memory each second as PSS (RSS would
//! count every shared page once per process).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use playwright_driver::{Browser, LaunchOptions};
use stampede_model::Cause;
use stampede_model::spec::{BrowserContexts, BrowserRenderers, BrowserSpec, MAX_SCREENSHOTS};
use tokio::sync::Mutex;

use crate::flow::FlowPlan;

/// Most sessions one Chromium process may hold (a scenario asks for fewer).
pub const MAX_SESSIONS_PER_BROWSER: u32 = 1000;
/// File names a scenario's `chromium` path may have.
pub const BROWSER_NAMES: &[&str] = &[
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
    "chrome-headless-shell",
];
/// Deadline of each CDP command of a session (a page action waits for its
/// own timeout on top).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A browser group's plan, prepared once per run and shared by its slots.
#[derive(Debug)]
pub struct BrowserPlan {
    /// The session's steps.
    pub flow: Arc<FlowPlan>,
    /// The spec as the controller sent it.
    pub spec: BrowserSpec,
    /// The browsers sessions run in.
    pub pool: BrowserPool,
    /// Failure screenshots taken so far (at most [`MAX_SCREENSHOTS`]).
    screenshots: AtomicU32,
}

impl BrowserPlan {
    /// Checks `spec` (a worker trusts no spec) and finds Chromium; nothing
    /// is launched until the first session.
    pub fn new(spec: &BrowserSpec) -> Result<BrowserPlan, String> {
        if !(1..=MAX_SESSIONS_PER_BROWSER).contains(&spec.sessions_per_browser) {
            return Err(format!(
                "sessions_per_browser = {}: give 1 to {MAX_SESSIONS_PER_BROWSER}",
                spec.sessions_per_browser
            ));
        }
        let flow = Arc::new(FlowPlan::for_browser(&spec.flow)?);
        let explicit = spec.chromium.as_ref().map(PathBuf::from);
        // A controller may name the browser, not any program: only a file
        // with a browser's name is run.
        if let Some(path) = &explicit
            && !path.file_name().and_then(|n| n.to_str()).is_some_and(|n| BROWSER_NAMES.contains(&n))
        {
            return Err(format!(
                "chromium = {path:?}: the file must be named one of {}",
                BROWSER_NAMES.join(", ")
            ));
        }
        // Screenshots stay under the worker's directory.
        if let Some(dir) = &spec.screenshot_dir {
            let dir = std::path::Path::new(dir);
            let inside = dir.components().all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside || dir.as_os_str().is_empty() {
                return Err(format!(
                    "screenshot_dir {dir:?}: give a relative path without `..` (it is under the worker's directory)"
                ));
            }
        }
        let executable = playwright_driver::find_chromium(explicit.as_deref()).map_err(|e| e.to_string())?;
        let mut args = Vec::new();
        if spec.renderers == BrowserRenderers::PerSite {
            // One renderer for a site's pages in a context (isolated
            // contexts keep one each): the memory of a session drops from
            // ~14 MB to ~5 (README, "Browser sessions").
            args.push("--process-per-site".to_string());
        }
        let options = LaunchOptions {
            executable: Some(executable),
            args,
            command_timeout: COMMAND_TIMEOUT,
            ..LaunchOptions::default()
        };
        Ok(BrowserPlan {
            flow,
            spec: spec.clone(),
            pool: BrowserPool::new(options, spec.sessions_per_browser as usize, spec.contexts),
            screenshots: AtomicU32::new(0),
        })
    }

    /// Where the next failure screenshot goes, if one may still be taken.
    pub(crate) fn screenshot_path(&self, worker: &str, slot: u64) -> Option<PathBuf> {
        let dir = self.spec.screenshot_dir.as_ref()?;
        let n = self.screenshots.fetch_add(1, Relaxed);
        (n < MAX_SCREENSHOTS).then(|| {
            let worker: String =
                worker.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
            PathBuf::from(dir).join(format!("{worker}-slot{slot}-{n}.png"))
        })
    }
}

/// Browsers shared by sessions: a session goes to the browser with the
/// fewest sessions that has room, and a new browser is launched when none
/// has. Browsers stay up for reuse until the run ends (a ramp that comes
/// back up, churn) and are killed, with their whole process tree and
/// profile, when the pool is dropped; a browser that crashed is replaced.
#[derive(Debug)]
pub struct BrowserPool {
    options: LaunchOptions,
    per_browser: usize,
    contexts: BrowserContexts,
    browsers: std::sync::Mutex<Vec<Entry>>,
    /// Held while launching: one launch at a time (each costs a core for
    /// a quarter second), and never while the list is read.
    launching: Mutex<()>,
}

#[derive(Debug)]
struct Entry {
    browser: Arc<Browser>,
    sessions: Arc<AtomicUsize>,
}

/// A session's place in a browser; gives it back when dropped.
pub(crate) struct Lease {
    pub(crate) browser: Arc<Browser>,
    sessions: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.sessions.fetch_sub(1, Relaxed);
    }
}

/// The pool's browsers right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolMemory {
    /// Browser processes' trees measured.
    pub browsers: u64,
    /// Sessions holding a place.
    pub sessions: u64,
    /// PSS of every browser's process tree, bytes.
    pub pss_bytes: u64,
}

impl BrowserPool {
    fn new(options: LaunchOptions, per_browser: usize, contexts: BrowserContexts) -> BrowserPool {
        BrowserPool {
            options,
            per_browser,
            contexts,
            browsers: std::sync::Mutex::new(Vec::new()),
            launching: Mutex::new(()),
        }
    }

    /// Whether sessions get isolated contexts.
    pub fn isolated(&self) -> bool {
        self.contexts == BrowserContexts::Isolated
    }

    /// A place for one session; launches a browser when every one is full.
    pub(crate) async fn acquire(&self) -> Result<Lease, Cause> {
        if let Some(lease) = self.place() {
            return Ok(lease);
        }
        let _launching = self.launching.lock().await;
        // Another session may have launched one meanwhile.
        if let Some(lease) = self.place() {
            return Ok(lease);
        }
        let browser = Browser::launch(self.options.clone()).await.map_err(|e| {
            tracing::warn!("cannot launch chromium: {e}");
            Cause::BrowserLaunch
        })?;
        tracing::debug!(pid = browser.pid(), "browser launched for sessions");
        let entry = Entry { browser: Arc::new(browser), sessions: Arc::new(AtomicUsize::new(1)) };
        let lease = Lease { browser: entry.browser.clone(), sessions: entry.sessions.clone() };
        self.list().push(entry);
        Ok(lease)
    }

    /// A place in the running browser with the fewest sessions, if one has
    /// room; crashed browsers are forgotten.
    fn place(&self) -> Option<Lease> {
        let mut browsers = self.list();
        browsers.retain(|e| e.browser.is_connected());
        let best = browsers
            .iter()
            .filter(|e| e.sessions.load(Relaxed) < self.per_browser)
            .min_by_key(|e| e.sessions.load(Relaxed))?;
        best.sessions.fetch_add(1, Relaxed);
        Some(Lease { browser: best.browser.clone(), sessions: best.sessions.clone() })
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // A panic elsewhere cannot leave the list half-changed.
        self.browsers.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// PSS of every browser's process tree, and the sessions they hold.
    pub async fn memory(&self) -> PoolMemory {
        let browsers: Vec<(Arc<Browser>, usize)> =
            self.list().iter().map(|e| (e.browser.clone(), e.sessions.load(Relaxed))).collect();
        let mut total = PoolMemory::default();
        for (browser, sessions) in browsers {
            total.sessions += sessions as u64;
            if let Ok(m) = browser.memory().await {
                total.browsers += 1;
                total.pss_bytes += m.pss_bytes;
            }
        }
        total
    }
}
