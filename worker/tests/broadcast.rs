//! Broadcast against the bundled relay's channels, on real sockets: every
//! message a publisher sends reaches every subscriber of its channel, each
//! delivery is accounted by the relay's sequence numbers, and the relay's
//! own counters agree.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use stampede_model::spec::{BroadcastSpec, ConnectSpec, SessionSpec};
use stampede_relay::config::PubsubConfig;
use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

mod common;

fn spec(publishers: u64, channels: u64) -> BroadcastSpec {
    BroadcastSpec {
        publishers,
        channels,
        channels_per_connection: 1,
        publish_delay_us: 1_000_000,
        channel_prefix: "test".into(),
        worker_index: 0,
        workers: 1,
    }
}

async fn run(
    pubsub: PubsubConfig,
    spec: BroadcastSpec,
    connections: u64,
) -> (stampede_model::Counters, u64, u64) {
    let shutdown = CancellationToken::new();
    let relay = Relay::start(RelayConfig { pubsub, ..Default::default() }, shutdown.clone()).await.unwrap();
    let mut a = common::assign(&relay.pubsub_url(), 100, 64, false);
    a.connect_spec_json =
        ConnectSpec { session: SessionSpec::Broadcast(spec), ..Default::default() }.to_json();
    let snaps = common::drive(&a, connections, Duration::from_secs(4), async || {}).await;
    let stats = relay.stats();
    let (delivered, duplicated) =
        (stats.pubsub.delivered.load(Relaxed), stats.pubsub.duplicated.load(Relaxed));
    shutdown.cancel();
    (common::totals(&snaps), delivered, duplicated)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message() {
    // 1 publisher, 200 subscribers on one channel; 10 messages a second
    // for ~3 s once the subscribers are in.
    let (c, delivered, _) = run(PubsubConfig::default(), spec(1, 1), 201).await;
    assert!(c.messages_sent >= 20, "{c:?}");
    assert_eq!(c.messages_received, c.messages_sent * 200, "every message x every subscriber: {c:?}");
    assert_eq!(c.deliveries_expected, c.messages_received, "{c:?}");
    assert_eq!(c.messages_lost + c.messages_duplicated + c.messages_unmatched, 0, "{c:?}");
    assert_eq!(delivered, c.messages_received, "the relay wrote what we counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_duplicates_is_counted_exactly() {
    let faults = PubsubConfig { fault_duplicate: Some(0.1), ..Default::default() };
    let (c, delivered, duplicated) = run(faults, spec(2, 2), 42).await;
    assert!(duplicated > 0, "the fault fired");
    assert_eq!(c.messages_duplicated, duplicated, "{c:?}");
    assert_eq!(c.messages_received, delivered, "{c:?}");
    assert_eq!(
        c.messages_received,
        c.messages_sent * 20,
        "2 publishers, 2 channels, 20 subscribers each: {c:?}"
    );
    assert_eq!(c.messages_lost, 0, "{c:?}");
}
