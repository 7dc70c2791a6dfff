//! Latency distributions (CDF) of one run, and the comparison of several
//! runs' latency over time and distributions.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::common::{
    DrawResult, GRID, INK, MUTED, draw_legend, draw_text_at, finite_max, finite_min, fmt_num, fmt_value,
    message_chart, palette, run_name, text, titled,
};
use super::timechart::{Line, Stroke, TimeChart};
use crate::model::{Distribution, Timeline};

/// The percentiles marked on a single run's CDF (`None`: the max), with
/// their colours.
const MARKED: [(Option<f64>, &str, RGBColor); 5] = [
    (Some(0.50), "p50", RGBColor(31, 119, 180)),
    (Some(0.90), "p90", RGBColor(44, 160, 44)),
    (Some(0.99), "p99", RGBColor(255, 127, 14)),
    (Some(0.999), "p99.9", RGBColor(214, 39, 40)),
    (None, "max", RGBColor(90, 90, 90)),
];

/// The percentile axis shows at least up to p99.9 (1 / (1 - 0.999)), and
/// at most to p99.9999.
const AXIS_MIN_END: f64 = 1e3;
const AXIS_MAX_END: f64 = 1e6;

/// A distribution made drawable: (latency ms, fraction at or below), finite.
struct Curve {
    label: String,
    points: Vec<(f64, f64)>,
    color: RGBColor,
}

fn curve(d: &Distribution, color: RGBColor) -> Curve {
    let points = d
        .points
        .iter()
        .filter(|(ms, q)| ms.is_finite() && q.is_finite() && *ms >= 0.0)
        .map(|&(ms, q)| (ms, q.clamp(0.0, 1.0)))
        .collect();
    Curve { label: run_name(&d.label).to_string(), points, color }
}

/// The latency at or below which a fraction `q` of the samples are (the
/// HdrHistogram definition: the first recorded value reaching `q`).
fn percentile(points: &[(f64, f64)], q: f64) -> Option<f64> {
    points.iter().find(|(_, at)| *at >= q - 1e-12).map(|(ms, _)| *ms)
}

/// Where a fraction `q` lies on the percentile axis: `1 / (1 - q)`, so
/// p90, p99 and p99.9 are a decade apart each; the max sits at the end.
fn axis_x(q: f64, end: f64) -> f64 {
    if q >= 1.0 { end } else { (1.0 / (1.0 - q)).min(end) }
}

/// The axis label of position `x`: the percentile it stands for.
fn axis_label(x: f64) -> String {
    if x < 1.0 + 1e-9 {
        return "0%".into();
    }
    let pct = 100.0 * (1.0 - 1.0 / x);
    // As many decimals as the nines need: 90%, 99%, 99.9%, 99.99%.
    let decimals = ((x.log10().round() as i32) - 2).clamp(0, 6) as usize;
    format!("{pct:.decimals$}%")
}

/// The end of the percentile axis: a decade past the finest percentile
/// the curves resolve below their max.
fn axis_end(curves: &[Curve]) -> f64 {
    let finest =
        curves.iter().flat_map(|c| c.points.iter().map(|p| p.1)).filter(|q| *q < 1.0).fold(0.0f64, f64::max);
    let x = 1.0 / (1.0 - finest);
    (10f64.powf(x.log10().ceil()) * 10.0).clamp(AXIS_MIN_END, AXIS_MAX_END)
}

pub(super) fn single<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: &Timeline,
    latency: Option<&Distribution>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let label = latency.map(|d| d.label.as_str()).filter(|l| !l.trim().is_empty()).unwrap_or(&t.label);
    let title = format!("{}: latency by percentile", run_name(label));
    let Some(d) = latency else {
        return message_chart(area, &title, "no latency histogram (latency.hlog missing)");
    };
    let c = curve(d, RGBColor(31, 119, 180));
    if c.points.is_empty() {
        return message_chart(area, &title, "no latency samples (latency.hlog is empty)");
    }
    area.fill(&WHITE)?;
    let body = titled(area, &title, 20)?.margin(6, 6, 8, 28);
    panel(&body, &[c], true)
}

