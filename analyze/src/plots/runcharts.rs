//! The per-second charts of one run: latency, connections, throughput,
//! errors and memory.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::common::{DrawResult, finite_max, fmt_value, message_chart, palette, run_name};
use super::timechart::{Line, Mark, Stroke, TimeChart};
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
        FindingKind::LatencySpike => SPIKE,
        FindingKind::MemoryGrowth => GROWTH,
        FindingKind::ConnectionDrop => DROP,
        FindingKind::GeneratorStalled => STALL,
    }
}

/// Legend text of a finding kind.
fn kind_label(kind: FindingKind) -> String {
    format!("{} (finding)", kind.name().replace('_', " "))
}

/// Findings of the `spans` kinds as spans over `[start_s, end_s + 1]`, those
/// of the `markers` kinds as dashed lines at `start_s`.
fn marks(findings: &[Finding], spans: &[FindingKind], markers: &[FindingKind]) -> (Vec<Mark>, Vec<Mark>) {
    let mark = |f: &Finding| Mark {
        start: f.start_s,
        end: f.end_s + 1.0,
        color: kind_color(f.kind),
        alpha: match f.severity {
            Severity::Info => 0.12,
            Severity::Warning => 0.18,
            Severity::Critical => 0.25,
        },
        label: kind_label(f.kind),
    };
    let valid = |f: &&Finding| f.start_s.is_finite() && f.end_s.is_finite();
    let pick = |kinds: &[FindingKind]| -> Vec<Mark> {
        findings.iter().filter(valid).filter(|f| kinds.contains(&f.kind)).map(mark).collect()
    };
    (pick(spans), pick(markers))
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
        markers: Vec::new(),
        empty_top: 1.0,
        note: None,
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
    let x = &t.elapsed_s;
    // One slow round trip can be 100x the p99: then the max line is cut at a
    // ceiling so the percentiles keep the chart's height.
    let pct_top =
        finite_max([&t.latency_p50_ms, &t.latency_p95_ms, &t.latency_p99_ms].into_iter().flatten().copied());
    let max_top = finite_max(t.latency_max_ms.iter().copied());
    let mut max_line = t.latency_max_ms.clone();
    let mut note = None;
    if let (Some(p), Some(m)) = (pct_top, max_top)
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
    let others = [FindingKind::MemoryGrowth, FindingKind::ConnectionDrop];
    // Stalled seconds are shaded too: latency there is the generator's.
    (c.spans, c.markers) = marks(f, &[FindingKind::LatencySpike, FindingKind::GeneratorStalled], &others);
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
    let x = &t.elapsed_s;
    let lines = vec![
        Line::new("target", x, &t.connections_target, MAX, Stroke::Dashed),
        Line::new("active", x, &t.connections_active, P50, Stroke::Solid),
    ];
    let mut c = chart(t, "open connections", "connections", lines);
    (c.spans, c.markers) = marks(f, &[FindingKind::ConnectionDrop], &[]);
    draw(area, t, &c)
}

pub(super) fn throughput<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, t: &Timeline) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let x = &t.elapsed_s;
    let lines = vec![
        Line::new("sent", x, &t.messages_sent, P95, Stroke::Faded),
        Line::new("received (echoes)", x, &t.messages_received, P50, Stroke::Solid),
    ];
    let c = chart(t, "throughput", "messages / s", lines);
    draw(area, t, &c)
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
    let at = |v: &[f64], i: usize| v.get(i).copied().unwrap_or(f64::NAN);
    (0..n)
        .map(|i| {
            let attempts =
                at(&t.connections_opened, i) + at(&t.connections_failed, i) + at(&t.messages_sent, i);
            if attempts > 0.0 { 100.0 * at(&t.errors, i) / attempts } else { 0.0 }
        })
        .collect()
}

pub(super) fn errors<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, t: &Timeline) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let lines = vec![Line::new("errors / attempts", &t.elapsed_s, &error_pct(t), SPIKE, Stroke::Solid)];
    let c = chart(t, "error rate", "error rate (%)", lines);
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
    let x = &t.elapsed_s;
    let mut lines = vec![Line::new("workers (sum)", x, &t.worker_rss_mb, P50, Stroke::Solid)];
    if finite_max(t.target_rss_mb.iter().copied()).is_some() {
        lines.push(Line::new("target server", x, &t.target_rss_mb, RGBColor(44, 160, 44), Stroke::Solid));
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
    let mut c = chart(t, "resident memory", "memory (MB)", lines);
    c.note = note;
    (c.spans, c.markers) = marks(f, &[FindingKind::MemoryGrowth], &[]);
    draw(area, t, &c)
}
