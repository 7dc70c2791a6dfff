//! Browser sessions run by the worker's engine: real headless Chromium
//! pages on the bundled relay's demo app, over real sockets. The app's
//! WebSocket traffic as we count it from Chromium's events must equal what
//! the relay itself counted; failures are counted by cause, with a
//! screenshot of the page.

use std::collections::BTreeMap;
use std::time::Duration;

use stampede_model::Template;
use stampede_model::flow::{Check, FlowSpec, Step, StepKind};
use stampede_model::spec::{BrowserContexts, BrowserRenderers, BrowserSpec, ConnectSpec, SessionSpec};
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
        renderers: BrowserRenderers::PerSite,
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
    // An echo written as the stop closed its page never reaches it: at most
    // one per session open then.
    let echoed = relay_counts.messages_out;
    assert!(c.app_frames_received <= echoed && echoed <= c.app_frames_received + 3, "{c:?}");
    assert_eq!(c.app_ws_opened, relay_counts.connections_total, "{c:?}");
    assert_eq!(c.app_ws_opened, c.app_ws_closed, "every page closed: {c:?}");
    // A click is sent before it is recorded; one cut short at the stop is not.
    assert!(steps["click"].0 <= c.app_frames_sent && c.app_frames_sent <= steps["click"].0 + 3, "{c:?}");
    // Memory: the browsers' PSS, with the sessions they held.
    let peak = snaps.iter().filter_map(|s| s.gauges).max_by_key(|g| g.browser_sessions).unwrap();
    assert_eq!(peak.browser_sessions, 3, "{peak:?}");
    assert!(peak.browser_pss_bytes > 100_000_000, "two browsers and three pages: {peak:?}");
    // Each page's JS heap, sampled as its session ended.
    let heap = snaps.iter().filter_map(|s| s.gauges).map(|g| g.browser_js_heap_bytes).max().unwrap();
    assert!(heap > 100_000 && heap < 100_000_000, "JS heap of the demo app: {heap}");
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
    let start_with = |session: SessionSpec| {
        let mut a = common::assign(&relay.ws_url(), 0, 64, false);
        a.connect_spec_json = ConnectSpec { session, ..Default::default() }.to_json();
        async move {
            let (tx, _rx) = tokio::sync::mpsc::channel(4);
            match stampede_worker::engine::Engine::start(&a, "w", &[], tx).await {
                Ok(_) => String::new(),
                Err(e) => e.to_string(),
            }
        }
    };
    let start = |chromium: Option<&str>, shots: Option<&str>| {
        let SessionSpec::Browser(mut spec) = browser(clicking(1, "li"), 1, BrowserContexts::Shared, shots)
        else {
            unreachable!()
        };
        spec.chromium = chromium.map(str::to_string);
        start_with(SessionSpec::Browser(spec))
    };
    assert!(start(Some("/bin/sh"), None).await.contains("must be named"), "a program that is no browser");
    for dir in ["/tmp/x", "../x", "a/../../x", ""] {
        assert!(start(None, Some(dir)).await.contains("relative path"), "{dir:?}");
    }
    // Numbers and steps no scenario can produce.
    for per_browser in [0, 1001, u32::MAX] {
        let session = browser(clicking(1, "li"), per_browser, BrowserContexts::Shared, None);
        assert!(start_with(session).await.contains("sessions_per_browser"), "{per_browser}");
    }
    let mut socket = clicking(1, "li");
    socket.steps[0].kind = StepKind::Connect;
    let refused = start_with(browser(socket, 1, BrowserContexts::Shared, None)).await;
    assert!(refused.contains("connect, send, close and http are not for it"), "{refused}");
    let page_in_native = start_with(SessionSpec::Flow(clicking(1, "li"))).await;
    assert!(page_in_native.contains("needs a browser session"), "{page_in_native}");
    shutdown.cancel();
}

/// A hostile app: its page opens a WebSocket that floods 3,000 frames of
/// 32 KiB as fast as the socket takes them. What we read of Chromium's
/// events is bounded (frames kept for `expect` and events buffered per
/// page), every frame is counted as received or within the events lost,
/// and nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_flooding_its_websocket_is_counted_within_bounded_memory() {
    use futures_util::SinkExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::Message;
    if !chromium() {
        return;
    }
    const FRAMES: u64 = 3000;
    let ws = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_port = ws.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = ws.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let frame = "x".repeat(32 << 10);
                for _ in 0..FRAMES {
                    if ws.send(Message::text(frame.clone())).await.is_err() {
                        return;
                    }
                }
                let _ = ws.close(None).await;
            });
        }
    });
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_url = format!("http://{}/", http.local_addr().unwrap());
    let page = format!(
        "<!doctype html><p id=n>0</p><script>let n=0;const ws=new WebSocket('ws://127.0.0.1:{ws_port}/');\
         ws.onmessage=()=>{{n++;document.getElementById('n').textContent=n}};\
         ws.onclose=()=>{{const d=document.createElement('p');d.id='done';document.body.appendChild(d)}};</script>"
    );
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = http.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    page.len()
                );
                let _ = tcp.write_all(head.as_bytes()).await;
                let _ = tcp.write_all(page.as_bytes()).await;
            });
        }
    });
    let t = |s: &str| Template::parse(s).unwrap();
    let flow = FlowSpec {
        steps: vec![
            Step { metric: 0, kind: StepKind::Goto { url: t(&page_url) } },
            Step { metric: 1, kind: StepKind::WaitFor { selector: t("#done"), timeout_us: 30_000_000 } },
            // Ends the session so it is not started again.
            Step { metric: 2, kind: StepKind::Sleep { min_us: 60_000_000, max_us: 60_000_000 } },
        ],
        names: ["flood", "done", "rest"].map(String::from).to_vec(),
    };
    let mut a = common::assign(&format!("ws://127.0.0.1:{ws_port}/"), 0, 64, false);
    a.connect_spec_json =
        ConnectSpec { session: browser(flow, 1, BrowserContexts::Shared, None), ..Default::default() }
            .to_json();
    let snaps = common::drive(&a, 1, Duration::from_secs(15), async || {}).await;
    let c = common::totals(&snaps);
    let steps = steps(&snaps);
    let peak_rss = snaps.iter().filter_map(|s| s.gauges).map(|g| g.rss_bytes).max().unwrap();
    eprintln!("{c:?}\n{steps:?}\nworker RSS peak {} MB", peak_rss / 1_000_000);
    assert_eq!(steps.get("done"), Some(&(1, 0)), "the page got its flood and the session went on");
    assert!(c.app_frames_received <= FRAMES, "{c:?}");
    assert!(c.app_frames_received + c.app_events_lost >= FRAMES, "every frame counted or lost: {c:?}");
    // 3,000 x 32 KiB = 98 MB went through the page; we keep at most the
    // bounded buffers of it.
    assert!(peak_rss < 250_000_000, "worker RSS {peak_rss}");
}
