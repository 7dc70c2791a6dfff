//! One accepted TCP connection, up to the point it becomes a WebSocket.
//!
//! Owns the TLS handshake (for `wss://`), the bounded head read, the plain-HTTP answers (`/health`,
//! `/metrics`, `POST /publish/<channel>`, errors) and the `101` handshake, so
//! the accept loop stays a loop and the echo and channel sessions only ever
//! see an upgraded stream.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::sync::CancellationToken;

use crate::http::{self, Endpoint, MAX_HEAD, Parsed, Route};
use crate::server::Shared;
use crate::tls::Stream;
use crate::{echo, ops, pubsub};

/// A client that cannot send a request head in this long is dropped, so
/// idle sockets cannot pin tasks forever.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Likewise for a TLS handshake.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// And for the body of a publish.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// After answering plain HTTP we half-close and drain for at most this long:
/// closing with unread input would send RST and could destroy the response
/// before the client reads it.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;

const TEXT: &str = "text/plain; charset=utf-8";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The demo app browser scenarios drive (relay/src/app.html).
const APP: &str = include_str!("app.html");
const JSON: &str = "application/json";

/// Why the head could not be routed.
enum HeadOutcome {
    Complete {
        route: Route,
        buf: Vec<u8>,
        head_len: usize,
    },
    TooLarge,
    /// EOF before a full head; nothing to answer.
    Eof,
}

/// Serves one connection to completion. Errors only end the connection;
/// they are routine under load (resets, timeouts) and logged at debug.
pub(crate) async fn serve(tcp: TcpStream, shared: Arc<Shared>, shutdown: CancellationToken) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("set_nodelay failed: {e}");
    }
    let mut stream = match &shared.tls {
        None => Stream::Plain(tcp),
        // Here, in the connection's own task and bounded in time, so a
        // client that stalls its handshake never holds up the accept loop.
        Some(acceptor) => {
            let accepted = tokio::select! {
                r = tokio::time::timeout(TLS_TIMEOUT, acceptor.accept(tcp)) => r,
                () = shutdown.cancelled() => return,
            };
            match accepted {
                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!("TLS handshake timed out"),
            }
        }
    };
    let outcome = tokio::select! {
        r = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)) => r,
        () = shutdown.cancelled() => return,
    };
    let (route, mut buf, head_len) = match outcome {
        Ok(Ok(HeadOutcome::Complete { route, buf, head_len })) => (route, buf, head_len),
        Ok(Ok(HeadOutcome::TooLarge)) => {
            let body = "request head too large\n";
            let resp = http::response("431 Request Header Fields Too Large", TEXT, "", body);
            return respond(stream, &resp, &shutdown).await;
        }
        Ok(Ok(HeadOutcome::Eof)) => return,
        Ok(Err(e)) => return tracing::debug!("reading request head: {e}"),
        Err(_) => return tracing::debug!("request head timed out"),
    };

    let resp = match route {
        Route::Upgrade { token, .. } | Route::Publish { token, .. }
            if let Some(secret) = &shared.jwt_secret
                && let Err(why) = crate::jwt::verify(token.as_deref(), secret, unix_s()) =>
        {
            tracing::debug!("request refused: {why}");
            http::response("401 Unauthorized", TEXT, "WWW-Authenticate: Bearer\r\n", &format!("{why}\n"))
        }
        Route::Upgrade { key, endpoint, .. } => {
            // Only the leftover bytes (an early first frame) go on; the head
            // buffer is released before the long-lived session starts.
            let leftover = if head_len >= buf.len() {
                Vec::new()
            } else {
                buf.drain(..head_len);
                buf.shrink_to_fit();
                buf
            };
            return upgrade(stream, &key, endpoint, leftover, &shared, &shutdown).await;
        }
        Route::Publish { publish: request, .. } => {
            buf.drain(..head_len.min(buf.len()));
            return publish(stream, request, buf, &shared, &shutdown).await;
        }
        Route::Health => http::response("200 OK", TEXT, "", "ok\n"),
        Route::Metrics => {
            http::response("200 OK", METRICS, "", &shared.stats.render_metrics(shared.process_figures))
        }
        Route::App => {
            http::response("200 OK", "text/html; charset=utf-8", "Cache-Control: no-store\r\n", APP)
        }
        Route::NotFound => http::response("404 Not Found", TEXT, "", "not found\n"),
        Route::MethodNotAllowed(allow) => http::response(
            "405 Method Not Allowed",
            TEXT,
            &format!("Allow: {allow}\r\n"),
            "method not allowed\n",
        ),
        Route::LengthRequired => {
            http::response("411 Length Required", TEXT, "", "a publish needs Content-Length\n")
        }
        Route::PayloadTooLarge => http::response(
            "413 Payload Too Large",
            TEXT,
            "",
            &format!("a publish body is at most {} bytes\n", http::MAX_PUBLISH_BODY),
        ),
        Route::UpgradeRequired => http::response(
            "426 Upgrade Required",
            TEXT,
            "Sec-WebSocket-Version: 13\r\n",
            "only WebSocket version 13 is supported\n",
        ),
        Route::BadRequest(why) => http::response("400 Bad Request", TEXT, "", &format!("{why}\n")),
    };
    drop(buf);
    respond(stream, &resp, &shutdown).await;
}

