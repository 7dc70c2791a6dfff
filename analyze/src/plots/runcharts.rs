//! The per-second charts of one run: latency, connections, throughput,
//! errors and memory.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::common::{DrawResult, finite_max, finite_min, fmt_value, message_chart, palette, run_name};
use super::timechart::{Area, Line, Mark, Stroke, TimeChart};
use crate::model::{Finding, FindingKind, Severity, Timeline};

/// Per-worker memory lines are drawn up to this many workers.
const MAX_WORKER_LINES: usize = 10;
/// Up to this many workers get a legend entry each; more share one.
const NAMED_WORKER_LINES: usize = 4;
/// The max latency line is cut when it peaks above this many times the p99.
const MAX_CLIP_RATIO: f64 = 3.0;

const P50: RGBColor = RGBColor(31, 119, 180);
const P95: RGBColor = RGBColor(255, 127, 14);
const P99: RGBColor = RGBColor(120, 50, 160);
const MAX: RGBColor = RGBColor(130, 130, 130);
const SPIKE: RGBColor = RGBColor(214, 39, 40);
const GROWTH: RGBColor = RGBColor(214, 120, 0);
const DROP: RGBColor = RGBColor(200, 30, 140);
const STALL: RGBColor = RGBColor(90, 90, 90);

/// The colour findings of a kind are marked with.
fn kind_color(kind: FindingKind) -> RGBColor {
    match kind {
        FindingKind::LatencySpike | FindingKind::LatencyBlip => SPIKE,
        FindingKind::MemoryGrowth => GROWTH,
        FindingKind::ConnectionDrop => DROP,
        FindingKind::GeneratorStalled => STALL,
    }
}

/// Legend text of a finding kind.
fn kind_label(kind: FindingKind) -> String {
    format!("{} (finding)", kind.name().replace('_', " "))
}

/// The findings of `kinds` as spans over their seconds `[start_s, end_s + 1]`.
/// Each chart shows only the findings about its own series.
fn spans(findings: &[Finding], kinds: &[FindingKind]) -> Vec<Mark> {
    findings
        .iter()
        .filter(|f| f.start_s.is_finite() && f.end_s.is_finite() && kinds.contains(&f.kind))
        .map(|f| Mark {
            start: f.start_s,
            end: f.end_s + 1.0,
            color: kind_color(f.kind),
            alpha: match f.severity {
                Severity::Info => 0.12,
                Severity::Warning => 0.18,
                Severity::Critical => 0.25,
            },
            label: kind_label(f.kind),
        })
        .collect()
}

/// Where a second's figures are drawn. A row describes the second
/// `[s, s + 1)`: what happened during it (rates, latency) at its middle,
/// what held at its end (open connections, memory) at `s + 1`, so each lines
/// up with the phase bands and finding spans, which cover whole seconds.
fn during(t: &Timeline) -> Vec<f64> {
    t.elapsed_s.iter().map(|s| s + 0.5).collect()
}

/// See [`during`].
fn at_end(t: &Timeline) -> Vec<f64> {
    t.elapsed_s.iter().map(|s| s + 1.0).collect()
}

/// The end of the x axis: the last second plus one.
fn x_end(t: &Timeline) -> f64 {
    finite_max(t.elapsed_s.iter().copied()).map_or(1.0, |m| m.max(0.0) + 1.0)
}

/// A time chart of `t` with its phases and the given content.
fn chart<'a>(t: &'a Timeline, what: &str, y_desc: &'a str, lines: Vec<Line>) -> TimeChart<'a> {
    TimeChart {
        title: format!("{}: {what}", run_name(&t.label)),
        title_size: 20,
        y_desc,
        x_end: x_end(t),
        phases: &t.phases,
        lines,
        spans: Vec::new(),
        areas: Vec::new(),
        empty_top: 1.0,
        note: None,
        log_y: false,
    }
}

/// Draws the chart, or a "no data" chart for a run without rows.
fn draw<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, t: &Timeline, c: &TimeChart) -> DrawResult
where
    DB::ErrorType: 'static,
{
    if finite_max(t.elapsed_s.iter().copied()).is_none() {
        return message_chart(area, &c.title, "no data: the run has no rows");
    }
    c.draw(area)
}

