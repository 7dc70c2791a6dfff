//! The codec against a server written byte by byte on a real loopback
//! socket: what a well-behaved server sends, and the worst a broken or
//! hostile one can.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error, Message};

use super::WebSocket;

/// A connected pair: our client codec and the raw server socket.
async fn pair(max: usize) -> (WebSocket<TcpStream>, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let mut config = WebSocketConfig::default();
    config.max_frame_size = Some(max);
    config.max_message_size = Some(max);
    (WebSocket::new(client, Vec::new(), &config), server)
}

/// An unmasked server frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xFFFF => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// Reads one masked client frame: (first byte, mask, unmasked payload).
async fn read_client_frame(server: &mut TcpStream) -> (u8, [u8; 4], Vec<u8>) {
    let mut head = [0u8; 2];
    server.read_exact(&mut head).await.unwrap();
    assert_eq!(head[1] & 0x80, 0x80, "every client frame is masked");
    let len = match head[1] & 0x7F {
        126 => u64::from(server.read_u16().await.unwrap()),
        127 => server.read_u64().await.unwrap(),
        n => u64::from(n),
    };
    let mut mask = [0u8; 4];
    server.read_exact(&mut mask).await.unwrap();
    let mut payload = vec![0u8; len as usize];
    server.read_exact(&mut payload).await.unwrap();
    payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
    (head[0], mask, payload)
}

async fn next(ws: &mut WebSocket<TcpStream>) -> Option<Result<Message, Error>> {
    tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("an answer within 5 s")
}

#[tokio::test]
async fn messages_of_every_length_form_go_out_masked_with_fresh_keys() {
    let (mut ws, mut server) = pair(1 << 20).await;
    let sizes = [0usize, 1, 7, 8, 125, 126, 65_535, 65_536, 200_000];
    let writer = tokio::spawn(async move {
        for (i, n) in sizes.iter().enumerate() {
            let body: Vec<u8> = (0..*n).map(|j| (i + j) as u8).collect();
            ws.send(Message::binary(body)).await.unwrap();
        }
        ws.send(Message::text("héllo")).await.unwrap();
        ws
    });
    let mut masks = std::collections::HashSet::new();
    for (i, n) in sizes.iter().enumerate() {
        let (first, mask, payload) = read_client_frame(&mut server).await;
        assert_eq!(first, 0x82, "final binary frame");
        assert_eq!(payload, (0..*n).map(|j| (i + j) as u8).collect::<Vec<u8>>(), "{n} bytes intact");
        masks.insert(mask);
    }
    let (first, _, payload) = read_client_frame(&mut server).await;
    assert_eq!((first, payload.as_slice()), (0x81, "héllo".as_bytes()));
    assert_eq!(masks.len(), sizes.len(), "a new mask for every frame");
    writer.await.unwrap();
}

#[tokio::test]
async fn fragments_with_a_ping_between_make_one_message_and_the_ping_is_answered() {
    let (mut ws, mut server) = pair(1 << 20).await;
    let mut bytes = frame(0x01, b"frag");
    bytes.extend(frame(0x89, b"are you there"));
    bytes.extend(frame(0x00, b"men"));
    bytes.extend(frame(0x80, b"ted"));
    // One byte at a time: every header and payload arrives split.
    let feeder = tokio::spawn(async move {
        for b in bytes {
            server.write_all(&[b]).await.unwrap();
            server.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        server
    });
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::Ping("are you there".into()));
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("fragmented"));
    let mut server = feeder.await.unwrap();
    let (first, _, payload) = read_client_frame(&mut server).await;
    assert_eq!(
        (first, payload.as_slice()),
        (0x8A, b"are you there".as_slice()),
        "a pong with the ping's payload"
    );
}

#[tokio::test]
async fn the_servers_close_is_answered_with_its_code_and_then_the_stream_ends() {
    let (mut ws, mut server) = pair(1 << 20).await;
    server.write_all(&frame(0x88, &[&1001u16.to_be_bytes()[..], b"bye"].concat())).await.unwrap();
    let close = next(&mut ws).await.unwrap().unwrap();
    assert_eq!(close, Message::Close(Some(CloseFrame { code: CloseCode::Away, reason: "bye".into() })));
    let reader = tokio::spawn(async move { next(&mut ws).await.map(|r| r.is_ok()) });
    let (first, _, payload) = read_client_frame(&mut server).await;
    assert_eq!((first, payload.as_slice()), (0x88, &1001u16.to_be_bytes()[..]));
    drop(server);
    assert_eq!(reader.await.unwrap(), None, "the stream ends when the server closes TCP");
}

