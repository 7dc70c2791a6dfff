//! Damaged and late input: every damaged metrics.csv is one error line
//! naming the file, the row and what is wrong (the other folders are still
//! analyzed); late corrections replace their second; a missing or empty
//! latency.hlog gives percentiles from summary.json marked approximate in
//! every output, or none; an unknown --phase lists the run's phases.

use crate::common;

use std::path::Path;

use common::{
    Synth, analyze_bin, hlog_intervals, metrics_lines, phases_row, set_cell, write_hlog_intervals,
    write_metrics_lines,
};
use hdrhistogram::Histogram;
use stampede_analyze::load::load;

/// (folder, how it is damaged, the error expected after `<folder>/metrics.csv`).
type Damage = (&'static str, Spoil, &'static str);

const DAMAGES: &[Damage] = &[
    ("empty", |d| std::fs::write(d.join("metrics.csv"), "").unwrap(), " line 1: empty file (0 bytes)"),
    (
        "header-only",
        |d| {
            let (header, _) = metrics_lines(d);
            write_metrics_lines(d, &header, &[]);
        },
        " line 2: no rows after the header",
    ),
    (
        "reversed",
        |d| {
            let (header, mut lines) = metrics_lines(d);
            lines.reverse();
            write_metrics_lines(d, &header, &lines);
        },
        " row 2: elapsed_s 198 after 199: rows out of order",
    ),
    (
        "nan",
        |d| set_cell(d, 15, "latency_p95_ms", "NaN"),
        " row 15: latency_p95_ms NaN is not a finite number",
    ),
    ("inf", |d| set_cell(d, 7, "worker_rss_mb", "inf"), " row 7: worker_rss_mb inf is not a finite number"),
    (
        "huge",
        |d| set_cell(d, 20, "messages_received", "99999999999999999999999"),
        " row 20: messages_received 99999999999999999999999 is out of range (beyond u64)",
    ),
    ("negative", |d| set_cell(d, 1, "elapsed_s", "-1"), " row 1: elapsed_s -1 is negative"),
    ("fraction", |d| set_cell(d, 4, "elapsed_s", "3.5"), " row 4: elapsed_s 3.5 is not a whole number"),
    (
        "far",
        |d| set_cell(d, 200, "elapsed_s", "20000000"),
        " row 200: elapsed_s 20000000 is out of range (at most 10000000)",
    ),
    ("no-phase", |d| set_cell(d, 9, "phase", ""), " row 9: no phase (empty cell)"),
    (
        "truncated",
        |d| {
            let text = std::fs::read_to_string(d.join("metrics.csv")).unwrap();
            std::fs::write(d.join("metrics.csv"), &text[..text.len() - 40]).unwrap();
        },
        " row 200: truncated: the last line is incomplete",
    ),
    (
        "orphan-correction",
        |d| {
            let (header, mut lines) = metrics_lines(d);
            let mut cells: Vec<String> = lines[10].split(',').map(str::to_string).collect();
            cells[0] = "500".into();
            cells[header.iter().position(|h| h == "revision").unwrap()] = "1".into();
            lines.push(cells.join(","));
            write_metrics_lines(d, &header, &lines);
        },
        " row 201: correction (revision 1) of second 500, which has no earlier row",
    ),
];

