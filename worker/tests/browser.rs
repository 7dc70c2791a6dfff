//! Browser sessions run by the worker's engine: real headless Chromium
//! pages on the bundled relay's demo app, over real sockets. The app's
//! WebSocket traffic as we count it from Chromium's events must equal what
//! the relay itself counted; failures are counted by cause, with a
//! screenshot of the page.

use std::collections::BTreeMap;
use std::time::Duration;

use stampede_model::Template;
use stampede_model::flow::{Check, FlowSpec, Step, StepKind};
use stampede_model::spec::{BrowserContexts, BrowserSpec, ConnectSpec, SessionSpec};
use stampede_proto::fleet::Snapshot;
use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

mod common;

/// Chromium is installed by the README's test command; where it cannot
/// be, these tests say so and pass.
fn chromium() -> bool {
    match playwright_driver::find_chromium(None) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: no Chromium on this machine ({e})");
            false
        }
    }
}

fn t(s: &str) -> Template {
    Template::parse(s).unwrap()
}

/// The flow of examples/browser.toml, shortened: open the app, wait for
/// its socket, then `clicks` times click Send and wait for the echo to
/// show up in the DOM, and for its frame.
fn clicking(clicks: u64, wait_for: &str) -> FlowSpec {
    let names = ["open", "ready", "clicks", "click", "echo", "pause"];
    let step = |i: usize, kind| Step { metric: i, kind };
    let body = vec![
        step(3, StepKind::Click { selector: t("#send"), wait_for: Some(t(wait_for)), timeout_us: 2_000_000 }),
        step(
            4,
            StepKind::Expect {
                check: Check::JsonRegex { path: "n".into(), regex: "^[0-9]+$".into() },
                timeout_us: 2_000_000,
                capture: vec![],
            },
        ),
        step(5, StepKind::Sleep { min_us: 100_000, max_us: 100_000 }),
    ];
    FlowSpec {
        steps: vec![
            step(0, StepKind::Goto { url: t("/app") }),
            step(1, StepKind::WaitFor { selector: t("#status.open"), timeout_us: 5_000_000 }),
            step(2, StepKind::Loop { count: Some(clicks), duration_us: None, steps: body }),
        ],
        names: names.iter().map(|n| n.to_string()).collect(),
    }
}

fn browser(flow: FlowSpec, per_browser: u32, contexts: BrowserContexts, shots: Option<&str>) -> SessionSpec {
    SessionSpec::Browser(BrowserSpec {
        flow,
        sessions_per_browser: per_browser,
        contexts,
        chromium: None,
        screenshot_dir: shots.map(str::to_string),
    })
}

async fn relay() -> (Relay, CancellationToken) {
    let shutdown = CancellationToken::new();
    (Relay::start(RelayConfig::default(), shutdown.clone()).await.unwrap(), shutdown)
}

