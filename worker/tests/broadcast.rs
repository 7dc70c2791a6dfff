//! Broadcast against the bundled relay's channels, on real sockets: every
//! message a publisher sends reaches every subscriber of its channel, each
//! delivery is accounted by the relay's sequence numbers, and the relay's
//! own counters agree.

use std::collections::BTreeMap;
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

/// Counters, the relay's delivered and duplicated, and per channel
/// (published, received, expected, duplicated).
async fn run(
    pubsub: PubsubConfig,
    spec: BroadcastSpec,
    connections: u64,
) -> (stampede_model::Counters, u64, u64, BTreeMap<u64, [u64; 4]>) {
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
    let mut channels: BTreeMap<u64, [u64; 4]> = BTreeMap::new();
    for (n, c) in snaps.iter().flat_map(|s| &s.channels) {
        let t = channels.entry(*n).or_default();
        for (into, add) in t.iter_mut().zip([c.published, c.received, c.expected, c.duplicated]) {
            *into += add;
        }
    }
    (common::totals(&snaps), delivered, duplicated, channels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_gets_every_message() {
    // 1 publisher, 200 subscribers on one channel; 10 messages a second
    // for ~3 s once the subscribers are in.
    let (c, delivered, _, channels) = run(PubsubConfig::default(), spec(1, 1), 201).await;
    let s = c.messages_sent;
    assert_eq!(channels.into_iter().collect::<Vec<_>>(), [(0, [s, s * 200, s * 200, 0])], "per channel");
    assert!(c.messages_sent >= 20, "{c:?}");
    assert_eq!(c.messages_received, c.messages_sent * 200, "every message x every subscriber: {c:?}");
    assert_eq!(c.deliveries_expected, c.messages_received, "{c:?}");
    assert_eq!(c.messages_lost + c.messages_duplicated + c.messages_unmatched, 0, "{c:?}");
    assert_eq!(delivered, c.messages_received, "the relay wrote what we counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_duplicates_is_counted_exactly() {
    let faults = PubsubConfig { fault_duplicate: Some(0.1), ..Default::default() };
    let (c, delivered, duplicated, channels) = run(faults, spec(2, 2), 42).await;
    assert_eq!(channels.len(), 2);
    for (n, [published, received, expected, dup]) in &channels {
        assert!(*published > 0, "channel {n}");
        assert_eq!((*received, *expected), (published * 20, published * 20), "channel {n}");
        assert!(*dup <= duplicated);
    }
    assert_eq!(channels.values().map(|v| v[3]).sum::<u64>(), duplicated, "duplicates by channel add up");
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
