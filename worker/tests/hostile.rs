//! The native engine against hostile servers written here, on real sockets:
//! every way an echo can go wrong is counted under its own name, exactly,
//! and no two mistakes cancel each other out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use stampede_model::Counters;
use stampede_proto::fleet::{Assign, Snapshot};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::errors;

/// What a hostile server does with the n-th message (from 0) it receives
/// on a connection: the frames it sends back, and whether it tampered with
/// the message (dropped or damaged it).
type Behaviour = fn(u64, &[u8]) -> (Vec<Vec<u8>>, bool);

/// A WebSocket server that answers each message per `behave`, and first
/// sends `greeting` unsolicited frames. Returns its URL and how many
/// messages it tampered with.
async fn hostile_server(behave: Behaviour, greeting: usize) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", listener.local_addr().unwrap());
    let tampered = Arc::new(AtomicU64::new(0));
    let count = tampered.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                for i in 0..greeting {
                    if ws.send(Message::text(format!("server news {i}"))).await.is_err() {
                        return;
                    }
                }
                let mut n = 0;
                while let Some(Ok(msg)) = ws.next().await {
                    let data = match msg {
                        Message::Text(t) => t.as_bytes().to_vec(),
                        Message::Binary(b) => b.to_vec(),
                        Message::Close(_) => break,
                        _ => continue,
                    };
                    let (frames, tampered) = behave(n, &data);
                    if tampered {
                        count.fetch_add(1, Relaxed);
                    }
                    for frame in frames {
                        let text = String::from_utf8(frame).unwrap();
                        if ws.send(Message::text(text)).await.is_err() {
                            return;
                        }
                    }
                    n += 1;
                }
            });
        }
    });
    (url, tampered)
}

fn assign(url: &str, interval_ms: u64, payload_bytes: u32) -> Assign {
    common::assign(url, interval_ms, payload_bytes, false)
}

