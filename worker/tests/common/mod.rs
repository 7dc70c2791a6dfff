//! Harness for engine tests: an assignment for a target and a run of the
//! engine that collects every snapshot.

#![allow(dead_code)]

use std::time::Duration;

use stampede_model::Counters;
use stampede_proto::fleet::{Assign, PhaseStart, Snapshot};
use stampede_worker::engine::Engine;
use tokio::sync::mpsc;

/// An assignment to `url`: one message per `interval_ms` (0: connect only)
/// of `payload_bytes`.
pub fn assign(url: &str, interval_ms: u64, payload_bytes: u32, reconnect: bool) -> Assign {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    Assign {
        run_id: "test".into(),
        target_url: url.into(),
        message_interval_us: interval_ms * 1000,
        payload_bytes,
        connect_timeout_us: 2_000_000,
        run_start_unix_us: now.as_micros() as i64,
        clock_offset_us: 0,
        source_addresses: vec![],
        reconnect,
        buffer_bytes: 1024,
        connect_spec_json: String::new(),
    }
}

/// Runs the engine at `connections` for `hold`, calls `mid`, stops it and
/// returns every snapshot.
pub async fn drive(
    assign: &Assign,
    connections: u64,
    hold: Duration,
    mid: impl AsyncFnOnce(),
) -> Vec<Snapshot> {
    let (tx, mut rx) = mpsc::channel(64);
    let engine = Engine::start(assign, "test-worker", &[], tx).await.unwrap();
    let phase = PhaseStart {
        index: 0,
        name: "test".into(),
        connections,
        ramp_us: 0,
        duration_us: 60_000_000,
        ..Default::default()
    };
    engine.phase(phase).await;
    let collect = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(s) = rx.recv().await {
            all.push(s);
        }
        all
    });
    tokio::time::sleep(hold).await;
    mid().await;
    engine.stop();
    tokio::time::timeout(Duration::from_secs(20), collect).await.expect("engine ends after stop").unwrap()
}

/// Every counter summed over the snapshots.
pub fn totals(snaps: &[Snapshot]) -> Counters {
    let mut total = Counters::default();
    for s in snaps {
        total.add(&s.model_counters().unwrap());
    }
    total
}

/// Errors of `cause` over the snapshots.
pub fn errors(snaps: &[Snapshot], cause: &str) -> u64 {
    snaps.iter().filter_map(|s| s.errors.get(cause)).sum()
}
