use super::*;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use stampede_model::histogram::new_histogram;
use stampede_proto::counters_to_wire;
use std::path::Path;

fn plan() -> Plan {
    let text = "name = \"t\"\n[target]\nbundled = true\n[phases]\nwarmup_s = 2\nramp_up_s = 2\nsustained_s = 2\ncooldown_s = 0\n";
    let sc = crate::scenario::Scenario::parse(Path::new("t"), text).unwrap();
    Plan::new(&sc, Path::new("t"), text).unwrap()
}

fn agg(n: usize) -> Aggregator {
    let ids: Vec<String> = (1..=n).map(|i| format!("w{i}")).collect();
    Aggregator::new(&plan(), &ids, RunClock::starting_in(Duration::ZERO))
}

fn snapshot(seq: u64, second: u64, latencies_us: &[u64], sent: u64, active: u64) -> Snapshot {
    let mut h = new_histogram();
    latencies_us.iter().for_each(|v| h.record(*v).unwrap());
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(&h, &mut bytes).unwrap();
    let counters =
        Counters { messages_sent: sent, messages_received: latencies_us.len() as u64, ..Default::default() };
    Snapshot {
        seq,
        second,
        counters: counters_to_wire(&counters),
        gauges: Some(Gauges {
            connections_active: active,
            rss_bytes: 10_000_000,
            cpu_us: 250_000,
            ..Default::default()
        }),
        latency_histogram: bytes,
        ..Default::default()
    }
}

fn encoded(values_us: &[u64]) -> Vec<u8> {
    let mut h = new_histogram();
    values_us.iter().for_each(|v| h.record(*v).unwrap());
    let mut bytes = Vec::new();
    V2DeflateSerializer::new().serialize(&h, &mut bytes).unwrap();
    bytes
}

#[test]
fn connect_time_parts_are_merged_wherever_the_total_goes() {
    let mut agg = agg(2);
    // Worker 0 opens wss:// connections, worker 1 ws:// ones.
    let mut tls = snapshot(1, 0, &[], 0, 2);
    tls.connect_histogram = encoded(&[6_000, 7_000]);
    tls.connect_tcp_histogram = encoded(&[1_000, 1_000]);
    tls.connect_tls_histogram = encoded(&[3_000, 4_000]);
    tls.connect_upgrade_histogram = encoded(&[2_000, 2_000]);
    let mut plain = snapshot(1, 0, &[], 0, 1);
    plain.connect_histogram = encoded(&[3_000]);
    plain.connect_tcp_histogram = encoded(&[1_000]);
    plain.connect_tls_histogram = encoded(&[]);
    plain.connect_upgrade_histogram = encoded(&[2_000]);
    agg.add(0, &tls).unwrap();
    agg.add(1, &plain).unwrap();
    let rows = agg.ready_rows(1.0, false);
    let row = &rows[0];
    assert_eq!((row.connect.len(), row.connect_split.tcp.len()), (3, 3));
    assert_eq!((row.connect_split.tls.len(), row.connect_split.upgrade.len()), (2, 3));
    assert!((row.metrics.connect_tls_p95_ms - 4.0).abs() < 0.01, "{}", row.metrics.connect_tls_p95_ms);
    assert!((row.metrics.connect_tcp_p95_ms - 1.0).abs() < 0.01);
    assert!((row.metrics.connect_upgrade_p95_ms - 2.0).abs() < 0.01);
    for t in [&agg.run, &agg.phases[0]] {
        assert_eq!(
            (t.connect_split.tcp.len(), t.connect_split.tls.len(), t.connect_split.upgrade.len()),
            (3, 2, 3)
        );
    }
    // A worker of an older version sends no parts: nothing breaks, and
    // a second without TLS samples has no TLS figure.
    agg.add(0, &snapshot(2, 1, &[], 0, 2)).unwrap();
    agg.add(1, &snapshot(2, 1, &[], 0, 1)).unwrap();
    let rows = agg.ready_rows(2.0, false);
    assert!(rows[0].metrics.connect_tls_p95_ms.is_nan() && rows[0].connect_split.tls.is_empty());
}

