//! The charts of a synthetic 300 s run: files written, sizes, units in the
//! SVG text, pixels that are not blank, and the degenerate inputs (no rows,
//! all-NaN latency, no histogram) drawn without panicking.

use std::collections::HashSet;
use std::path::Path;

use stampede_analyze::model::{Distribution, Finding, FindingKind, PhaseSpan, Severity, Timeline};
use stampede_analyze::plots::{self, CHARTS, COMPARE_CHART};

/// A 300 s run: warmup 0-10, ramp-up 10-60, sustained 60-280, cooldown
/// 280-300; latency ~2 ms with a 40 ms plateau at 120-140 s and a few NaN
/// seconds; connections ramping to 1000 with a 30 % drop at 150 s; worker
/// memory growing 5 MB/min.
fn synthetic(label: &str, latency_scale: f64) -> Timeline {
    let n = 300;
    let phase_of = |t: f64| match t {
        t if t < 10.0 => "warmup",
        t if t < 60.0 => "ramp-up",
        t if t < 280.0 => "sustained",
        _ => "cooldown",
    };
    let mut tl = Timeline { label: label.to_string(), ..Timeline::default() };
    tl.phases = [
        ("warmup", 0.0, 10.0),
        ("ramp-up", 10.0, 60.0),
        ("sustained", 60.0, 280.0),
        ("cooldown", 280.0, 300.0),
    ]
    .iter()
    .map(|&(name, start_s, end_s)| PhaseSpan { name: name.to_string(), start_s, end_s })
    .collect();
    let mut w1 = Vec::new();
    let mut w2 = Vec::new();
    for i in 0..n {
        let t = i as f64;
        let wobble = (t * 0.7).sin() * 0.3;
        let base = if (120.0..140.0).contains(&t) { 40.0 } else { 2.0 + wobble };
        let missing = [30, 31, 200, 250].contains(&i);
        let lat = |k: f64| if missing { f64::NAN } else { base * k * latency_scale };
        let target = if t < 10.0 {
            10.0
        } else if t < 60.0 {
            10.0 + (t - 10.0) / 50.0 * 990.0
        } else if t < 280.0 {
            1000.0
        } else {
            0.0
        };
        let active = if (150.0..170.0).contains(&t) { target * 0.7 } else { target };
        let rate = active * 10.0;
        tl.elapsed_s.push(t);
        tl.phase.push(phase_of(t).to_string());
        tl.latency_p50_ms.push(lat(1.0));
        tl.latency_p95_ms.push(lat(1.6));
        tl.latency_p99_ms.push(lat(2.2));
        tl.latency_max_ms.push(lat(4.0));
        tl.connections_target.push(target);
        tl.connections_active.push(active);
        tl.connections_opened.push(if t < 60.0 { 20.0 } else { 0.0 });
        tl.connections_failed.push(if t == 150.0 { 5.0 } else { 0.0 });
        tl.connections_closed_by_server.push(if t == 150.0 { 300.0 } else { 0.0 });
        tl.messages_sent.push(rate);
        tl.messages_received.push(if missing { 0.0 } else { rate * 0.995 });
        tl.errors.push(if (150.0..155.0).contains(&t) { rate * 0.02 } else { 0.0 });
        let rss = 100.0 + t / 60.0 * 5.0;
        w1.push(rss / 2.0 + 1.0);
        w2.push(rss / 2.0 - 1.0);
        tl.worker_rss_mb.push(rss);
        tl.worker_cpu_pct.push(50.0);
        tl.target_rss_mb.push(300.0 + t * 0.1);
        tl.target_cpu_pct.push(80.0);
    }
    tl.worker_rss = vec![("local-1".to_string(), w1), ("local-2".to_string(), w2)];
    tl
}

fn finding(kind: FindingKind, subject: &str, start_s: f64, end_s: f64) -> Finding {
    Finding {
        run: "run-a".to_string(),
        kind,
        subject: subject.to_string(),
        start_s,
        end_s,
        phase: "sustained".to_string(),
        magnitude: 1.0,
        unit: "ms".to_string(),
        severity: Severity::Warning,
        description: "synthetic".to_string(),
    }
}

fn findings() -> Vec<Finding> {
    vec![
        finding(FindingKind::LatencySpike, "latency_p95_ms", 120.0, 139.0),
        finding(FindingKind::ConnectionDrop, "connections_active", 150.0, 150.0),
        finding(FindingKind::MemoryGrowth, "worker_rss_mb", 60.0, 279.0),
    ]
}