#[tokio::test]
async fn our_close_waits_for_the_servers_and_echoes_still_arrive() {
    let (mut ws, mut server) = pair(1 << 20).await;
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "stampede: done".into() })).await.unwrap();
    let (first, _, payload) = read_client_frame(&mut server).await;
    assert_eq!(first, 0x88);
    assert_eq!(payload, [&1000u16.to_be_bytes()[..], b"stampede: done"].concat());
    assert!(ws.send(Message::text("late")).await.is_err(), "nothing is sent after our close");
    server.write_all(&frame(0x81, b"an echo on its way")).await.unwrap();
    server.write_all(&frame(0x88, &1000u16.to_be_bytes())).await.unwrap();
    drop(server);
    assert_eq!(next(&mut ws).await.unwrap().unwrap(), Message::text("an echo on its way"));
    assert!(matches!(next(&mut ws).await, Some(Ok(Message::Close(Some(_))))));
    assert!(next(&mut ws).await.is_none());
}

#[tokio::test]
async fn a_server_ending_tcp_without_a_close_frame_is_a_reset() {
    let (mut ws, server) = pair(1 << 20).await;
    drop(server);
    let err = next(&mut ws).await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)), "{err}");
    assert!(next(&mut ws).await.is_none());
}

/// Sends `bytes` as the server and returns the error the client fails
/// with and the close code it sent, if any.
async fn hostile(bytes: Vec<u8>, max: usize) -> (Error, Option<u16>) {
    let (mut ws, mut server) = pair(max).await;
    server.write_all(&bytes).await.unwrap();
    let err = loop {
        match next(&mut ws).await {
            Some(Err(e)) => break e,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a failure, got {other:?}"),
        }
    };
    drop(ws);
    let mut sent = Vec::new();
    server.read_to_end(&mut sent).await.unwrap();
    // Skip pongs; the last frame is the close.
    let code = sent.windows(2).position(|w| w[0] == 0x88).and_then(|at| {
        let payload: Vec<u8> =
            sent[at + 6..at + 8].iter().zip(&sent[at + 2..at + 6]).map(|(b, m)| b ^ m).collect();
        Some(u16::from_be_bytes(payload.try_into().ok()?))
    });
    (err, code)
}

/// Which error a case must fail with.
type Expected = fn(&Error) -> bool;

#[tokio::test]
async fn what_a_hostile_server_sends_fails_the_connection_with_the_right_close_code() {
    let masked = vec![0x81, 0x84, 1, 2, 3, 4, b'a' ^ 1, b'b' ^ 2, b'c' ^ 3, b'd' ^ 4];
    let mut after_fragment = frame(0x01, b"a");
    after_fragment.extend(frame(0x81, b"b"));
    let cases: Vec<(&str, Vec<u8>, Expected, u16)> = vec![
        (
            "masked frame",
            masked,
            |e| matches!(e, Error::Protocol(ProtocolError::MaskedFrameFromServer)),
            1002,
        ),
        (
            "reserved bit",
            frame(0xC1, b"x"),
            |e| matches!(e, Error::Protocol(ProtocolError::NonZeroReservedBits)),
            1002,
        ),
        (
            "opcode 3",
            frame(0x83, b"x"),
            |e| matches!(e, Error::Protocol(ProtocolError::UnknownDataFrameType(3))),
            1002,
        ),
        (
            "opcode 11",
            frame(0x8B, b""),
            |e| matches!(e, Error::Protocol(ProtocolError::UnknownControlFrameType(11))),
            1002,
        ),
        (
            "fragmented ping",
            frame(0x09, b"x"),
            |e| matches!(e, Error::Protocol(ProtocolError::FragmentedControlFrame)),
            1002,
        ),
        (
            "126-byte ping",
            frame(0x89, &[0; 126]),
            |e| matches!(e, Error::Protocol(ProtocolError::ControlFrameTooBig)),
            1002,
        ),
        (
            "stray continuation",
            frame(0x80, b"x"),
            |e| matches!(e, Error::Protocol(ProtocolError::UnexpectedContinueFrame)),
            1002,
        ),
        (
            "data inside a fragmented message",
            after_fragment,
            |e| matches!(e, Error::Protocol(ProtocolError::ExpectedFragment(_))),
            1002,
        ),
        ("invalid UTF-8", frame(0x81, &[0xC3, 0x28]), |e| matches!(e, Error::Utf8(_)), 1007),
        (
            "one-byte close",
            frame(0x88, &[3]),
            |e| matches!(e, Error::Protocol(ProtocolError::InvalidCloseSequence)),
            1002,
        ),
        (
            "close code 1005",
            frame(0x88, &1005u16.to_be_bytes()),
            |e| matches!(e, Error::Protocol(ProtocolError::InvalidCloseSequence)),
            1002,
        ),
        (
            "close code 999",
            frame(0x88, &999u16.to_be_bytes()),
            |e| matches!(e, Error::Protocol(ProtocolError::InvalidCloseSequence)),
            1002,
        ),
        ("close reason not UTF-8", frame(0x88, &[0x03, 0xE8, 0xFF]), |e| matches!(e, Error::Utf8(_)), 1007),
    ];
    for (what, bytes, expected, code) in cases {
        let (err, sent) = hostile(bytes, 1 << 20).await;
        assert!(expected(&err), "{what}: {err}");
        assert_eq!(sent, Some(code), "{what}: the close code we sent");
    }
}