/// Draws latency by percentile for each curve on `area`: the percentile
/// axis `1 / (1 - q)` (log), so the tail gets as much room as the median;
/// the latency axis log when the latencies span more than two decades.
fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, curves: &[Curve], mark: bool) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = || curves.iter().flat_map(|c| c.points.iter().map(|p| p.0));
    let hi = finite_max(all()).unwrap_or(1.0);
    let lo_positive = finite_min(all().filter(|ms| *ms > 0.0));
    let end = axis_end(curves);
    match lo_positive {
        Some(lo) if hi / lo > 100.0 => {
            let y: LogCoord<f64> = (lo / 1.25..hi * 1.6).log_scale().into();
            draw_panel(area, y, curves, mark, end, "latency (ms, log scale)")
        }
        _ => {
            let top = if hi > 0.0 { hi * 1.15 } else { 1.0 };
            draw_panel(area, RangedCoordf64::from(0.0..top), curves, mark, end, "latency (ms)")
        }
    }
}

fn draw_panel<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    y: Y,
    curves: &[Curve],
    mark: bool,
    end: f64,
    y_desc: &str,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let x: LogCoord<f64> = (1.0..end).log_scale().into();
    let y_floor = y.range().start;
    let mut chart =
        ChartBuilder::on(area).x_label_area_size(46).y_label_area_size(72).build_cartesian_2d(x, y)?;
    let fmt_x = |v: &f64| axis_label(*v);
    let fmt_y = |v: &f64| fmt_num(*v);
    chart
        .configure_mesh()
        .x_desc("percentile (axis 1 / (1 - q): each decade one more nine)")
        .y_desc(y_desc)
        .x_labels(8)
        .y_labels(10)
        .x_label_formatter(&fmt_x)
        .y_label_formatter(&fmt_y)
        .bold_line_style(GRID.stroke_width(1))
        .light_line_style(GRID.mix(0.4).stroke_width(1))
        .axis_style(MUTED.stroke_width(1))
        .label_style(text(14, INK))
        .axis_desc_style(text(15, INK))
        .draw()?;

    for c in curves {
        let style = c.color.stroke_width(2);
        // A step per recorded value: every fraction above the previous
        // point's, up to its own, has this point's latency.
        let mut steps = Vec::with_capacity(c.points.len() * 2);
        let mut from = 1.0;
        for &(ms, q) in &c.points {
            let ms = ms.max(y_floor);
            steps.push((from, ms));
            from = axis_x(q, end);
            steps.push((from, ms));
        }
        chart
            .draw_series(LineSeries::new(steps, style))?
            .label(c.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }

    if mark {
        if let Some(c) = curves.first() {
            mark_percentiles(area, &mut chart, &c.points, end, y_floor)?;
        }
    } else {
        draw_legend(&mut chart, SeriesLabelPosition::LowerRight)?;
    }
    Ok(())
}