pub(super) fn latency<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: &Timeline,
    f: &[Finding],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x = &during(t);
    let pct = || [&t.latency_p50_ms, &t.latency_p95_ms, &t.latency_p99_ms].into_iter().flatten().copied();
    let pct_top = finite_max(pct());
    let max_top = finite_max(t.latency_max_ms.iter().copied());
    // Percentiles more than two decades apart get a log axis, where the max
    // line has room too.
    let log_y = match (finite_min(pct().filter(|v| *v > 0.0)), pct_top) {
        (Some(lo), Some(hi)) => hi / lo > 100.0,
        _ => false,
    };
    // Otherwise one slow round trip can be 100x the p99: then the max line
    // is cut at a ceiling so the percentiles keep the chart's height.
    let mut max_line = t.latency_max_ms.clone();
    let mut note = None;
    if let (Some(p), Some(m)) = (pct_top, max_top)
        && !log_y
        && p > 0.0
        && m > MAX_CLIP_RATIO * p
    {
        let ceiling = p * 1.25;
        max_line.iter_mut().filter(|v| **v > ceiling).for_each(|v| *v = ceiling);
        note = Some(format!("max cut at {} (peak {})", fmt_value(ceiling, "ms"), fmt_value(m, "ms")));
    }
    let lines = vec![
        Line::new("max", x, &max_line, MAX, Stroke::Faded),
        Line::new("p99", x, &t.latency_p99_ms, P99, Stroke::Solid),
        Line::new("p95", x, &t.latency_p95_ms, P95, Stroke::Solid),
        Line::new("p50", x, &t.latency_p50_ms, P50, Stroke::Solid),
    ];
    let mut c = chart(t, "round-trip latency per second", "latency (ms)", lines);
    c.note = note;
    c.log_y = log_y;
    // Stalled seconds are shaded too: latency there is the generator's.
    c.spans = spans(f, &[FindingKind::LatencySpike, FindingKind::LatencyBlip, FindingKind::GeneratorStalled]);
    draw(area, t, &c)
}

pub(super) fn connections<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: &Timeline,
    f: &[Finding],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x = &at_end(t);
    let lines = vec![
        Line::new("target", x, &t.connections_target, MAX, Stroke::Dashed),
        Line::new("active", x, &t.connections_active, P50, Stroke::Solid),
    ];
    let mut c = chart(t, "open connections (at the end of each second)", "connections", lines);
    c.spans = spans(f, &[FindingKind::ConnectionDrop]);
    draw(area, t, &c)
}

pub(super) fn throughput<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, t: &Timeline) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x = &during(t);
    // Sent is drawn dashed over received: where they are equal (every
    // message answered) both stay visible.
    let mut received = Line::new("received (echoes)", x, &t.messages_received, P50, Stroke::Solid);
    received.width = 4;
    let lines = vec![received, Line::new("sent (dashed)", x, &t.messages_sent, P95, Stroke::Dashed)];
    let c = chart(t, "throughput", "messages / s", lines);
    draw(area, t, &c)
}

/// Attempts per second: connections tried plus messages sent (what an
/// error rate divides by); `None` where a series is missing.
fn attempts(t: &Timeline, i: usize) -> Option<f64> {
    let at = |v: &[f64]| v.get(i).copied().filter(|v| v.is_finite());
    Some(at(&t.connections_opened)? + at(&t.connections_failed)? + at(&t.messages_sent)?)
}

/// Errors per attempt in percent; [`Timeline::error_rate`] when the series
/// are complete, the same formula read defensively otherwise.
fn error_pct(t: &Timeline) -> Vec<f64> {
    let n = t.len();
    let complete = [&t.connections_opened, &t.connections_failed, &t.messages_sent, &t.errors]
        .iter()
        .all(|v| v.len() >= n);
    if complete {
        return t.error_rate().into_iter().map(|r| r * 100.0).collect();
    }
    (0..n)
        .map(|i| match (attempts(t, i), t.errors.get(i)) {
            (Some(a), Some(e)) if a > 0.0 => 100.0 * e / a,
            (Some(_), Some(_)) => 0.0,
            _ => f64::NAN,
        })
        .collect()
}

/// Causes stacked apart on the errors chart; the rest are stacked as one.
const STACKED_CAUSES: usize = 6;
/// Colours of the stacked causes, then of the rest.
const CAUSE_COLORS: [RGBColor; STACKED_CAUSES + 1] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(150, 150, 150),
];

pub(super) fn errors<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, t: &Timeline) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x = during(t);
    let total = error_pct(t);
    let mut all = Line::new("all errors / attempts", &x, &total, RGBColor(40, 40, 40), Stroke::Solid);
    all.width = 1;
    let mut c = chart(t, "error rate by cause", "error rate (%)", vec![all]);
    // Each cause's share of the second's attempts, stacked, largest cause
    // at the bottom: the stack's top is the error rate.
    let causes = &t.errors_by_cause;
    if causes.is_empty() {
        c.title = format!("{}: error rate", run_name(&t.label));
        if t.errors.iter().any(|e| *e > 0.0) {
            c.note = Some("no errors.csv: no breakdown by cause".into());
        }
    }
    let mut lower = vec![0.0; t.len()];
    let (named, rest) = causes.split_at(causes.len().min(STACKED_CAUSES));
    let mut layers: Vec<(String, Vec<f64>)> = named.to_vec();
    if let [one] = rest {
        layers.push(one.clone());
    } else if !rest.is_empty() {
        let mut sum = vec![0.0; t.len()];
        for (_, s) in rest {
            sum.iter_mut().zip(s).for_each(|(a, v)| *a += v);
        }
        layers.push((format!("{} other causes", rest.len()), sum));
    }
    for (k, (name, counts)) in layers.into_iter().enumerate() {
        let upper: Vec<f64> = (0..t.len())
            .map(|i| {
                let share = match attempts(t, i) {
                    Some(a) if a > 0.0 => 100.0 * counts.get(i).copied().unwrap_or(0.0) / a,
                    _ => 0.0,
                };
                lower[i] + share
            })
            .collect();
        c.areas.push(Area {
            name,
            xs: x.clone(),
            lower: lower.clone(),
            upper: upper.clone(),
            color: CAUSE_COLORS[k],
        });
        lower = upper;
    }
    draw(area, t, &c)
}