/// Reads until the head is complete, growing the buffer only as needed so
/// a typical 200-byte upgrade does not cost a full 8 KiB.
async fn read_head(stream: &mut Stream) -> io::Result<HeadOutcome> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve_exact(buf.capacity().min(MAX_HEAD - buf.len()));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(HeadOutcome::Eof);
        }
        match http::parse(&buf) {
            Parsed::Complete { route, head_len } => {
                return Ok(HeadOutcome::Complete { route, buf, head_len });
            }
            Parsed::Partial if buf.len() >= MAX_HEAD => return Ok(HeadOutcome::TooLarge),
            Parsed::Partial => {}
        }
    }
}

async fn upgrade(
    mut stream: Stream,
    key: &str,
    endpoint: Endpoint,
    leftover: Vec<u8>,
    shared: &Shared,
    shutdown: &CancellationToken,
) {
    let Some(_guard) = shared.stats.try_open(shared.max_connections) else {
        let resp = http::response(
            "503 Service Unavailable",
            TEXT,
            "Retry-After: 1\r\n",
            "connection limit reached\n",
        );
        return respond(stream, &resp, shutdown).await;
    };
    let accept = derive_accept_key(key.as_bytes());
    if let Err(e) = stream.write_all(http::switching_protocols(&accept).as_bytes()).await {
        return tracing::debug!("writing 101: {e}");
    }
    let ws =
        WebSocketStream::from_partially_read(stream, leftover, Role::Server, Some(shared.ws_config)).await;
    match endpoint {
        Endpoint::Echo => echo::run(ws, shared, shutdown).await,
        Endpoint::Pubsub => pubsub::run(ws, shared, shutdown).await,
    }
}

/// `POST /publish/<channel>`: reads the body (`body` holds what came with
/// the head), publishes it if it is one JSON value, and answers
/// `{"seq":S,"delivered":K}`.
async fn publish(
    mut stream: Stream,
    request: http::Publish,
    mut body: Vec<u8>,
    shared: &Shared,
    shutdown: &CancellationToken,
) {
    let length = request.length;
    if body.len() < length {
        let read = async {
            if request.expect_continue {
                stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            body.reserve_exact(length - body.len());
            while body.len() < length {
                if stream.read_buf(&mut body).await? == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
            }
            io::Result::Ok(())
        };
        let read = tokio::select! {
            r = tokio::time::timeout(BODY_TIMEOUT, read) => r,
            () = shutdown.cancelled() => return,
        };
        match read {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return tracing::debug!("reading a publish body: {e}"),
            Err(_) => return tracing::debug!("a publish body timed out"),
        }
    }
    // Bytes past the body (a pipelined request) are not served.
    body.truncate(length);
    let data = std::str::from_utf8(&body).ok().and_then(|text| serde_json::from_str::<&RawValue>(text).ok());
    let resp = match data {
        None => http::response("400 Bad Request", TEXT, "", "the body is not one JSON value\n"),
        Some(data) => match shared.hub.publish(None, &request.channel, data.get()) {
            Ok((seq, delivered)) => {
                shared.stats.pubsub.http_published.fetch_add(1, Ordering::Relaxed);
                http::response("200 OK", JSON, "", &ops::http_published(seq, delivered))
            }
            Err(refusal) => {
                http::response("503 Service Unavailable", TEXT, "", &format!("{}\n", refusal.reason()))
            }
        },
    };
    drop(body);
    respond(stream, &resp, shutdown).await;
}

/// Writes a plain response, then half-closes and drains briefly (see
/// [`LINGER`]).
async fn respond(mut stream: Stream, resp: &str, shutdown: &CancellationToken) {
    let result = async {
        stream.write_all(resp.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match stream.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    tokio::select! {
        r = tokio::time::timeout(LINGER, result) => {
            if let Ok(Err(e)) = r {
                tracing::debug!("plain response: {e}");
            }
        }
        () = shutdown.cancelled() => {}
    }
}

fn unix_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
