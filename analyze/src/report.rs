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
use crate::model::{Finding, FindingKind};
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
            "- **{}** {} ({}), {:.0}-{:.0} s, {}: {}",
            f.severity.name(),
            f.kind.name(),
            f.subject,
            f.start_s,
            f.end_s,
            f.phase,
            f.description
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

/// One self-contained HTML page: the Markdown report's content and the
/// charts as inline SVG.
pub fn html(r: &RunReport, charts: &[(String, String)]) -> String {
    let esc = html_escape;
    let mut s = String::with_capacity(64 << 10);
    let verdict = r.verdict.as_deref().unwrap_or("no verdict");
    let badge = match verdict {
        "PASS" => "pass",
        "FAIL" => "fail",
        _ => "none",
    };
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>stampede: {}</title><style>{HTML_STYLE}</style></head><body>\
         <header><h1>{}</h1><span class=\"verdict {badge}\" id=\"verdict\">{}</span>\
         <p class=\"meta\">scenario {} &middot; target {} &middot; started {}</p></header>",
        esc(&r.run),
        esc(&r.run),
        esc(verdict),
        esc(r.scenario.as_deref().unwrap_or("?")),
        esc(r.target.as_deref().unwrap_or("?")),
        esc(r.started_at.as_deref().unwrap_or("?")),
    );
    // Headline figures, each with what it covers.
    let o = &r.overall;
    let (scope, pct) = (o.scope_tag(), o.percentile_tag());
    let latency = |get: fn(&Percentiles) -> f64| {
        o.latency_ms.as_ref().map_or("-".to_string(), |l| format!("{:.3} ms{pct}", get(l)))
    };
    s.push_str("<section><h2>Figures</h2><table id=\"figures\"><tbody>");
    for (name, value) in [
        ("phases", o.phases.clone()),
        ("throughput", format!("{:.1} msg/s{scope}", o.throughput_msg_per_s)),
        ("latency p50", latency(|p| p.p50)),
        ("latency p95", latency(|p| p.p95)),
        ("latency p99", latency(|p| p.p99)),
        ("peak connections", format!("{}{scope}", o.connections_peak)),
        ("connect success", format!("{:.3} %{scope}", o.connect_success_rate * 100.0)),
        ("errors", format!("{} = {:.4} %{scope}", o.errors, o.error_rate * 100.0)),
    ] {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(name), esc(&value));
    }
    s.push_str("</tbody></table></section>");
    // Thresholds, coloured by outcome.
    s.push_str("<section><h2>Thresholds</h2>");
    if r.thresholds.is_empty() {
        s.push_str("<p>The scenario has no thresholds.</p>");
    } else {
        s.push_str("<table id=\"thresholds\"><thead><tr><th>threshold</th><th>measured</th><th>outcome</th></tr></thead><tbody>");
        for t in &r.thresholds {
            let (class, word) = if t.pass { ("pass", "pass") } else { ("fail", "FAIL") };
            let measured = t.value.map_or("no sample".to_string(), |v| format!("{v:.4}"));
            let _ = write!(
                s,
                "<tr class=\"{class}\"><td>{}</td><td>{}</td><td>{word}</td></tr>",
                esc(&t.expression),
                esc(&measured)
            );
        }
        s.push_str("</tbody></table>");
    }
    s.push_str("</section>");
    // Phases.
    s.push_str(
        "<section><h2>Phases</h2><table id=\"phases\"><thead><tr><th>phase</th><th>seconds</th><th>sent</th>\
         <th>received</th><th>msg/s</th><th>p95 ms</th><th>peak conns</th><th>errors</th></tr></thead><tbody>",
    );
    for w in &r.phases {
        let p95 = w.latency_ms.as_ref().map_or("-".to_string(), |l| format!("{:.3}", l.p95));
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.phase),
            w.seconds,
            w.messages_sent,
            w.messages_received,
            w.throughput_msg_per_s,
            p95,
            w.connections_peak,
            w.errors
        );
    }
    s.push_str("</tbody></table></section>");
    // Findings, each linked to the chart that marks it.
    s.push_str("<section><h2>Findings</h2>");
    if r.findings.is_empty() {
        s.push_str("<p id=\"no-findings\">No anomaly found.</p>");
    } else {
        s.push_str("<ul id=\"findings\">");
        for f in &r.findings {
            let chart = chart_of(f.kind);
            let _ = write!(
                s,
                "<li class=\"finding {}\"><span class=\"severity\">{}</span> {:.0}-{:.0} s ({}): {} \
                 <a href=\"#chart-{chart}\">see the {chart} chart</a></li>",
                f.severity.name(),
                f.severity.name(),
                f.start_s,
                f.end_s,
                esc(&f.phase),
                esc(&f.description)
            );
        }
        s.push_str("</ul>");
    }
    if !r.notes.is_empty() {
        s.push_str("<h3>Notes</h3><ul>");
        for n in &r.notes {
            let _ = write!(s, "<li>{}</li>", esc(n));
        }
        s.push_str("</ul>");
    }
    s.push_str("</section><section><h2>Charts</h2>");
    for (stem, svg) in charts {
        let _ = write!(
            s,
            "<figure id=\"chart-{}\">{svg}<figcaption><b>{}</b>: {}</figcaption></figure>",
            esc(stem),
            esc(stem),
            esc(caption(stem))
        );
    }
    s.push_str("</section></body></html>\n");
    s
}

