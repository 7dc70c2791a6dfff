//! Fault injection end to end: a real relay on 127.0.0.1:0 with faults
//! configured, real clients.

use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use common::{Client, STEP, connect, recv};
use futures_util::{SinkExt, StreamExt};
use stampede_relay::config::{DropAt, Faults, RelayArgs, SlowWindow};
use stampede_relay::{Relay, RelayConfig};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

async fn start(faults: Faults) -> (Relay, CancellationToken) {
    common::start(RelayConfig { faults, ..RelayConfig::default() }).await
}

/// Time for one echo.
async fn rtt(ws: &mut Client) -> Duration {
    let t0 = Instant::now();
    ws.send(Message::text("ping")).await.unwrap();
    assert_eq!(recv(ws).await, Message::text("ping"));
    t0.elapsed()
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(t.into()).await;
}

#[tokio::test]
async fn slow_window_adds_the_extra_delay_only_inside_it() {
    let slow = SlowWindow {
        start: Duration::from_millis(400),
        length: Duration::from_millis(600),
        extra: Duration::from_millis(100),
    };
    let started = Instant::now();
    let (relay, _token) = start(Faults { slow: Some(slow), ..Faults::default() }).await;
    let mut ws = connect(&relay).await;

    let before = rtt(&mut ws).await;
    assert!(before < Duration::from_millis(50), "before the window: {before:?}");
    sleep_until(started + Duration::from_millis(550)).await;
    let inside = rtt(&mut ws).await;
    assert!(
        inside >= Duration::from_millis(100) && inside < Duration::from_millis(250),
        "inside the window: {inside:?}"
    );
    sleep_until(started + Duration::from_millis(1100)).await;
    let after = rtt(&mut ws).await;
    assert!(after < Duration::from_millis(50), "after the window: {after:?}");
}

#[tokio::test]
async fn slow_window_keeps_echo_order_across_its_end() {
    // Zero base delay: messages after the window would go straight back,
    // but must not overtake the slowed ones still queued.
    let slow = SlowWindow {
        start: Duration::ZERO,
        length: Duration::from_millis(300),
        extra: Duration::from_millis(200),
    };
    let started = Instant::now();
    let (relay, _token) = start(Faults { slow: Some(slow), ..Faults::default() }).await;
    let mut ws = connect(&relay).await;
    sleep_until(started + Duration::from_millis(250)).await;
    ws.send(Message::text("slowed")).await.unwrap();
    sleep_until(started + Duration::from_millis(350)).await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::text("slowed"));
    assert_eq!(recv(&mut ws).await, Message::text("after"));
}

