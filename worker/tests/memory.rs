//! Heap bytes per idle connection, counted by the allocator itself: exact
//! and independent of timing, unlike RSS. The relay runs in this process on
//! a thread whose allocations are not counted, so only the worker's side of
//! each connection is (its task, its socket's registration, its cancel
//! token, its codec). bench (a) measures the same thing as RSS.

mod common;

use std::time::Duration;

use common::{assign, drive, totals};

use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static HEAP: stampede_heap::Counting = stampede_heap::Counting;

/// Most heap bytes the worker may hold per idle connection. A tokio task
/// with the slot's future is most of it (a_connection_slot_stays_small);
/// with tungstenite under it, this was 1,671 (1,153 now).
const MOST_PER_CONNECTION: isize = 1_250;

#[test]
fn an_idle_connection_costs_the_worker_little_heap() {
    // The relay, on a thread of its own whose allocations are not counted.
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let relay = std::thread::spawn(move || {
        stampede_heap::uncounted();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let relay = Relay::start(RelayConfig::default(), stop.clone()).await.unwrap();
            url_tx.send(relay.ws_url()).unwrap();
            stop.cancelled().await;
        });
    });
    let url = url_rx.recv().unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let held = |connections: u64| {
        rt.block_on(async {
            let mut live = 0;
            let snaps = drive(&assign(&url, 0, 0, false), connections, Duration::from_secs(3), async || {
                live = stampede_heap::live();
            })
            .await;
            assert_eq!(totals(&snaps).connections_opened, connections, "all opened");
            assert_eq!(totals(&snaps).connections_failed, 0);
            live
        })
    };
    let (small, large) = (held(1000), held(2000));
    let per_connection = (large - small) / 1000;
    eprintln!(
        "worker heap per idle connection: {per_connection} bytes ({small} live at 1,000, {large} at 2,000)"
    );
    assert!(per_connection > 0, "connections cost something: {per_connection}");
    assert!(per_connection <= MOST_PER_CONNECTION, "{per_connection} bytes per idle connection");
    shutdown.cancel();
    relay.join().unwrap();
}
