//! Memory per headless Chromium session, by process model.
//!
//! `cargo bench -p playwright-driver --bench session_memory`
//! (`SESSION_MEMORY_SIZES=10,50` to choose the session counts, default
//! 10, 50, 100; `SESSION_MEMORY_MODES=shared,isolated` to choose modes).
//!
//! A session is one page that opened the bundled relay's demo app
//! (relay/src/app.html, served in-process on 127.0.0.1:0), waited for its
//! WebSocket to be usable (`#status.open`), clicked `#send` once and saw
//! the echo (`#msg-0`): a live page holding a socket, not an idle blank
//! tab. For each mode and session count a fresh browser opens the sessions
//! a few at a time, settles for 3 s, and the PSS of its whole process tree
//! (browser, zygote, utility processes, renderers; not the two small crash
//! handlers, which leave it) is read from /proc ([`Browser::memory`]).
//! The modes:
//!
//! - `isolated`: every session in its own `Browser::new_context` (like an
//!   incognito window: own cookies and storage, own renderer);
//! - `isolated+process-per-site`: the same with `--process-per-site`
//!   (contexts do not share renderers, so it should not help);
//! - `shared`: every session a page of the default context;
//! - `shared+process-per-site`: the same with `--process-per-site`, which
//!   lets pages of one site share one renderer process;
//! - `shared+renderer-limit-4`: the same with `--renderer-process-limit=4`.
//!
//! About 4 minutes on 2 cores for all modes at 10, 50 and 100 sessions.
//!
//! Why PSS: Chromium is a dozen to a hundred processes sharing the binary,
//! fonts and shared-memory segments. RSS counts every shared page once per
//! process that maps it, so summed RSS overstates the tree several-fold;
//! PSS charges each shared page to its sharers in equal parts and sums to
//! what the tree really costs. (Summed RSS is printed for comparison.) It
//! also means other Chromium processes on the machine (tests running
//! meanwhile) lower the figures by sharing the binary's pages: each
//! measurement waits up to 2 minutes for them to exit, and the bench says
//! so when some were there all the same.
//!
//! Per mode flag set the idle browser (no page) is measured once too; the
//! marginal cost of a session is (total - idle) / sessions. MB are 10^6
//! bytes. The figure to watch is printed last: the cheapest mode whose
//! pages all worked, at 100 sessions (goal: at most 20 MB per session).
//! Cheapest by memory only: with `--process-per-site` every page of the
//! site runs on one renderer (one main thread), which a load test that
//! measures action latency has to weigh too.
//! Without Chromium (`playwright_driver::find_chromium`) it prints why and
//! exits successfully; so it does when run without `--bench` (as `cargo
//! test --benches` does), to keep a test run from taking minutes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use playwright_driver::{Browser, Context, LaunchOptions, Page, TreeMemory, find_chromium};
use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

/// Session counts measured unless `SESSION_MEMORY_SIZES` says otherwise.
const SIZES: &[usize] = &[10, 50, 100];
/// Sessions being opened at once.
const OPENING_AT_ONCE: usize = 8;
/// After the last session is open, before memory is read.
const SETTLE: Duration = Duration::from_secs(3);
/// How long a page may take to open its socket, and its echo to arrive.
const WAIT: Duration = Duration::from_secs(30);
/// How long to wait for other Chromium processes to exit before measuring.
const QUIET_WAIT: Duration = Duration::from_secs(120);
/// The session count the headline figure is for.
const HEADLINE_SESSIONS: usize = 100;
/// The goal for the headline figure, MB per session.
const GOAL_MB: f64 = 20.0;

/// A way to hold sessions: isolated contexts or one shared context, and
/// the extra Chromium flags.
#[derive(Debug, Clone, Copy)]
struct Mode {
    name: &'static str,
    isolated: bool,
    args: &'static [&'static str],
}

const MODES: &[Mode] = &[
    Mode { name: "isolated", isolated: true, args: &[] },
    Mode { name: "isolated+process-per-site", isolated: true, args: &["--process-per-site"] },
    Mode { name: "shared", isolated: false, args: &[] },
    Mode { name: "shared+process-per-site", isolated: false, args: &["--process-per-site"] },
    Mode { name: "shared+renderer-limit-4", isolated: false, args: &["--renderer-process-limit=4"] },
];

/// One measurement: a browser holding `sessions` sessions (0: idle).
#[derive(Debug, Clone)]
struct Row {
    mode: String,
    sessions: usize,
    memory: TreeMemory,
    /// Sessions that completed the click round trip.
    working: usize,
    /// WebSocket sessions the relay had open when memory was read.
    sockets: u64,
    open_time: Duration,
    /// Chromium processes outside this browser's tree when memory was read.
    strangers: usize,
    /// The first session error, if any.
    error: Option<String>,
}

