//! Pairs and broadcast against a hostile relay written here (real sockets):
//! it forwards nothing, answers subscriptions with absurd sequence numbers
//! and sends junk, other channels' messages, forged envelopes, sequence
//! jumps to 10^18 and u64::MAX, and duplicates. Every frame is counted
//! exactly once as what it is; nothing panics, nothing grows without bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use stampede_model::spec::{BroadcastSpec, ConnectSpec, PairsMode, PairsSpec, SessionSpec};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

mod common;

/// A relay that greets, answers each subscribe with `subscribed` at
/// `start`, then sends `script(channel)`; publishes go nowhere. Returns
/// its URL and the number of subscriptions it answered.
async fn hostile_relay(start: u64, script: fn(&str) -> Vec<String>) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/pubsub", listener.local_addr().unwrap());
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let hello = json!({"op": "connection_established", "id": "1-x"}).to_string();
                if ws.send(Message::text(hello)).await.is_err() {
                    return;
                }
                while let Some(Ok(msg)) = ws.next().await {
                    let Message::Text(text) = msg else { continue };
                    let op: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    if op["op"] != "subscribe" {
                        continue;
                    }
                    let channel = op["channel"].as_str().unwrap_or_default().to_string();
                    let reply = json!({"op": "subscribed", "channel": channel, "seq": start}).to_string();
                    count.fetch_add(1, Relaxed);
                    let _ = ws.send(Message::text(reply)).await;
                    for frame in script(&channel) {
                        let _ = ws.send(Message::text(frame)).await;
                    }
                }
            });
        }
    });
    (url, answered)
}

fn message(channel: &str, seq: u64, data: Value) -> String {
    json!({"op": "message", "channel": channel, "seq": seq, "data": data}).to_string()
}

/// Six frames, none of which a pair can accept.
fn pair_junk(channel: &str) -> Vec<String> {
    vec![
        "not json at all".into(),
        message("someone/else", 1, json!({})),
        message(channel, 5, json!("not an envelope")),
        message(channel, u64::MAX, json!({"from": "a", "seq": u64::MAX, "ct": "AAAA"})),
        message(channel, 7, json!({"from": "b", "seq": 1_000_000, "ct": "A".repeat(1 << 20)})),
        json!({"op": "error", "reason": "no"}).to_string(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairs_count_every_forged_frame_and_lose_what_was_never_forwarded() {
    let (url, subscriptions) = hostile_relay(u64::MAX, pair_junk).await;
    let spec = PairsSpec {
        mode: PairsMode::RealisticSession,
        messages_per_side: 2,
        away_us: 0,
        delivery_timeout_us: 500_000,
        channel_prefix: "t".into(),
        wrong_key: false,
    };
    let mut a = common::assign(&url, 50, 64, false);
    a.connect_spec_json = ConnectSpec { session: SessionSpec::Pairs(spec), ..Default::default() }.to_json();
    let snaps = common::drive(&a, 20, Duration::from_secs(3), async || {}).await;
    let c = common::totals(&snaps);
    assert!(c.messages_sent > 0 && c.sessions_completed > 0, "{c:?}");
    assert_eq!(c.messages_lost, c.messages_sent, "nothing was forwarded: {c:?}");
    // A side cancelled before its subscribe left never gets the six, so
    // the relay's own count is the truth; the worker reads every frame
    // sent before the relay's close reply.
    let subscriptions = subscriptions.load(Relaxed);
    assert!(subscriptions > 0 && subscriptions <= c.connections_opened, "{subscriptions}: {c:?}");
    assert_eq!(c.messages_unmatched, 6 * subscriptions, "six forged frames per subscription: {c:?}");
    assert_eq!(c.messages_received + c.messages_duplicated + c.messages_undecryptable, 0, "{c:?}");
}

/// From subscription start 10: 11, 11 again, a jump to 10^18, 13, 12
/// late, junk.
fn broadcast_script(channel: &str) -> Vec<String> {
    vec![
        message(channel, 11, json!({"t": 0})),
        message(channel, 11, json!({"t": 0})),
        message(channel, 1_000_000_000_000_000_000, json!({"t": 0})),
        message(channel, 13, json!({"t": 0})),
        message(channel, 12, json!({})),
        "[1,2,3]".into(),
    ]
}

fn broadcast(url: &str) -> stampede_proto::fleet::Assign {
    let spec = BroadcastSpec {
        publishers: 0,
        channels: 1,
        channels_per_connection: 1,
        publish_delay_us: 0,
        channel_prefix: "t".into(),
        worker_index: 0,
        workers: 1,
    };
    let mut a = common::assign(url, 100, 64, false);
    a.connect_spec_json =
        ConnectSpec { session: SessionSpec::Broadcast(spec), ..Default::default() }.to_json();
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_accounts_jumps_duplicates_and_late_frames_exactly() {
    let (url, _) = hostile_relay(10, broadcast_script).await;
    let snaps = common::drive(&broadcast(&url), 10, Duration::from_secs(2), async || {}).await;
    let c = common::totals(&snaps);
    assert_eq!(c.connections_opened, 10, "{c:?}");
    // Per subscriber: 11, 12 (late), 13 delivered; 11 again duplicated;
    // the jump and the junk unmatched; nothing lost.
    assert_eq!(c.messages_received, 30, "{c:?}");
    assert_eq!(c.deliveries_expected, 30, "{c:?}");
    assert_eq!(c.messages_duplicated, 10, "{c:?}");
    assert_eq!(c.messages_out_of_order, 10, "{c:?}");
    assert_eq!(c.messages_unmatched, 20, "{c:?}");
    assert_eq!(c.messages_lost, 0, "{c:?}");
    assert_eq!(c.timestamps_missing, 10, "the late one had no time: {c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_starting_at_u64_max_cannot_overflow() {
    let (url, _) = hostile_relay(u64::MAX, |channel| vec![message(channel, u64::MAX, json!({"t": 0}))]).await;
    let snaps = common::drive(&broadcast(&url), 5, Duration::from_secs(1), async || {}).await;
    let c = common::totals(&snaps);
    assert_eq!(c.messages_unmatched, 5, "{c:?}");
    assert_eq!(c.messages_received + c.deliveries_expected + c.messages_lost, 0, "{c:?}");
}
