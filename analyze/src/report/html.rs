//! The HTML pages analyze writes: report.html for a run and
//! comparison.html for several, self-contained (inline SVG, no network).

use std::fmt::Write as _;

use stampede_model::results::Percentiles;

use super::RunReport;
use crate::compare::{Better, Comparison};
use crate::model::FindingKind;

/// One self-contained HTML page: the run's figures, thresholds, phases
/// and findings, and the charts as inline SVG.
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
        // Without figures the cell still says why (the source is "not given (...)").
        o.latency_ms.as_ref().map_or(format!("-{pct}"), |l| format!("{:.3} ms{pct}", get(l)))
    };
    s.push_str("<section><h2>Figures</h2><table id=\"figures\"><tbody>");
    for (name, value) in [
        ("phases", o.phases.clone()),
        ("throughput", format!("{:.1} msg/s{scope}", o.throughput_msg_per_s)),
        ("latency p50", latency(|p| p.p50)),
        ("latency p95", latency(|p| p.p95)),
        ("latency p99", latency(|p| p.p99)),
        ("percentiles from", o.percentiles_from.clone()),
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
         <th>received</th><th>msg/s</th><th>p95 ms</th><th>peak conns</th><th>errors</th><th>percentiles from</th></tr></thead><tbody>",
    );
    for w in &r.phases {
        let p95 = w.latency_ms.as_ref().map_or("-".to_string(), |l| format!("{:.3}", l.p95));
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&w.phase),
            w.seconds,
            w.messages_sent,
            w.messages_received,
            w.throughput_msg_per_s,
            p95,
            w.connections_peak,
            w.errors,
            esc(&w.percentiles_from)
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
                 <a href=\"#chart-{chart}\">see the {chart} chart</a> \
                 <span class=\"rule\" title=\"{}\">confidence {:.4}</span></li>",
                f.severity.name(),
                f.severity.name(),
                f.start_s,
                f.end_s,
                esc(&f.phase),
                esc(&f.description),
                esc(&f.rule),
                f.confidence
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
        FindingKind::LatencySpike | FindingKind::LatencyBlip | FindingKind::GeneratorStalled => "latency",
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
        "errors" => "errors per attempt each second; a burst shows when the target failed",
        "memory" => {
            "worker and target memory; a steady rise through the sustained phase is a leak: a growing series is named in the title and its fitted line drawn"
        }
        "latency_cdf" => {
            "latency by percentile: each step right adds a nine (90 %, 99 %, 99.9 %), so the tail, the worst experience, gets as much room as the median; p50, p90, p99, p99.9 and the max are marked"
        }
        _ => "",
    }
}

/// Text escaped for HTML (element content and quoted attributes).
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
