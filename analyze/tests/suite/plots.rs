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
        confidence: 0.999,
        rule: "synthetic".to_string(),
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

/// Every `<polyline>` of `colour` (`#RRGGBB`) in an SVG: its points in
/// pixels, in drawing order.
fn polylines(svg: &str, colour: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split("<polyline")
        .skip(1)
        .filter(|p| p.contains(&format!("stroke=\"{colour}\"")))
        .filter_map(|p| {
            let points = p.split("points=\"").nth(1)?.split('"').next()?;
            Some(
                points
                    .split_whitespace()
                    .filter_map(|xy| {
                        let (x, y) = xy.split_once(',')?;
                        Some((x.parse().ok()?, y.parse().ok()?))
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Every `<rect>` filled with `colour`: (x, width) in pixels.
fn rects(svg: &str, colour: &str) -> Vec<(f64, f64)> {
    let attr = |r: &str, name: &str| -> Option<f64> {
        r.split(&format!(" {name}=\"")).nth(1)?.split('"').next()?.parse().ok()
    };
    svg.split("<rect")
        .skip(1)
        .filter(|r| r.split("/>").next().is_some_and(|r| r.contains(&format!("fill=\"{colour}\""))))
        .filter_map(|r| Some((attr(r, "x")?, attr(r, "width")?)))
        .collect()
}

/// The pixel column of second `t` on a time chart of [`synthetic`], from
/// its phase bands (warmup starts at 0 s, cooldown ends at 300 s).
fn time_to_px(svg: &str) -> impl Fn(f64) -> f64 + use<> {
    let (warmup, cooldown) = (rects(svg, "#ECF2FA")[0], rects(svg, "#F7F7F7")[1]);
    let per_s = (cooldown.0 + cooldown.1 - warmup.0) / 300.0;
    move |t: f64| warmup.0 + t * per_s
}

#[test]
fn seconds_line_up_with_the_phase_bands_and_finding_spans() {
    let tl = synthetic("run-a", 1.0);
    // Connections: second 150 (the drop) ends at 151 s, where its open
    // connections are drawn, inside the drop's span [150, 151].
    let svg = plots::svg("connections", &tl, &findings(), None).unwrap();
    let px = time_to_px(&svg);
    let active = polylines(&svg, "#1F77B4").into_iter().max_by_key(|l| l.len()).unwrap();
    let drop_at = active.windows(2).position(|w| w[1].1 - w[0].1 > 20.0).unwrap() + 1;
    assert!(
        (active[drop_at].0 - px(151.0)).abs() < 1.0,
        "drawn at {} px, 151 s is {} px",
        active[drop_at].0,
        px(151.0)
    );
    assert!((active[0].0 - px(1.0)).abs() < 1.0, "the first second's connections are drawn at its end");

    // Latency: the plateau of seconds 120-139 is drawn at their middles,
    // inside the spike's span [120, 140].
    let svg = plots::svg("latency", &tl, &findings(), None).unwrap();
    let px = time_to_px(&svg);
    let p95 = polylines(&svg, "#FF7F0E").into_iter().max_by_key(|l| l.len()).unwrap();
    let top = p95.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let high: Vec<f64> = p95.iter().filter(|p| p.1 < top + 5.0).map(|p| p.0).collect();
    let (first, last) = (high[0], high[high.len() - 1]);
    assert!(
        (first - px(120.5)).abs() < 1.0 && (last - px(139.5)).abs() < 1.0,
        "plateau at {first}..{last} px"
    );
    let span = rects(&svg, "#D62728")[0];
    assert!(
        span.0 < first && last < span.0 + span.1,
        "the plateau {first}..{last} lies in the span {span:?}"
    );
}

#[test]
fn each_finding_is_marked_on_its_own_chart_and_the_memory_chart_names_the_leak() {
    let tl = synthetic("run-a", 1.0);
    let svg = |stem| plots::svg(stem, &tl, &findings(), None).unwrap();
    let (latency, connections, memory) = (svg("latency"), svg("connections"), svg("memory"));
    assert!(latency.contains("latency spike (finding)"));
    for other in ["memory growth", "connection drop"] {
        assert!(!latency.contains(other), "the latency chart marks {other}");
    }
    assert!(connections.contains("connection drop (finding)") && !connections.contains("memory growth"));
    assert!(memory.contains("memory growth (finding)") && !memory.contains("latency spike"));
    // The leaking series is named, in the title and with its fitted line.
    assert!(memory.contains("resident memory: workers (sum) growing"), "{memory}");
    assert!(memory.contains("workers (sum) grows +1.00 MB/min (fitted)"));
    // The fit of 100 + t/12 MB over 60-279 s, drawn from 61 to 280 s.
    let fit = polylines(&memory, "#D67800");
    assert!(!fit.is_empty(), "no fitted line drawn");
    // Its dashes start at 61 s and end within a dash of 280 s (the legend's
    // sample dashes are at the left edge, before 61 s).
    let px = time_to_px(&memory);
    let xs: Vec<f64> = fit.iter().flatten().map(|p| p.0).collect();
    let last = xs.iter().copied().fold(0.0, f64::max);
    assert!(xs.iter().any(|x| (x - px(61.0)).abs() < 1.0), "the fit does not start at 61 s: {xs:?}");
    assert!(
        last <= px(280.0) + 1.0 && last >= px(280.0) - 14.0,
        "the fit ends at {last} px, 280 s is {}",
        px(280.0)
    );

    // A per-worker leak is named as its worker.
    let mut one = findings();
    one[2].subject = "worker local-2".into();
    let memory = plots::svg("memory", &tl, &one, None).unwrap();
    assert!(
        memory.contains("resident memory: worker local-2 growing") && memory.contains("worker local-2 grows")
    );
}

#[test]
fn the_cdf_gives_the_tail_a_percentile_axis_with_the_nines_marked() {
    let tl = synthetic("run-a", 1.0);
    let cdf = plots::svg("latency_cdf", &tl, &[], Some(&distribution("run-a", 1.0))).unwrap();
    for label in ["0%", "90%", "99%", "99.9%"] {
        assert!(cdf.contains(&format!("\n{label}\n")), "axis label {label} missing");
    }
    assert!(cdf.contains("percentile (axis 1 / (1 - q)"));
    // The marked values are the distribution's own: the first recorded
    // value at or above each fraction (`distribution` is 0.5 + 1.5q + 400q^40 ms at q = i/200).
    let ms = |q: f64| 0.5 + 1.5 * q + 400.0 * q.powi(40);
    let value = |v: f64| {
        if v >= 100.0 {
            format!("{v:.0} ms")
        } else if v >= 10.0 {
            format!("{v:.1} ms")
        } else {
            format!("{v:.2} ms")
        }
    };
    for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 1.0), ("max", 1.0)] {
        let want = format!("{name}  {}", value(ms(q)));
        assert!(cdf.contains(&want), "{want:?} missing");
    }
    // The curve climbs over the axis: the max lies at its right end.
    let curve = polylines(&cdf, "#1F77B4").into_iter().max_by_key(|l| l.len()).unwrap();
    let (first, last) = (curve[0], curve[curve.len() - 1]);
    assert!(last.0 > first.0 + 500.0 && last.1 < first.1 - 200.0, "{first:?} -> {last:?}");
}

#[test]
fn full_phase_names_even_for_narrow_phases_and_log_axes_over_decades() {
    let mut tl = synthetic("run-a", 1.0);
    tl.phases = (0..20)
        .map(|i| PhaseSpan {
            name: format!("step-{}", i + 1),
            start_s: i as f64 * 15.0,
            end_s: (i + 1) as f64 * 15.0,
        })
        .collect();
    let svg = plots::svg("latency", &tl, &[], None).unwrap();
    for i in 1..=20 {
        assert!(svg.contains(&format!("step-{i}\n")), "step-{i} not named in full");
    }
    assert!(!svg.contains('…'), "a phase name was cut");

    // p50 0.02 ms and p99 40 ms: a log axis, where the max needs no cut.
    let mut wide = synthetic("wide", 1.0);
    wide.latency_p50_ms.iter_mut().for_each(|v| *v *= 0.01);
    let svg = plots::svg("latency", &wide, &[], None).unwrap();
    assert!(svg.contains("latency (ms) (log scale)") && !svg.contains("max cut"), "{svg}");
    let narrow = plots::svg("latency", &synthetic("narrow", 1.0), &[], None).unwrap();
    assert!(!narrow.contains("log scale"));

    // Runs 100x apart share the comparison's time panel on a log axis.
    let (a, b) = (synthetic("fast", 0.01), synthetic("slow", 5.0));
    let dir = tempfile::tempdir().unwrap();
    plots::render_comparison(&[(&a, None), (&b, None)], dir.path()).unwrap();
    let text = std::fs::read_to_string(dir.path().join(format!("{COMPARE_CHART}.svg"))).unwrap();
    assert!(text.contains("p95 latency (ms) (log scale)"));
}

#[test]
fn sent_is_drawn_over_received() {
    let svg = plots::svg("throughput", &synthetic("run-a", 1.0), &[], None).unwrap();
    assert!(svg.contains("sent (dashed)") && svg.contains("received (echoes)"));
    let received = svg.find("stroke=\"#1F77B4\" stroke-width=\"4\"").expect("received drawn wide");
    let sent = svg.rfind("stroke=\"#FF7F0E\"").expect("sent drawn");
    assert!(sent > received, "sent is drawn after (over) received");
}

#[test]
fn errors_are_stacked_by_cause_up_to_the_error_rate() {
    let mut tl = synthetic("run-a", 1.0);
    let share = |k: f64| tl.errors.iter().map(|e| e * k).collect::<Vec<f64>>();
    tl.errors_by_cause = vec![("timeout".into(), share(0.75)), ("closed_1011".into(), share(0.25))];
    let svg = plots::svg("errors", &tl, &[], None).unwrap();
    assert!(svg.contains("error rate by cause"));
    for name in ["timeout", "closed_1011", "all errors / attempts"] {
        assert!(svg.contains(&format!("{name}\n")), "{name} not in the legend");
    }
    // Two layers, the larger cause at the bottom; the stack's top is the
    // total line's peak.
    let polygons: Vec<&str> = svg.split("<polygon").skip(1).collect();
    assert_eq!(polygons.len(), 2, "one polygon per layer");
    assert!(polygons[0].contains("fill=\"#D62728\"") && polygons[1].contains("fill=\"#FF7F0E\""));
    let top_of = |p: &str| {
        let points = p.split("points=\"").nth(1).unwrap().split('"').next().unwrap();
        points
            .split_whitespace()
            .filter_map(|xy| xy.split_once(',')?.1.parse::<f64>().ok())
            .fold(f64::INFINITY, f64::min)
    };
    let total = polylines(&svg, "#282828").into_iter().flatten().map(|p| p.1).fold(f64::INFINITY, f64::min);
    assert!((top_of(polygons[1]) - total).abs() <= 1.0, "stack top {} vs total {total}", top_of(polygons[1]));
    assert!(top_of(polygons[0]) > top_of(polygons[1]) + 5.0, "the second layer sits on the first");

    // Without errors.csv: one line and a note that says so.
    tl.errors_by_cause.clear();
    let svg = plots::svg("errors", &tl, &[], None).unwrap();
    assert!(svg.contains("no errors.csv: no breakdown by cause") && !svg.contains("<polygon"));
}

#[test]
fn png_lines_are_antialiased() {
    // A diagonal: open connections rising 3 per second, nothing else drawn.
    let mut tl = synthetic("run-a", 1.0);
    tl.connections_active = tl.elapsed_s.iter().map(|t| t * 3.0).collect();
    tl.connections_target.iter_mut().for_each(|v| *v = f64::NAN);
    let (w, h) = (1000, 560);
    let rgb = plots::render_rgb("connections", &tl, &[], None, w, h).unwrap();
    let px = |x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        [rgb[i] as f64, rgb[i + 1] as f64, rgb[i + 2] as f64]
    };
    // Pixels part line (blue), part sustained band (#ECF2FA): colours on
    // the segment between the two, away from both ends.
    let (blue, band) = ([31.0, 119.0, 180.0], [236.0, 242.0, 250.0]);
    let partial = |c: [f64; 3]| {
        let d: Vec<f64> = (0..3).map(|k| band[k] - blue[k]).collect();
        let t = (0..3).map(|k| (band[k] - c[k]) * d[k]).sum::<f64>() / d.iter().map(|v| v * v).sum::<f64>();
        let off = (0..3).map(|k| (band[k] - t * d[k] - c[k]).powi(2)).sum::<f64>().sqrt();
        (0.15..0.85).contains(&t) && off < 12.0
    };
    // The middle of the plot (about 100-250 s, inside the sustained band):
    // an antialiased edge blends in every column (resvg: 400 of 400);
    // plotters' own bitmap backend left 99 of them jagged (301 of 400).
    let columns = (400..800).filter(|&x| (60..500).any(|y| partial(px(x, y)))).count();
    assert!(columns >= 390, "only {columns} of 400 columns have blended line pixels: jagged lines");
}
