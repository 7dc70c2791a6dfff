//! Pairs and broadcast end to end: the real controller, worker processes
//! and the relay's channels on loopback. The acceptance of the protocol
//! modes: async delivery loses nothing with history and exactly the gap
//! without it; a wrong key makes everything undecryptable; a relay that
//! duplicates or reorders is counted; broadcast to 1,000 subscribers on two
//! workers delivers every message to every subscriber, as the relay counts.

mod common;

use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Relay, Scratch, num, read_json, relay_metric};

/// Runs a pairs scenario against the bundled relay; `target` and
/// `messages` are added to its tables.
fn pairs(name: &str, target: &str, messages: &str, connections: u64, sustained_s: u64) -> serde_json::Value {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "pairs.toml",
        &format!(
            "name = \"{name}\"\n[target]\nbundled = true\n{target}\n[load]\nconnections = {connections}\n\
             message_interval_s = \"500ms\"\n[messages]\nmode = \"pairs\"\n{messages}\n[phases]\nwarmup_s = 0\n\
             ramp_up_s = \"1s\"\nsustained_s = {sustained_s}\ncooldown_s = 0\n"
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(120));
    assert!(run.code == 0 || run.code == 99, "{}", run.stderr);
    read_json(&scratch.results().join("summary.json"))
}

fn counter(summary: &serde_json::Value, name: &str) -> u64 {
    num(summary, &format!("counters.{name}")) as u64
}

#[test]
fn async_delivery_loses_nothing_with_history_and_exactly_the_gap_without() {
    let with =
        pairs("async", "", "pairs_mode = \"async-delivery\"\nmessages_per_side = 3\naway = \"5s\"", 200, 9);
    let sent = counter(&with, "messages_sent");
    assert!(counter(&with, "sessions_completed") >= 100, "100 pairs, each a session: {with}");
    assert!(sent >= 300, "{with}");
    assert_eq!(counter(&with, "messages_lost"), 0, "{with}");
    assert_eq!(counter(&with, "messages_undecryptable"), 0, "{with}");
    assert_eq!(counter(&with, "messages_received"), sent, "{with}");

    // History off: a sends only while b is away, so every message is in
    // the gap, and every one is lost; nothing else is counted.
    let without = pairs(
        "async-nohistory",
        "bundled_history_messages = 0",
        "pairs_mode = \"async-delivery\"\nmessages_per_side = 3\naway = \"3s\"\ndelivery_timeout = \"1s\"",
        200,
        5,
    );
    let sent = counter(&without, "messages_sent");
    assert!(sent >= 300, "{without}");
    assert_eq!(counter(&without, "messages_lost"), sent, "{without}");
    for other in ["messages_received", "messages_undecryptable", "messages_duplicated", "messages_unmatched"]
    {
        assert_eq!(counter(&without, other), 0, "{other}: {without}");
    }
    assert_eq!(without["verdict"], "PASS", "no threshold was set: {without}");
    eprintln!(
        "async-delivery: with history {} sent, {} received, 0 lost, 0 undecryptable; without: {sent} sent, {sent} lost",
        counter(&with, "messages_sent"),
        counter(&with, "messages_received")
    );
}

#[test]
fn a_wrong_key_is_undecryptable_and_relay_faults_are_counted() {
    let wrong = pairs("wrong-key", "", "pairs_mode = \"realistic-session\"\nwrong_key = true", 40, 3);
    let sent = counter(&wrong, "messages_sent");
    assert!(sent >= 60, "{wrong}");
    assert_eq!(counter(&wrong, "messages_undecryptable"), sent, "{wrong}");
    assert_eq!(counter(&wrong, "messages_received"), 0, "{wrong}");
    assert_eq!(wrong["errors"]["message_undecryptable"].as_u64(), Some(sent), "{wrong}");

    let faulty = pairs(
        "faulty",
        "bundled_fault_duplicate = 0.1\nbundled_fault_reorder = 0.1",
        "pairs_mode = \"steady-messaging\"",
        40,
        4,
    );
    let sent = counter(&faulty, "messages_sent");
    assert!(counter(&faulty, "messages_duplicated") > 0, "{faulty}");
    assert!(counter(&faulty, "messages_out_of_order") > 0, "{faulty}");
    assert_eq!(counter(&faulty, "messages_received"), sent, "each delivered once: {faulty}");
    assert_eq!(counter(&faulty, "messages_lost") + counter(&faulty, "messages_undecryptable"), 0, "{faulty}");
    eprintln!(
        "wrong key: {} sent, all undecryptable; relay faults: {sent} sent = received, {} duplicated, {} out of order",
        counter(&wrong, "messages_sent"),
        counter(&faulty, "messages_duplicated"),
        counter(&faulty, "messages_out_of_order")
    );
}

#[test]
fn broadcast_to_a_thousand_subscribers_on_two_workers() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let relay = Relay::start();
    let scratch = Scratch::new();
    let path = scratch.file(
        "broadcast.toml",
        &format!(
            "name = \"broadcast\"\n[target]\nurl = \"ws://127.0.0.1:{}/pubsub\"\n[load]\nconnections = 1001\n\
             message_interval_s = \"200ms\"\n[messages]\nmode = \"broadcast\"\npublishers = 1\nchannels = 1\n\
             publish_delay = \"3s\"\n[fleet]\nworkers = 2\n[phases]\nwarmup_s = 0\nramp_up_s = \"1s\"\n\
             sustained_s = 6\ncooldown_s = 0\n[thresholds]\nmessage_loss_rate = \"< 0.0001\"\n",
            relay.1
        ),
    );
    let run = scratch.run(&path, Duration::from_secs(120));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = read_json(&scratch.results().join("summary.json"));
    let (sent, received) = (counter(&s, "messages_sent"), counter(&s, "messages_received"));
    assert!(sent >= 10, "{s}");
    assert_eq!(received, sent * 1000, "deliveries = messages x subscribers: {s}");
    assert_eq!(counter(&s, "deliveries_expected"), received, "{s}");
    assert_eq!(counter(&s, "messages_lost") + counter(&s, "messages_duplicated"), 0, "{s}");
    let channels = s["channels"].as_array().expect("per channel figures");
    assert_eq!(channels.len(), 1, "{s}");
    for (key, want) in [("channel", 0), ("published", sent), ("expected", received), ("received", received)] {
        assert_eq!(channels[0][key].as_u64(), Some(want), "channel 0 {key}: {s}");
    }
    let (p50, p99) = (num(&s, "latency_ms.p50"), num(&s, "latency_ms.p99"));
    assert!(p50 > 0.0 && p99 >= p50, "fan-out latency reported: p50 {p50} p99 {p99}");
    assert_eq!(s["workers"].as_u64(), Some(2), "{s}");
    // The relay wrote exactly what the subscribers counted.
    let delivered = relay_metric(relay.1, "relay_pubsub_delivered_total").unwrap();
    let published = relay_metric(relay.1, "relay_pubsub_published_total").unwrap();
    assert_eq!(delivered as u64, received, "the relay's count");
    assert_eq!(published as u64, sent, "the relay's count");
    eprintln!(
        "broadcast: {sent} messages x 1000 subscribers = {received}; fan-out p50 {p50} ms, p99 {p99} ms"
    );
}
