//! Channels end to end: a real relay on 127.0.0.1:0, real clients on
//! loopback (tokio-tungstenite here, Python's `websockets` for the
//! third-party check), plain HTTP written by hand.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod common;

use clap::Parser;
use common::{STEP, recv, start};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stampede_relay::config::{PubsubConfig, RelayArgs};
use stampede_relay::{PubsubSnapshot, Relay, RelayConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

type Client = common::Client;

/// A `/pubsub` connection and the id the relay gave it.
struct Conn {
    ws: Client,
    id: String,
}

fn pubsub(config: PubsubConfig) -> RelayConfig {
    RelayConfig { pubsub: config, ..RelayConfig::default() }
}

/// Opens `/pubsub` on `tcp` and reads the greeting.
async fn open_on(relay: &Relay, tcp: TcpStream) -> Conn {
    let (mut ws, resp) = tokio_tungstenite::client_async(relay.pubsub_url(), tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    let hello = next(&mut ws).await;
    assert_eq!(hello["op"], "connection_established", "{hello}");
    let id = hello["id"].as_str().expect("id is a string").to_string();
    Conn { ws, id }
}

async fn open(relay: &Relay) -> Conn {
    open_on(relay, TcpStream::connect(relay.local_addr()).await.unwrap()).await
}

/// The next text frame as JSON.
async fn next(ws: &mut Client) -> Value {
    match recv(ws).await {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn send(ws: &mut Client, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

impl Conn {
    /// Subscribes; returns the channel's seq from the reply.
    async fn subscribe(&mut self, channel: &str, since: Option<u64>) -> u64 {
        let mut op = json!({"op": "subscribe", "channel": channel});
        if let Some(since) = since {
            op["since"] = json!(since);
        }
        send(&mut self.ws, op).await;
        let reply = next(&mut self.ws).await;
        assert_eq!((&reply["op"], &reply["channel"]), (&json!("subscribed"), &json!(channel)), "{reply}");
        reply["seq"].as_u64().unwrap()
    }

    /// Publishes with an ack; returns (seq, delivered).
    async fn publish(&mut self, channel: &str, data: Value) -> (u64, u64) {
        send(&mut self.ws, json!({"op": "publish", "channel": channel, "data": data, "ack": true})).await;
        let reply = next(&mut self.ws).await;
        assert_eq!(reply["op"], "published", "{reply}");
        assert_eq!(reply["channel"], channel);
        (reply["seq"].as_u64().unwrap(), reply["delivered"].as_u64().unwrap())
    }

    /// Publishes without an ack.
    async fn publish_quietly(&mut self, channel: &str, data: Value) {
        send(&mut self.ws, json!({"op": "publish", "channel": channel, "data": data})).await;
    }

    /// The next frame, which must be a message of `channel`: (seq, data).
    async fn message(&mut self, channel: &str) -> (u64, Value) {
        let frame = next(&mut self.ws).await;
        assert_eq!((&frame["op"], &frame["channel"]), (&json!("message"), &json!(channel)), "{frame}");
        (frame["seq"].as_u64().unwrap(), frame["data"].clone())
    }

    /// The sequence numbers of the next `n` messages of `channel`.
    async fn seqs(&mut self, channel: &str, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.message(channel).await.0);
        }
        out
    }

    /// Sends an operation and returns the error reply's reason.
    async fn refused(&mut self, op: &str) -> String {
        self.ws.send(Message::text(op)).await.unwrap();
        let reply = next(&mut self.ws).await;
        assert_eq!(reply["op"], "error", "{op} -> {reply}");
        reply["reason"].as_str().unwrap().to_string()
    }

    /// Asserts nothing arrives for a while.
    async fn quiet(&mut self) {
        if let Ok(frame) = timeout(Duration::from_millis(150), self.ws.next()).await {
            panic!("expected nothing, got {frame:?}");
        }
    }
}

/// A raw HTTP exchange; returns (status, body). The relay closes after it.
async fn http(relay: &Relay, request: &[u8]) -> (u16, String) {
    let mut tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut out = Vec::new();
    timeout(STEP, tcp.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8(out).unwrap();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{text}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

async fn post(relay: &Relay, path: &str, body: &str) -> (u16, String) {
    let request =
        format!("POST {path} HTTP/1.1\r\nHost: relay\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    http(relay, request.as_bytes()).await
}

/// The relay's /metrics, as name -> value.
async fn metrics(relay: &Relay) -> BTreeMap<String, f64> {
    let (status, body) = http(relay, b"GET /metrics HTTP/1.1\r\nHost: relay\r\n\r\n").await;
    assert_eq!(status, 200);
    parse_metrics(&body)
}

fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(name, value)| Some((name.to_string(), value.trim().parse().ok()?)))
        .collect()
}

/// Waits until the relay's channel counters satisfy `done` (counters move
/// just after the frames they count are written).
async fn settle(relay: &Relay, done: impl Fn(&PubsubSnapshot) -> bool) -> PubsubSnapshot {
    let deadline = Instant::now() + STEP;
    loop {
        let s = relay.stats().pubsub.snapshot();
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "counters did not settle: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn subscribers_get_published_messages_and_acks_count_them() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let (mut a, mut b, mut publisher) = (open(&relay).await, open(&relay).await, open(&relay).await);
    assert_ne!(a.id, b.id, "ids are unique");
    assert!(a.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "URL-safe id {}", a.id);
    assert_eq!(a.subscribe("room", None).await, 0);
    assert_eq!(b.subscribe("room", None).await, 0);

    let data = json!({"text": "hi", "n": [1, 2.5, null]});
    assert_eq!(publisher.publish("room", data.clone()).await, (1, 2));
    for sub in [&mut a, &mut b] {
        assert_eq!(sub.message("room").await, (1, data.clone()));
    }
    // Without ack there is no reply: the next frame answers the next op.
    publisher.publish_quietly("room", json!("quiet")).await;
    assert_eq!(publisher.publish("room", json!(3)).await, (3, 2));
    assert_eq!(a.seqs("room", 2).await, [2, 3]);
    assert_eq!(b.seqs("room", 2).await, [2, 3]);

    // Unsubscribed: b gets nothing more, a still does.
    send(&mut b.ws, json!({"op": "unsubscribe", "channel": "room"})).await;
    assert_eq!(next(&mut b.ws).await, json!({"op": "unsubscribed", "channel": "room"}));
    assert_eq!(publisher.publish("room", json!(4)).await, (4, 1));
    assert_eq!(a.message("room").await, (4, json!(4)));
    b.quiet().await;
}

#[tokio::test]
async fn a_publisher_does_not_get_its_own_message() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let (mut a, mut b) = (open(&relay).await, open(&relay).await);
    a.subscribe("room", None).await;
    b.subscribe("room", None).await;
    assert_eq!(a.publish("room", json!("mine")).await, (1, 1), "delivered to b only");
    assert_eq!(b.message("room").await, (1, json!("mine")));
    a.quiet().await;
    assert_eq!(b.publish("room", json!("yours")).await, (2, 1));
    assert_eq!(a.message("room").await, (2, json!("yours")), "a's next frame is b's message");
}

#[tokio::test]
async fn three_subscribers_get_a_hundred_messages_in_order() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut sub = open(&relay).await;
        sub.subscribe("fan", None).await;
        subs.push(sub);
    }
    let mut publisher = open(&relay).await;
    for i in 1..=100u64 {
        publisher.publish_quietly("fan", json!({"i": i})).await;
    }
    for sub in &mut subs {
        for i in 1..=100u64 {
            assert_eq!(sub.message("fan").await, (i, json!({"i": i})));
        }
    }
    let s = settle(&relay, |s| s.delivered == 300).await;
    assert_eq!((s.published, s.delivered, s.replayed, s.slow_closed), (100, 300, 0, 0));
}

#[tokio::test]
async fn a_subscriber_that_comes_back_gets_exactly_what_it_missed() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let mut publisher = open(&relay).await;
    let mut sub = open(&relay).await;
    sub.subscribe("inbox", None).await;
    for i in 1..=10 {
        publisher.publish_quietly("inbox", json!(i)).await;
    }
    assert_eq!(sub.seqs("inbox", 10).await, (1..=10).collect::<Vec<_>>());
    drop(sub);
    settle(&relay, |s| s.connections == 1).await;
    for i in 11..=20 {
        publisher.publish("inbox", json!(i)).await;
    }
    let mut back = open(&relay).await;
    assert_eq!(back.subscribe("inbox", Some(10)).await, 20);
    for i in 11..=20u64 {
        assert_eq!(back.message("inbox").await, (i, json!(i)), "replayed");
    }
    publisher.publish_quietly("inbox", json!(21)).await;
    assert_eq!(back.message("inbox").await, (21, json!(21)), "then live, nothing twice");
    back.quiet().await;
    let s = settle(&relay, |s| s.replayed == 10).await;
    assert_eq!((s.delivered, s.replayed), (11, 10));
}

/// The README's pair exchange, as written there.
#[tokio::test]
async fn a_pair_side_that_returns_catches_up_from_history() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let (mut a, mut b) = (open(&relay).await, open(&relay).await);
    assert_eq!(a.subscribe("pair/x/a", None).await, 0);
    assert_eq!(b.subscribe("pair/x/b", None).await, 0);
    a.publish_quietly("pair/x/b", json!("hi")).await;
    assert_eq!(b.message("pair/x/b").await, (1, json!("hi")));
    b.publish_quietly("pair/x/a", json!("hello")).await;
    assert_eq!(a.message("pair/x/a").await, (1, json!("hello")));
    drop(b);
    settle(&relay, |s| s.connections == 1).await;
    assert_eq!(a.publish("pair/x/b", json!("2")).await, (2, 0));
    assert_eq!(a.publish("pair/x/b", json!("3")).await, (3, 0));
    let mut b = open(&relay).await;
    assert_eq!(b.subscribe("pair/x/b", Some(1)).await, 3);
    assert_eq!(b.message("pair/x/b").await, (2, json!("2")));
    assert_eq!(b.message("pair/x/b").await, (3, json!("3")));
    b.quiet().await;
}