#[test]
fn percentiles_come_from_merged_histograms_not_averages() {
    let mut agg = agg(2);
    // Worker 0: 90 fast echoes; worker 1: 10 slow ones.
    agg.add(0, &snapshot(1, 0, &[1_000; 90], 90, 5)).unwrap();
    agg.add(1, &snapshot(1, 0, &[100_000; 10], 10, 5)).unwrap();
    let rows = agg.ready_rows(0.5, false);
    assert_eq!(rows.len(), 1, "both workers reported second 0");
    let row = &rows[0].metrics;
    // Averaging the two workers' p50s would say ~50 ms.
    assert!((row.latency_p50_ms - 1.0).abs() < 0.01, "p50 {}", row.latency_p50_ms);
    assert!((row.latency_p95_ms - 100.0).abs() < 0.1, "p95 {}", row.latency_p95_ms);
    assert_eq!(row.counters.messages_sent, 100);
    assert_eq!(row.connections_active, 10);
    assert!((row.worker_rss_mb - 20.0).abs() < 1e-9);
    assert!((row.worker_cpu_pct - 50.0).abs() < 1e-9);
    assert_eq!(agg.run.latency.len(), 100);
    assert_eq!(agg.peak(None), 10);
}

#[test]
fn a_late_snapshot_corrects_its_row_instead_of_vanishing() {
    let mut agg = agg(2);
    let mut first = snapshot(1, 0, &[500], 1, 1);
    first.errors.insert("timeout".into(), 2);
    agg.add(0, &first).unwrap();
    assert!(agg.ready_rows(1.5, false).is_empty(), "worker 1 has not reported");
    let rows = agg.ready_rows(1.0 + GRACE_S as f64, false);
    assert_eq!(rows.len(), 1, "written without the straggler after the grace period");
    assert_eq!(rows[0].metrics.workers_reporting, 1);
    assert_eq!(rows[0].metrics.revision, 0);
    // The straggler (frozen for 2 s) reports late.
    assert_eq!(rows[0].errors, [("timeout".to_string(), 2)].into());
    let mut late = snapshot(1, 0, &[700_000], 1, 1);
    late.taken_late_us = 2_000_000;
    late.errors.insert("timeout".into(), 1);
    late.errors.insert("refused".into(), 4);
    agg.add(1, &late).unwrap();
    let fixed = agg.take_corrections();
    assert_eq!(fixed.len(), 1);
    // The correction carries the whole second's causes (errors.csv's
    // highest revision of a second wins), summing to its `errors`.
    assert_eq!(fixed[0].errors, [("refused".to_string(), 4), ("timeout".to_string(), 3)].into());
    assert_eq!(fixed[0].metrics.errors, 7);
    let m = &fixed[0].metrics;
    assert_eq!((m.elapsed_s, m.revision, m.workers_reporting), (0, 1, 2));
    assert_eq!(m.counters.messages_sent, 2, "the row now holds both workers");
    assert_eq!(m.generator_stalled, 1, "a snapshot taken 2 s late flags its second");
    assert_eq!(fixed[0].latency.len(), 1, "only the late histogram is appended to the log");
    assert_eq!(fixed[0].workers.len(), 1);
    assert_eq!(fixed[0].workers[0].worker, "w2");
    assert_eq!(agg.rows[0].csv_cells(), m.csv_cells(), "the final rows carry the correction");
    assert_eq!(agg.run.counters.messages_sent, 2);
    assert_eq!(agg.stalled_seconds(None), [0]);
}

#[test]
fn a_send_held_up_by_the_generator_flags_its_second() {
    let mut agg = agg(1);
    agg.add(0, &snapshot(1, 0, &[500], 1, 1)).unwrap();
    let mut held = snapshot(2, 1, &[150_000], 1, 1);
    let counters = Counters { messages_sent: 1, sends_late: 1, sends_stalled: 1, ..Default::default() };
    held.counters = counters_to_wire(&counters);
    agg.add(0, &held).unwrap();
    let rows = agg.ready_rows(10.0, true);
    let flags: Vec<u8> = rows.iter().map(|r| r.metrics.generator_stalled).collect();
    assert_eq!(flags, [0, 1]);
    assert_eq!(agg.stalled_seconds(None), [1]);
}

