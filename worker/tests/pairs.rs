//! Session pairs against the bundled relay's channels, on real sockets:
//! every message sealed by one side is opened by the other and accounted
//! exactly; a side that is away gets what it missed from the channel's
//! history (and, with history off, exactly the messages sent while it was
//! away are lost); a wrong key makes every message undecryptable; a relay
//! that duplicates or reorders deliveries is counted exactly.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use stampede_model::Counters;
use stampede_model::spec::{ConnectSpec, PairsMode, PairsSpec, SessionSpec};
use stampede_proto::fleet::Assign;
use stampede_relay::config::PubsubConfig;
use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

mod common;

async fn relay(pubsub: PubsubConfig) -> (Relay, CancellationToken) {
    let shutdown = CancellationToken::new();
    let config = RelayConfig { pubsub, ..Default::default() };
    (Relay::start(config, shutdown.clone()).await.unwrap(), shutdown)
}

fn pairs(mode: PairsMode, messages: u64, away_ms: u64) -> PairsSpec {
    PairsSpec {
        mode,
        messages_per_side: messages,
        away_us: away_ms * 1000,
        delivery_timeout_us: 3_000_000,
        channel_prefix: "test".into(),
        wrong_key: false,
    }
}

fn assign(url: &str, interval_ms: u64, spec: PairsSpec) -> Assign {
    let mut a = common::assign(url, interval_ms, 64, false);
    a.connect_spec_json = ConnectSpec { session: SessionSpec::Pairs(spec), ..Default::default() }.to_json();
    a
}

/// Runs `pairs` pairs (twice as many connections) for `hold`.
async fn run(relay: &Relay, interval_ms: u64, spec: PairsSpec, pairs: u64, hold: Duration) -> Counters {
    let a = assign(&relay.pubsub_url(), interval_ms, spec);
    let snaps = common::drive(&a, pairs * 2, hold, async || {}).await;
    common::totals(&snaps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_delivery_gets_every_message_from_history() {
    let (relay, shutdown) = relay(PubsubConfig::default()).await;
    // 100 pairs; b away 5 s while a sends 5 messages (one per 500 ms).
    let c = run(&relay, 500, pairs(PairsMode::AsyncDelivery, 5, 5_000), 100, Duration::from_secs(8)).await;
    shutdown.cancel();
    assert!(c.sessions_completed >= 100, "every pair finished a session: {c:?}");
    assert!(c.messages_sent >= 500, "{c:?}");
    assert_eq!(c.messages_lost, 0, "{c:?}");
    assert_eq!(c.messages_undecryptable, 0, "{c:?}");
    assert_eq!(c.messages_duplicated + c.messages_unmatched, 0, "{c:?}");
    // Messages of sessions the stop cut short are neither delivered nor lost
    // only if they were never sent: everything sent is accounted.
    assert_eq!(c.messages_received + c.messages_lost, c.messages_sent, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_history_exactly_the_messages_sent_while_away_are_lost() {
    let (relay, shutdown) = relay(PubsubConfig { history_messages: 0, ..Default::default() }).await;
    let spec = PairsSpec { delivery_timeout_us: 1_000_000, ..pairs(PairsMode::AsyncDelivery, 4, 2_000) };
    let c = run(&relay, 200, spec, 20, Duration::from_secs(4)).await;
    shutdown.cancel();
    // a sends its 4 messages within 800 ms of b leaving, all before b comes
    // back at 2 s: each is lost, nothing else is.
    assert!(c.sessions_completed >= 20, "{c:?}");
    assert_eq!(c.messages_lost, c.messages_sent, "{c:?}");
    assert_eq!(c.messages_received + c.messages_undecryptable + c.messages_duplicated, 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_makes_every_message_undecryptable() {
    let (relay, shutdown) = relay(PubsubConfig::default()).await;
    let spec = PairsSpec { wrong_key: true, ..pairs(PairsMode::RealisticSession, 3, 0) };
    let c = run(&relay, 100, spec, 10, Duration::from_secs(3)).await;
    shutdown.cancel();
    assert!(c.messages_sent >= 60, "{c:?}");
    assert_eq!(c.messages_received, 0, "none delivered: {c:?}");
    assert_eq!(c.messages_undecryptable, c.messages_sent, "{c:?}");
    assert_eq!(c.messages_lost, 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_and_reordering_by_the_relay_are_counted_exactly() {
    let faults = PubsubConfig { fault_duplicate: Some(0.2), fault_reorder: Some(0.2), ..Default::default() };
    let (relay, shutdown) = relay(faults).await;
    let c = run(&relay, 20, pairs(PairsMode::SteadyMessaging, 3, 0), 10, Duration::from_secs(3)).await;
    let stats = relay.stats();
    shutdown.cancel();
    let (dup, reordered) = (stats.pubsub.duplicated.load(Relaxed), stats.pubsub.reordered.load(Relaxed));
    assert!(dup > 0 && reordered > 0, "the faults fired: {dup} {reordered}");
    assert_eq!(c.messages_duplicated, dup, "{c:?}");
    assert_eq!(c.messages_out_of_order, reordered, "{c:?}");
    assert_eq!(c.messages_lost + c.messages_undecryptable, 0, "{c:?}");
    assert_eq!(c.messages_received, c.messages_sent, "{c:?}");
}