#[tokio::test]
async fn replay_and_live_meet_without_gap_or_overlap_while_publishing() {
    // History holds all 1001 messages, so every joiner can get all it asks.
    let (relay, _token) =
        start(pubsub(PubsubConfig { history_messages: 2000, ..PubsubConfig::default() })).await;
    let mut publisher = open(&relay).await;
    for i in 1..=300 {
        publisher.publish_quietly("busy", json!(i)).await;
    }
    publisher.publish("busy", json!(301)).await;
    // Keep publishing while subscribers join with `since` mid-stream.
    let feeding = tokio::spawn(async move {
        for i in 302..=1000 {
            publisher.publish_quietly("busy", json!(i)).await;
            if i % 50 == 0 {
                tokio::task::yield_now().await;
            }
        }
        publisher.publish("busy", json!(1001)).await;
        publisher
    });
    let mut joiners = Vec::new();
    for since in [0, 150, 290] {
        let mut sub = open(&relay).await;
        sub.subscribe("busy", Some(since)).await;
        joiners.push((since, sub));
    }
    feeding.await.unwrap();
    for (since, mut sub) in joiners {
        let want: Vec<u64> = (since + 1..=1001).collect();
        assert_eq!(sub.seqs("busy", want.len()).await, want, "since {since}");
        sub.quiet().await;
    }
}