/// A log-normal-ish CDF from 0.5 ms to 400 ms (more than two decades).
fn distribution(label: &str, scale: f64) -> Distribution {
    let points = (0..=200)
        .map(|i| {
            let q = i as f64 / 200.0;
            let ms = scale * (0.5 + 1.5 * q + 400.0 * q.powi(40));
            (ms, q)
        })
        .collect();
    Distribution { label: label.to_string(), points }
}

/// Pixel checks: at least 3 colours and more than 2 % non-white pixels.
fn assert_not_blank(stem: &str, rgb: &[u8], w: u32, h: u32) {
    assert_eq!(rgb.len(), (w * h * 3) as usize, "{stem}: buffer size");
    let mut colours = HashSet::new();
    let mut non_white = 0usize;
    for px in rgb.chunks_exact(3) {
        colours.insert((px[0], px[1], px[2]));
        if px != [255, 255, 255] {
            non_white += 1;
        }
    }
    let share = non_white as f64 / (w * h) as f64;
    assert!(colours.len() >= 3, "{stem}: only {} colours", colours.len());
    assert!(share > 0.02, "{stem}: only {:.1} % non-white pixels", share * 100.0);
}

fn assert_file(path: &Path, min_bytes: u64) {
    let len = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
    assert!(len > min_bytes, "{}: {len} bytes, expected > {min_bytes}", path.display());
}

/// The unit every chart's axis label must show.
fn unit_of(stem: &str) -> &'static str {
    match stem {
        "latency" | "latency_cdf" => "(ms",
        "connections" => "connections",
        "throughput" => "messages / s",
        "errors" => "error rate (%)",
        "memory" => "memory (MB)",
        other => panic!("no unit known for chart {other}"),
    }
}

#[test]
fn every_chart_of_a_run_is_written_and_not_blank() {
    let tl = synthetic("run-a", 1.0);
    let found = findings();
    let dist = distribution("run-a", 1.0);
    let dir = tempfile::tempdir().unwrap();
    let written = plots::render_run(&tl, &found, Some(&dist), dir.path()).unwrap();
    assert_eq!(written.len(), CHARTS.len() * 2);
    for stem in CHARTS {
        let png = dir.path().join(format!("{stem}.png"));
        let svg = dir.path().join(format!("{stem}.svg"));
        assert!(written.contains(&png) && written.contains(&svg), "{stem} not reported as written");
        assert_file(&png, 10 * 1024);
        assert_file(&svg, 5 * 1024);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg"), "{stem}.svg is not an SVG");
        assert!(text.contains(unit_of(stem)), "{stem}.svg lacks the axis unit {:?}", unit_of(stem));
        assert!(text.contains("run-a"), "{stem}.svg title lacks the run label");
        if *stem != "latency_cdf" {
            assert!(text.contains("time since start (s)"), "{stem}.svg lacks the time axis label");
        }

        let (w, h) = plots::CHART_SIZE;
        let rgb = plots::render_rgb(stem, &tl, &found, Some(&dist), w, h).unwrap();
        assert_not_blank(stem, &rgb, w, h);
    }
}

#[test]
fn svg_strings_match_the_charts_and_name_the_phases() {
    let tl = synthetic("run-a", 1.0);
    let latency = plots::svg("latency", &tl, &findings(), None).unwrap();
    assert!(latency.starts_with("<svg") || latency.contains("<svg"));
    for phase in ["ramp-up", "sustained", "cooldown"] {
        assert!(latency.contains(phase), "latency chart does not name phase {phase}");
    }
    assert!(latency.contains("latency spike"), "the spike finding is not in the legend");
    let cdf = plots::svg("latency_cdf", &tl, &[], Some(&distribution("run-a", 1.0))).unwrap();
    assert!(cdf.contains("log scale"), "a 3-decade CDF should use a log axis");
    assert!(cdf.contains("p99"), "p99 is not marked");
    let narrow = Distribution { label: "x".into(), points: vec![(1.0, 0.0), (2.0, 0.5), (3.0, 1.0)] };
    let cdf = plots::svg("latency_cdf", &tl, &[], Some(&narrow)).unwrap();
    assert!(!cdf.contains("log scale") && cdf.contains("latency (ms)"));
    assert!(matches!(plots::svg("nope", &tl, &[], None), Err(plots::PlotError::UnknownChart(_))));
}

