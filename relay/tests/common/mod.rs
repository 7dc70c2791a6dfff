//! Shared by the relay's test binaries: start a relay on a free port, and a
//! real tokio-tungstenite client to talk to it.

#![allow(dead_code)]

use std::time::Duration;

use futures_util::StreamExt;
use stampede_relay::{Relay, RelayConfig};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Longest wait for one step of a test.
pub const STEP: Duration = Duration::from_secs(5);

/// A client connection.
pub type Client = WebSocketStream<TcpStream>;

/// A relay on 127.0.0.1:0 and the token that stops it.
pub async fn start(config: RelayConfig) -> (Relay, CancellationToken) {
    let token = CancellationToken::new();
    let relay = Relay::start(config, token.clone()).await.expect("relay starts");
    (relay, token)
}

/// Opens a WebSocket to the relay's /ws.
pub async fn connect(relay: &Relay) -> Client {
    let tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    let (ws, resp) = tokio_tungstenite::client_async(relay.ws_url(), tcp).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// The next message, within [`STEP`].
pub async fn recv(ws: &mut Client) -> Message {
    timeout(STEP, ws.next()).await.expect("timely").expect("open").expect("ok")
}

/// An upgrade request for `/ws` with WebSocket version `version`.
pub fn upgrade_request(version: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

/// Upgrades a raw socket to `addr` and reads the 101 answer byte by byte,
/// leaving the socket at the first WebSocket byte.
pub async fn raw_upgraded(addr: std::net::SocketAddr) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(upgrade_request("13").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = timeout(STEP, tcp.read(&mut byte)).await.unwrap().unwrap();
        assert!(n > 0, "closed during the upgrade: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    tcp
}
