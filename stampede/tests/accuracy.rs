//! Measurement accuracy: the bundled relay echoes after an injected 20 ms,
//! two worker processes measure it, and the merged percentiles must say
//! 20 ms, not 21 or 22 (no timer-granularity or scheduling error).

mod common;

use std::time::Duration;

use common::{Scratch, num, read_json};

#[test]
fn an_injected_20ms_delay_is_measured_as_20ms() {
    let scratch = Scratch::new();
    let path = scratch.file(
        "accuracy.toml",
        r#"
name = "accuracy"
[target]
bundled = true
bundled_delay_ms = 20
[load]
connections = 200
message_interval_s = 0.1
[phases]
warmup_s = 1
ramp_up_s = 2
sustained_s = 8
cooldown_s = 1
[fleet]
workers = 2
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(90));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let summary = read_json(&scratch.results().join("summary.json"));
    assert_eq!(summary["workers"], 2);
    for worker in summary["worker_details"].as_array().unwrap() {
        assert!(worker["snapshots"].as_u64().unwrap() >= 10, "both workers reported: {worker}");
    }
    let (p50, p99) = (num(&summary, "latency_ms.p50"), num(&summary, "latency_ms.p99"));
    eprintln!("injected 20 ms: measured p50 {p50} ms, p99 {p99} ms");
    assert!(num(&summary, "latency_ms.count") > 15_000.0);
    assert!((20.0..=21.0).contains(&p50), "p50 {p50} ms");
    assert!(p99 < 23.0, "p99 {p99} ms");
    assert!(num(&summary, "latency_ms.max") >= 20.0, "never below the injected delay");
    assert_eq!(num(&summary, "messages.lost"), 0.0);
}