/// (ok, failed) per step over the snapshots.
fn steps(snaps: &[Snapshot]) -> BTreeMap<String, (u64, u64)> {
    let mut all = BTreeMap::new();
    for s in snaps {
        for (name, st) in &s.steps {
            let e: &mut (u64, u64) = all.entry(name.clone()).or_default();
            e.0 += st.ok;
            e.1 += st.failed;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_apps_frames_as_counted_from_chromium_equal_the_relays_own_counts() {
    if !chromium() {
        return;
    }
    let (relay, shutdown) = relay().await;
    let mut a = common::assign(&relay.ws_url(), 0, 64, false);
    // Three sessions over two browsers: both are launched and shared.
    let spec = browser(clicking(4, "li#msg-{{seq}}"), 2, BrowserContexts::Shared, None);
    a.connect_spec_json = ConnectSpec { session: spec, ..Default::default() }.to_json();
    let snaps = common::drive(&a, 3, Duration::from_secs(8), async || {}).await;
    let c = common::totals(&snaps);
    let steps = steps(&snaps);
    let relay_counts = relay.stats().snapshot();
    eprintln!("{c:?}\n{steps:?}\nrelay {relay_counts:?}");
    // Every session completed at least once: 4 clicks each, each shown.
    assert!(c.sessions_completed >= 3, "{c:?}");
    assert_eq!(c.sessions_failed, 0, "{c:?} {steps:?}");
    assert!(steps["click"].0 >= 12 && steps["click"].1 == 0, "{steps:?}");
    assert_eq!(steps["echo"].1, 0, "{steps:?}");
    // Exact: what Chromium said the app sent and got is what the relay saw.
    assert_eq!(c.app_events_lost, 0, "{c:?}");
    assert_eq!(c.app_frames_sent, relay_counts.messages_in, "{c:?}");
    assert_eq!(c.app_frames_received, relay_counts.messages_out, "{c:?}");
    assert_eq!(c.app_ws_opened, relay_counts.connections_total, "{c:?}");
    assert_eq!(c.app_ws_opened, c.app_ws_closed, "every page closed: {c:?}");
    // A click is sent before it is recorded; one cut short at the stop is not.
    assert!(steps["click"].0 <= c.app_frames_sent && c.app_frames_sent <= steps["click"].0 + 3, "{c:?}");
    // Memory: the browsers' PSS, with the sessions they held.
    let peak = snaps.iter().filter_map(|s| s.gauges).max_by_key(|g| g.browser_sessions).unwrap();
    assert_eq!(peak.browser_sessions, 3, "{peak:?}");
    assert!(peak.browser_pss_bytes > 100_000_000, "two browsers and three pages: {peak:?}");
    assert_eq!(snaps.last().and_then(|s| s.gauges).map(|g| g.connections_active), Some(0));
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_never_shows_what_the_flow_waits_for_fails_by_cause_with_a_screenshot() {
    if !chromium() {
        return;
    }
    let (relay, shutdown) = relay().await;
    // Relative: screenshots stay under the worker's directory.
    let shots = std::path::PathBuf::from(format!("target/browser-test-shots-{}", std::process::id()));
    let mut a = common::assign(&relay.ws_url(), 0, 64, false);
    // Isolated contexts; the app never makes #nothing.
    let mut flow = clicking(1, "#nothing");
    if let StepKind::Loop { steps, .. } = &mut flow.steps[2].kind
        && let StepKind::Click { timeout_us, .. } = &mut steps[0].kind
    {
        *timeout_us = 300_000;
    }
    let spec = browser(flow, 4, BrowserContexts::Isolated, Some(shots.to_str().unwrap()));
    a.connect_spec_json = ConnectSpec { session: spec, ..Default::default() }.to_json();
    let snaps = common::drive(&a, 2, Duration::from_secs(4), async || {}).await;
    let c = common::totals(&snaps);
    let steps = steps(&snaps);
    let timeouts = common::errors(&snaps, "selector_timeout");
    eprintln!("{c:?}\n{steps:?}");
    assert_eq!(c.sessions_completed, 0, "{c:?}");
    assert!(c.sessions_failed >= 2, "{c:?}");
    assert_eq!(timeouts, steps["click"].1, "one cause per failed click");
    assert_eq!(steps["click"].0, 0, "{steps:?}");
    assert!(steps["ready"].0 >= 2, "the app itself worked: {steps:?}");
    let pngs: Vec<_> = std::fs::read_dir(&shots).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!pngs.is_empty() && pngs.len() as u32 <= stampede_model::spec::MAX_SCREENSHOTS, "{pngs:?}");
    let png = std::fs::read(&pngs[0]).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::remove_dir_all(&shots).unwrap();
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chromium_that_cannot_start_fails_sessions_as_browser_launch() {
    let dir = tempfile::tempdir().unwrap();
    // An executable that exits at once.
    let fake = dir.path().join("chromium");
    std::fs::write(&fake, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (relay, shutdown) = relay().await;
    let mut a = common::assign(&relay.ws_url(), 0, 64, false);
    let SessionSpec::Browser(mut spec) = browser(clicking(1, "li"), 1, BrowserContexts::Shared, None) else {
        unreachable!()
    };
    spec.chromium = Some(fake.to_str().unwrap().into());
    a.connect_spec_json = ConnectSpec { session: SessionSpec::Browser(spec), ..Default::default() }.to_json();
    let snaps = common::drive(&a, 2, Duration::from_secs(2), async || {}).await;
    let c = common::totals(&snaps);
    assert!(c.sessions_failed >= 2, "{c:?}");
    assert_eq!(common::errors(&snaps, "browser_launch"), c.sessions_failed, "{c:?}");
    assert_eq!(c.sessions_completed + c.app_ws_opened, 0, "{c:?}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_controller_cannot_make_a_worker_run_any_program_or_write_anywhere() {
    let (relay, shutdown) = relay().await;
    let start = |chromium: Option<&str>, shots: Option<&str>| {
        let SessionSpec::Browser(mut spec) = browser(clicking(1, "li"), 1, BrowserContexts::Shared, shots)
        else {
            unreachable!()
        };
        spec.chromium = chromium.map(str::to_string);
        let mut a = common::assign(&relay.ws_url(), 0, 64, false);
        a.connect_spec_json =
            ConnectSpec { session: SessionSpec::Browser(spec), ..Default::default() }.to_json();
        async move {
            let (tx, _rx) = tokio::sync::mpsc::channel(4);
            match stampede_worker::engine::Engine::start(&a, "w", &[], tx).await {
                Ok(_) => String::new(),
                Err(e) => e.to_string(),
            }
        }
    };
    assert!(start(Some("/bin/sh"), None).await.contains("must be named"), "a program that is no browser");
    for dir in ["/tmp/x", "../x", "a/../../x", ""] {
        assert!(start(None, Some(dir)).await.contains("relative path"), "{dir:?}");
    }
    shutdown.cancel();
}
