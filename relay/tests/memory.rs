//! The relay's heap per idle connection, counted by the allocator itself:
//! exact and independent of timing, unlike RSS. The clients run on a
//! thread whose allocations are not counted, so only the relay's side of
//! each connection is (its task, its socket's registration, its codec and
//! buffers). bench (b) measures the same thing as RSS at 300,000.

use std::time::Duration;

mod common;

use stampede_relay::{Relay, RelayConfig};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static HEAP: stampede_heap::Counting = stampede_heap::Counting;

/// Most heap bytes the relay may hold per idle connection: 6,019 now
/// (9,038 with a 4 KiB read buffer).
const MOST_PER_CONNECTION: isize = 6_500;

/// Opens `n` WebSocket connections to `addr` and holds them (the upgrade
/// answered) until the returned sender is dropped.
fn clients(
    addr: std::net::SocketAddr,
    n: usize,
) -> (std::sync::mpsc::Receiver<()>, tokio::sync::oneshot::Sender<()>) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        stampede_heap::uncounted();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let mut held = Vec::with_capacity(n);
            for _ in 0..n {
                let tcp = common::raw_upgraded(addr).await;
                held.push(tcp);
            }
            ready_tx.send(()).unwrap();
            let _ = stop_rx.await;
        });
    });
    (ready_rx, stop_tx)
}

#[test]
fn an_idle_connection_costs_the_relay_little_heap() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let shutdown = CancellationToken::new();
    let relay: Relay = rt.block_on(Relay::start(RelayConfig::default(), shutdown.clone())).unwrap();
    let live_with = |n: usize| {
        let (ready, stop) = clients(relay.local_addr(), n);
        ready.recv_timeout(Duration::from_secs(60)).expect("the clients connected");
        // Each connection's task has read the upgrade and sits idle.
        std::thread::sleep(Duration::from_millis(500));
        let live = stampede_heap::live();
        drop(stop);
        // Their sessions end before the next count.
        std::thread::sleep(Duration::from_millis(500));
        live
    };
    let (at_200, at_400) = (live_with(200), live_with(400));
    let per = (at_400 - at_200) / 200;
    eprintln!("relay heap per idle connection: {per} bytes ({at_200} live at 200, {at_400} at 400)");
    assert!(per > 0, "a connection must cost something: {per}");
    assert!(per <= MOST_PER_CONNECTION, "the relay holds {per} heap bytes per idle connection");
    shutdown.cancel();
    rt.block_on(relay.wait());
}