#[tokio::test]
async fn without_history_nothing_is_replayed() {
    let config = PubsubConfig { history_messages: 0, ..PubsubConfig::default() };
    let (relay, _token) = start(pubsub(config)).await;
    let (mut keeper, mut publisher) = (open(&relay).await, open(&relay).await);
    keeper.subscribe("gap", None).await;
    for i in 1..=5 {
        publisher.publish("gap", json!(i)).await;
    }
    let mut late = open(&relay).await;
    assert_eq!(late.subscribe("gap", Some(0)).await, 5, "the channel's seq, kept while subscribed");
    late.quiet().await;
    publisher.publish("gap", json!(6)).await;
    assert_eq!(late.message("gap").await, (6, json!(6)));
    // A channel nobody holds is gone at once: seq starts over.
    assert_eq!(publisher.publish("nobody", json!(1)).await, (1, 0));
    assert_eq!(publisher.publish("nobody", json!(2)).await, (1, 0));
    assert_eq!(relay.stats().pubsub.snapshot().replayed, 0);
}

#[tokio::test]
async fn history_is_bounded_by_count_and_by_age() {
    let config = PubsubConfig {
        history_messages: 5,
        history_age: Duration::from_millis(300),
        ..PubsubConfig::default()
    };
    let (relay, _token) = start(pubsub(config)).await;
    let mut publisher = open(&relay).await;
    for i in 1..=10 {
        publisher.publish_quietly("h", json!(i)).await;
    }
    publisher.publish("h", json!(11)).await;
    let mut sub = open(&relay).await;
    assert_eq!(sub.subscribe("h", Some(0)).await, 11);
    assert_eq!(sub.seqs("h", 5).await, [7, 8, 9, 10, 11], "the newest five");
    sub.quiet().await;

    publisher.publish("aged", json!(1)).await;
    assert_eq!(relay.stats().pubsub.snapshot().channels, 4, "two conn/<id>, h, aged");
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Expired and unused: the sweep removed it.
    assert_eq!(settle(&relay, |s| s.channels == 3).await.channels, 3);
    let mut late = open(&relay).await;
    assert_eq!(late.subscribe("aged", Some(0)).await, 0, "a new channel");
    late.quiet().await;
}

