//! The request/response session against servers that answer instead of
//! echoing, on real sockets: a third-party JSON-RPC 2.0 server (Python's
//! `websockets`), and hostile servers written here. Every reply is counted
//! exactly once under its own name, and nothing a server sends makes the
//! worker panic or hold more memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use stampede_model::spec::{ConnectSpec, Matcher, RequestSpec, SessionSpec};
use stampede_model::{Counters, Template};
use stampede_proto::fleet::{Assign, Snapshot};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

mod common;
#[path = "servers/jsonrpc.rs"]
mod jsonrpc;

use common::errors;

const PING: &str = r#"{"jsonrpc":"2.0","id":{{seq}},"method":"ping","params":{"conn":{{conn}}}}"#;

/// An assignment to `url`: one request every `interval_ms`.
fn assign(url: &str, interval_ms: u64, template: &str, matcher: Matcher, timeout_ms: u64) -> Assign {
    let mut a = common::assign(url, interval_ms, 64, false);
    let session = SessionSpec::Request(RequestSpec {
        message: Template::parse(template).unwrap(),
        binary: false,
        matcher,
        reply_timeout_us: timeout_ms * 1000,
    });
    a.connect_spec_json = ConnectSpec { session, ..Default::default() }.to_json();
    a
}

fn json_id() -> Matcher {
    Matcher::JsonField("id".into())
}

async fn run(assign: Assign, connections: u64, hold: Duration) -> (Counters, Vec<Snapshot>) {
    let snaps = common::drive(&assign, connections, hold, async || {}).await;
    (common::totals(&snaps), snaps)
}

/// Latencies recorded over the snapshots.
fn latencies(snaps: &[Snapshot]) -> Histogram<u64> {
    let mut all = stampede_worker::recorder::new_histogram();
    for s in snaps {
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut s.latency_histogram.as_slice()).unwrap();
        all.add(&h).unwrap();
    }
    all
}

/// What a hostile server sends for the n-th request on a connection; it
/// may keep requests in `held` (per connection) to answer them later.
type Answer = fn(u64, serde_json::Value, &mut Vec<serde_json::Value>) -> Vec<String>;

/// A WebSocket server that first sends `greeting` unsolicited frames of
/// `greeting_bytes` each, then answers every request per `answer`. Returns
/// its URL and how many requests it received.
async fn server(answer: Answer, greeting: u64, greeting_bytes: usize) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let filler = "n".repeat(greeting_bytes);
                for i in 0..greeting {
                    // Fed without a flush per frame: a flood, not a trickle.
                    let frame = Message::text(format!(r#"{{"event":"news","n":{i},"pad":"{filler}"}}"#));
                    if ws.feed(frame).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
                let mut n = 0;
                let mut held = Vec::new();
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    count.fetch_add(1, Relaxed);
                    let request: serde_json::Value = serde_json::from_str(&text).unwrap();
                    for reply in answer(n, request, &mut held) {
                        if ws.send(Message::text(reply)).await.is_err() {
                            return;
                        }
                    }
                    n += 1;
                }
            });
        }
    });
    (url, requests)
}

