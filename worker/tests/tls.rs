//! `wss://` end to end: the native engine against the relay serving TLS on
//! loopback, with certificates made in the test. Every failure must be
//! counted under its TLS cause.

use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use stampede_model::spec::{ConnectSpec, Secret, TlsSpec};
use stampede_proto::fleet::{Assign, Snapshot};
use stampede_relay::pki::{Ca, Pem};
use stampede_relay::tls::TlsSettings;
use stampede_relay::{Relay, RelayConfig};
use stampede_worker::engine::{Engine, EngineError};
use tokio_util::sync::CancellationToken;

mod common;

use common::{drive, errors, totals};

/// A relay serving `wss://` with `server`, requiring client certificates
/// from `client_ca` if given; its URL.
async fn tls_relay(server: &Pem, client_ca: Option<&str>, shutdown: &CancellationToken) -> String {
    let tls = TlsSettings {
        cert_pem: server.cert.clone(),
        key_pem: server.key.clone(),
        client_ca_pem: client_ca.map(str::to_string),
    };
    let relay =
        Relay::start(RelayConfig { tls: Some(tls), ..Default::default() }, shutdown.clone()).await.unwrap();
    let url = relay.ws_url();
    assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
    url
}

fn assign(url: &str, interval_ms: u64, tls: TlsSpec) -> Assign {
    let mut a = common::assign(url, interval_ms, 64, false);
    a.connect_spec_json = ConnectSpec { tls, ..Default::default() }.to_json();
    a
}

fn trusting(ca: &Ca) -> TlsSpec {
    TlsSpec { ca_pem: Some(ca.cert_pem().to_string()), ..Default::default() }
}

fn histogram(snaps: &[Snapshot], pick: fn(&Snapshot) -> &Vec<u8>) -> Histogram<u64> {
    let mut all = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for s in snaps {
        let h: Histogram<u64> = Deserializer::new().deserialize(&mut pick(s).as_slice()).unwrap();
        all.add(&h).unwrap();
    }
    all
}

/// Runs `connections` connections (no reconnect) long enough for every
/// attempt to end, and returns the snapshots.
async fn run(assign: &Assign, connections: u64) -> Vec<Snapshot> {
    drive(assign, connections, Duration::from_millis(1500), async || {}).await
}

