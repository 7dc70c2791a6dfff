//! End-to-end tests: a real relay on 127.0.0.1:0, real clients, no mocks.

use std::time::{Duration, Instant};

mod common;

use common::{STEP, connect, raw_upgraded, recv, start, upgrade_request};
use futures_util::{SinkExt, StreamExt};
use stampede_relay::{Relay, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_util::sync::CancellationToken;
async fn start_default() -> (Relay, CancellationToken) {
    start(RelayConfig::default()).await
}

/// Sends a raw request and returns the whole response (the relay closes).
async fn raw(relay: &Relay, request: &str) -> String {
    let mut tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8(out).unwrap()
}

async fn get(relay: &Relay, path: &str) -> String {
    raw(relay, &format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n")).await
}

#[tokio::test]
async fn echoes_text_and_binary() {
    let (relay, _token) = start_default().await;
    let mut ws = connect(&relay).await;
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::text("hello"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::binary(vec![0u8, 1, 2, 255]));
    // The relay counts an echo after writing it, so the client may see it first.
    let stats = relay.stats();
    let deadline = Instant::now() + STEP;
    while stats.snapshot().messages_out < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = stats.snapshot();
    assert_eq!((s.messages_in, s.messages_out, s.bytes_in, s.bytes_out), (2, 2, 9, 9));
}

#[tokio::test]
async fn injected_delay_is_applied() {
    let config = RelayConfig { delay: Duration::from_millis(20), ..RelayConfig::default() };
    let (relay, _token) = start(config).await;
    let mut ws = connect(&relay).await;
    let t0 = Instant::now();
    ws.send(Message::text("x")).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::text("x"));
    let rtt = t0.elapsed();
    assert!(rtt >= Duration::from_millis(20) && rtt < Duration::from_millis(200), "{rtt:?}");
}

#[tokio::test]
async fn delay_overlaps_across_messages_in_order() {
    let config = RelayConfig { delay: Duration::from_millis(100), ..RelayConfig::default() };
    let (relay, _token) = start(config).await;
    let mut ws = connect(&relay).await;
    let t0 = Instant::now();
    for i in 0..5 {
        ws.send(Message::text(i.to_string())).await.unwrap();
    }
    for i in 0..5 {
        assert_eq!(recv(&mut ws).await, Message::text(i.to_string()));
    }
    let total = t0.elapsed();
    assert!(total >= Duration::from_millis(100) && total < Duration::from_millis(250), "{total:?}");
}

#[tokio::test]
async fn ping_gets_pong_with_same_payload() {
    let (relay, _token) = start_default().await;
    let mut ws = connect(&relay).await;
    ws.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::Pong(Bytes::from_static(b"are you there")));
}

#[tokio::test]
async fn close_handshake_completes() {
    let (relay, _token) = start_default().await;
    let mut ws = connect(&relay).await;
    let frame = CloseFrame { code: CloseCode::Normal, reason: "bye".into() };
    ws.send(Message::Close(Some(frame))).await.unwrap();
    match recv(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected close, got {other:?}"),
    }
    assert!(timeout(STEP, ws.next()).await.unwrap().is_none(), "stream should end");
    // The session guard is released once the server task finishes.
    let stats = relay.stats();
    let deadline = Instant::now() + STEP;
    while stats.snapshot().connections_active != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stats.snapshot().connections_active, 0);
}

#[tokio::test]
async fn fragmented_message_is_reassembled() {
    let (relay, _token) = start_default().await;
    let mut ws = connect(&relay).await;
    let first = Frame::message("frag", OpCode::Data(Data::Text), false);
    let last = Frame::message("mented", OpCode::Data(Data::Continue), true);
    ws.send(Message::Frame(first)).await.unwrap();
    ws.send(Message::Frame(last)).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::text("fragmented"));
}

