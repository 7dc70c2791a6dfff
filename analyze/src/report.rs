//! What analyze writes: report.md, report.json, anomalies.csv, phases.csv,
//! and (with `--format html`) one self-contained report.html with the charts
//! inline. CSV files are spreadsheet-clean: a header row, one value per
//! cell, UTC timestamps that spreadsheets read as date-times
//! (`2026-11-23T04:24:23.013`, ISO 8601 without its `Z`).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use stampede_model::results::{Percentiles, csv_line, files};
use stampede_model::time::{iso8601, parse_iso8601, spreadsheet_time};

use crate::compare::{Better, Comparison};
use crate::model::Finding;
use crate::stats::WindowStats;

/// Everything found about one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run label (folder name).
    pub run: String,
    /// The folder.
    pub dir: String,
    /// PASS/FAIL from summary.json.
    pub verdict: Option<String>,
    /// Scenario name.
    pub scenario: Option<String>,
    /// Target URL.
    pub target: Option<String>,
    /// Start of the run, ISO 8601 (from summary.json).
    pub started_at: Option<String>,
    /// The headline phase set (warmup excluded unless asked; its `phases`
    /// and `scope` say which).
    pub overall: WindowStats,
    /// Each phase.
    pub phases: Vec<WindowStats>,
    /// Memory trends over the steady window, found anomalous or not.
    pub memory: Vec<MemoryTrend>,
    /// Anomalies.
    pub findings: Vec<Finding>,
    /// What is approximate or missing.
    pub notes: Vec<String>,
    /// The run's thresholds and their outcomes (from summary.json).
    pub thresholds: Vec<stampede_model::results::ThresholdOutcome>,
}

/// A memory series' linear trend.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryTrend {
    /// `worker_rss_mb` or `target_rss_mb`.
    pub subject: String,
    /// Window start, s.
    pub start_s: f64,
    /// Window end, s.
    pub end_s: f64,
    /// Slope, MB per minute.
    pub mb_per_min: f64,
    /// Goodness of fit, 0..1.
    pub r2: f64,
    /// Memory at the window's start and end, MB.
    pub first_mb: f64,
    /// Memory at the window's end, MB.
    pub last_mb: f64,
}

fn cell(v: f64, decimals: usize) -> String {
    if v.is_finite() { format!("{v:.decimals$}") } else { String::new() }
}

/// `started_at + offset_s` as a CSV timestamp, UTC (empty when the start
/// is unknown).
fn at(started_at: Option<&str>, offset_s: f64) -> String {
    started_at.and_then(parse_iso8601).map(|t| spreadsheet_time(&iso8601(t + offset_s))).unwrap_or_default()
}

/// Header of anomalies.csv.
pub const ANOMALY_COLUMNS: &[&str] = &[
    "run",
    "kind",
    "subject",
    "severity",
    "start_s",
    "end_s",
    "start_time",
    "end_time",
    "phase",
    "magnitude",
    "unit",
    "confidence",
    "rule",
    "description",
];

/// anomalies.csv for the given reports.
pub fn anomalies_csv(reports: &[&RunReport]) -> String {
    let mut out = csv_line(ANOMALY_COLUMNS);
    for r in reports {
        for f in &r.findings {
            out += &csv_line(&[
                f.run.clone(),
                f.kind.name().into(),
                f.subject.clone(),
                f.severity.name().into(),
                cell(f.start_s, 0),
                cell(f.end_s, 0),
                at(r.started_at.as_deref(), f.start_s),
                at(r.started_at.as_deref(), f.end_s + 1.0),
                f.phase.clone(),
                cell(f.magnitude, 3),
                f.unit.clone(),
                cell(f.confidence, 6),
                f.rule.clone(),
                f.description.clone(),
            ]);
        }
    }
    out
}

/// Header of phases.csv.
pub const PHASE_COLUMNS: &[&str] = &[
    "run",
    "phase",
    "phases",
    "scope",
    "start_s",
    "end_s",
    "start_time",
    "seconds",
    "messages_sent",
    "messages_received",
    "throughput_msg_per_s",
    "connections_opened",
    "connections_failed",
    "connect_success_rate",
    "connections_closed_by_server",
    "connections_dropped",
    "connections_peak",
    "errors",
    "error_rate",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "latency_p999_ms",
    "latency_max_ms",
    "connect_p50_ms",
    "connect_p95_ms",
    "connect_p99_ms",
    "percentile_source",
    "generator_stalled_s",
];