#[tokio::test]
async fn the_demo_app_is_served_at_the_root() {
    let (relay, _token) = start(RelayConfig::default()).await;
    for path in ["/", "/app?channel=room"] {
        let (status, body) =
            http(&relay, format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").as_bytes()).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.starts_with("<!doctype html>") && body.contains("id=\"send\""), "{path}: {body}");
        assert!(body.contains("\"/pubsub\"") && body.contains("\"/ws\""), "it talks to this relay");
    }
    let (status, _) = http(&relay, b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(status, 405);
}

#[tokio::test]
async fn http_publish_reaches_the_connection_by_its_id() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let mut conn = open(&relay).await;
    let own = format!("conn/{}", conn.id);
    let (status, body) = post(&relay, &format!("/publish/{own}"), r#" {"hello": 1} "#).await;
    assert_eq!((status, body.as_str()), (200, r#"{"seq":1,"delivered":1}"#));
    let frame = next(&mut conn.ws).await;
    assert_eq!(frame, json!({"op": "message", "channel": own, "seq": 1, "data": {"hello": 1}}));
    // Percent-encoded, and raw bytes kept: data is passed on as written.
    let encoded = own.replace('/', "%2F");
    let (status, body) = post(&relay, &format!("/publish/{encoded}?x=1"), "[1.50,\"é\"]").await;
    assert_eq!((status, body.as_str()), (200, r#"{"seq":2,"delivered":1}"#));
    match recv(&mut conn.ws).await {
        Message::Text(t) => {
            assert_eq!(
                t.as_str(),
                format!(r#"{{"op":"message","channel":"{own}","seq":2,"data":[1.50,"é"]}}"#)
            )
        }
        other => panic!("{other:?}"),
    }
    let s = relay.stats().pubsub.snapshot();
    assert_eq!((s.http_published, s.published), (2, 2));
}

#[tokio::test]
async fn http_publish_errors() {
    let (relay, _token) = start(RelayConfig::default()).await;
    assert_eq!(post(&relay, "/publish/c", "{not json").await.0, 400);
    assert_eq!(post(&relay, "/publish/c", "1 2").await.0, 400, "one value only");
    assert_eq!(post(&relay, "/publish/c", "").await.0, 400);
    assert_eq!(post(&relay, "/publish/a%00b", "1").await.0, 400, "control character");
    let (status, _) = http(&relay, b"GET /publish/c HTTP/1.1\r\nHost: relay\r\n\r\n").await;
    assert_eq!(status, 405);
    let big = format!("POST /publish/c HTTP/1.1\r\nContent-Length: {}\r\n\r\n", (1 << 20) + 1);
    assert_eq!(http(&relay, big.as_bytes()).await.0, 413);
    assert_eq!(http(&relay, b"POST /publish/c HTTP/1.1\r\nHost: relay\r\n\r\n").await.0, 411);
    // A full 1 MiB body is fine, sent after 100 Continue.
    let body = format!("\"{}\"", "x".repeat((1 << 20) - 2));
    let mut tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let head =
        format!("POST /publish/c HTTP/1.1\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", body.len());
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut cont = [0u8; 25];
    timeout(STEP, tcp.read_exact(&mut cont)).await.unwrap().unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    tcp.write_all(body.as_bytes()).await.unwrap();
    let mut out = String::new();
    timeout(STEP, tcp.read_to_string(&mut out)).await.unwrap().unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with(r#"{"seq":1,"delivered":0}"#), "{out}");
    assert_eq!(relay.stats().pubsub.snapshot().http_published, 1);
}

/// An HS256 token signed with `secret`, valid for an hour.
fn jwt(secret: &[u8]) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let head = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
    let signed = format!("{head}.{}", URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#)));
    let sig = ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret), signed.as_bytes());
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

#[tokio::test]
async fn a_relay_that_requires_jwts_requires_them_for_channels_too() {
    let secret = b"channel-secret";
    let config = RelayConfig {
        jwt_secret: Some(stampede_relay::jwt::JwtSecret::new(secret.to_vec())),
        ..RelayConfig::default()
    };
    let (relay, _token) = start(config).await;
    assert_eq!(post(&relay, "/publish/c", "1").await.0, 401);
    let token = jwt(secret);
    assert_eq!(post(&relay, &format!("/publish/c?access_token={token}"), "1").await.0, 200);
    let bearer =
        format!("POST /publish/c HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 1\r\n\r\n2");
    assert_eq!(http(&relay, bearer.as_bytes()).await.0, 200);
    let tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let refused = tokio_tungstenite::client_async(relay.pubsub_url(), tcp).await.unwrap_err();
    assert!(refused.to_string().contains("401"), "{refused}");
    let tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let url = format!("{}?access_token={token}", relay.pubsub_url());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert_eq!(next(&mut ws).await["op"], "connection_established");
}

#[tokio::test]
async fn bad_operations_get_error_replies_and_the_101st_closes_1008() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let mut conn = open(&relay).await;
    assert_eq!(conn.refused("hello").await, "not a JSON object");
    assert_eq!(conn.refused(r#"{"op":"fly"}"#).await, r#"unknown op "fly""#);
    assert_eq!(conn.refused(r#"{"op":"subscribe","channel":7}"#).await, "channel must be a string");
    let long = "x".repeat(129);
    assert_eq!(
        conn.refused(&format!(r#"{{"op":"publish","channel":"{long}","data":1}}"#)).await,
        "channel name is longer than 128 bytes"
    );
    assert_eq!(
        conn.refused(r#"{"op":"unsubscribe","channel":"never"}"#).await,
        r#"not subscribed to "never""#
    );
    conn.subscribe("twice", None).await;
    assert_eq!(
        conn.refused(r#"{"op":"subscribe","channel":"twice"}"#).await,
        r#"already subscribed to "twice""#
    );
    conn.ws.send(Message::binary(vec![1u8, 2])).await.unwrap();
    assert_eq!(next(&mut conn.ws).await["op"], "error");
    // Seven so far; 93 more make 100, still answered.
    for _ in 0..93 {
        assert_eq!(conn.refused("[]").await, "not a JSON object");
    }
    // The connection still works between errors.
    conn.ws.send(Message::Ping(Bytes::from_static(b"p"))).await.unwrap();
    assert_eq!(recv(&mut conn.ws).await, Message::Pong(Bytes::from_static(b"p")));
    conn.ws.send(Message::text("[]")).await.unwrap();
    match recv(&mut conn.ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Policy, "too many errors"))
        }
        other => panic!("expected close 1008, got {other:?}"),
    }
}

#[tokio::test]
async fn limits_on_subscriptions_and_channels() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let mut conn = open(&relay).await;
    for i in 0..64 {
        conn.subscribe(&format!("s{i}"), None).await;
    }
    assert_eq!(
        conn.refused(r#"{"op":"subscribe","channel":"s64"}"#).await,
        "at most 64 subscriptions per connection"
    );
    drop(conn);

    let config = PubsubConfig { max_channels: 3, ..PubsubConfig::default() };
    let (relay, _token) = start(pubsub(config)).await;
    let mut conn = open(&relay).await; // conn/<id> is one channel
    conn.subscribe("a", None).await;
    conn.subscribe("b", None).await;
    assert_eq!(conn.refused(r#"{"op":"subscribe","channel":"c"}"#).await, "channel limit reached");
    assert_eq!(conn.refused(r#"{"op":"publish","channel":"c","data":1}"#).await, "channel limit reached");
    assert_eq!(post(&relay, "/publish/c", "1").await.0, 503);
    assert_eq!(conn.publish("a", json!(1)).await, (1, 0), "existing channels still work");
    // A new connection cannot have its own channel: closed with 1013.
    let tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(relay.pubsub_url(), tcp).await.unwrap();
    match recv(&mut ws).await {
        Message::Close(Some(f)) => {
            assert_eq!((f.code, f.reason.as_str()), (CloseCode::Again, "channel limit reached"))
        }
        other => panic!("expected close 1013, got {other:?}"),
    }
}

#[tokio::test]
async fn ping_and_close_handshake_work_as_on_ws() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let mut conn = open(&relay).await;
    conn.subscribe("c", None).await;
    conn.ws.send(Message::Ping(Bytes::from_static(b"there?"))).await.unwrap();
    assert_eq!(recv(&mut conn.ws).await, Message::Pong(Bytes::from_static(b"there?")));
    conn.ws
        .send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() })))
        .await
        .unwrap();
    match recv(&mut conn.ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
        other => panic!("expected close, got {other:?}"),
    }
    assert!(timeout(STEP, conn.ws.next()).await.unwrap().is_none(), "stream ends");
    let s = settle(&relay, |s| s.connections == 0).await;
    assert_eq!((s.subscriptions, s.channels), (0, 0), "left every channel");
}

#[tokio::test]
async fn shutdown_closes_sessions_with_1001_and_wait_returns() {
    let (relay, token) = start(RelayConfig::default()).await;
    let mut conn = open(&relay).await;
    conn.subscribe("c", None).await;
    token.cancel();
    match recv(&mut conn.ws).await {
        Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
    assert!(timeout(STEP, conn.ws.next()).await.unwrap().is_none());
    timeout(STEP, relay.wait()).await.expect("relay stops after shutdown");
}

/// Counts a subscriber's view of one channel: duplicates (a seq seen
/// before) and reorders (a new seq below the highest seen).
#[derive(Debug, Default)]
struct Tally {
    seen: HashSet<u64>,
    max: u64,
    duplicated: u64,
    reordered: u64,
}

impl Tally {
    fn add(&mut self, seq: u64) {
        if !self.seen.insert(seq) {
            self.duplicated += 1;
        } else {
            if seq < self.max {
                self.reordered += 1;
            }
            self.max = self.max.max(seq);
        }
    }
}

/// Publishes `n` messages to `channel` with one subscriber under `config`'s
/// faults; returns the subscriber's tally (read until quiet) and the
/// relay's counters once settled.
async fn faulty_delivery(config: PubsubConfig, n: u64) -> (Tally, PubsubSnapshot) {
    let (relay, _token) = start(pubsub(config)).await;
    let mut sub = open(&relay).await;
    sub.subscribe("f", None).await;
    let mut publisher = open(&relay).await;
    for i in 1..=n {
        publisher.publish_quietly("f", json!(i)).await;
    }
    let mut tally = Tally::default();
    while tally.seen.len() < n as usize {
        tally.add(sub.message("f").await.0);
    }
    // Late copies: a duplicate of the last, or one held past the end.
    while let Ok(Some(Ok(Message::Text(t)))) = timeout(Duration::from_millis(800), sub.ws.next()).await {
        let frame: Value = serde_json::from_str(t.as_str()).unwrap();
        tally.add(frame["seq"].as_u64().unwrap());
    }
    let s = settle(&relay, |s| s.delivered == n).await;
    (tally, s)
}

#[tokio::test]
async fn the_duplicate_fault_is_counted_exactly() {
    let config = PubsubConfig { fault_duplicate: Some(0.1), ..PubsubConfig::default() };
    let (tally, relay) = faulty_delivery(config, 200).await;
    assert_eq!(tally.duplicated, 20, "floor(200 * 0.1)");
    assert_eq!(relay.duplicated, tally.duplicated);
    assert_eq!((tally.reordered, relay.reordered), (0, 0));
}

#[tokio::test]
async fn the_reorder_fault_is_counted_exactly() {
    let config = PubsubConfig { fault_reorder: Some(0.1), ..PubsubConfig::default() };
    let (tally, relay) = faulty_delivery(config, 200).await;
    assert!(tally.reordered >= 15, "about one in ten: {tally:?}");
    assert_eq!(relay.reordered, tally.reordered);
    assert_eq!((tally.duplicated, relay.duplicated), (0, 0));
}

#[tokio::test]
async fn duplicate_and_reorder_together_are_each_counted_exactly() {
    let config =
        PubsubConfig { fault_duplicate: Some(0.1), fault_reorder: Some(0.05), ..PubsubConfig::default() };
    let (tally, relay) = faulty_delivery(config, 400).await;
    assert_eq!((tally.duplicated, relay.duplicated), (40, 40));
    assert!(tally.reordered > 0);
    assert_eq!(relay.reordered, tally.reordered);
}

#[tokio::test]
async fn metrics_agree_with_what_happened() {
    let (relay, _token) = start(RelayConfig::default()).await;
    let (mut a, mut b, mut publisher) = (open(&relay).await, open(&relay).await, open(&relay).await);
    a.subscribe("m", None).await;
    b.subscribe("m", None).await;
    for i in 1..=3 {
        publisher.publish("m", json!(i)).await;
    }
    for i in 4..=5 {
        assert_eq!(post(&relay, "/publish/m", &i.to_string()).await.0, 200);
    }
    let mut late = open(&relay).await;
    late.subscribe("m", Some(0)).await;
    assert_eq!(late.seqs("m", 5).await, [1, 2, 3, 4, 5]);
    for sub in [&mut a, &mut b] {
        assert_eq!(sub.seqs("m", 5).await, [1, 2, 3, 4, 5]);
    }
    settle(&relay, |s| s.delivered == 10).await;
    let m = metrics(&relay).await;
    let want = [
        ("relay_pubsub_connections", 4.0),
        ("relay_pubsub_channels", 5.0), // four conn/<id> and m
        ("relay_pubsub_subscriptions", 7.0),
        ("relay_pubsub_published_total", 5.0),
        ("relay_pubsub_delivered_total", 10.0),
        ("relay_pubsub_replayed_total", 5.0),
        ("relay_pubsub_slow_closed_total", 0.0),
        ("relay_pubsub_http_published_total", 2.0),
        ("relay_pubsub_duplicated_total", 0.0),
        ("relay_pubsub_reordered_total", 0.0),
        ("relay_connections_active", 4.0),
    ];
    for (name, value) in want {
        assert_eq!(m.get(name), Some(&value), "{name}");
    }
    let (_, text) = http(&relay, b"GET /metrics HTTP/1.1\r\n\r\n").await;
    for (name, _) in want {
        assert!(
            text.contains(&format!("# HELP {name} ")) && text.contains(&format!("# TYPE {name} ")),
            "{name}"
        );
    }
    drop(late);
    let s = settle(&relay, |s| s.connections == 3).await;
    assert_eq!((s.channels, s.subscriptions), (4, 5));
}

/// The `relay` binary of this package on a free port, killed when dropped.
struct RelayProcess {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

impl RelayProcess {
    async fn start(args: &[&str]) -> RelayProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_relay"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = timeout(STEP, lines.next_line()).await.unwrap().unwrap().expect("ready line");
        let url = line.strip_prefix(stampede_relay::config::READY_PREFIX).expect(&line);
        let addr = url.trim_start_matches("ws://").trim_end_matches("/ws").parse().unwrap();
        RelayProcess { child, addr }
    }

    /// A metric from its /metrics.
    async fn metric(&self, name: &str) -> f64 {
        let mut tcp = TcpStream::connect(self.addr).await.unwrap();
        tcp.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let mut text = String::new();
        timeout(STEP, tcp.read_to_string(&mut text)).await.unwrap().unwrap();
        parse_metrics(&text)[name]
    }

    async fn open(&self, recv_buffer: Option<u32>) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(size) = recv_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let tcp = socket.connect(self.addr).await.unwrap();
        let url = format!("ws://{}/pubsub", self.addr);
        let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        assert_eq!(next(&mut ws).await["op"], "connection_established");
        ws
    }
}

#[tokio::test]
async fn a_slow_subscriber_is_closed_while_the_others_get_everything_in_bounded_memory() {
    const MESSAGES: u64 = 1600;
    const PAYLOAD: usize = 64 << 10; // 1600 x 64 KiB: 105 MB published
    let relay = RelayProcess::start(&["--history-bytes", "8388608"]).await;
    let baseline = relay.metric("process_resident_memory_bytes").await;

    let subscribe = async |ws: &mut Client| {
        send(ws, json!({"op": "subscribe", "channel": "flood"})).await;
        assert_eq!(next(ws).await["op"], "subscribed");
    };
    // Never reads after subscribing, through a 4 KiB receive window.
    let mut slow = relay.open(Some(4096)).await;
    subscribe(&mut slow).await;
    let mut fast = relay.open(None).await;
    subscribe(&mut fast).await;
    let received = Arc::new(AtomicU64::new(0));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            for want in 1..=MESSAGES {
                let frame = next(&mut fast).await;
                assert_eq!((&frame["op"], frame["seq"].as_u64()), (&json!("message"), Some(want)));
                received.store(want, Ordering::Relaxed);
            }
        }
    });

    let mut publisher = relay.open(None).await;
    let data = "x".repeat(PAYLOAD);
    let mut peak = baseline;
    let mut slow_seen = None;
    for i in 1..=MESSAGES {
        // The fast subscriber stays within 32 messages (2 MiB) of the
        // publisher: it is fast, its outbox never fills.
        while i > received.load(Ordering::Relaxed) + 32 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publisher
            .send(Message::text(json!({"op": "publish", "channel": "flood", "data": data}).to_string()))
            .await
            .unwrap();
        if i % 100 == 0 {
            peak = peak.max(relay.metric("process_resident_memory_bytes").await);
            if slow_seen.is_none() && relay.metric("relay_pubsub_slow_closed_total").await == 1.0 {
                slow_seen = Some(i);
                break;
            }
        }
    }
    // Detected: the slow one reads now and finds its messages, in order,
    // then the close (the relay waits 2 s for it to read that far).
    let at = slow_seen.expect("the slow subscriber was closed while publishing");
    let mut seqs = Vec::new();
    let close = loop {
        match recv(&mut slow).await {
            Message::Text(t) => {
                seqs.push(serde_json::from_str::<Value>(t.as_str()).unwrap()["seq"].as_u64().unwrap())
            }
            Message::Close(frame) => break frame,
            other => panic!("{other:?}"),
        }
    };
    let close = close.expect("a close frame");
    assert_eq!((close.code, close.reason.as_str()), (CloseCode::Policy, "slow consumer"));
    assert!(!seqs.is_empty() && seqs == (1..=seqs.len() as u64).collect::<Vec<_>>(), "a prefix, in order");
    assert!(seqs.len() < 200, "closed early: {} messages reached it", seqs.len());

    // Publishing goes on for the others.
    for i in at + 1..=MESSAGES {
        while i > received.load(Ordering::Relaxed) + 32 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        publisher
            .send(Message::text(json!({"op": "publish", "channel": "flood", "data": data}).to_string()))
            .await
            .unwrap();
        if i % 100 == 0 {
            peak = peak.max(relay.metric("process_resident_memory_bytes").await);
        }
    }
    timeout(Duration::from_secs(30), reader).await.expect("the fast subscriber got everything").unwrap();
    peak = peak.max(relay.metric("process_resident_memory_bytes").await);
    assert_eq!(relay.metric("relay_pubsub_slow_closed_total").await, 1.0);
    assert_eq!(relay.metric("relay_pubsub_published_total").await, MESSAGES as f64);
    let grown = (peak - baseline) / 1e6;
    let published = (MESSAGES as usize * PAYLOAD) as f64 / 1e6;
    eprintln!(
        "relay RSS {:.1} MB at start, peak {:.1} MB; {published:.0} MB published; the slow one got {} \
         messages, closed by message {at}",
        baseline / 1e6,
        peak / 1e6,
        seqs.len()
    );
    assert!(grown < 40.0, "RSS grew {grown:.1} MB while {published:.0} MB were published");
    drop(relay.child);
}

#[tokio::test]
async fn a_third_party_client_receives_http_publishes() {
    const N: u64 = 50;
    let (relay, _token) = start(RelayConfig::default()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/subscribe.py");
    let mut child = tokio::process::Command::new("python3")
        .args([script, &relay.pubsub_url(), "third/party", &N.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect(
            "this test needs python3 with the websockets package (python3 -m pip install --user websockets)",
        );
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
    let ready = ready
        .expect("subscribe.py printed nothing: is the websockets package installed? (its error is above)");
    assert!(ready.starts_with("ready "), "{ready}");
    for n in 1..=N {
        let (status, body) = post(&relay, "/publish/third%2Fparty", &format!(r#"{{"n":{n}}}"#)).await;
        assert_eq!((status, body), (200, format!(r#"{{"seq":{n},"delivered":1}}"#)));
    }
    let last = timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(last.as_deref(), Some(format!("received {N} in order").as_str()));
    assert!(child.wait().await.unwrap().success());
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: RelayArgs,
}

#[test]
fn channel_flags_parse_and_round_trip() {
    assert_eq!(Cli::try_parse_from(["relay"]).unwrap().args.config().pubsub, PubsubConfig::default());
    let config = Cli::try_parse_from([
        "relay",
        "--history-messages",
        "0",
        "--history-age-s",
        "0.5",
        "--history-bytes",
        "1000",
        "--max-channels",
        "7",
        "--fault-duplicate",
        "0.25",
        "--fault-reorder",
        "0.1",
    ])
    .unwrap()
    .args
    .config()
    .pubsub;
    assert_eq!(
        config,
        PubsubConfig {
            history_messages: 0,
            history_age: Duration::from_millis(500),
            history_bytes: 1000,
            max_channels: 7,
            fault_duplicate: Some(0.25),
            fault_reorder: Some(0.1),
        }
    );
    let mut argv = vec!["relay".to_string()];
    argv.extend(config.to_args());
    assert_eq!(Cli::try_parse_from(argv).unwrap().args.config().pubsub, config, "to_args round-trips");
    for (flag, value, says) in [
        ("--fault-duplicate", "0", "--fault-duplicate takes a FRACTION of deliveries above 0 and at most 1"),
        ("--fault-reorder", "1.5", "--fault-reorder takes a FRACTION"),
        ("--history-age-s", "0", "--history-age-s takes seconds above 0"),
        ("--max-channels", "0", "--max-channels takes a number of channels, at least 1"),
    ] {
        let err =
            Cli::try_parse_from(["relay".to_string(), format!("{flag}={value}")]).unwrap_err().to_string();
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
}
