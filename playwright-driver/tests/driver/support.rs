//! What the tests share: launching or skipping, a tiny HTTP server, a
//! WebSocket echo server, PNG header decoding.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use playwright_driver::{Browser, LaunchOptions, find_chromium};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Launches Chromium, or prints why not and returns `None` (the test then
/// passes) unless STAMPEDE_REQUIRE_CHROMIUM=1 demands it.
pub async fn launch(options: LaunchOptions) -> Option<Browser> {
    if let Err(e) = find_chromium(options.executable.as_deref()) {
        if std::env::var("STAMPEDE_REQUIRE_CHROMIUM").as_deref() == Ok("1") {
            panic!("STAMPEDE_REQUIRE_CHROMIUM=1, but {e}");
        }
        println!("skipped: no chromium ({e})");
        return None;
    }
    Some(Browser::launch(options).await.expect("chromium launches"))
}

/// A server task that stops with the test.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// Serves `pages` (path without query -> HTML) over HTTP/1.1, one request
/// per connection; anything else is a 404.
pub async fn http(pages: Vec<(&'static str, String)>) -> Server {
    let pages: Arc<HashMap<&str, String>> = Arc::new(pages.into_iter().collect());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let pages = pages.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split_whitespace().nth(1).unwrap_or("/");
                let path = target.split('?').next().unwrap_or("/");
                let (status, body) = match pages.get(path) {
                    Some(body) => ("200 OK", body.as_str()),
                    None => ("404 Not Found", "not found"),
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Server { addr, task }
}

/// A WebSocket server echoing every text and binary message.
pub async fn echo() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Server { addr, task }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
pub fn png_size(png: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 24 || &png[..8] != SIGNATURE || &png[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&png[16..20]), be(&png[20..24])))
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}