#[tokio::test]
async fn external_clock_holds_faults_until_started() {
    let slow = SlowWindow {
        start: Duration::ZERO,
        length: Duration::from_secs(60),
        extra: Duration::from_millis(100),
    };
    let faults = Faults { slow: Some(slow), external_clock: true, ..Faults::default() };
    let (relay, _token) = start(faults).await;
    let mut ws = connect(&relay).await;
    let idle = rtt(&mut ws).await;
    assert!(idle < Duration::from_millis(50), "no fault before the clock starts: {idle:?}");
    // A clock started in the future: the window has not begun yet.
    relay.start_fault_clock(Instant::now() + Duration::from_millis(300));
    let early = rtt(&mut ws).await;
    assert!(early < Duration::from_millis(50), "window not begun: {early:?}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let inside = rtt(&mut ws).await;
    assert!(inside >= Duration::from_millis(100), "inside the window: {inside:?}");
}

#[tokio::test]
async fn drop_closes_exactly_the_share_of_open_connections_with_1011() {
    let at = Duration::from_millis(600);
    let started = Instant::now();
    let faults = Faults { drop: Some(DropAt { at, fraction: 0.3 }), ..Faults::default() };
    let (relay, _token) = start(faults).await;
    let mut clients = Vec::new();
    for _ in 0..10 {
        let mut ws = connect(&relay).await;
        rtt(&mut ws).await;
        clients.push(ws);
    }
    assert!(started.elapsed() < at, "all ten open before the drop");
    sleep_until(started + at + Duration::from_millis(300)).await;
    // Connections opened after the drop are not affected.
    let mut late = connect(&relay).await;

    let (mut closed, mut open) = (0, Vec::new());
    for mut ws in clients {
        ws.send(Message::text("still there?")).await.unwrap();
        match recv(&mut ws).await {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Error, "1011 internal error");
                assert_eq!(frame.reason.as_str(), "stampede fault: drop");
                assert!(timeout(STEP, ws.next()).await.unwrap().is_none_or(|m| m.is_err()));
                closed += 1;
            }
            Message::Text(t) => {
                assert_eq!(t.as_str(), "still there?");
                open.push(ws);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((closed, open.len()), (3, 7), "round(0.3 * 10) closed");
    for ws in &mut open {
        rtt(ws).await;
    }
    rtt(&mut late).await;
    let stats = relay.stats();
    let deadline = Instant::now() + STEP;
    while stats.snapshot().connections_active != 8 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stats.snapshot().connections_active, 8, "7 survivors + 1 late");
}

/// Resident memory of this process, bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

#[tokio::test]
async fn leak_grows_resident_memory_steadily() {
    // 600 MB per minute is 10 MB per second: ~15 MB in 1.5 s.
    let faults = Faults { leak_mb_per_min: Some(600.0), ..Faults::default() };
    let before = rss_bytes();
    let (_relay, token) = start(faults).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown > 8_000_000 && grown < 40_000_000, "RSS grew by {grown} bytes");
    token.cancel();
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: RelayArgs,
}

#[test]
fn flags_parse_and_round_trip() {
    let cli = Cli::try_parse_from([
        "relay",
        "--fault-slow",
        "30,20,50",
        "--fault-drop",
        "60,0.3",
        "--fault-leak-mb-per-min",
        "5",
        "--fault-clock-stdin",
    ])
    .unwrap();
    let faults = cli.args.config().faults;
    assert_eq!(
        faults,
        Faults {
            slow: Some(SlowWindow {
                start: Duration::from_secs(30),
                length: Duration::from_secs(20),
                extra: Duration::from_millis(50),
            }),
            drop: Some(DropAt { at: Duration::from_secs(60), fraction: 0.3 }),
            leak_mb_per_min: Some(5.0),
            external_clock: true,
        }
    );
    let mut argv = vec!["relay".to_string()];
    argv.extend(faults.to_args());
    assert_eq!(Cli::try_parse_from(argv).unwrap().args.config().faults, faults, "to_args round-trips");
    assert_eq!(Cli::try_parse_from(["relay"]).unwrap().args.config().faults, Faults::default());
}

#[test]
fn bad_fault_flags_say_what_is_expected() {
    for (flag, value, says) in [
        ("--fault-slow", "30,20", "--fault-slow takes START_S,LENGTH_S,EXTRA_MS, e.g. 30,20,50"),
        ("--fault-slow", "30,0,50", "LENGTH_S above 0"),
        ("--fault-slow", "30,20,0", "EXTRA_MS must be above 0"),
        ("--fault-slow", "-1,20,50", "START_S must be"),
        ("--fault-drop", "60", "--fault-drop takes AT_S,FRACTION, e.g. 60,0.3"),
        ("--fault-drop", "60,1.5", "FRACTION must be above 0 and at most 1"),
        ("--fault-drop", "nan,0.5", "--fault-drop takes AT_S,FRACTION"),
        ("--fault-leak-mb-per-min", "0", "--fault-leak-mb-per-min takes MB per minute above 0"),
    ] {
        let err =
            Cli::try_parse_from(["relay".to_string(), format!("{flag}={value}")]).unwrap_err().to_string();
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}