#[test]
fn duplicates_are_ignored_and_gauges_carry_forward() {
    let mut agg = agg(1);
    let first = snapshot(1, 0, &[500], 1, 3);
    assert!(agg.add(0, &first).unwrap());
    assert!(!agg.add(0, &first).unwrap(), "a resent snapshot counts once");
    assert_eq!(agg.run.counters.messages_sent, 1);
    // Second 1 missing, second 2 present: flushing writes both rows, and
    // the gap keeps the last known connection count.
    agg.add(0, &snapshot(2, 2, &[], 0, 4)).unwrap();
    let rows = agg.ready_rows(10.0, true);
    let active: Vec<u64> = rows.iter().map(|r| r.metrics.connections_active).collect();
    assert_eq!(active, [3, 3, 4]);
    assert!(rows[1].metrics.latency_p50_ms.is_nan(), "no samples: no number");
    let phases: Vec<&str> = rows.iter().map(|r| r.metrics.phase.as_str()).collect();
    assert_eq!(phases, ["warmup", "warmup", "ramp-up"]);
    assert_eq!(agg.peak(Some(1)), 4);
    assert_eq!(agg.peak(Some(0)), 3);
}

/// A plan whose flow has the steps connect, established, send.
fn flow_agg(n: usize) -> Aggregator {
    let text = "name = \"t\"\n[target]\nbundled = true\n[phases]\nwarmup_s = 2\nramp_up_s = 2\nsustained_s = 2\n\
                cooldown_s = 0\n[[flow]]\nstep = \"connect\"\n[[flow]]\nstep = \"expect\"\nname = \"established\"\n\
                [[flow]]\nstep = \"send\"\nmessage = \"x\"\n";
    let sc = crate::scenario::Scenario::parse(Path::new("t"), text).unwrap();
    let plan = Plan::new(&sc, Path::new("t"), text).unwrap();
    let ids: Vec<String> = (1..=n).map(|i| format!("w{i}")).collect();
    Aggregator::new(&plan, &ids, RunClock::starting_in(Duration::ZERO))
}

fn with_step(mut snap: Snapshot, name: &str, ok_us: &[u64], failed: u64) -> Snapshot {
    let stats = StepStats { ok: ok_us.len() as u64, failed, histogram: encoded(ok_us) };
    snap.steps.insert(name.to_string(), stats);
    snap
}

#[test]
fn step_percentiles_come_from_merged_histograms_in_every_total() {
    let mut agg = flow_agg(2);
    assert_eq!(agg.step_names(), ["connect", "established", "send"]);
    // Worker 0: 90 fast runs and a failure; worker 1: 10 slow runs.
    let fast = with_step(snapshot(1, 0, &[], 0, 1), "established", &[1_000; 90], 1);
    agg.add(0, &with_step(fast, "connect", &[2_000], 0)).unwrap();
    agg.add(1, &with_step(snapshot(1, 0, &[], 0, 1), "established", &[100_000; 10], 0)).unwrap();
    let rows = agg.ready_rows(0.5, false);
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(&row.step_names[..], agg.step_names());
    let cells = row.step_cells();
    assert_eq!((cells[1].ok, cells[1].failed), (100, 1));
    // Averaging the workers' p95s would say ~50 ms.
    assert!((cells[1].p95_ms - 100.0).abs() < 0.1, "{}", cells[1].p95_ms);
    assert_eq!((cells[0].ok, cells[0].failed), (1, 0));
    assert_eq!((cells[2].ok, cells[2].failed), (0, 0));
    assert!(cells[2].p95_ms.is_nan(), "no run of send in this second: no figure");
    for totals in [&agg.run, &agg.phases[0]] {
        let f = totals.steps[1].figures();
        assert_eq!((f.ok, f.failed), (100, 1));
        assert!((f.p50_ms.unwrap() - 1.0).abs() < 0.01);
        assert!((f.p95_ms.unwrap() - 100.0).abs() < 0.1);
        assert!((f.failure_rate.unwrap() - 1.0 / 101.0).abs() < 1e-12);
        assert!(totals.steps[2].durations.is_none(), "no histogram for a step without samples");
    }
    assert_eq!(agg.phases[1].steps[1].ok, 0, "the next phase has none yet");
    // The same figures through the per-second path a stress stage judges.
    let f = crate::summary::second_figures(row, 0);
    let names: Vec<&str> = f.steps.iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["connect", "established", "send"]);
    assert_eq!(f.steps.get("established").unwrap().ok, 100);
}

