//! A browser killed under its sessions (its own test binary: every
//! Chromium this process started is this test's). Sessions in it fail as
//! `browser_crashed` within the command deadline, never hang, and the pool
//! launches a new browser: sessions complete again.

use std::time::Duration;

use stampede_model::Template;
use stampede_model::flow::{FlowSpec, Step, StepKind};
use stampede_model::spec::{BrowserContexts, BrowserRenderers, BrowserSpec, ConnectSpec, SessionSpec};
use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

mod common;

/// Chromium processes whose parent is this process: the browsers.
fn our_browsers() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The parent pid is the second field after the command in parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(me.as_str()) && String::from_utf8_lossy(&cmdline).contains("remote-debugging-pipe") {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_browser_fails_its_sessions_and_a_new_one_takes_over() {
    if let Err(e) = playwright_driver::find_chromium(None) {
        eprintln!("SKIPPED: no Chromium on this machine ({e})");
        return;
    }
    let shutdown = CancellationToken::new();
    let relay = Relay::start(RelayConfig::default(), shutdown.clone()).await.unwrap();
    let t = |s: &str| Template::parse(s).unwrap();
    let step = |metric, kind| Step { metric, kind };
    let flow = FlowSpec {
        steps: vec![
            step(0, StepKind::Goto { url: t("/app") }),
            step(1, StepKind::WaitFor { selector: t("#status.open"), timeout_us: 5_000_000 }),
            step(
                2,
                StepKind::Loop {
                    count: Some(3),
                    duration_us: None,
                    steps: vec![
                        step(
                            3,
                            StepKind::Click {
                                selector: t("#send"),
                                wait_for: Some(t("li#msg-{{seq}}")),
                                timeout_us: 2_000_000,
                            },
                        ),
                        step(4, StepKind::Sleep { min_us: 200_000, max_us: 200_000 }),
                    ],
                },
            ),
        ],
        names: ["open", "ready", "clicks", "click", "pause"].map(String::from).to_vec(),
    };
    let spec = BrowserSpec {
        flow,
        sessions_per_browser: 4,
        contexts: BrowserContexts::Shared,
        renderers: BrowserRenderers::PerSite,
        chromium: None,
        screenshot_dir: None,
    };
    let mut a = common::assign(&relay.ws_url(), 0, 64, false);
    a.connect_spec_json = ConnectSpec { session: SessionSpec::Browser(spec), ..Default::default() }.to_json();
    let mut killed = Vec::new();
    let started = std::time::Instant::now();
    let stats = relay.stats();
    let snaps = common::drive(&a, 3, Duration::from_secs(20), async || {
        // Unused: the kill happens from the watcher below.
    });
    let watcher = async {
        // Only once the sessions' pages are open in the browser (their app
        // WebSockets reached the relay): a browser killed while it still
        // starts (slow on a fresh machine) is relaunched before any session
        // needs it, and nothing fails.
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        while stats.connections_total.load(relaxed) < 3 && started.elapsed() < Duration::from_secs(15) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for pid in our_browsers() {
            // SIGKILL: no goodbye on the pipe.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            killed.push(pid);
        }
        started.elapsed()
    };
    let (snaps, killed_at) = tokio::join!(snaps, watcher);
    let c = common::totals(&snaps);
    let crashed = common::errors(&snaps, "browser_crashed");
    eprintln!("killed {killed:?} at {killed_at:?}: {c:?}, browser_crashed {crashed}");
    assert_eq!(killed.len(), 1, "three sessions in one browser");
    assert!(killed_at < Duration::from_secs(15), "the sessions' pages opened");
    assert!(crashed >= 1 && c.sessions_failed >= 1, "the sessions in it failed: {c:?}");
    // Sessions completed in a new browser, from 2 s after the kill.
    let from = killed_at.as_secs() + 2;
    let after: u64 = snaps
        .iter()
        .filter(|s| s.second >= from)
        .map(|s| s.counters.get("sessions_completed").copied().unwrap_or(0))
        .sum();
    assert!(after >= 3, "sessions completed after the kill: {after}");
    assert!(our_browsers().is_empty(), "the engine's browsers are gone once it stopped");
    shutdown.cancel();
}