impl Row {
    fn all_work(&self) -> bool {
        self.working == self.sessions && self.sockets == self.sessions as u64
    }
}

/// What keeps a session open: its page and, when isolated, its context.
struct Session {
    _context: Context,
    _page: Page,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "session_memory: not run without --bench (cargo bench -p playwright-driver --bench session_memory)"
        );
        return;
    }
    if let Err(e) = find_chromium(None) {
        println!("session_memory: skipped: no chromium ({e})");
        return;
    }
    let sizes = sizes();
    let modes = modes();
    let started = Instant::now();

    // The idle browser, once per flag set.
    let mut idle: BTreeMap<Vec<&str>, Row> = BTreeMap::new();
    let mut rows = Vec::new();
    for mode in &modes {
        if !idle.contains_key(mode.args) {
            let row = measure(mode, 0).await;
            eprintln!("{}", line(&row, None));
            idle.insert(mode.args.to_vec(), row);
        }
        let base = &idle[mode.args];
        for &n in &sizes {
            let row = measure(mode, n).await;
            eprintln!("{}", line(&row, Some(base)));
            rows.push((row, base.clone()));
        }
    }

    println!();
    println!(
        "Chromium session memory ({} s in all; PSS of the browser's process tree)",
        started.elapsed().as_secs()
    );
    println!("{}", header());
    let mut printed_idle = Vec::new();
    for mode in &modes {
        if !printed_idle.contains(&mode.args) {
            printed_idle.push(mode.args);
            println!("{}", line(&idle[mode.args], None));
        }
        for (row, base) in rows.iter().filter(|(r, _)| r.mode == mode.name) {
            println!("{}", line(row, Some(base)));
        }
    }
    for row in idle.values().chain(rows.iter().map(|(r, _)| r)) {
        if row.strangers > 0 {
            println!(
                "{} x {}: {} other Chromium processes were running (they share pages with this one: PSS understated)",
                row.mode, row.sessions, row.strangers
            );
        }
    }
    for (row, _) in &rows {
        if let Some(error) = &row.error {
            println!(
                "{} x {}: {} of {} sessions failed; first: {error}",
                row.mode,
                row.sessions,
                row.sessions - row.working,
                row.sessions
            );
        } else if !row.all_work() {
            println!(
                "{} x {}: the relay saw {} open sockets, not {}",
                row.mode, row.sessions, row.sockets, row.sessions
            );
        }
    }

    // The headline: the cheapest working mode at 100 sessions (or at the
    // largest count measured).
    let Some(&at) = sizes.iter().find(|&&n| n == HEADLINE_SESSIONS).or(sizes.last()) else { return };
    let cheapest = rows
        .iter()
        .filter(|(r, _)| r.sessions == at && r.all_work())
        .min_by(|(a, _), (b, _)| a.memory.pss_bytes.cmp(&b.memory.pss_bytes));
    println!();
    match cheapest {
        Some((row, base)) => println!(
            "default mode ({}) at {at} sessions: {:.1} MB per session (goal <= {GOAL_MB}); marginal {:.1} MB",
            row.mode,
            per_session(row.memory.pss_bytes, at),
            per_session(row.memory.pss_bytes.saturating_sub(base.memory.pss_bytes), at),
        ),
        None => println!("default mode at {at} sessions: none (no mode had all its pages working)"),
    }
}

/// Launches a fresh browser with `mode`'s flags, opens `n` sessions
/// against a fresh relay, settles and reads the tree's memory.
async fn measure(mode: &Mode, n: usize) -> Row {
    wait_until_alone().await;
    let shutdown = CancellationToken::new();
    let relay = Relay::start(RelayConfig::default(), shutdown.clone()).await.expect("the relay starts");
    let url = format!("{}/app", relay.http_url());
    let options =
        LaunchOptions { args: mode.args.iter().map(|a| a.to_string()).collect(), ..Default::default() };
    let browser = Browser::launch(options).await.expect("chromium launches");

    let opening = Instant::now();
    let results: Vec<Result<Session, String>> = futures_util::stream::iter(0..n)
        .map(|_| open_session(&browser, mode.isolated, &url))
        .buffer_unordered(OPENING_AT_ONCE)
        .collect()
        .await;
    let open_time = opening.elapsed();
    tokio::time::sleep(SETTLE).await;
    let memory = browser.memory().await.expect("the browser's process tree can be read");
    let sockets = relay.stats().connections_active.load(Relaxed);
    let strangers = other_chromium_processes(Some(browser.pid()));

    let working = results.iter().filter(|r| r.is_ok()).count();
    let error = results.into_iter().find_map(Result::err);
    if let Err(e) = browser.close().await {
        eprintln!("closing the browser: {e}");
    }
    shutdown.cancel();
    relay.wait().await;
    let name = if n == 0 { idle_name(mode) } else { mode.name.to_owned() };
    Row { mode: name, sessions: n, memory, working, sockets, open_time, strangers, error }
}