#[tokio::test]
async fn sizes_over_the_limits_fail_before_anything_is_allocated_for_them() {
    // A header claiming 2^63 - 1 bytes: refused from the header alone.
    let mut huge = vec![0x82, 127];
    huge.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    let (err, code) = hostile(huge, 1 << 20).await;
    assert!(matches!(err, Error::Capacity(CapacityError::MessageTooLong { max_size: 1048576, .. })), "{err}");
    assert_eq!(code, Some(1009));
    // Fragments each under the frame limit, together over the message limit.
    let mut fragments = frame(0x02, &[0; 600]);
    fragments.extend(frame(0x00, &[0; 600]));
    let (err, code) = hostile(fragments, 1000).await;
    assert!(
        matches!(err, Error::Capacity(CapacityError::MessageTooLong { size: 1200, max_size: 1000 })),
        "{err}"
    );
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn a_ping_flood_from_a_server_that_never_reads_keeps_the_replies_bounded() {
    let (mut ws, server) = pair(1 << 20).await;
    let (mut server_read, mut server_write) = server.into_split();
    let pings = 200_000usize;
    let flood = tokio::spawn(async move {
        let ping = frame(0x89, &[7; 125]);
        for _ in 0..pings {
            server_write.write_all(&ping).await.unwrap();
        }
        server_write
    });
    let mut seen = 0;
    let mut most_queued = 0;
    while seen < pings {
        match next(&mut ws).await {
            Some(Ok(Message::Ping(p))) => assert_eq!(p.len(), 125),
            other => panic!("{other:?}"),
        }
        seen += 1;
        most_queued = most_queued.max(ws.queued());
    }
    let _server_write = flood.await.unwrap();
    assert!(most_queued <= super::MAX_QUEUED_REPLIES + 131, "replies queued: {most_queued} bytes");
    // The server never read: what reached it is bounded by the socket
    // buffers plus our cap, and each is a pong of the ping's 125 bytes (the
    // last may be cut where we stopped writing).
    drop(ws);
    let mut sent = Vec::new();
    server_read.read_to_end(&mut sent).await.unwrap();
    let pongs = sent.chunks(131).filter(|p| p.len() == 131).count();
    assert!(sent.chunks(131).all(|p| p[0] == 0x8A && p.get(1).is_none_or(|&b| b == 0x80 | 125)));
    assert!(pongs < pings, "not every ping was answered into an unread socket: {pongs}");
}

#[test]
fn masking_matches_the_byte_by_byte_definition() {
    for len in 0..40 {
        let data: Vec<u8> = (0..len as u8).collect();
        let mask = [0xA1, 0x02, 0xF3, 0x44];
        let mut fast = data.clone();
        super::apply_mask(&mut fast, mask);
        let slow: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(fast, slow, "{len} bytes");
    }
}