/// comparison.html: the comparison table (the baseline and each run, the
/// change, regressions highlighted), its warnings, and the overlaid
/// latency chart when there is one. Self-contained, as report.html.
pub fn comparison_html(c: &Comparison, chart_svg: Option<&str>) -> String {
    let esc = html_escape;
    let mut s = String::with_capacity(32 << 10);
    let regressed = c.regressed();
    let (badge, word) = if regressed { ("fail", "REGRESSION") } else { ("pass", "no regression") };
    let _ = write!(
        s,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>stampede: comparison against {}</title><style>{HTML_STYLE}</style></head><body>\
         <header><h1>Comparison against {}</h1><span class=\"verdict {badge}\" id=\"verdict\">{word}</span>\
         <p class=\"meta\">regression: worse than the baseline by more than {:.0} %</p></header>",
        esc(&c.baseline),
        esc(&c.baseline),
        c.tolerance * 100.0
    );
    for w in &c.warnings {
        let _ = write!(s, "<p class=\"finding warning\"><b>Warning:</b> {}</p>", esc(w));
    }
    let others: Vec<&str> =
        c.metrics.first().map(|m| m.runs.iter().map(|r| r.run.as_str()).collect()).unwrap_or_default();
    let scope = |run: &str| c.scopes.iter().find(|r| r.run == run).map_or("?", |r| r.scope.as_str());
    let _ = write!(
        s,
        "<table id=\"comparison\"><thead><tr><th>metric</th><th>{} (baseline)<br><small>{}</small></th>",
        esc(&c.baseline),
        esc(scope(&c.baseline))
    );
    for o in &others {
        let _ = write!(s, "<th>{}<br><small>{}</small></th><th>change</th>", esc(o), esc(scope(o)));
    }
    s.push_str("</tr></thead><tbody>");
    let value = |v: f64| if v.is_finite() { format!("{v:.3}") } else { "-".into() };
    for m in &c.metrics {
        let better = match m.better {
            Better::Lower => "lower is better",
            Better::Higher => "higher is better",
        };
        let class = if m.runs.iter().any(|r| r.regression) { " class=\"fail\"" } else { "" };
        let _ = write!(
            s,
            "<tr{class}><td>{} <small>({better})</small></td><td>{}</td>",
            esc(&m.metric),
            value(m.baseline)
        );
        for r in &m.runs {
            let change =
                if r.change.is_finite() { format!("{:+.1} %", r.change * 100.0) } else { "-".into() };
            let flag = if r.regression { " <b>REGRESSION</b>" } else { "" };
            let _ = write!(s, "<td>{}</td><td>{change}{flag}</td>", value(r.value));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    if let Some(svg) = chart_svg {
        let _ = write!(
            s,
            "<figure id=\"chart-compare_latency\">{svg}<figcaption><b>compare_latency</b>: each run's latency \
             distribution on one percentile axis; a curve to the right is slower at that percentile</figcaption></figure>"
        );
    }
    s.push_str("</body></html>\n");
    s
}

/// The report page's style: readable, printable, and charts that fit the
/// window (their SVGs keep their viewBox and scale).
const HTML_STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:1.5em auto;\
padding:0 1em;color:#1d1d1f}header{display:flex;flex-wrap:wrap;align-items:center;gap:.4em 1em}\
h1{font-size:1.5em;margin:0}.meta{flex-basis:100%;margin:0;color:#555}\
.verdict{font-weight:700;font-size:1.2em;padding:.2em .8em;border-radius:.4em;color:#fff}\
.verdict.pass{background:#1a7f37}.verdict.fail{background:#cf222e}.verdict.none{background:#6e7781}\
table{border-collapse:collapse;margin:.5em 0;width:100%}th,td{text-align:left;padding:.3em .6em;\
border-bottom:1px solid #ddd}tr.pass td:last-child{color:#1a7f37;font-weight:600}\
tr.fail{background:#ffebe9}tr.fail td:last-child{color:#cf222e;font-weight:700}\
li.finding{margin:.3em 0;padding:.3em .6em;border-left:.4em solid #6e7781;list-style:none}\
li.finding.critical{border-color:#cf222e;background:#ffebe9}li.finding.warning{border-color:#bf8700;\
background:#fff8c5}li.finding.info{border-color:#0969da;background:#ddf4ff}\
.severity{font-weight:700;text-transform:uppercase;font-size:.85em}ul{padding-left:0}\
figure{margin:1.5em 0}figure svg{width:100%;height:auto}figcaption{color:#444;margin-top:.3em}\
:target{outline:3px solid #0969da}";

/// The chart a finding is marked on.
fn chart_of(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::LatencySpike | FindingKind::GeneratorStalled => "latency",
        FindingKind::MemoryGrowth => "memory",
        FindingKind::ConnectionDrop => "connections",
    }
}

/// What to look for in a chart.
fn caption(stem: &str) -> &'static str {
    match stem {
        "latency" => {
            "round-trip latency per second (p50, p95, p99) over the phases; look for plateaus and spikes (findings are marked), and for grey seconds where the generator stalled"
        }
        "connections" => {
            "open connections against the plan; a fall below the target the plan does not explain is a connection loss"
        }
        "throughput" => {
            "messages sent and received per second; received below sent means replies are late or lost"
        }
        "errors" => "errors per second; a burst shows when the target failed",
        "memory" => "worker and target memory; a steady rise through the sustained phase is a leak",
        "latency_cdf" => {
            "the latency distribution of the run; the tail (p99 and beyond) is the worst experience"
        }
        _ => "",
    }
}

/// Text escaped for HTML (element content and quoted attributes).
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

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
