//! The headline figures are the model's definitions (the controller's) over
//! the rows of the phase set, and every output says what the set is next to
//! the figures.

use crate::common;

use common::{Synth, analyze_bin, hlog_intervals, metrics_lines, phases_row};
use stampede_model::figures;
use stampede_model::histogram::new_histogram;
use stampede_model::results::Percentiles;

#[test]
fn headline_figures_are_the_model_definitions_over_the_counted_rows() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    Synth { drop: Some((400, 0.3)), latency_plateau: Some((300, 20, 40.0)), ..Synth::clean(600) }.write(&run);
    // The plan ended 10 s before the last row: the controller gave those
    // seconds to the last phase, and so does every figure here.
    let summary = std::fs::read_to_string(run.join("summary.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&summary).unwrap();
    json["phases"][3]["duration_s"] = 20.0.into();
    std::fs::write(run.join("summary.json"), json.to_string()).unwrap();

    // The expected figures, straight from the files.
    let (header, lines) = metrics_lines(&run);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<Vec<String>> = lines.iter().map(|l| l.split(',').map(str::to_string).collect()).collect();
    let num = |r: &Vec<String>, name: &str| r[col(name)].parse::<u64>().unwrap();
    let counted: Vec<&Vec<String>> = rows.iter().filter(|r| r[col("phase")] != "warmup").collect();
    let received: u64 = counted.iter().map(|r| num(r, "messages_received")).sum();
    let throughput = figures::throughput(received, counted.len() as u64);
    let last_warmup = rows.iter().rfind(|r| r[col("phase")] == "warmup").unwrap();
    let peak = figures::peak(
        num(last_warmup, "connections_active"),
        counted.iter().map(|r| num(r, "connections_active")),
    );
    let errors: u64 = counted.iter().map(|r| num(r, "errors")).sum();
    assert_eq!(errors, 300);
    let mut latency = new_histogram();
    for (s, tag, h) in hlog_intervals(&run) {
        if tag == "latency" && rows[s as usize][col("phase")] != "warmup" {
            latency.add(&h).unwrap();
        }
    }
    let p = Percentiles::of(&latency);

    let out = root.path().join("out");
    let (code, stdout, stderr) = analyze_bin(&[run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("throughput {throughput:.1} msg/s (warmup excluded)")), "{stdout}");
    assert!(
        stdout.contains(&format!("p95 {:.3} ms, p99 {:.3} ms (warmup excluded)", p.p95, p.p99)),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("peak {peak} connections (warmup excluded)")), "{stdout}");
    assert!(stdout.contains(&format!("errors {errors} = ")), "{stdout}");

    let all = phases_row(&out, "all");
    assert_eq!(all["phases"], "ramp-up+sustained+cooldown");
    assert_eq!(all["scope"], "warmup excluded");
    assert_eq!(all["seconds"], counted.len().to_string());
    assert_eq!(all["throughput_msg_per_s"], format!("{throughput:.2}"));
    assert_eq!(all["connections_peak"], peak.to_string());
    assert_eq!(all["errors"], errors.to_string());
    assert_eq!(all["latency_p99_ms"], format!("{:.3}", p.p99));
    assert_eq!(all["percentile_source"], "latency.hlog");
    let cooldown = phases_row(&out, "cooldown");
    assert_eq!(cooldown["seconds"], "30", "seconds after the plan's end are the last phase's");
    assert_eq!(cooldown["connections_peak"], "700", "a cooldown peaks where the sustained phase ended");

    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("| throughput | {throughput:.1} msg/s (warmup excluded) |")), "{md}");
    assert!(md.contains(&format!("| peak connections | {peak} (warmup excluded) |")), "{md}");
    assert!(md.contains("Errors by cause (warmup excluded), from summary.json: closed_1011 300"), "{md}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let o = &report["overall"];
    assert_eq!(
        (o["phases"].as_str(), o["scope"].as_str()),
        (Some("ramp-up+sustained+cooldown"), Some("warmup excluded"))
    );
    assert_eq!(o["throughput_msg_per_s"].as_f64(), Some(throughput));
    assert_eq!(o["latency_ms"]["count"].as_u64(), Some(p.count));

    // With warmup included, the same definitions over every row.
    let (code, stdout, _) =
        analyze_bin(&[run.to_str().unwrap(), "--include-warmup", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0);
    let every: u64 = rows.iter().map(|r| num(r, "messages_received")).sum();
    let throughput = figures::throughput(every, rows.len() as u64);
    assert!(stdout.contains(&format!("throughput {throughput:.1} msg/s (warmup included)")), "{stdout}");
    assert_eq!(phases_row(&out, "all")["phases"], "warmup+ramp-up+sustained+cooldown");
}

#[test]
fn errors_by_cause_that_do_not_add_up_to_the_rows_are_reported() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    Synth { drop: Some((400, 0.3)), ..Synth::clean(600) }.write(&run);
    let summary = std::fs::read_to_string(run.join("summary.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&summary).unwrap();
    json["phases"][2]["errors"]["closed_1011"] = 250.into();
    std::fs::write(run.join("summary.json"), json.to_string()).unwrap();
    let (code, stdout, stderr) = analyze_bin(&[run.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(
            "ramp-up+sustained+cooldown: errors by cause (summary.json) add up to 250, but the rows of metrics.csv count 300"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "sustained: errors by cause (summary.json) add up to 250, but the rows of metrics.csv count 300"
        ),
        "{stdout}"
    );
}
