//! Every injected anomaly is found at the right time; clean runs give no
//! findings. Folders are synthetic, written with the controller's schema.

use crate::common;

use clap::Parser;
use common::Synth;
use stampede_analyze::cli::{Args, analyze};
use stampede_analyze::load::load;
use stampede_analyze::model::FindingKind;

fn findings(synth: &Synth) -> Vec<stampede_analyze::model::Finding> {
    let dir = tempfile::tempdir().unwrap();
    synth.write(dir.path());
    let run = load(dir.path()).unwrap();
    let args = Args::parse_from(["analyze", dir.path().to_str().unwrap()]);
    analyze(&run, &args).findings
}

fn near(actual: f64, expected: f64) -> bool {
    (actual - expected).abs() <= 2.0
}

#[test]
fn a_clean_run_has_no_findings() {
    for seconds in [200, 600, 3600] {
        let f = findings(&Synth::clean(seconds));
        assert!(f.is_empty(), "{seconds} s clean run: {f:#?}");
    }
}

#[test]
fn a_20s_latency_plateau_is_found_where_it_is() {
    let f = findings(&Synth { latency_plateau: Some((300, 20, 40.0)), ..Synth::clean(600) });
    assert_eq!(f.len(), 1, "{f:#?}");
    let spike = &f[0];
    assert_eq!(spike.kind, FindingKind::LatencySpike);
    assert!(near(spike.start_s, 300.0) && near(spike.end_s, 319.0), "{spike:#?}");
    assert_eq!(spike.phase, "sustained");
    assert!(spike.magnitude > 30.0 && spike.unit == "ms", "{spike:#?}");
}

#[test]
fn a_plateau_in_a_short_run_is_still_found() {
    let f = findings(&Synth { latency_plateau: Some((120, 20, 15.0)), ..Synth::clean(200) });
    assert_eq!(f.iter().filter(|f| f.kind == FindingKind::LatencySpike).count(), 1, "{f:#?}");
    assert!(near(f[0].start_s, 120.0), "{f:#?}");
}

#[test]
fn a_5mb_per_minute_rise_is_a_leak_from_its_onset() {
    let f = findings(&Synth { rss_rise: Some((200, 5.0)), ..Synth::clean(900) });
    let total = f.iter().find(|f| f.subject == "worker_rss_mb").expect("summed RSS growth found");
    assert_eq!(total.kind, FindingKind::MemoryGrowth);
    assert!((total.magnitude - 5.0).abs() < 0.5, "{total:#?}");
    assert_eq!(total.unit, "MB/min");
    assert!(near(total.start_s, 200.0), "onset {} s", total.start_s);
    assert!(total.description.contains("MB per hour"));
    let per_worker: Vec<_> = f.iter().filter(|f| f.subject.starts_with("worker local-")).collect();
    assert_eq!(per_worker.len(), 2, "each worker grows 2.5 MB/min: {f:#?}");
    assert!(f.iter().all(|f| f.kind == FindingKind::MemoryGrowth), "{f:#?}");
}

#[test]
fn a_30_percent_connection_drop_is_found_with_its_cause() {
    let f = findings(&Synth { drop: Some((400, 0.3)), ..Synth::clean(600) });
    assert_eq!(f.len(), 1, "{f:#?}");
    let d = &f[0];
    assert_eq!(d.kind, FindingKind::ConnectionDrop);
    assert!(near(d.start_s, 400.0), "{d:#?}");
    assert!((d.magnitude - 300.0).abs() < 5.0, "{d:#?}");
    assert!(d.description.contains("30%") && d.description.contains("closed_1011"), "{}", d.description);
}

#[test]
fn all_three_together_are_each_found_once() {
    let synth = Synth {
        latency_plateau: Some((250, 20, 40.0)),
        rss_rise: Some((150, 5.0)),
        drop: Some((500, 0.3)),
        ..Synth::clean(900)
    };
    let f = findings(&synth);
    let kinds = |k| f.iter().filter(|f| f.kind == k && !f.subject.starts_with("worker ")).count();
    assert_eq!(kinds(FindingKind::LatencySpike), 1, "{f:#?}");
    assert_eq!(kinds(FindingKind::MemoryGrowth), 1, "{f:#?}");
    assert_eq!(kinds(FindingKind::ConnectionDrop), 1, "{f:#?}");
}

#[test]
fn a_generator_stall_is_reported_and_its_latency_not_blamed_on_the_target() {
    let f = findings(&Synth { stall: Some((200, 10)), ..Synth::clean(600) });
    assert_eq!(f.len(), 2, "the stall and the latency it caused: {f:#?}");
    let stall = f.iter().find(|f| f.kind == FindingKind::GeneratorStalled).expect("stall reported");
    assert_eq!((stall.start_s, stall.end_s, stall.phase.as_str()), (200.0, 209.0, "sustained"));
    assert_eq!(
        stall.description,
        "generator stalled in seconds 200-209: latency there measures the load generator, not the target"
    );
    let spike = f.iter().find(|f| f.kind == FindingKind::LatencySpike).expect("the latency is still shown");
    assert!(near(spike.start_s, 200.0), "{spike:#?}");
    assert!(
        spike.description.contains(
            "while the load generator stalled (seconds 200-209): this latency measures the load generator, not the target"
        ),
        "{}",
        spike.description
    );
    // A spike away from the stall blames nothing on the generator.
    let f = findings(&Synth {
        stall: Some((200, 10)),
        latency_plateau: Some((400, 20, 40.0)),
        ..Synth::clean(600)
    });
    let later = f.iter().find(|f| f.kind == FindingKind::LatencySpike && f.start_s > 300.0).unwrap();
    assert!(!later.description.contains("load generator"), "{}", later.description);
}

#[test]
fn connections_reset_and_reopened_at_once_are_a_drop_too() {
    // Open connections do not change: only the counts of connections ended
    // without a close frame (connections_dropped) show the loss.
    let f = findings(&Synth { churn: Some((400, 300)), ..Synth::clean(600) });
    assert_eq!(f.len(), 1, "{f:#?}");
    let d = &f[0];
    assert_eq!(d.kind, FindingKind::ConnectionDrop);
    assert_eq!(d.start_s, 400.0, "{d:#?}");
    assert_eq!(d.magnitude, 300.0, "{d:#?}");
    assert!(d.description.contains("reset 300"), "{}", d.description);
}