/// Dots at p50/p90/p99/p99.9/max with dashed drop lines to the axis, and
/// their values in a box in the lower right (where a rising curve has none:
/// the tail is the slowest).
fn mark_percentiles<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    chart: &mut ChartContext<DB, Cartesian2d<LogCoord<f64>, Y>>,
    points: &[(f64, f64)],
    end: f64,
    y_floor: f64,
) -> DrawResult
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let found: Vec<(f64, &str, RGBColor, f64)> = MARKED
        .iter()
        .filter_map(|&(q, name, color)| {
            let q = q.unwrap_or(1.0);
            Some((axis_x(q, end), name, color, percentile(points, q)?))
        })
        .collect();
    for &(x, _, color, ms) in &found {
        let ms = ms.max(y_floor);
        let drop = color.mix(0.7).stroke_width(1);
        chart.draw_series(std::iter::once(DashedPathElement::new(
            vec![(x, ms), (x, y_floor)],
            5,
            4,
            drop,
        )))?;
        chart.draw_series(std::iter::once(Circle::new((x, ms), 5, color.filled())))?;
    }
    if found.is_empty() {
        return Ok(());
    }
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let style = text(15, INK).pos(Pos::new(HPos::Left, VPos::Center));
    let rows: Vec<String> =
        found.iter().map(|(_, name, _, ms)| format!("{name}  {}", fmt_value(*ms, "ms"))).collect();
    let mut widest = 0;
    for row in &rows {
        widest = widest.max(area.estimate_text_size(row, &style)?.0);
    }
    let (row_h, pad) = (24, 10);
    let w = widest as i32 + 2 * pad + 18;
    let h = rows.len() as i32 * row_h + 2 * pad - 4;
    let (x0, y0) = (xr.end - w - 16, yr.end - h - 16);
    let (ox, oy) = (area.get_pixel_range().0.start, area.get_pixel_range().1.start);
    area.draw(&Rectangle::new([(x0 - ox, y0 - oy), (x0 + w - ox, y0 + h - oy)], WHITE.mix(0.9).filled()))?;
    area.draw(&Rectangle::new([(x0 - ox, y0 - oy), (x0 + w - ox, y0 + h - oy)], GRID.stroke_width(1)))?;
    for (i, ((_, _, color, _), row)) in found.iter().zip(&rows).enumerate() {
        let cy = y0 + pad + row_h / 2 + i as i32 * row_h - 2;
        area.draw(&Circle::new((x0 + pad + 5 - ox, cy - oy), 5, color.filled()))?;
        draw_text_at(area, row, &style, (x0 + pad + 18, cy))?;
    }
    Ok(())
}

/// The comparison chart: p95 per second of each run (top), their latency
/// distributions (bottom).
pub(super) fn comparison<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    runs: &[(&Timeline, Option<&Distribution>)],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let names: Vec<&str> = runs.iter().map(|(t, _)| run_name(&t.label)).collect();
    let title = match names.len() {
        0 => "latency comparison".to_string(),
        1..=4 => format!("latency comparison: {}", names.join(" vs ")),
        n => format!("latency comparison of {n} runs"),
    };
    if runs.is_empty() {
        return message_chart(area, &title, "no runs to compare");
    }
    area.fill(&WHITE)?;
    let body = titled(area, &title, 20)?;
    let (_, h) = body.dim_in_pixel();
    let (top, bottom) = body.split_vertically(h / 2);

    let lines: Vec<Line> = runs
        .iter()
        .enumerate()
        .map(|(i, (t, _))| Line::new(names[i], &t.elapsed_s, &t.latency_p95_ms, palette(i), Stroke::Solid))
        .collect();
    let x_end = finite_max(runs.iter().flat_map(|(t, _)| t.elapsed_s.iter().copied()))
        .map_or(1.0, |m| m.max(0.0) + 1.0);
    let time = TimeChart {
        title: "p95 latency per second".to_string(),
        title_size: 16,
        y_desc: "p95 latency (ms)",
        x_end,
        phases: &[],
        lines,
        spans: Vec::new(),
        areas: Vec::new(),
        empty_top: 1.0,
        note: None,
        // Runs an order of magnitude apart: each readable.
        log_y: true,
    };
    if runs.iter().all(|(t, _)| t.is_empty()) {
        message_chart(&top, &time.title, "no data: the runs have no rows")?;
    } else {
        time.draw(&top)?;
    }

    let curves: Vec<Curve> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, (_, d))| d.map(|d| Curve { label: names[i].to_string(), ..curve(d, palette(i)) }))
        .filter(|c| !c.points.is_empty())
        .collect();
    let cdf_title = "latency by percentile";
    if curves.is_empty() {
        return message_chart(&bottom, cdf_title, "no latency histograms (latency.hlog missing)");
    }
    let missing = runs.len() - curves.len();
    let cdf_body = titled(&bottom, cdf_title, 16)?.margin(6, 6, 8, 28);
    panel(&cdf_body, &curves, false)?;
    if missing > 0 {
        let (xr, yr) = bottom.get_pixel_range();
        let style = text(12, MUTED).pos(Pos::new(HPos::Right, VPos::Top));
        let note = format!("{missing} run(s) without latency.hlog not shown");
        draw_text_at(&bottom, &note, &style, (xr.end - 30, yr.start + 12))?;
    }
    Ok(())
}