/// Opens one live session: the app loaded, its socket open, one message
/// echoed.
async fn open_session(browser: &Browser, isolated: bool, url: &str) -> Result<Session, String> {
    let step = |what: &'static str| move |e: playwright_driver::Error| format!("{what}: {e}");
    let context = if isolated {
        browser.new_context().await.map_err(step("new context"))?
    } else {
        browser.default_context()
    };
    let page = context.new_page().await.map_err(step("new page"))?;
    page.goto(url).await.map_err(step("goto /app"))?;
    page.wait_for_selector("#status.open", WAIT).await.map_err(step("socket open"))?;
    page.click("#send").await.map_err(step("click #send"))?;
    // The app numbers messages from 0; the echo of the first adds #msg-0.
    page.wait_for_selector("#msg-0", WAIT).await.map_err(step("echo"))?;
    Ok(Session { _context: context, _page: page })
}

/// Waits (at most [`QUIET_WAIT`]) until no other Chromium runs on the
/// machine: one that does shares pages with ours and lowers its PSS.
async fn wait_until_alone() {
    let started = Instant::now();
    let mut said = false;
    loop {
        let others = other_chromium_processes(None);
        if others == 0 || started.elapsed() >= QUIET_WAIT {
            return;
        }
        // The last browser's renderers take a moment to die: say nothing
        // about those.
        if !said && started.elapsed() >= Duration::from_secs(5) {
            eprintln!("waiting up to {QUIET_WAIT:?} for {others} other Chromium processes to exit");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Chromium processes on the machine (by command name, from /proc)
/// outside `root`'s tree, if given. Crash handlers (`chrome_crashpad_handler`,
/// which leave the tree and share little with the browser) do not count.
fn other_chromium_processes(root: Option<u32>) -> usize {
    let ours: HashSet<u32> = root
        .map(playwright_driver::memory::descendants)
        .unwrap_or_default()
        .into_iter()
        .chain(root)
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| !ours.contains(pid))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| matches!(comm.trim_end(), "chromium" | "chrome"))
        })
        .count()
}

/// "idle" with the mode's flags.
fn idle_name(mode: &Mode) -> String {
    if mode.args.is_empty() { "idle".to_owned() } else { format!("idle {}", mode.args.join(" ")) }
}

fn header() -> String {
    format!(
        "{:<38} {:>8} {:>9} {:>10} {:>10} {:>9} {:>8} {:>8} {:>9}",
        "mode", "sessions", "PSS MB", "MB/sess", "marg MB", "procs", "open s", "working", "RSS MB"
    )
}

fn line(row: &Row, idle: Option<&Row>) -> String {
    let n = row.sessions;
    let (per, marginal) = match idle {
        Some(base) if n > 0 => (
            format!("{:.1}", per_session(row.memory.pss_bytes, n)),
            format!("{:.1}", per_session(row.memory.pss_bytes.saturating_sub(base.memory.pss_bytes), n)),
        ),
        _ => ("-".to_owned(), "-".to_owned()),
    };
    format!(
        "{:<38} {:>8} {:>9.0} {:>10} {:>10} {:>9} {:>8.1} {:>8} {:>9.0}",
        row.mode,
        n,
        mb(row.memory.pss_bytes),
        per,
        marginal,
        row.memory.processes,
        row.open_time.as_secs_f64(),
        format!("{}/{}", row.working, n),
        mb(row.memory.rss_bytes),
    )
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn per_session(bytes: u64, sessions: usize) -> f64 {
    mb(bytes) / sessions as f64
}

/// `SESSION_MEMORY_SIZES` (comma-separated counts) or [`SIZES`].
fn sizes() -> Vec<usize> {
    match std::env::var("SESSION_MEMORY_SIZES") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|n| {
                n.trim().parse::<usize>().expect("SESSION_MEMORY_SIZES is a comma-separated list of counts")
            })
            .filter(|&n| n > 0)
            .collect(),
        _ => SIZES.to_vec(),
    }
}

/// `SESSION_MEMORY_MODES` (comma-separated names) or all of [`MODES`].
fn modes() -> Vec<Mode> {
    match std::env::var("SESSION_MEMORY_MODES") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|name| {
                let name = name.trim();
                *MODES.iter().find(|m| m.name == name).unwrap_or_else(|| {
                    let known: Vec<&str> = MODES.iter().map(|m| m.name).collect();
                    panic!("SESSION_MEMORY_MODES: unknown mode {name:?}; known: {}", known.join(", "))
                })
            })
            .collect(),
        _ => MODES.to_vec(),
    }
}