#[tokio::test]
async fn frame_sent_with_handshake_is_not_lost() {
    let (relay, _token) = start_default().await;
    let mut tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    // Upgrade plus a masked text frame "hi" in one write, so the frame
    // arrives in the same read as the head.
    let mask = [1u8, 2, 3, 4];
    let mut bytes = upgrade_request("13").into_bytes();
    bytes.extend_from_slice(&[0x81, 0x82]);
    bytes.extend_from_slice(&mask);
    bytes.extend(b"hi".iter().zip(mask).map(|(b, m)| b ^ m));
    tcp.write_all(&bytes).await.unwrap();

    let mut buf = Vec::new();
    let want = b"\x81\x02hi";
    while !buf.ends_with(want) {
        let mut chunk = [0u8; 512];
        let n = timeout(STEP, tcp.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{head}");
}

#[tokio::test]
async fn health_and_metrics() {
    let (relay, _token) = start_default().await;
    let health = get(&relay, "/health").await;
    assert!(health.starts_with("HTTP/1.1 200 OK\r\n"), "{health}");
    assert!(health.contains("Content-Length: 3\r\n") && health.contains("Connection: close\r\n"));
    assert!(health.ends_with("\r\n\r\nok\n"), "{health}");

    let mut ws = connect(&relay).await;
    ws.send(Message::text("count me")).await.unwrap();
    recv(&mut ws).await;
    let metrics = get(&relay, "/metrics").await;
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics}");
    for name in [
        "relay_connections_active",
        "relay_connections_total",
        "relay_messages_received_total",
        "relay_messages_sent_total",
        "relay_bytes_received_total",
        "relay_bytes_sent_total",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(metrics.contains(&format!("# HELP {name} ")), "{name} HELP");
        assert!(metrics.contains(&format!("# TYPE {name} ")), "{name} TYPE");
    }
    assert!(metrics.contains("\nrelay_connections_total 1\n"), "{metrics}");
    assert!(metrics.contains("\nrelay_connections_active 1\n"), "{metrics}");
    assert!(metrics.contains("\nrelay_bytes_received_total 8\n"), "{metrics}");
}

#[tokio::test]
async fn http_errors() {
    let (relay, _token) = start_default().await;
    let not_found = get(&relay, "/nowhere").await;
    assert!(not_found.starts_with("HTTP/1.1 404 "), "{not_found}");
    let plain_ws = get(&relay, "/ws").await;
    assert!(plain_ws.starts_with("HTTP/1.1 400 "), "{plain_ws}");
    let v8 = raw(&relay, &upgrade_request("8")).await;
    assert!(v8.starts_with("HTTP/1.1 426 "), "{v8}");
    assert!(v8.contains("Sec-WebSocket-Version: 13\r\n"), "{v8}");
}

#[tokio::test]
async fn connection_limit_answers_503() {
    let config = RelayConfig { max_connections: 1, ..RelayConfig::default() };
    let (relay, _token) = start(config).await;
    let _first = connect(&relay).await;
    let refused = raw(&relay, &upgrade_request("13")).await;
    assert!(refused.starts_with("HTTP/1.1 503 "), "{refused}");
}

#[tokio::test]
async fn shutdown_sends_going_away_and_wait_returns() {
    let (relay, token) = start_default().await;
    let mut ws = connect(&relay).await;
    ws.send(Message::text("warm")).await.unwrap();
    recv(&mut ws).await;
    token.cancel();
    match recv(&mut ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    // Reading on lets the client flush its close reply; then the stream ends.
    assert!(timeout(STEP, ws.next()).await.unwrap().is_none());
    timeout(STEP, relay.wait()).await.expect("relay stops after shutdown");
}

/// A masked binary frame header for `len` bytes (64-bit length form).
fn binary_header(len: u64, mask: [u8; 4]) -> Vec<u8> {
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&mask);
    h
}

#[tokio::test]
async fn a_large_frame_dribbled_in_odd_pieces_comes_back_whole() {
    // 300 KiB: the relay reads 1 KiB a call, so this spans ~300 reads, and
    // the pieces below (7 and 1,021 bytes by turns) never line up with them.
    let (relay, _token) = start_default().await;
    let mut tcp = raw_upgraded(relay.local_addr()).await;
    let payload: Vec<u8> = (0..300 * 1024u32).map(|i| (i * 31 % 251) as u8).collect();
    let mask = [0x5a, 0x13, 0xc7, 0x88];
    let mut frame = binary_header(payload.len() as u64, mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    let (mut rd, mut wr) = tcp.split();
    let write = async {
        for (i, piece) in frame
            .chunks(1028)
            .flat_map(|c| {
                let (a, b) = c.split_at(c.len().min(7));
                [a, b]
            })
            .enumerate()
        {
            wr.write_all(piece).await.unwrap();
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let read = async {
        // The echo: an unmasked header (2 + 8 bytes) and the payload.
        let mut echo = vec![0u8; 10 + payload.len()];
        timeout(STEP, rd.read_exact(&mut echo)).await.unwrap().unwrap();
        echo
    };
    let ((), echo) = tokio::join!(write, read);
    assert_eq!(echo[..2], [0x82, 127]);
    assert_eq!(u64::from_be_bytes(echo[2..10].try_into().unwrap()), payload.len() as u64);
    assert!(echo[10..] == payload[..], "the echo differs from what was sent");
}

#[tokio::test]
async fn a_frame_declaring_more_than_the_limit_is_refused_unread() {
    // 1 TiB declared, 4 bytes sent: the relay must refuse it from the
    // header (close 1009, message too big), not reserve or wait for it.
    let (relay, _token) = start_default().await;
    let mut tcp = raw_upgraded(relay.local_addr()).await;
    let mut frame = binary_header(1 << 40, [1, 2, 3, 4]);
    frame.extend_from_slice(b"abcd");
    tcp.write_all(&frame).await.unwrap();
    let mut got = Vec::new();
    let read = timeout(STEP, tcp.read_to_end(&mut got)).await.expect("the relay answers within 5 s");
    read.expect("a clean close");
    assert!(got.len() >= 4 && got[0] == 0x88, "a close frame first: {got:?}");
    assert_eq!(u16::from_be_bytes([got[2], got[3]]), 1009, "message too big: {got:?}");
    // Still serving others.
    let mut ws = connect(&relay).await;
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(recv(&mut ws).await, Message::text("after"));
}
