//! A peer that declares frames as large as the relay allows (16 MiB) and
//! then sends almost nothing: the relay sets room aside for each declared
//! frame (tungstenite reserves it from the header), but room that nothing
//! has been written into is address space, not memory. What stays
//! resident must follow the bytes that arrived, not the sizes declared,
//! or a few hundred such peers would take gigabytes from the machine.
//!
//! Its own test binary: it reads the process's RSS and counts its heap,
//! which other tests running beside it would move.

use std::time::Duration;

mod common;

use stampede_relay::{Relay, RelayConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static HEAP: stampede_heap::Counting = stampede_heap::Counting;

/// Peers, each declaring one frame of just under 16 MiB.
const PEERS: usize = 100;
/// What each sends of its frame.
const SENT: usize = 4 * 1024;
/// The largest frame the relay takes (`relay/src/server.rs`).
const DECLARED: u64 = (16 << 20) - 1;

/// This process's resident memory, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_declared_huge_and_never_sent_cost_only_the_bytes_that_arrived() {
    let shutdown = CancellationToken::new();
    let relay = Relay::start(RelayConfig::default(), shutdown.clone()).await.unwrap();
    let mut peers = Vec::new();
    for _ in 0..PEERS {
        peers.push(common::raw_upgraded(relay.local_addr()).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (before, heap_before) = (rss(), stampede_heap::live());
    for tcp in &mut peers {
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&DECLARED.to_be_bytes());
        frame.extend_from_slice(&[7, 7, 7, 7]);
        frame.extend(std::iter::repeat_n(0xA5, SENT));
        tcp.write_all(&frame).await.unwrap();
    }
    // The relay has read every header and what followed, and waits for the
    // rest of each frame.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let grown = rss().saturating_sub(before);
    let reserved = (stampede_heap::live() - heap_before).max(0) as u64;
    let declared = PEERS as u64 * DECLARED;
    eprintln!(
        "{PEERS} peers declared {} MiB in all and sent {} KiB: the relay reserved {} MiB, its RSS grew {} KiB",
        declared >> 20,
        (PEERS * SENT) >> 10,
        reserved >> 20,
        grown >> 10
    );
    // The relay did set room aside for what was declared: what follows
    // measures reserved room, not a relay that never read the headers.
    assert!(reserved >= declared / 2, "the relay reserved {reserved} bytes for {declared} declared");
    // 64 KiB a peer is ~16 times what each sent; reserving what each
    // declared would be 16 MiB a peer.
    assert!(
        grown < PEERS as u64 * 64 * 1024,
        "RSS grew {grown} bytes for {PEERS} peers that sent {SENT} bytes each"
    );
    // Each still gets its frame served: the relay waits, it has not given up.
    let tcp = &mut peers[0];
    let mut one = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut one)).await.is_err(),
        "the relay answered a frame it has not had whole"
    );
    shutdown.cancel();
}