/// phases.csv for the given reports: every phase, then the headline set
/// (`all`), whose `phases` and `scope` cells name what it covers.
pub fn phases_csv(reports: &[&RunReport]) -> String {
    let mut out = csv_line(PHASE_COLUMNS);
    for r in reports {
        for w in r.phases.iter().chain(std::iter::once(&r.overall)) {
            let l = |get: fn(&Percentiles) -> f64| pct_cell(w.latency_ms.as_ref(), get);
            let c = |get: fn(&Percentiles) -> f64| pct_cell(w.connect_ms.as_ref(), get);
            out += &csv_line(&[
                w.run.clone(),
                w.phase.clone(),
                w.phases.clone(),
                w.scope.clone(),
                cell(w.start_s, 0),
                cell(w.end_s, 0),
                at(r.started_at.as_deref(), w.start_s),
                w.seconds.to_string(),
                w.messages_sent.to_string(),
                w.messages_received.to_string(),
                cell(w.throughput_msg_per_s, 2),
                w.connections_opened.to_string(),
                w.connections_failed.to_string(),
                cell(w.connect_success_rate, 6),
                w.connections_closed_by_server.to_string(),
                w.connections_dropped.to_string(),
                w.connections_peak.to_string(),
                w.errors.to_string(),
                cell(w.error_rate, 6),
                l(|p| p.p50),
                l(|p| p.p90),
                l(|p| p.p95),
                l(|p| p.p99),
                l(|p| p.p999),
                l(|p| p.max),
                c(|p| p.p50),
                c(|p| p.p95),
                c(|p| p.p99),
                w.percentiles_from.clone(),
                w.generator_stalled_seconds.len().to_string(),
            ]);
        }
    }
    out
}

/// `12-21, 30` for the seconds 12..=21 and 30 (ascending).
fn ranges(seconds: &[u64]) -> String {
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for &s in seconds {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => runs.push((s, s)),
        }
    }
    let text: Vec<String> =
        runs.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    text.join(", ")
}

/// A percentile cell; empty without a sample.
fn pct_cell(p: Option<&Percentiles>, get: fn(&Percentiles) -> f64) -> String {
    p.filter(|p| p.count > 0).map(|p| cell(get(p), 3)).unwrap_or_default()
}

fn ms(p: Option<&Percentiles>, get: fn(&Percentiles) -> f64) -> String {
    match p.filter(|p| p.count > 0).map(get) {
        Some(v) if v.is_finite() => format!("{v:.3} ms"),
        _ => "-".into(),
    }
}

/// The run's report as Markdown.
pub fn markdown(r: &RunReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# stampede analysis: {}\n", r.run);
    if let Some(v) = &r.verdict {
        let _ = writeln!(
            s,
            "Scenario `{}` against `{}`, started {}: **{v}**\n",
            r.scenario.as_deref().unwrap_or("?"),
            r.target.as_deref().unwrap_or("?"),
            r.started_at.as_deref().unwrap_or("?")
        );
    }
    let o = &r.overall;
    // Every figure carries what it covers, not only the heading.
    let (scope, pct) = (o.scope_tag(), o.percentile_tag());
    let _ = writeln!(s, "## Run: {}{scope}\n", if o.phases.is_empty() { "no phase" } else { &o.phases });
    let _ = writeln!(s, "| figure | value |\n|---|---|");
    let _ =
        writeln!(s, "| messages sent / received | {} / {}{scope} |", o.messages_sent, o.messages_received);
    let _ = writeln!(s, "| throughput | {:.1} msg/s{scope} |", o.throughput_msg_per_s);
    let _ = writeln!(
        s,
        "| connections opened / failed | {} / {}{scope} |",
        o.connections_opened, o.connections_failed
    );
    let _ = writeln!(s, "| connect success | {:.3} %{scope} |", o.connect_success_rate * 100.0);
    let _ = writeln!(
        s,
        "| closed by server / dropped | {} / {}{scope} |",
        o.connections_closed_by_server, o.connections_dropped
    );
    let _ = writeln!(s, "| peak connections | {}{scope} |", o.connections_peak);
    let _ = writeln!(s, "| errors | {} ({:.4} %){scope} |", o.errors, o.error_rate * 100.0);
    let l = o.latency_ms.as_ref();
    if l.is_some() {
        let _ = writeln!(
            s,
            "| latency p50 / p95 / p99 / max | {} / {} / {} / {}{pct} |",
            ms(l, |p| p.p50),
            ms(l, |p| p.p95),
            ms(l, |p| p.p99),
            ms(l, |p| p.max)
        );
    } else {
        let _ = writeln!(s, "| latency p50 / p95 / p99 / max | -{pct} |");
    }
    let c = o.connect_ms.as_ref();
    let _ = writeln!(
        s,
        "| connect p50 / p95 / p99 | {} / {} / {}{pct} |",
        ms(c, |p| p.p50),
        ms(c, |p| p.p95),
        ms(c, |p| p.p99)
    );
    let _ = writeln!(s, "| percentiles from | {} |", o.percentiles_from);
    if !o.generator_stalled_seconds.is_empty() {
        let _ = writeln!(
            s,
            "| generator stalled | seconds {}: latency there measures the load generator, not the target{scope} |",
            ranges(&o.generator_stalled_seconds)
        );
    }
    let _ = writeln!(s);
    if !o.errors_by_cause.is_empty() {
        let causes: Vec<String> = o.errors_by_cause.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "Errors by cause{scope}, from summary.json: {}\n", causes.join(", "));
    }
    let _ = writeln!(s, "## Phases\n");
    let _ = writeln!(
        s,
        "| phase | start (s) | length (s) | msg/s | peak conns | errors | p50 | p95 | p99 | percentiles from |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for w in &r.phases {
        let l = w.latency_ms.as_ref();
        let _ = writeln!(
            s,
            "| {} | {:.0} | {:.0} | {:.1} | {} | {} | {} | {} | {} | {} |",
            w.phase,
            w.start_s,
            w.end_s - w.start_s,
            w.throughput_msg_per_s,
            w.connections_peak,
            w.errors,
            ms(l, |p| p.p50),
            ms(l, |p| p.p95),
            ms(l, |p| p.p99),
            w.percentiles_from
        );
    }
    if !r.memory.is_empty() {
        let _ = writeln!(s, "\n## Memory (steady window)\n");
        let _ = writeln!(s, "| series | window (s) | from | to | trend | R^2 |\n|---|---|---|---|---|---|");
        for m in &r.memory {
            let _ = writeln!(
                s,
                "| {} | {:.0}-{:.0} | {:.1} MB | {:.1} MB | {:+.3} MB/min | {:.2} |",
                m.subject, m.start_s, m.end_s, m.first_mb, m.last_mb, m.mb_per_min, m.r2
            );
        }
    }
    let _ = writeln!(s, "\n## Findings\n");
    if r.findings.is_empty() {
        let _ = writeln!(
            s,
            "None: no latency spike, memory growth, connection drop or generator stall beyond the thresholds."
        );
    }
    for f in &r.findings {
        let _ = writeln!(
            s,
            "- **{}** {} ({}), {:.0}-{:.0} s, {}: {} (confidence {:.4}; rule {})",
            f.severity.name(),
            f.kind.name(),
            f.subject,
            f.start_s,
            f.end_s,
            f.phase,
            f.description,
            f.confidence,
            f.rule
        );
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}