fn pong(request: &serde_json::Value) -> String {
    format!(r#"{{"jsonrpc":"2.0","id":{},"result":"pong"}}"#, request["id"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_json_rpc_server_answers_every_request() {
    let server = jsonrpc::JsonRpcServer::start();
    let (c, snaps) =
        run(assign(&server.url, 20, PING, json_id(), 5000), 4, Duration::from_millis(2500)).await;
    assert!(c.messages_sent >= 4 * 60, "{} sent", c.messages_sent);
    assert_eq!(c.messages_received, c.messages_sent, "every request answered: {c:?}");
    assert_eq!((c.messages_unmatched, c.messages_lost, c.messages_duplicated), (0, 0, 0), "{c:?}");
    assert_eq!(latencies(&snaps).len(), c.messages_received, "a latency for every reply");
    assert_eq!(errors(&snaps, "message_lost"), 0);
    assert!(latencies(&snaps).value_at_quantile(0.5) < 100_000, "loopback answers in well under 100 ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_with_unknown_ids_are_unmatched_exactly() {
    let (url, requests) = server(
        |_, r, _| {
            let stranger = format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":"pong"}}"#,
                r["id"].as_u64().unwrap() + 1_000_000
            );
            let wrong_type = format!(r#"{{"jsonrpc":"2.0","id":"{}","result":"pong"}}"#, r["id"]);
            vec![stranger, pong(&r), wrong_type]
        },
        0,
        0,
    )
    .await;
    let (c, snaps) = run(assign(&url, 20, PING, json_id(), 5000), 3, Duration::from_millis(1500)).await;
    assert!(c.messages_sent >= 3 * 30, "{c:?}");
    assert_eq!(requests.load(Relaxed), c.messages_sent);
    assert_eq!(c.messages_received, c.messages_sent);
    assert_eq!(c.messages_unmatched, 2 * c.messages_sent, "an unknown id and a string id per request: {c:?}");
    assert_eq!((c.messages_lost, c.messages_duplicated), (0, 0));
    assert_eq!(latencies(&snaps).len(), c.messages_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_reply_is_a_duplicate_and_reordered_replies_are_counted() {
    // Every request is answered twice, and each even one only after the
    // odd one that follows it.
    let (url, _) = server(
        |n, r, held| {
            if n % 2 == 0 {
                held.push(r);
                return vec![];
            }
            let earlier = held.pop().unwrap();
            vec![pong(&r), pong(&r), pong(&earlier), pong(&earlier)]
        },
        0,
        0,
    )
    .await;
    let (c, snaps) = run(assign(&url, 20, PING, json_id(), 5000), 2, Duration::from_millis(1500)).await;
    assert!(c.messages_sent >= 2 * 30, "{c:?}");
    // A connection's last request may be an even one, never answered.
    assert!(c.messages_lost <= 2, "{c:?}");
    assert_eq!(c.messages_received + c.messages_lost, c.messages_sent, "{c:?}");
    assert_eq!(c.messages_duplicated, c.messages_received, "{c:?}");
    assert_eq!(c.messages_out_of_order, c.messages_received / 2, "each even reply after the odd one: {c:?}");
    assert_eq!(c.messages_unmatched, 0);
    assert_eq!(latencies(&snaps).len(), c.messages_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_replies_loses_every_request_at_its_timeout() {
    let (url, requests) = server(|_, _, _| vec![], 0, 0).await;
    let (c, snaps) = run(assign(&url, 50, PING, json_id(), 300), 2, Duration::from_millis(2200)).await;
    assert!(c.messages_sent >= 2 * 20, "{c:?}");
    assert_eq!(requests.load(Relaxed), c.messages_sent, "the server got them all");
    assert_eq!(c.messages_lost, c.messages_sent, "{c:?}");
    assert_eq!(errors(&snaps, "message_lost"), c.messages_lost);
    assert_eq!((c.messages_received, c.messages_unmatched), (0, 0));
    assert_eq!(latencies(&snaps).len(), 0);
    // Lost as each timeout passed, not all at the end: the snapshot of
    // second 1 holds the requests sent before 0.7 s.
    let first =
        snaps.iter().find(|s| s.second == 1).expect("a snapshot of second 1").model_counters().unwrap();
    assert!(first.messages_lost >= 2 * 10, "lost while running: {first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_that_are_not_json_are_unmatched_and_harmless() {
    let (url, _) = server(
        |_, r, _| {
            let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
            let cut = pong(&r)[..20].to_string();
            vec![
                "not json at all".into(),
                cut,
                deep,
                "\u{0}\u{1}\u{2}".into(),
                pong(&r),
                format!("{} tail", pong(&r)),
            ]
        },
        0,
        0,
    )
    .await;
    let (c, _) = run(assign(&url, 25, PING, json_id(), 5000), 2, Duration::from_millis(1500)).await;
    assert!(c.messages_sent >= 2 * 25, "{c:?}");
    assert_eq!(c.messages_received, c.messages_sent);
    assert_eq!(c.messages_unmatched, 5 * c.messages_sent, "{c:?}");
    assert_eq!((c.messages_lost, c.messages_duplicated), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unsolicited_frames_is_counted_exactly_in_bounded_memory() {
    const FLOOD: u64 = 100_000;
    // 1 KB each: 100 MB in all, far more than the bound below if kept.
    let (url, _) = server(|_, r, _| vec![pong(&r)], FLOOD, 1000).await;
    let before = stampede_worker::process::rss_bytes();
    let (c, _) = run(assign(&url, 50, PING, json_id(), 10_000), 1, Duration::from_secs(4)).await;
    let grown = stampede_worker::process::rss_bytes().saturating_sub(before);
    eprintln!("RSS grew by {} KB over the flood", grown >> 10);
    assert_eq!(c.messages_unmatched, FLOOD, "{c:?}");
    assert_eq!(c.messages_received, c.messages_sent, "requests still answered: {c:?}");
    assert!(c.messages_sent >= 20, "{c:?}");
    assert_eq!(c.messages_lost, 0);
    assert!(grown < 40 << 20, "memory grew by {} MB", grown >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regex_and_any_next_matchers_pair_replies_with_requests() {
    // Regex: the reply quotes the request's seq, and one more that was
    // never sent.
    let (url, _) =
        server(|_, r, _| vec![format!("ack seq={};", r["seq"]), "ack seq=99999999;".into()], 0, 0).await;
    let template = r#"{"seq":{{seq}},"op":"x"}"#;
    let regex = Matcher::Regex(r"seq=(\d+);".into());
    let (c, snaps) = run(assign(&url, 20, template, regex, 5000), 2, Duration::from_millis(1200)).await;
    assert!(c.messages_sent >= 2 * 25, "{c:?}");
    assert_eq!(c.messages_received, c.messages_sent, "{c:?}");
    assert_eq!((c.messages_unmatched, c.messages_lost), (c.messages_sent, 0));
    assert_eq!(latencies(&snaps).len(), c.messages_received);

    // Any next: "pong" answers the oldest request waiting.
    let (url, _) = server(|_, _, _| vec!["pong".into()], 0, 0).await;
    let (c, snaps) =
        run(assign(&url, 20, r#"{"op":"ping"}"#, Matcher::AnyNext, 5000), 2, Duration::from_millis(1200))
            .await;
    assert!(c.messages_sent >= 2 * 25, "{c:?}");
    assert_eq!(c.messages_received, c.messages_sent, "{c:?}");
    assert_eq!((c.messages_unmatched, c.messages_lost, c.messages_out_of_order), (0, 0, 0), "{c:?}");
    assert_eq!(latencies(&snaps).len(), c.messages_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_environment_variable_fails_the_assignment() {
    let a = assign(
        "ws://127.0.0.1:9/",
        20,
        r#"{"id":{{seq}},"k":"{{env.STAMPEDE_TEST_SURELY_UNSET}}"}"#,
        json_id(),
        1000,
    );
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let err = stampede_worker::engine::Engine::start(&a, "w", &[], tx).await.err().expect("refused");
    assert!(err.to_string().contains("STAMPEDE_TEST_SURELY_UNSET is not set"), "{err}");
}
