//! What a connection sends to open, checked by real servers on loopback:
//! the bundled relay requiring a JWT, and a server written here that
//! records the request head and picks (or refuses) a subprotocol.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use stampede_model::Template;
use stampede_model::spec::{ClaimValue, ConnectSpec, HandshakeSpec, JwtAlg, JwtPlacement, JwtSpec, Secret};
use stampede_relay::jwt::JwtSecret;
use stampede_relay::{Relay, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_util::sync::CancellationToken;

mod common;

use common::{drive, errors, totals};

fn jwt(secret: &str, send_as: JwtPlacement) -> ConnectSpec {
    ConnectSpec {
        jwt: Some(JwtSpec {
            alg: JwtAlg::HS256,
            key: Secret::new(secret),
            claims: vec![("sub".into(), ClaimValue::Text(Template::parse("user-{{conn}}").unwrap()))],
            expires_in_s: 60,
            send_as,
        }),
        ..Default::default()
    }
}

async fn relay_requiring(secret: &str) -> (Relay, CancellationToken) {
    let shutdown = CancellationToken::new();
    let config = RelayConfig { jwt_secret: Some(JwtSecret::new(secret.into())), ..Default::default() };
    (Relay::start(config, shutdown.clone()).await.unwrap(), shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_secret_opens_every_connection_and_a_wrong_one_none() {
    let (relay, shutdown) = relay_requiring("the-right-secret").await;
    for send_as in [JwtPlacement::Bearer, JwtPlacement::Query("access_token".into())] {
        let mut assign = common::assign(&relay.ws_url(), 100, 64, false);
        assign.connect_spec_json = jwt("the-right-secret", send_as.clone()).to_json();
        let snaps = drive(&assign, 20, Duration::from_millis(800), async || {}).await;
        let t = totals(&snaps);
        assert_eq!((t.connections_opened, t.connections_failed), (20, 0), "{send_as:?}");
        assert!(t.messages_received > 0 && t.messages_received == t.messages_sent, "{t:?}");

        assign.connect_spec_json = jwt("a-wrong-secret", send_as.clone()).to_json();
        let snaps = drive(&assign, 20, Duration::from_millis(800), async || {}).await;
        let t = totals(&snaps);
        assert_eq!((t.connections_opened, t.connections_failed), (0, 20), "{send_as:?}");
        assert_eq!(errors(&snaps, "http_401"), 20);
    }
    shutdown.cancel();
    relay.wait().await;
}

/// A server that records each request head, answers 101 picking
/// `protocol` (if any), then holds the connection open.
async fn recording_server(protocol: Option<&'static str>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed?v=1", listener.local_addr().unwrap());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap_or_default()
                .trim()
                .to_string();
            let picked = protocol.map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n")).unwrap_or_default();
            let answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n{picked}\r\n",
                derive_accept_key(key.as_bytes())
            );
            seen.lock().unwrap().push(head);
            let _ = s.write_all(answer.as_bytes()).await;
            held.push(s);
        }
    });
    (url, heads)
}

fn handshake() -> ConnectSpec {
    let t = |s: &str| Template::parse(s).unwrap();
    ConnectSpec {
        handshake: HandshakeSpec {
            headers: vec![("X-Api-Key".into(), t("k-{{worker}}")), ("X-Conn".into(), t("c{{conn}}"))],
            origin: Some(t("https://app.example")),
            subprotocols: vec!["chat.v2".into(), "chat.v1".into()],
            query: vec![("user".into(), t("u{{conn}}"))],
        },
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_origin_query_and_subprotocols_reach_the_server() {
    let (url, heads) = recording_server(Some("chat.v1")).await;
    let mut assign = common::assign(&url, 0, 64, false);
    assign.connect_spec_json = handshake().to_json();
    let snaps = drive(&assign, 3, Duration::from_millis(500), async || {}).await;
    assert_eq!(totals(&snaps).connections_opened, 3);
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3);
    let mut conns: Vec<String> = Vec::new();
    for head in &heads {
        assert!(head.contains("X-Api-Key: k-test-worker\r\n"), "{head}");
        assert!(head.contains("Origin: https://app.example\r\n"), "{head}");
        assert!(head.contains("Sec-WebSocket-Protocol: chat.v2, chat.v1\r\n"), "{head}");
        let conn = head.lines().find_map(|l| l.strip_prefix("X-Conn: ")).unwrap().to_string();
        assert!(head.starts_with(&format!("GET /feed?v=1&user=u{} HTTP/1.1", &conn[1..])), "{head}");
        conns.push(conn);
    }
    conns.sort();
    assert_eq!(conns, ["c0", "c1", "c2"], "one rendering per connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_ignores_or_twists_the_offered_subprotocols_fails_every_attempt() {
    for (picked, cause) in [(None, "subprotocol_missing"), (Some("chat.v9"), "subprotocol_mismatch")] {
        let (url, _) = recording_server(picked).await;
        let mut assign = common::assign(&url, 0, 64, false);
        assign.connect_spec_json = handshake().to_json();
        let snaps = drive(&assign, 4, Duration::from_millis(500), async || {}).await;
        let t = totals(&snaps);
        assert_eq!((t.connections_opened, t.connections_failed), (0, 4), "{picked:?}");
        assert_eq!(errors(&snaps, cause), 4, "{picked:?}");
    }
}

/// What a controller sends is an input like any other: a spec that is not
/// JSON, names an unknown field, smuggles a header line or carries an
/// unusable key fails the assignment with a message, never a panic or a
/// request with an injected header.
#[tokio::test]
async fn a_hostile_connection_spec_fails_the_assignment_with_a_reason() {
    use stampede_worker::engine::Engine;
    let big = format!("{{\"handshake\":{{\"headers\":[[\"X\",\"{}\"]]}}}}", "a".repeat(1 << 20));
    for (json, says) in [
        ("{not json", "connection spec"),
        ("{\"bogus\":1}", "unknown field"),
        (r#"{"handshake":{"headers":[["X-A","ok\r\nEvil: 1"]]}}"#, "line break"),
        (r#"{"handshake":{"headers":[["Host","x"]]}}"#, "handshake itself"),
        (r#"{"handshake":{"origin":"{{nope}}"}}"#, "unknown template variable"),
        (r#"{"jwt":{"alg":"RS256","key":"junk","claims":[],"expires_in_s":1,"send_as":"Bearer"}}"#, "PEM"),
        (r#"{"tls":{"ca_pem":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}}"#, "TLS"),
    ] {
        let mut assign = common::assign("wss://127.0.0.1:9/ws", 100, 64, false);
        assign.connect_spec_json = json.to_string();
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let err =
            Engine::start(&assign, "w", &[], tx).await.err().unwrap_or_else(|| panic!("{json} was accepted"));
        assert!(err.to_string().contains(says), "{json}: {err}");
    }
    // A megabyte of header value is the controller's business (it is
    // bounded by the gRPC message limit): it is taken, not a crash.
    let mut assign = common::assign("ws://127.0.0.1:9/ws", 100, 64, false);
    assign.connect_spec_json = big;
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let engine = Engine::start(&assign, "w", &[], tx).await.expect("a large but valid spec");
    engine.stop();
}