/// The comparison as Markdown.
pub fn comparison_markdown(c: &Comparison) -> String {
    let mut s = String::new();
    let others: Vec<&str> =
        c.metrics.first().map(|m| m.runs.iter().map(|r| r.run.as_str()).collect()).unwrap_or_default();
    let _ = writeln!(s, "# Comparison against {}\n", c.baseline);
    let _ = writeln!(s, "Regression: worse than the baseline by more than {:.0} %.\n", c.tolerance * 100.0);
    for w in &c.warnings {
        let _ = writeln!(s, "**Warning:** {w}\n");
    }
    // Each run's column header says what its figures cover.
    let scope = |run: &str| c.scopes.iter().find(|r| r.run == run).map_or("?", |r| r.scope.as_str());
    let _ = write!(s, "| metric | {} (baseline: {}) |", c.baseline, scope(&c.baseline));
    for o in &others {
        let _ = write!(s, " {o} ({}) | change |", scope(o));
    }
    let _ = write!(s, "\n|---|---|");
    for _ in &others {
        let _ = write!(s, "---|---|");
    }
    let _ = writeln!(s);
    for m in &c.metrics {
        let arrow = match m.better {
            Better::Lower => "lower is better",
            Better::Higher => "higher is better",
        };
        // A percentile not from the run's latency.hlog is marked where it stands.
        let value = |run: &str, v: f64| {
            let approximate = m.percentile
                && c.scopes.iter().any(|r| r.run == run && r.percentiles_from != files::LATENCY_HLOG);
            match (v.is_finite(), approximate) {
                (false, _) => "-".to_string(),
                (true, true) => format!("{} (approximate)", cell(v, 3)),
                (true, false) => cell(v, 3),
            }
        };
        let _ = write!(s, "| {} ({arrow}) | {} |", m.metric, value(&c.baseline, m.baseline));
        for r in &m.runs {
            let change =
                if r.change.is_finite() { format!("{:+.1} %", r.change * 100.0) } else { "-".into() };
            let flag = if r.regression { " **REGRESSION**" } else { "" };
            let _ = write!(s, " {} | {change}{flag} |", value(&r.run, r.value));
        }
        let _ = writeln!(s);
    }
    s
}

/// Writes report.md, report.json, anomalies.csv and phases.csv of one run.
pub fn write_run(r: &RunReport, out: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("report.md"), markdown(r))?;
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(r).expect("plain data") + "\n")?;
    std::fs::write(out.join("anomalies.csv"), anomalies_csv(&[r]))?;
    std::fs::write(out.join("phases.csv"), phases_csv(&[r]))?;
    Ok(())
}

mod html;
pub use html::{comparison_html, html};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_timestamped() {
        assert_eq!(at(Some("2000-02-28T23:59:59.000Z"), 2.0), "2000-02-29T00:00:01.000");
        assert_eq!(at(None, 1.0), "");
    }

    #[test]
    fn seconds_are_shown_as_ranges() {
        assert_eq!(ranges(&[12, 13, 14, 20, 30, 31]), "12-14, 20, 30-31");
        assert_eq!(ranges(&[]), "");
    }
}
