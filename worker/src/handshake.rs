//! The client side of the WebSocket opening handshake (RFC 6455 section 4.1),
//! done by hand on the byte stream; the connection then speaks frames
//! through our own codec ([`crate::websocket`]), which keeps no buffer while
//! the connection is idle.

use std::time::Duration;

use crate::websocket::WebSocket;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::opening::Opening;
use crate::target::Target;
use stampede_model::Cause;

/// Largest response head we accept.
const MAX_HEAD: usize = 8 * 1024;

/// A byte stream a WebSocket can run over: TCP today, TLS over TCP next.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for T {}

/// Sends the upgrade request with `opening`'s extras, checks the answer
/// and sends `opening`'s first message; on success the stream speaks
/// WebSocket.
pub async fn upgrade<T: Transport>(
    mut tcp: T,
    target: &Target,
    key: &str,
    opening: &Opening,
    config: WebSocketConfig,
) -> Result<(WebSocket<T>, Option<String>), Cause> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: stampede\r\n{}\r\n",
        opening.request_target, target.url.authority, opening.headers
    );
    tcp.write_all(request.as_bytes()).await.map_err(|e| Cause::from_io(&e))?;

    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    let end = loop {
        let n = tcp.read(&mut chunk).await.map_err(|e| Cause::from_io(&e))?;
        if n == 0 {
            return Err(Cause::Eof);
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        if let Some(pos) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break from + pos + 4;
        }
        if head.len() > MAX_HEAD {
            return Err(Cause::BadHandshake);
        }
    };
    let picked = check_response(&head[..end], key, &opening.protocols)?;
    let leftover = head[end..].to_vec();
    let mut ws = WebSocket::new(tcp, leftover, &config);
    if let Some(first) = &opening.first_message {
        ws.send(Message::text(first.as_str())).await.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Io(e) => Cause::from_io(&e),
            _ => Cause::Protocol,
        })?;
    }
    Ok((ws, picked))
}

/// Validates a response head per RFC 6455 section 4.1, steps 1-4 of the
/// client's checks, and step 6: a subprotocol the server picks must be one
/// we offered (and when we offered some, we insist it picks one: a server
/// that ignores the offer would speak something else).
fn check_response(head: &[u8], key: &str, offered: &[String]) -> Result<Option<String>, Cause> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Cause::BadHandshake),
    }
    let code = response.code.unwrap_or(0);
    if code != 101 {
        return Err(Cause::HttpStatus(code));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).into_owned())
    };
    let upgrade_ok = header("upgrade").is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    let connection_ok = header("connection")
        .is_some_and(|v| v.split(',').any(|token| token.trim().eq_ignore_ascii_case("upgrade")));
    let accept_ok =
        header("sec-websocket-accept").is_some_and(|v| v.trim() == derive_accept_key(key.as_bytes()));
    if !(upgrade_ok && connection_ok && accept_ok) {
        return Err(Cause::BadHandshake);
    }
    match header("sec-websocket-protocol") {
        None if offered.is_empty() => Ok(None),
        None => Err(Cause::SubprotocolMissing),
        Some(picked) => match offered.iter().find(|p| **p == picked.trim()) {
            Some(p) => Ok(Some(p.clone())),
            None => Err(Cause::SubprotocolMismatch),
        },
    }
}

/// Connects TCP (from `source` if given) within `timeout`.
pub async fn connect_tcp(
    target: &Target,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, Cause> {
    let connect = async {
        let stream = match source {
            None => TcpStream::connect(target.addr).await,
            Some(ip) => {
                let socket = if target.addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()
                } else {
                    tokio::net::TcpSocket::new_v6()
                }
                .map_err(|e| Cause::from_io(&e))?;
                bind_address_no_port(&socket);
                socket.bind(std::net::SocketAddr::new(ip, 0)).map_err(|e| Cause::from_io(&e))?;
                socket.connect(target.addr).await
            }
        };
        let stream = stream.map_err(|e| Cause::from_io(&e))?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    };
    tokio::time::timeout(timeout, connect).await.map_err(|_| Cause::Timeout)?
}

/// Lets the kernel choose the source port at connect time, from the whole
/// 4-tuple, instead of at bind time. Without it, `bind(ip:0)` searches for a
/// port unused on `ip` in a synchronous syscall that grows slow with tens of
/// thousands of sockets, and caps each source address at one port range for
/// all targets together.
fn bind_address_no_port(socket: &tokio::net::TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `one` for the given length; the fd is open.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accepts_the_rfc_example() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(check_response(head, KEY, &[]), Ok(None));
    }

    #[test]
    fn names_the_status_of_a_refused_upgrade() {
        let head = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(check_response(head, KEY, &[]), Err(Cause::HttpStatus(503)));
    }

    #[test]
    fn rejects_a_wrong_accept_key() {
        let head =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
                     Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n";
        assert_eq!(check_response(head, KEY, &[]), Err(Cause::BadHandshake));
    }

    #[test]
    fn the_picked_subprotocol_must_be_one_offered() {
        let with = |protocol: &str| {
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{protocol}\r\n"
            )
        };
        let offered = ["v2".to_string(), "v1".to_string()];
        assert_eq!(
            check_response(with("Sec-WebSocket-Protocol: v1\r\n").as_bytes(), KEY, &offered),
            Ok(Some("v1".into()))
        );
        let missing = check_response(with("").as_bytes(), KEY, &offered);
        assert_eq!(missing, Err(Cause::SubprotocolMissing));
        let other = check_response(with("Sec-WebSocket-Protocol: v3\r\n").as_bytes(), KEY, &offered);
        assert_eq!(other, Err(Cause::SubprotocolMismatch));
        let unasked = check_response(with("Sec-WebSocket-Protocol: v1\r\n").as_bytes(), KEY, &[]);
        assert_eq!(unasked, Err(Cause::SubprotocolMismatch));
    }
}
