//! The receive session against push servers written here, on real sockets:
//! each connection subscribes once, every pushed frame is counted exactly,
//! one-way latency is read from the messages' timestamps, silences longer
//! than the gap limit are counted, and a timestamp that is missing or from
//! the future is counted, never a panic or a negative latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use stampede_model::Template;
use stampede_model::spec::{ConnectSpec, ReceiveSpec, SessionSpec, TimeUnit, TimestampField, TimestampSpec};
use stampede_proto::fleet::{Assign, Snapshot};
use tokio::net::TcpListener;
use tokio::time::sleep;
use tokio_tungstenite::tungstenite::Message;

mod common;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

fn assign(url: &str, spec: ReceiveSpec) -> Assign {
    // No message interval: a receive session sends nothing on a schedule.
    let mut a = common::assign(url, 0, 64, false);
    a.connect_spec_json = ConnectSpec { session: SessionSpec::Receive(spec), ..Default::default() }.to_json();
    a
}

fn latencies(snaps: &[Snapshot]) -> Histogram<u64> {
    let mut all = stampede_worker::recorder::new_histogram();
    for s in snaps {
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut s.latency_histogram.as_slice()).unwrap();
        all.add(&h).unwrap();
    }
    all
}

/// One burst of a push script: `count` messages `every` apart, made by
/// `make(n)`, then a pause.
struct Burst {
    count: u64,
    every: Duration,
    make: fn(u64) -> String,
    pause: Duration,
}

/// A server that waits for each connection's subscription (which must be
/// `{"op":"subscribe","conn":N}`), then plays `script` on it. Returns its
/// URL, the subscriptions it got and the frames it pushed.
async fn push_server(script: &'static [Burst]) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/feed", listener.local_addr().unwrap());
    let (subscribed, pushed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (subs, sent) = (subscribed.clone(), pushed.clone());
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (subs, sent) = (subs.clone(), sent.clone());
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                let Some(Ok(Message::Text(first))) = ws.next().await else { return };
                let sub: serde_json::Value = serde_json::from_str(&first).unwrap();
                assert_eq!(sub["op"], "subscribe", "{first}");
                assert!(sub["conn"].is_u64(), "{{{{conn}}}} rendered: {first}");
                subs.fetch_add(1, Relaxed);
                let (mut tx, mut rx) = ws.split();
                // Keep reading (close frames, pings) while pushing.
                tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
                for burst in script {
                    for n in 0..burst.count {
                        if tx.send(Message::text((burst.make)(n))).await.is_err() {
                            return;
                        }
                        sent.fetch_add(1, Relaxed);
                        sleep(burst.every).await;
                    }
                    sleep(burst.pause).await;
                }
            });
        }
    });
    (url, subscribed, pushed)
}

fn subscription() -> Vec<Template> {
    vec![Template::parse(r#"{"op":"subscribe","conn":{{conn}}}"#).unwrap()]
}

/// 50 stamped ticks 10 ms apart, a 1 s silence, 20 ticks without a
/// timestamp, 10 stamped a minute ahead, then silence until the end.
static SCRIPT: [Burst; 3] = [
    Burst {
        count: 50,
        every: Duration::from_millis(10),
        make: |n| format!(r#"{{"n":{n},"data":{{"ts":{}}}}}"#, now_us() / 1000),
        pause: Duration::from_millis(1000),
    },
    Burst {
        count: 20,
        every: Duration::from_millis(10),
        make: |n| format!(r#"{{"n":{n}}}"#),
        pause: Duration::ZERO,
    },
    Burst {
        count: 10,
        every: Duration::from_millis(10),
        make: |n| format!(r#"{{"n":{n},"data":{{"ts":{}}}}}"#, now_us() / 1000 + 60_000),
        pause: Duration::ZERO,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_messages_latency_gaps_and_bad_timestamps_are_counted_exactly() {
    let (url, subscribed, pushed) = push_server(&SCRIPT).await;
    let spec = ReceiveSpec {
        subscribe: subscription(),
        timestamp: Some(TimestampSpec {
            field: TimestampField::JsonPath("data.ts".into()),
            unit: TimeUnit::Ms,
        }),
        gap_us: 400_000,
    };
    let conns = 3;
    // ~2.1 s of pushing, then 1.4 s of silence.
    let snaps = common::drive(&assign(&url, spec), conns, Duration::from_millis(3500), async || {}).await;
    let c = common::totals(&snaps);
    assert_eq!(subscribed.load(Relaxed), conns, "each connection subscribed once");
    assert_eq!(c.messages_sent, conns, "the subscriptions");
    assert_eq!(pushed.load(Relaxed), conns * 80, "the script ran to its end");
    assert_eq!(c.messages_received, conns * 80, "{c:?}");
    assert!(c.bytes_received > conns * 80 * 8, "{c:?}");
    assert_eq!(c.timestamps_missing, conns * 20, "{c:?}");
    assert_eq!(c.timestamps_future, conns * 10, "{c:?}");
    assert_eq!(c.receive_gaps, conns * 2, "the 1 s pause and the trailing silence: {c:?}");
    let lat = latencies(&snaps);
    assert_eq!(lat.len(), conns * 60, "stamped messages, the future ones as 0");
    assert_eq!(lat.min(), 1, "a future timestamp is latency 0 (recorded as the 1 us floor)");
    assert!(
        lat.value_at_quantile(0.5) < 50_000,
        "loopback push in well under 50 ms: {}",
        lat.value_at_quantile(0.5)
    );
    assert_eq!((c.messages_unmatched, c.messages_lost), (0, 0));
}

/// `t=<us>;` then text, 20 messages 5 ms apart.
static PLAIN: [Burst; 1] = [Burst {
    count: 20,
    every: Duration::from_millis(5),
    make: |n| format!("tick {n} t={}; price=1", now_us()),
    pause: Duration::ZERO,
}];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_offset_moves_one_way_latency_and_regex_timestamps_work() {
    let spec = || ReceiveSpec {
        subscribe: subscription(),
        timestamp: Some(TimestampSpec {
            field: TimestampField::Regex(r"t=(\d+);".into()),
            unit: TimeUnit::Us,
        }),
        gap_us: 0,
    };
    // The controller's clock 5 s ahead of ours: latency is 5 s more.
    let (url, _, _) = push_server(&PLAIN).await;
    let mut a = assign(&url, spec());
    a.clock_offset_us = 5_000_000;
    let snaps = common::drive(&a, 2, Duration::from_millis(600), async || {}).await;
    let c = common::totals(&snaps);
    assert_eq!(c.messages_received, 40, "{c:?}");
    let lat = latencies(&snaps);
    assert_eq!(lat.len(), 40);
    assert!(
        lat.min() >= lat.lowest_equivalent(5_000_000) && lat.max() < 5_100_000,
        "{} .. {}",
        lat.min(),
        lat.max()
    );
    assert_eq!((c.timestamps_missing, c.timestamps_future, c.receive_gaps), (0, 0, 0), "{c:?}");

    // 5 s behind: every timestamp is from the future.
    let (url, _, _) = push_server(&PLAIN).await;
    let mut a = assign(&url, spec());
    a.clock_offset_us = -5_000_000;
    let snaps = common::drive(&a, 2, Duration::from_millis(600), async || {}).await;
    let c = common::totals(&snaps);
    assert_eq!(c.messages_received, 40, "{c:?}");
    assert_eq!(c.timestamps_future, 40, "{c:?}");
    assert_eq!(latencies(&snaps).max(), 1, "never negative: latency 0");
}