#[test]
fn empty_timeline_still_writes_every_chart() {
    let dir = tempfile::tempdir().unwrap();
    let written = plots::render_run(&Timeline::default(), &[], None, dir.path()).unwrap();
    assert_eq!(written.len(), CHARTS.len() * 2);
    for stem in CHARTS {
        assert!(dir.path().join(format!("{stem}.png")).is_file());
        let svg = std::fs::read_to_string(dir.path().join(format!("{stem}.svg"))).unwrap();
        assert!(svg.contains("no data") || svg.contains("no latency histogram"), "{stem}: no message");
        let rgb = plots::render_rgb(stem, &Timeline::default(), &[], None, 400, 300).unwrap();
        assert_not_blank(stem, &rgb, 400, 300);
    }
}

#[test]
fn all_nan_latency_and_mismatched_series_do_not_panic() {
    let mut tl = synthetic("nan-run", 1.0);
    for v in [&mut tl.latency_p50_ms, &mut tl.latency_p95_ms, &mut tl.latency_p99_ms, &mut tl.latency_max_ms]
    {
        v.iter_mut().for_each(|x| *x = f64::NAN);
    }
    tl.target_rss_mb.iter_mut().for_each(|x| *x = f64::NAN);
    tl.errors.truncate(10);
    tl.worker_rss = (0..12).map(|i| (format!("w{i}"), vec![10.0; 300])).collect();
    let empty_dist = Distribution { label: "nan-run".into(), points: vec![] };
    let dir = tempfile::tempdir().unwrap();
    plots::render_run(&tl, &[], Some(&empty_dist), dir.path()).unwrap();
    let memory = std::fs::read_to_string(dir.path().join("memory.svg")).unwrap();
    assert!(memory.contains("per-worker lines omitted"));
    assert!(!memory.contains("target server"), "an all-NaN target series should be left out");

    // A single row, and a distribution whose latencies are all 0.
    let mut one = synthetic("one-row", 1.0);
    for v in
        [&mut one.elapsed_s, &mut one.latency_p50_ms, &mut one.connections_active, &mut one.worker_rss_mb]
    {
        v.truncate(1);
    }
    let zero = Distribution { label: "one-row".into(), points: vec![(0.0, 0.0), (0.0, 1.0)] };
    for stem in CHARTS {
        plots::svg(stem, &one, &findings(), Some(&zero)).unwrap();
    }
}

#[test]
fn comparison_of_two_runs_is_written() {
    let a = synthetic("run-a", 1.0);
    let b = synthetic("run-b", 1.5);
    let (da, db) = (distribution("run-a", 1.0), distribution("run-b", 1.5));
    let dir = tempfile::tempdir().unwrap();
    let written = plots::render_comparison(&[(&a, Some(&da)), (&b, Some(&db))], dir.path()).unwrap();
    let png = dir.path().join(format!("{COMPARE_CHART}.png"));
    let svg = dir.path().join(format!("{COMPARE_CHART}.svg"));
    assert_eq!(written, vec![png.clone(), svg.clone()]);
    assert_file(&png, 10 * 1024);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("run-a") && text.contains("run-b") && text.contains("(ms"));

    // One run without a histogram, and no runs at all, still draw.
    plots::render_comparison(&[(&a, Some(&da)), (&b, None)], dir.path()).unwrap();
    plots::render_comparison(&[], dir.path()).unwrap();
}

/// Writes the charts to `$STAMPEDE_PLOTS_PREVIEW` (if set) for a human to
/// look at.
#[test]
fn preview_when_asked() {
    let Some(dir) = std::env::var_os("STAMPEDE_PLOTS_PREVIEW") else { return };
    let dir = Path::new(&dir);
    let a = synthetic("run-a", 1.0);
    let b = synthetic("run-b", 1.5);
    let (da, db) = (distribution("run-a", 1.0), distribution("run-b", 1.5));
    plots::render_run(&a, &findings(), Some(&da), dir).unwrap();
    plots::render_comparison(&[(&a, Some(&da)), (&b, Some(&db))], dir).unwrap();
    plots::render_run(&Timeline::default(), &[], None, &dir.join("empty")).unwrap();
    let mut nan = synthetic("nan-run", 1.0);
    nan.latency_p50_ms.iter_mut().for_each(|x| *x = f64::NAN);
    nan.worker_rss = (0..12).map(|i| (format!("w{i}"), vec![10.0 + i as f64; 300])).collect();
    nan.latency_max_ms[100] = 900.0;
    nan.errors.iter_mut().for_each(|x| *x = 0.0);
    plots::render_run(&nan, &[], None, &dir.join("nan")).unwrap();
}