#[test]
fn a_late_step_report_corrects_its_row_from_the_kept_histograms() {
    let mut agg = flow_agg(2);
    agg.add(0, &with_step(snapshot(1, 0, &[], 0, 1), "established", &[1_000; 19], 0)).unwrap();
    let rows = agg.ready_rows(1.0 + GRACE_S as f64, false);
    assert!((rows[0].step_cells()[1].p95_ms - 1.0).abs() < 0.01);
    // The row's step histograms are now kept encoded; a late worker's
    // slow runs must still merge with them, not replace them.
    agg.add(1, &with_step(snapshot(1, 0, &[], 0, 1), "established", &[50_000; 1], 2)).unwrap();
    let fixed = agg.take_corrections();
    assert_eq!(fixed.len(), 1);
    let cells = fixed[0].step_cells();
    assert_eq!((cells[1].ok, cells[1].failed), (20, 2));
    assert!((cells[1].p95_ms - 1.0).abs() < 0.01, "19 of 20 runs took 1 ms: {}", cells[1].p95_ms);
    assert!(fixed[0].steps[1].durations.as_ref().unwrap().max() >= 50_000);
    // And again, from the encoded form once more.
    agg.add(1, &with_step(snapshot(2, 0, &[], 0, 1), "established", &[50_000; 20], 0)).unwrap();
    let cells = agg.take_corrections()[0].step_cells();
    assert_eq!(cells[1].ok, 40);
    assert!((cells[1].p95_ms - 50.0).abs() < 0.1, "{}", cells[1].p95_ms);
    assert_eq!(agg.run.steps[1].ok, 40);
}

#[test]
fn hostile_step_entries_are_errors() {
    let mut agg = flow_agg(1);
    let err = agg.add(0, &with_step(snapshot(1, 0, &[], 0, 0), &"x".repeat(10_000), &[1], 0)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, AggregateError::Steps(_)) && text.contains("not a step of the run's flow"));
    assert!(text.len() < 200, "{text}");
    let mut snap = snapshot(1, 0, &[], 0, 0);
    for name in ["connect", "established", "send"] {
        snap = with_step(snap, name, &[1], 0);
    }
    agg.add(0, &snap).unwrap();
    let mut too_many = with_step(snapshot(2, 1, &[], 0, 0), "connect", &[], 1);
    for i in 0..3 {
        too_many = with_step(too_many, &format!("s{i}"), &[], 1);
    }
    let err = agg.add(0, &too_many).unwrap_err().to_string();
    assert!(err.contains("4 step entries, and the run's flow has 3 steps"), "{err}");
    let mut bad = snapshot(3, 1, &[], 0, 0);
    bad.steps.insert("send".into(), StepStats { ok: 1, failed: 0, histogram: b"junk junk junk".to_vec() });
    assert!(matches!(agg.add(0, &bad), Err(AggregateError::Histogram(_))));
    let mut claim = Vec::new();
    hdrhistogram::serialization::V2Serializer::new().serialize(&new_histogram(), &mut claim).unwrap();
    claim[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes());
    let mut huge = snapshot(4, 1, &[], 0, 0);
    huge.steps.insert("send".into(), StepStats { ok: 1, failed: 0, histogram: claim });
    assert!(agg.add(0, &huge).unwrap_err().to_string().contains("claims the range"));
    assert_eq!(agg.run.steps.iter().map(|s| s.ok).sum::<u64>(), 3, "refused snapshots count nothing");
    // A run without a flow takes no step at all.
    let mut plain = self::agg(1);
    let err = plain.add(0, &with_step(snapshot(1, 0, &[], 0, 0), "connect", &[1], 0)).unwrap_err();
    assert!(err.to_string().contains("the run has no flow"), "{err}");
}

