//! The native engine against real servers on loopback: the bundled relay
//! and hand-written misbehaving ones. Outcomes must be counted by cause.

use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use stampede_model::Counters;
use stampede_proto::fleet::{Assign, Snapshot};
use stampede_relay::{Relay, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod common;

use common::{drive, errors, totals};

fn assign(url: &str, interval_ms: u64, reconnect: bool) -> Assign {
    common::assign(url, interval_ms, 64, reconnect)
}

fn total(snaps: &[Snapshot], f: impl Fn(&Counters) -> u64) -> u64 {
    f(&totals(snaps))
}

fn latency(snaps: &[Snapshot]) -> Histogram<u64> {
    let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for s in snaps {
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut s.latency_histogram.as_slice()).unwrap();
        all.add(&h).unwrap();
    }
    all
}

/// A server that reads the upgrade request and answers with `respond`.
async fn scripted_server(respond: fn(&str) -> Option<String>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).await.unwrap_or(0);
            match respond(&String::from_utf8_lossy(&buf[..n])) {
                Some(answer) => {
                    let _ = s.write_all(answer.as_bytes()).await;
                }
                None => held.push(s), // never answered
            }
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_are_matched_and_timed_against_the_relay() {
    let shutdown = CancellationToken::new();
    let config = RelayConfig { delay: Duration::from_millis(5), ..Default::default() };
    let relay = Relay::start(config, shutdown.clone()).await.unwrap();
    let snaps = drive(&assign(&relay.ws_url(), 50, true), 20, Duration::from_millis(2200), async || {}).await;
    assert_eq!(total(&snaps, |c| c.connections_opened), 20);
    let sent = total(&snaps, |c| c.messages_sent);
    assert!(sent >= 20 * 38, "{sent} sent in 2.2 s at 20/s on 20 connections");
    assert_eq!(total(&snaps, |c| c.messages_received), sent, "every echo arrives before the close");
    assert_eq!(total(&snaps, |c| c.messages_lost), 0);
    assert_eq!(total(&snaps, |c| c.connections_closed_by_client), 20);
    let h = latency(&snaps);
    assert_eq!(h.len(), sent);
    assert!(h.min() >= 5_000, "an echo faster than the injected 5 ms: {} us", h.min());
    assert_eq!(snaps.last().unwrap().gauges.unwrap().connections_active, 0, "all closed at the end");
    let seqs: Vec<u64> = snaps.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, (1..=snaps.len() as u64).collect::<Vec<_>>(), "snapshots are numbered without gaps");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(relay.stats().snapshot().connections_active, 0, "the relay saw clean closes");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_going_away_is_counted_with_its_close_code() {
    let shutdown = CancellationToken::new();
    let relay = Relay::start(RelayConfig::default(), shutdown.clone()).await.unwrap();
    let stop_relay = shutdown.clone();
    let snaps = drive(&assign(&relay.ws_url(), 0, false), 5, Duration::from_millis(500), async move || {
        stop_relay.cancel();
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert_eq!(total(&snaps, |c| c.connections_opened), 5);
    assert_eq!(errors(&snaps, "closed_1001"), 5, "relay shutdown sends 1001 Going Away");
    assert_eq!(total(&snaps, |c| c.connections_closed_by_server), 5);
    assert_eq!(total(&snaps, |c| c.connections_attempted), 5, "no reconnect when not asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upgrade_is_counted_by_http_status() {
    let url =
        scripted_server(|_| Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".into()))
            .await;
    let snaps = drive(&assign(&url, 0, false), 4, Duration::from_millis(500), async || {}).await;
    assert_eq!(total(&snaps, |c| c.connections_failed), 4);
    assert_eq!(errors(&snaps, "http_503"), 4);
    assert_eq!(total(&snaps, |c| c.connections_opened), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_accept_key_is_not_a_websocket() {
    let url = scripted_server(|_| {
        Some(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: bm90IHRoZSByaWdodCBrZXk=\r\n\r\n"
                .into(),
        )
    })
    .await;
    let snaps = drive(&assign(&url, 0, false), 2, Duration::from_millis(500), async || {}).await;
    assert_eq!(errors(&snaps, "bad_handshake"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_response_head_is_refused_at_8_kib() {
    // 350 KB of header lines and never the blank line that ends them: read
    // up to 8 KiB, then refused, not buffered.
    let url = scripted_server(|_| {
        Some(format!(
            "HTTP/1.1 101 Switching Protocols\r\n{}",
            "X-Padding: abcdefghijklmnopqrstuvwxyz\r\n".repeat(10_000)
        ))
    })
    .await;
    let snaps = drive(&assign(&url, 0, false), 2, Duration::from_millis(500), async || {}).await;
    assert_eq!(errors(&snaps, "bad_handshake"), 2);
    assert_eq!(total(&snaps, |c| c.connections_opened), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out() {
    let url = scripted_server(|_| None).await;
    let mut a = assign(&url, 0, false);
    a.connect_timeout_us = 300_000;
    let snaps = drive(&a, 3, Duration::from_millis(800), async || {}).await;
    assert_eq!(errors(&snaps, "timeout"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_replaced_when_asked() {
    // Completes the upgrade, then closes TCP without a close frame.
    let url = scripted_server(|request| {
        let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))?.trim();
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        Some(format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        ))
    })
    .await;
    let snaps = drive(&assign(&url, 0, true), 2, Duration::from_millis(1500), async || {}).await;
    let opened = total(&snaps, |c| c.connections_opened);
    assert!(opened >= 4, "each slot reconnected after its drop: {opened} opened");
    let dropped = total(&snaps, |c| c.connections_dropped);
    assert!(dropped >= 2);
    assert_eq!(errors(&snaps, "eof") + errors(&snaps, "reset"), dropped);
}
