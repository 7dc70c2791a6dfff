//! A page's own WebSocket, seen through the Network domain.

use std::collections::HashSet;
use std::time::Duration;

use playwright_driver::{LaunchOptions, WebSocketEvent};
use serde_json::json;

use crate::support;

const MESSAGES: [&str; 3] = ["one", "two", "three"];

fn page(echo_port: u16) -> String {
    format!(
        r#"<!doctype html><title>ws</title><script>
  window.received = 0;
  window.ws = new WebSocket('ws://127.0.0.1:{echo_port}/echo');
  ws.onopen = () => {{ for (const m of {messages}) ws.send(m); }};
  ws.onmessage = () => {{
    if (++window.received === 3) document.body.append(Object.assign(document.createElement('div'), {{id: 'echoed'}}));
  }};
</script>"#,
        messages = serde_json::to_string(&MESSAGES).unwrap()
    )
}

#[tokio::test]
async fn a_pages_websocket_yields_created_handshake_frames_and_closed() {
    let echo = support::echo().await;
    let site = support::http(vec![("/ws", page(echo.addr.port()))]).await;
    let Some(browser) = support::launch(LaunchOptions::default()).await else { return };
    let page = browser.new_page().await.unwrap();
    let mut events = page.websocket_events().await.unwrap();

    page.goto(&site.url("/ws")).await.unwrap();
    page.wait_for_selector("#echoed", Duration::from_secs(10)).await.unwrap();
    let closed = page.evaluate("new Promise((done) => { ws.onclose = () => done(true); ws.close(); })");
    assert_eq!(closed.await.unwrap(), json!(true));

    let (mut created, mut handshakes, mut sent, mut received, mut closes) = (0, 0, Vec::new(), Vec::new(), 0);
    let mut sockets = HashSet::new();
    while closes == 0 {
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("webSocketClosed arrives")
            .expect("page still open");
        match event {
            WebSocketEvent::Created { request_id, url } => {
                assert!(url.ends_with("/echo"), "{url}");
                sockets.insert(request_id);
                created += 1;
            }
            WebSocketEvent::HandshakeResponse { request_id, status, .. } => {
                assert_eq!(status, 101);
                sockets.insert(request_id);
                handshakes += 1;
            }
            WebSocketEvent::FrameSent(f) if f.opcode == 1 => {
                sockets.insert(f.request_id);
                sent.push(f.payload);
            }
            WebSocketEvent::FrameReceived(f) if f.opcode == 1 => {
                sockets.insert(f.request_id);
                received.push(f.payload);
            }
            WebSocketEvent::Closed { request_id, .. } => {
                sockets.insert(request_id);
                closes += 1;
            }
            other => println!("other WebSocket event: {other:?}"),
        }
    }
    println!(
        "created {created}, handshakes {handshakes}, sent {sent:?}, received {received:?}, closed {closes}"
    );
    assert_eq!((created, handshakes, closes), (1, 1, 1));
    assert_eq!(sent, MESSAGES);
    assert_eq!(received, MESSAGES);
    assert_eq!(sockets.len(), 1, "all events name the same socket");
    assert_eq!(events.dropped(), 0);
    browser.close().await.unwrap();
}