#[test]
fn broadcast_channels_are_summed_and_only_the_runs_taken() {
    let text = "name = \"s\"\n[target]\nbundled = true\n[messages]\nmode = \"broadcast\"\nchannels = 3\n";
    let sc = crate::scenario::Scenario::parse(std::path::Path::new("t.toml"), text).unwrap();
    let plan = Plan::new(&sc, std::path::Path::new("t.toml"), text).unwrap();
    let mut agg = Aggregator::new(&plan, &["w".to_string()], RunClock::starting_in(Duration::ZERO));
    let stats = |published, received| stampede_proto::fleet::ChannelStats {
        published,
        received,
        expected: received,
        ..Default::default()
    };
    for seq in 1..=2 {
        let mut snap = snapshot(seq, seq - 1, &[], 0, 0);
        snap.channels.insert(2, stats(10, 100));
        snap.channels.insert(0, stats(u64::MAX, 1));
        agg.add(0, &snap).unwrap();
    }
    let two = agg.channels[&2];
    assert_eq!((two.channel, two.published, two.received, two.expected), (2, 20, 200, 200));
    assert_eq!(agg.channels[&0].published, u64::MAX, "saturates");
    let mut snap = snapshot(3, 2, &[], 0, 0);
    snap.channels.insert(3, stats(1, 1));
    assert!(matches!(agg.add(0, &snap), Err(AggregateError::Channel(3))), "channel 3 of 0..3");
}

#[test]
fn hostile_snapshots_are_errors_not_panics() {
    let mut agg = agg(1);
    let mut snap = snapshot(1, 0, &[], 0, 0);
    snap.latency_histogram = b"not a histogram".to_vec();
    assert!(agg.add(0, &snap).is_err());
    // A few bytes whose header claims a range of 2^62 us: refused by
    // its header, before decoding would allocate what it claims.
    let mut claim = Vec::new();
    hdrhistogram::serialization::V2Serializer::new().serialize(&new_histogram(), &mut claim).unwrap();
    claim[24..32].copy_from_slice(&(1u64 << 62).to_be_bytes());
    let mut snap = snapshot(1, 0, &[], 0, 0);
    snap.connect_histogram = claim;
    let err = agg.add(0, &snap).unwrap_err().to_string();
    assert!(err.contains("claims the range"), "{err}");
    let mut snap = snapshot(2, 0, &[], 0, 0);
    snap.counters.insert("no_such_counter".into(), 1);
    assert!(agg.add(0, &snap).is_err());
    let mut snap = snapshot(3, 0, &[], u64::MAX, 0);
    snap.errors.insert("refused".into(), u64::MAX);
    agg.add(0, &snap).unwrap();
    agg.add(0, &snapshot(4, 0, &[], u64::MAX, 0)).unwrap();
    assert_eq!(agg.run.counters.messages_sent, u64::MAX, "saturates, never wraps");
    let far = snapshot(5, 1_000_000_000, &[], 1, 0);
    assert!(matches!(agg.add(0, &far), Err(AggregateError::OutOfRange { .. })));
    assert_eq!(agg.ready_rows(1e9, true).len(), 1, "no row for every second up to a claimed one");
    // Channel figures in a run that has no channels.
    let mut snap = snapshot(6, 0, &[], 0, 0);
    snap.channels.insert(5, Default::default());
    assert!(matches!(agg.add(0, &snap), Err(AggregateError::Channel(5))));
    // Cause keys: a long one, then a flood of distinct ones.
    let mut snap = snapshot(7, 0, &[], 0, 0);
    snap.errors.insert("x".repeat(65), 1);
    assert!(matches!(agg.add(0, &snap), Err(AggregateError::Causes)));
    let mut snap = snapshot(7, 0, &[], 0, 0);
    snap.errors = (0..10_000).map(|i| (format!("http_{i}"), 1)).collect();
    assert!(matches!(agg.add(0, &snap), Err(AggregateError::Causes)));
    assert!(agg.run.errors.len() <= MAX_CAUSES, "{}", agg.run.errors.len());
    // The run offered no subprotocol: a worker claiming one is refused
    // (the names it may send are the run's own, a bounded set).
    let mut snap = snapshot(6, 0, &[], 0, 0);
    snap.subprotocols.insert("x".repeat(10_000), 1);
    let err = agg.add(0, &snap).unwrap_err().to_string();
    assert!(err.contains("was not offered") && err.len() < 200, "{err}");
    assert!(agg.subprotocols.is_empty());
}