pub(super) fn memory<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: &Timeline,
    f: &[Finding],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x = &at_end(t);
    let mut lines = vec![Line::new(SUM_NAME, x, &t.worker_rss_mb, P50, Stroke::Solid)];
    if finite_max(t.target_rss_mb.iter().copied()).is_some() {
        lines.push(Line::new(TARGET_NAME, x, &t.target_rss_mb, RGBColor(44, 160, 44), Stroke::Solid));
    }
    let workers = &t.worker_rss;
    let mut note = None;
    if workers.len() > MAX_WORKER_LINES {
        note = Some(format!("{} workers: per-worker lines omitted", workers.len()));
    } else if workers.len() > 1 {
        for (i, (id, rss)) in workers.iter().enumerate() {
            let named = workers.len() <= NAMED_WORKER_LINES;
            let name = if named {
                Some(format!("worker {id}"))
            } else if i == 0 {
                Some(format!("each worker ({})", workers.len()))
            } else {
                None
            };
            // Skip blue and green, taken by the sum and the target.
            let color = if named { palette([3, 4, 5, 6, 8, 9][i % 6]) } else { RGBColor(150, 150, 150) };
            lines.push(Line { name, xs: x.clone(), ys: rss.clone(), color, width: 1, stroke: Stroke::Faded });
        }
    }
    // Each growth finding: its series named, its fitted line drawn over
    // the seconds it was fitted on.
    let growth: Vec<&Finding> = f.iter().filter(|f| f.kind == FindingKind::MemoryGrowth).collect();
    for g in &growth {
        let Some((name, series)) = memory_series(t, &g.subject) else { continue };
        let points: Vec<(f64, f64)> = t
            .elapsed_s
            .iter()
            .zip(series)
            .filter(|(s, v)| (g.start_s..=g.end_s).contains(*s) && v.is_finite())
            .map(|(s, v)| (*s, *v))
            .collect();
        // The finding's own (Theil-Sen) slope, through the median of the
        // points' offsets from it: the line the figure describes.
        let slope = g.magnitude / 60.0;
        let mut offsets: Vec<f64> = points.iter().map(|(x, y)| y - slope * x).collect();
        if offsets.is_empty() {
            continue;
        }
        offsets.sort_by(f64::total_cmp);
        let intercept = offsets[offsets.len() / 2];
        let (a, b) = (g.start_s, g.end_s);
        let mut line = Line::new(
            &format!("{name} grows {:+.2} MB/min (fitted)", g.magnitude),
            &[a + 1.0, b + 1.0],
            &[intercept + slope * a, intercept + slope * b],
            GROWTH,
            Stroke::Dashed,
        );
        line.width = 3;
        lines.push(line);
    }
    let mut c = chart(t, "resident memory (at the end of each second)", "memory (MB)", lines);
    c.note = note;
    c.spans = spans(f, &[FindingKind::MemoryGrowth]);
    if !growth.is_empty() {
        let leaking: Vec<String> =
            growth.iter().map(|g| memory_series(t, &g.subject).map_or(g.subject.clone(), |s| s.0)).collect();
        c.title = format!("{}: resident memory: {} growing", run_name(&t.label), leaking.join(", "));
    }
    draw(area, t, &c)
}

/// Legend name of the workers' summed memory.
const SUM_NAME: &str = "workers (sum)";
/// Legend name of the target's memory.
const TARGET_NAME: &str = "target server";

/// The memory series a growth finding's subject names, with its legend
/// name: `worker_rss_mb`, `target_rss_mb` or `worker <id>`.
fn memory_series<'a>(t: &'a Timeline, subject: &str) -> Option<(String, &'a [f64])> {
    match subject {
        "worker_rss_mb" => Some((SUM_NAME.to_string(), &t.worker_rss_mb)),
        "target_rss_mb" => Some((TARGET_NAME.to_string(), &t.target_rss_mb)),
        _ => {
            let id = subject.strip_prefix("worker ")?;
            let (_, series) = t.worker_rss.iter().find(|(w, _)| w == id)?;
            Some((subject.to_string(), series))
        }
    }
}