/// Runs `connections` connections for `hold`, stops, returns the counters
/// summed over every snapshot, and the snapshots.
async fn run(assign: Assign, connections: u64, hold: Duration) -> (Counters, Vec<Snapshot>) {
    let snaps = common::drive(&assign, connections, hold, async || {}).await;
    (common::totals(&snaps), snaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_echoes_twice_shows_duplicates_not_extra_deliveries() {
    let (url, _) = hostile_server(|_, m| (vec![m.to_vec(), m.to_vec()], false), 0).await;
    let (c, snaps) = run(assign(&url, 20, 64), 4, Duration::from_millis(1500)).await;
    assert!(c.messages_sent >= 4 * 60, "{} sent", c.messages_sent);
    assert_eq!(c.messages_received, c.messages_sent, "each message delivered once");
    assert_eq!(c.messages_duplicated, c.messages_sent, "and echoed once more");
    assert_eq!(c.messages_lost, 0);
    assert_eq!((c.messages_unmatched, c.messages_corrupted, c.messages_out_of_order), (0, 0, 0));
    assert_eq!(errors(&snaps, "message_lost"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_half_and_echoing_the_rest_twice_loses_exactly_the_dropped_half() {
    // Odd messages are dropped, even ones echoed twice: received + duplicated
    // equals sent, which a "sent - received" count would call no loss.
    let (url, dropped) = hostile_server(
        |n, m| if n % 2 == 0 { (vec![m.to_vec(), m.to_vec()], false) } else { (vec![], true) },
        0,
    )
    .await;
    let (c, snaps) = run(assign(&url, 20, 64), 3, Duration::from_millis(1500)).await;
    let sent = c.messages_sent;
    assert!(sent >= 3 * 60, "{sent} sent");
    assert_eq!(c.messages_lost, dropped.load(Relaxed), "lost: exactly the messages the server dropped");
    assert_eq!(c.messages_received + c.messages_lost, sent);
    assert_eq!(c.messages_duplicated, c.messages_received);
    assert!(c.messages_lost.abs_diff(sent / 2) <= 3, "about half: {} of {sent}", c.messages_lost);
    assert_eq!(errors(&snaps, "message_lost"), c.messages_lost, "a lost message is an error cause too");
    assert_eq!(c.messages_unmatched, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_altered_echoes_are_corrupted_not_delivered() {
    let (url, damaged) = hostile_server(
        |n, m| {
            let mut m = m.to_vec();
            match n % 3 {
                0 => m.truncate(m.len() / 2 + 16), // the stamp survives, the padding does not
                1 => *m.last_mut().unwrap() = b'y',
                _ => return (vec![m], false),
            }
            (vec![m], true)
        },
        0,
    )
    .await;
    let (c, snaps) = run(assign(&url, 20, 128), 2, Duration::from_millis(1500)).await;
    assert!(c.messages_sent >= 2 * 60);
    assert_eq!(c.messages_received + c.messages_corrupted, c.messages_sent);
    assert_eq!(c.messages_corrupted, damaged.load(Relaxed), "exactly the damaged ones: {c:?}");
    assert!(c.messages_corrupted.abs_diff(c.messages_sent * 2 / 3) <= 4, "{c:?}");
    assert_eq!(errors(&snaps, "message_corrupted"), c.messages_corrupted);
    assert_eq!((c.messages_lost, c.messages_duplicated, c.messages_unmatched), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsolicited_frames_are_counted_exactly() {
    let (url, _) = hostile_server(|_, m| (vec![m.to_vec()], false), 1000).await;
    let (c, _) = run(assign(&url, 50, 64), 1, Duration::from_millis(1500)).await;
    assert_eq!(c.messages_unmatched, 1000);
    assert_eq!(c.messages_received, c.messages_sent);
    assert_eq!((c.messages_lost, c.messages_duplicated, c.messages_corrupted), (0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamp_from_the_future_or_another_connection_is_unmatched() {
    // Answers each message with an echo and a forged one: same connection,
    // a sequence number not sent yet, and one naming another connection.
    let (url, _) = hostile_server(
        |_, m| {
            let text = String::from_utf8_lossy(m).into_owned();
            // The stamp is "conn;seq;time;".
            let forged_seq = text.replacen(';', ";9", 1);
            let forged_conn = format!("7{text}");
            (vec![m.to_vec(), forged_seq.into_bytes(), forged_conn.into_bytes()], true)
        },
        0,
    )
    .await;
    let (c, _) = run(assign(&url, 50, 64), 1, Duration::from_millis(1200)).await;
    assert!(c.messages_sent >= 20);
    assert_eq!(c.messages_received, c.messages_sent);
    // Sequence "9<n>" is a number not sent yet; "7<slot>" another connection.
    assert_eq!(c.messages_unmatched, 2 * c.messages_sent, "{c:?}");
    assert_eq!(c.messages_corrupted, 0);
    assert_eq!(c.messages_duplicated, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_both_ways_never_deadlocks_and_unsent_sends_are_counted() {
    // The bundled relay echoes 16 MiB messages; the client sends one every
    // 50 ms, far more than loopback and the relay carry: sends that cannot
    // leave while the previous one is still being written are counted, and
    // echoes keep arriving while a send waits.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = stampede_relay::Relay::start(Default::default(), shutdown.clone()).await.unwrap();
    let (c, snaps) = run(assign(&relay.ws_url(), 50, 16 << 20), 2, Duration::from_secs(4)).await;
    shutdown.cancel();
    assert!(c.messages_received >= 4, "echoes keep flowing: {c:?}");
    assert_eq!(c.messages_received + c.messages_lost, c.messages_sent, "{c:?}");
    assert_eq!(c.messages_unmatched, 0, "an echo is never also unmatched");
    // 2 connections x 4 s / 50 ms, less the time to connect and the sends
    // due while the stop was being handled.
    let scheduled = 2 * 4000 / 50;
    assert!(
        (c.messages_sent + c.messages_unsent) * 10 >= scheduled * 9,
        "scheduled sends are counted: {c:?}"
    );
    assert!(c.messages_unsent > 0, "the schedule cannot be kept at 16 MiB per 50 ms: {c:?}");
    assert_eq!(errors(&snaps, "message_unsent"), c.messages_unsent);
}