#[test]
fn each_damaged_metrics_file_is_one_error_naming_its_row() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("good");
    Synth::clean(200).write(&good);
    let mut args = vec![good.to_str().unwrap().to_string()];
    for (name, damage, _) in DAMAGES {
        let dir = root.path().join(name);
        Synth::clean(200).write(&dir);
        damage(&dir);
        args.push(dir.to_str().unwrap().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = analyze_bin(&args);
    assert_eq!(code, 2, "stderr:\n{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), DAMAGES.len(), "one line per damaged folder:\n{stderr}");
    for (name, _, expected) in DAMAGES {
        let want = format!("/{name}/metrics.csv{expected}");
        assert!(errors.iter().any(|e| e.contains(&want)), "{name}: expected {want:?} in\n{stderr}");
    }
    assert!(stdout.contains("good: PASS"), "the good folder is still analyzed: {stdout}");
    assert!(!stdout.contains("NaN") && !stderr.contains("panicked"), "{stdout}\n{stderr}");
}

/// Splits a histogram's counts in two (half each, the odd one to `late`).
fn split(h: &Histogram<u64>) -> (Histogram<u64>, Histogram<u64>) {
    let mut early = Histogram::new_from(h);
    let mut late = Histogram::new_from(h);
    for v in h.iter_recorded() {
        let n = v.count_at_value();
        early.record_n(v.value_iterated_to(), n / 2).unwrap();
        late.record_n(v.value_iterated_to(), n - n / 2).unwrap();
    }
    (early, late)
}

#[test]
fn late_corrections_replace_their_second_as_if_the_run_had_ended_normally() {
    let root = tempfile::tempdir().unwrap();
    let normal = root.path().join("normal");
    let crashed = root.path().join("crashed");
    Synth { latency_plateau: Some((120, 20, 15.0)), ..Synth::clean(300) }.write(&normal);
    Synth { latency_plateau: Some((120, 20, 15.0)), ..Synth::clean(300) }.write(&crashed);

    // metrics.csv as a crashed run leaves it: seconds 100 and 101 first
    // written without a frozen worker's half, then corrected at the end
    // (second 101 twice; the highest revision wins wherever it is).
    let (header, mut lines) = metrics_lines(&crashed);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let with = |line: &str, edits: &[(&str, String)]| {
        let mut cells: Vec<String> = line.split(',').map(str::to_string).collect();
        for (name, value) in edits {
            cells[col(name)] = value.clone();
        }
        cells.join(",")
    };
    let halved = |line: &str| {
        let cells: Vec<&str> = line.split(',').collect();
        let half = |name: &str| (cells[col(name)].parse::<u64>().unwrap() / 2).to_string();
        with(
            line,
            &[("messages_sent", half("messages_sent")), ("messages_received", half("messages_received"))],
        )
    };
    let (full_100, full_101) = (lines[100].clone(), lines[101].clone());
    lines[100] = halved(&full_100);
    lines[101] = halved(&full_101);
    lines.push(with(&full_101, &[("revision", "2".into())]));
    lines.push(with(&full_100, &[("revision", "1".into())]));
    lines.push(with(&halved(&full_101), &[("revision", "1".into())]));
    write_metrics_lines(&crashed, &header, &lines);

    // latency.hlog: second 100's histograms in two intervals, the late one
    // appended after later seconds.
    let intervals = hlog_intervals(&crashed);
    let mut rewritten = Vec::new();
    let mut late = Vec::new();
    for (s, tag, h) in intervals {
        if s == 100 {
            let (a, b) = split(&h);
            rewritten.push((s, tag.clone(), a));
            late.push((s, tag, b));
        } else {
            rewritten.push((s, tag, h));
        }
    }
    rewritten.extend(late);
    write_hlog_intervals(&crashed, &rewritten);

    // workers.csv: (100, local-2) first written with a carried-forward
    // value, then its replacement appended.
    let workers = std::fs::read_to_string(crashed.join("workers.csv")).unwrap();
    let is_late = |l: &&str| l.starts_with("100,") && l.contains(",local-2,");
    let correct = workers.lines().find(is_late).unwrap().to_string();
    let rss_col = stampede_model::results::WORKER_COLUMNS.iter().position(|c| *c == "rss_mb").unwrap();
    let mut stale: Vec<&str> = correct.split(',').collect();
    stale[rss_col] = "1.0";
    let stale = stale.join(",");
    let rewritten: Vec<&str> =
        workers.lines().map(|l| if is_late(&l) { stale.as_str() } else { l }).collect();
    std::fs::write(crashed.join("workers.csv"), rewritten.join("\n") + "\n" + &correct + "\n").unwrap();
    let correct_rss: f64 = correct.split(',').nth(rss_col).unwrap().parse().unwrap();

    let run = load(&crashed).unwrap();
    let t = &run.timeline;
    assert_eq!(t.len(), 300, "one row per second");
    assert!(t.elapsed_s.windows(2).all(|w| w[1] == w[0] + 1.0), "in order");
    let reference = load(&normal).unwrap();
    assert_eq!(t.messages_received, reference.timeline.messages_received, "corrections applied");
    assert!(run.notes.iter().any(|n| n.contains("3 late correction row(s) applied")), "{:?}", run.notes);
    let (_, local2) = t.worker_rss.iter().find(|(id, _)| id == "local-2").unwrap();
    assert_eq!(local2[100], correct_rss, "the last row of (second, worker) wins");
    let df = run.workers.as_ref().unwrap();
    assert_eq!(df.height(), 600, "one row per second and worker");

    let out = root.path().join("out");
    for (dir, name) in [(&normal, "normal"), (&crashed, "crashed")] {
        let (code, _, stderr) =
            analyze_bin(&[dir.to_str().unwrap(), "--out", out.join(name).to_str().unwrap()]);
        assert_eq!(code, 0, "{stderr}");
    }
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(out.join(name).join("report.json")).unwrap()).unwrap()
    };
    let (a, b) = (json("normal"), json("crashed"));
    let figures = [
        "messages_received",
        "throughput_msg_per_s",
        "connections_peak",
        "errors",
        "latency_ms",
        "connect_ms",
    ];
    for figure in figures {
        assert_eq!(a["overall"][figure], b["overall"][figure], "{figure}");
        for phase in 0..4 {
            assert_eq!(a["phases"][phase][figure], b["phases"][phase][figure], "phase {phase}: {figure}");
        }
    }
    assert!(a["overall"]["latency_ms"]["count"].as_u64().unwrap() > 0);
    let kinds = |r: &serde_json::Value| {
        r["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["kind"].clone(), f["start_s"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(kinds(&a), kinds(&b));
    assert_eq!(kinds(&a).len(), 1, "the plateau: {a}");
}

/// How a folder is spoiled.
type Spoil = fn(&Path);

/// The three ways latency.hlog can be useless, each named in the outputs.
const HLOG_PROBLEMS: &[(&str, Spoil)] = &[
    ("missing", |d| std::fs::remove_file(d.join("latency.hlog")).unwrap()),
    ("empty", |d| std::fs::write(d.join("latency.hlog"), "").unwrap()),
    // A header (start and base time) but no interval.
    ("empty", |d| write_hlog_intervals(d, &[])),
];

#[test]
fn without_a_usable_histogram_log_percentiles_come_from_the_summary_marked_everywhere() {
    for (kind, spoil) in HLOG_PROBLEMS {
        let root = tempfile::tempdir().unwrap();
        let run = root.path().join("run");
        Synth { latency_plateau: Some((120, 20, 15.0)), ..Synth::clean(300) }.write(&run);
        spoil(&run);
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
        let marker = format!("approximate (latency.hlog {kind}: from summary.json)");
        let out = root.path().join("out");
        let out_s = out.to_str().unwrap();

        // Warmup included: the set is the whole run, whose figures summary.json has.
        let (code, stdout, stderr) =
            analyze_bin(&[run.to_str().unwrap(), "--include-warmup", "--out", out_s]);
        assert_eq!(code, 0, "{stderr}");
        let p95 = summary["latency_ms"]["p95"].as_f64().unwrap();
        assert!(p95 > 0.0);
        assert!(
            stdout.contains(&format!("p95 {p95:.3} ms, "))
                && stdout.contains(&format!("(warmup included; {marker})")),
            "{kind}: {stdout}"
        );
        let all = phases_row(&out, "all");
        assert_eq!(all["phases"], "warmup+ramp-up+sustained+cooldown");
        assert_eq!(all["percentile_source"], marker);
        assert_eq!(all["latency_p95_ms"], format!("{p95:.3}"));
        for phase in ["warmup", "ramp-up", "sustained", "cooldown"] {
            let row = phases_row(&out, phase);
            let own = summary["phases"].as_array().unwrap().iter().find(|p| p["name"] == phase).unwrap();
            assert_eq!(row["latency_p99_ms"], format!("{:.3}", own["latency_ms"]["p99"].as_f64().unwrap()));
            assert_eq!(row["percentile_source"], marker, "{phase}");
        }

        // Warmup excluded (the default): summary.json has no figures for
        // that set, so there are none, said so, never 0.
        for format in ["text", "json", "markdown", "html"] {
            let (code, stdout, stderr) =
                analyze_bin(&[run.to_str().unwrap(), "--format", format, "--out", out_s]);
            assert_eq!(code, 0, "{stderr}");
            assert!(!stdout.contains("0.000 ms"), "{kind} {format}: {stdout}");
            let text = match format {
                "html" => std::fs::read_to_string(out.join("report.html")).unwrap(),
                _ => stdout,
            };
            let none = format!(
                "not given (latency.hlog {kind}; summary.json has figures per phase and for the whole run, none for ramp-up+sustained+cooldown)"
            );
            assert!(text.contains(&none), "{kind} {format}: {text}");
            // The text format shows the headline only; the others show each phase.
            if format != "text" {
                assert!(
                    text.contains(&marker),
                    "{kind} {format}: the phases' percentiles are marked: {text}"
                );
            }
            assert!(text.contains("warmup excluded"), "{kind} {format}: {text}");
        }
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
        assert_eq!(json["overall"]["latency_ms"], serde_json::Value::Null);
        assert_eq!(json["overall"]["percentile_source"], "none");
        assert_eq!(json["phases"][2]["percentile_source"], "summary");
        assert_eq!(json["phases"][2]["percentiles_from"], marker);
        let all = phases_row(&out, "all");
        assert_eq!(
            (all["phases"].as_str(), all["scope"].as_str()),
            ("ramp-up+sustained+cooldown", "warmup excluded")
        );
        assert_eq!(all["latency_p95_ms"], "", "no figure rather than a made-up one");
        assert!(all["percentile_source"].starts_with("not given (latency.hlog"), "{all:?}");
    }

    // Neither the log nor summary.json: no percentile, and why.
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    Synth::clean(200).write(&run);
    std::fs::remove_file(run.join("latency.hlog")).unwrap();
    std::fs::remove_file(run.join("summary.json")).unwrap();
    let (code, stdout, stderr) = analyze_bin(&[run.to_str().unwrap(), "--phase", "sustained"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "latency percentiles not given (latency.hlog missing; no summary.json) (sustained only)"
        ),
        "{stdout}"
    );
}

#[test]
fn a_histogram_log_cut_short_keeps_its_whole_lines() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    Synth::clean(200).write(&run);
    let bytes = std::fs::read(run.join("latency.hlog")).unwrap();
    std::fs::write(run.join("latency.hlog"), &bytes[..bytes.len() - 30]).unwrap();
    let run = load(&run).unwrap();
    assert!(run.hlog.is_some() && run.hlog_problem.is_none());
    assert!(
        run.notes.iter().any(|n| n.contains("latency.hlog: the last line is incomplete")),
        "{:?}",
        run.notes
    );
}

#[test]
fn an_unknown_phase_is_an_error_listing_the_run_phases() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    Synth::clean(200).write(&run);
    let (code, stdout, stderr) = analyze_bin(&[run.to_str().unwrap(), "--phase", "steady"]);
    assert_eq!(code, 2, "{stdout}");
    assert!(
        stderr.contains(
            "--phase steady: no such phase in this run (phases: warmup, ramp-up, sustained, cooldown)"
        ),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");

    let (code, stdout, stderr) = analyze_bin(&[run.to_str().unwrap(), "--phase", "sustained"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("msg/s (sustained only)"), "{stdout}");
}

/// A run written before a counter existed has no column for it: it counted
/// none, and it loads; a file missing one of the first counters is not ours.
#[test]
fn counters_newer_than_the_run_read_as_zero_but_old_ones_are_required() {
    let root = tempfile::tempdir().unwrap();
    let old = root.path().join("old");
    Synth::clean(120).write(&old);
    let (header, lines) = metrics_lines(&old);
    let drop = |name: &str, header: &[String], lines: &[String]| {
        let at = header.iter().position(|h| h == name).unwrap();
        let cut = |cells: Vec<String>| {
            cells.into_iter().enumerate().filter(|(i, _)| *i != at).map(|(_, c)| c).collect::<Vec<_>>()
        };
        let lines: Vec<String> =
            lines.iter().map(|l| cut(l.split(',').map(str::to_string).collect()).join(",")).collect();
        (cut(header.to_vec()), lines)
    };
    let (h, l) = drop("receive_gaps", &header, &lines);
    write_metrics_lines(&old, &h, &l);
    let run = load(&old).expect("a run from before receive_gaps loads");
    assert_eq!(run.timeline.elapsed_s.len(), 120);

    let (h, l) = drop("messages_sent", &header, &lines);
    write_metrics_lines(&old, &h, &l);
    let err = load(&old).err().expect("messages_sent is required").to_string();
    assert!(err.contains("missing columns messages_sent"), "{err}");
}

#[test]
fn a_damaged_errors_file_is_an_error_naming_its_line_and_a_good_one_is_drawn() {
    let root = tempfile::tempdir().unwrap();
    let header = "elapsed_s,timestamp,revision,cause,errors\n";
    let cases: [(&str, String, &str); 4] = [
        (
            "negative",
            format!("{header}5,t,0,timeout,1\n6,t,0,timeout,-5\n"),
            "errors.csv line 3: errors \"-5\"",
        ),
        ("short", format!("{header}5,t,0,timeout\n"), "errors.csv line 2: 4 cells, not 5"),
        (
            "huge-line",
            format!("{header}5,t,0,{},1\n", "x".repeat(10_000)),
            "errors.csv line 2: longer than 4096 bytes",
        ),
        ("header", "second,cause\n".to_string(), "errors.csv line 1: the header is not"),
    ];
    let mut args = Vec::new();
    for (name, text, _) in &cases {
        let dir = root.path().join(name);
        Synth::clean(200).write(&dir);
        std::fs::write(dir.join("errors.csv"), text).unwrap();
        args.push(dir.to_str().unwrap().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, _, stderr) = analyze_bin(&args);
    assert_eq!(code, 2, "{stderr}");
    for (name, _, want) in &cases {
        assert!(stderr.contains(&format!("/{name}/{want}")), "{name}: {want:?} not in\n{stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");

    // A good one, and one about seconds the run does not have: charts drawn, the latter noted.
    let good = root.path().join("good");
    Synth::clean(200).write(&good);
    std::fs::write(good.join("errors.csv"), format!("{header}5,t,0,timeout,2\n999,t,0,eof,1\n")).unwrap();
    let out = root.path().join("out");
    let (code, stdout, stderr) = analyze_bin(&[
        good.to_str().unwrap(),
        "--plots",
        "--out",
        out.to_str().unwrap(),
        "--format",
        "markdown",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("errors.csv: 1 row(s) about seconds metrics.csv does not have (ignored)"),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(out.join("errors.svg")).unwrap();
    assert!(svg.contains("timeout") && svg.contains("error rate by cause"));
}