fn assert_all_failed_with(snaps: &[Snapshot], connections: u64, cause: &str) {
    let t = totals(snaps);
    assert_eq!(t.connections_attempted, connections, "every attempt ended");
    assert_eq!(t.connections_opened, 0);
    assert_eq!(t.connections_failed, connections);
    assert_eq!(
        errors(snaps, cause),
        connections,
        "every failure is {cause}: {:?}",
        snaps.last().map(|s| &s.errors)
    );
    let all: u64 = snaps.iter().flat_map(|s| s.errors.values()).sum();
    assert_eq!(all, connections, "and nothing else");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_ca_opens_every_connection_and_echoes_and_times_the_handshake() {
    let shutdown = CancellationToken::new();
    let ca = Ca::new("test CA").unwrap();
    let url = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), None, &shutdown).await;
    let snaps = drive(&assign(&url, 50, trusting(&ca)), 20, Duration::from_millis(1500), async || {}).await;
    let t = totals(&snaps);
    assert_eq!(t.connections_opened, 20);
    assert_eq!(t.connections_failed, 0);
    assert!(t.messages_sent >= 20 * 20, "{} sent", t.messages_sent);
    assert_eq!(t.messages_received, t.messages_sent, "every message echoed over TLS");
    assert_eq!(t.messages_lost + t.messages_corrupted, 0);
    assert!(snaps.iter().all(|s| s.errors.is_empty()), "no errors: {:?}", snaps.iter().map(|s| &s.errors));
    // The connect time and each of its parts: one sample per connection.
    let total = histogram(&snaps, |s| &s.connect_histogram);
    let tcp = histogram(&snaps, |s| &s.connect_tcp_histogram);
    let tls = histogram(&snaps, |s| &s.connect_tls_histogram);
    let upgrade = histogram(&snaps, |s| &s.connect_upgrade_histogram);
    assert_eq!((total.len(), tcp.len(), tls.len(), upgrade.len()), (20, 20, 20, 20));
    assert!(tls.max() <= total.max() && tcp.max() <= total.max(), "parts are within the total");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_tls_intact_in_many_records() {
    // 1 MiB messages: 64+ TLS records each way, written in pieces and read
    // through a 1 KiB WebSocket buffer.
    let shutdown = CancellationToken::new();
    let ca = Ca::new("test CA").unwrap();
    let url = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), None, &shutdown).await;
    let mut a = assign(&url, 250, trusting(&ca));
    a.payload_bytes = 1 << 20;
    let snaps = drive(&a, 2, Duration::from_millis(2000), async || {}).await;
    let t = totals(&snaps);
    assert_eq!(t.connections_opened, 2);
    assert!(t.messages_sent >= 8, "{t:?}");
    assert_eq!(t.messages_received, t.messages_sent, "{t:?}");
    assert_eq!((t.messages_corrupted, t.messages_lost, t.messages_unmatched), (0, 0, 0));
    assert_eq!(t.bytes_received, t.messages_received << 20);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_mib_both_ways_over_tls_never_deadlocks() {
    // Sends due every 50 ms, far more than the link carries: the writer
    // waits on the socket while echoes keep being read.
    let shutdown = CancellationToken::new();
    let ca = Ca::new("test CA").unwrap();
    let url = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), None, &shutdown).await;
    let mut a = assign(&url, 50, trusting(&ca));
    a.payload_bytes = 16 << 20;
    let snaps = drive(&a, 2, Duration::from_secs(3), async || {}).await;
    let t = totals(&snaps);
    assert!(t.messages_received >= 2, "echoes keep flowing: {t:?}");
    assert_eq!(t.messages_received + t.messages_lost, t.messages_sent, "{t:?}");
    assert_eq!((t.messages_corrupted, t.messages_unmatched), (0, 0), "{t:?}");
    assert!(t.messages_unsent > 0, "the schedule cannot be kept: {t:?}");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_ws_leaves_the_tls_histogram_empty() {
    let shutdown = CancellationToken::new();
    let relay = Relay::start(RelayConfig::default(), shutdown.clone()).await.unwrap();
    let snaps = run(&assign(&relay.ws_url(), 0, TlsSpec::default()), 5).await;
    assert_eq!(totals(&snaps).connections_opened, 5);
    assert_eq!(histogram(&snaps, |s| &s.connect_tcp_histogram).len(), 5);
    assert_eq!(histogram(&snaps, |s| &s.connect_upgrade_histogram).len(), 5);
    assert_eq!(histogram(&snaps, |s| &s.connect_tls_histogram).len(), 0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_ca_is_counted_as_unknown_ca_and_skipping_verification_opens() {
    let shutdown = CancellationToken::new();
    let (ca, stranger) = (Ca::new("server CA").unwrap(), Ca::new("some other CA").unwrap());
    let url = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), None, &shutdown).await;
    let snaps = run(&assign(&url, 0, trusting(&stranger)), 8).await;
    assert_all_failed_with(&snaps, 8, "tls_unknown_ca");

    let insecure = TlsSpec { insecure_skip_verify: true, ..Default::default() };
    let snaps = run(&assign(&url, 100, insecure), 8).await;
    let t = totals(&snaps);
    assert_eq!((t.connections_opened, t.connections_failed), (8, 0));
    assert!(t.messages_received > 0 && t.messages_received == t.messages_sent);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_name_is_a_hostname_error_unless_server_name_says_so() {
    let shutdown = CancellationToken::new();
    let ca = Ca::new("test CA").unwrap();
    let url = tls_relay(&ca.server(&["localhost"]).unwrap(), None, &shutdown).await;
    // The URL names 127.0.0.1; the certificate only localhost.
    let snaps = run(&assign(&url, 0, trusting(&ca)), 6).await;
    assert_all_failed_with(&snaps, 6, "tls_hostname");
    let named = TlsSpec { server_name: Some("localhost".into()), ..trusting(&ca) };
    let snaps = run(&assign(&url, 0, named), 6).await;
    assert_eq!(totals(&snaps).connections_opened, 6, "checked against server_name instead");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_counted_as_expired() {
    let shutdown = CancellationToken::new();
    let ca = Ca::new("test CA").unwrap();
    let url = tls_relay(&ca.expired_server(&["127.0.0.1"]).unwrap(), None, &shutdown).await;
    let snaps = run(&assign(&url, 0, trusting(&ca)), 6).await;
    assert_all_failed_with(&snaps, 6, "tls_expired");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_opens_with_a_client_certificate_and_is_refused_without() {
    let shutdown = CancellationToken::new();
    let (ca, clients) = (Ca::new("server CA").unwrap(), Ca::new("client CA").unwrap());
    let url = tls_relay(&ca.server(&["127.0.0.1"]).unwrap(), Some(clients.cert_pem()), &shutdown).await;
    // TLS 1.3: the server reads our (missing) certificate after we finished
    // the handshake, so its alert arrives while the upgrade reads.
    let snaps = run(&assign(&url, 0, trusting(&ca)), 6).await;
    assert_all_failed_with(&snaps, 6, "tls_alert");

    let client = clients.client("load-client").unwrap();
    let with_cert = TlsSpec {
        client_cert_pem: Some(client.cert),
        client_key_pem: Some(Secret::new(client.key)),
        ..trusting(&ca)
    };
    let snaps = run(&assign(&url, 100, with_cert), 6).await;
    let t = totals(&snaps);
    assert_eq!((t.connections_opened, t.connections_failed), (6, 0));
    assert!(t.messages_received > 0 && t.messages_received == t.messages_sent);

    // A certificate from a CA the server does not take is refused too.
    let stranger = Ca::new("some other CA").unwrap().client("intruder").unwrap();
    let wrong = TlsSpec {
        client_cert_pem: Some(stranger.cert),
        client_key_pem: Some(Secret::new(stranger.key)),
        ..trusting(&ca)
    };
    let snaps = run(&assign(&url, 0, wrong), 4).await;
    assert_all_failed_with(&snaps, 4, "tls_alert");
    shutdown.cancel();
}

#[tokio::test]
async fn unusable_tls_settings_fail_the_assignment_with_a_clear_message() {
    let (tx, _rx) = tokio::sync::mpsc::channel(4);
    let bad = TlsSpec { ca_pem: Some("-----BEGIN NONSENSE-----".into()), ..Default::default() };
    let err = match Engine::start(&assign("wss://127.0.0.1:9/ws", 0, bad), "w", &[], tx).await {
        Err(e) => e,
        Ok(_) => panic!("a CA without a certificate was accepted"),
    };
    assert!(matches!(err, EngineError::Spec(_)), "{err:?}");
    assert!(err.to_string().contains("ca_file"), "{err}");
}
