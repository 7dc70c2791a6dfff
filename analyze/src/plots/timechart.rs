//! The generic "value per second" chart: phase bands, finding overlays,
//! NaN-broken lines and a legend placed where it hides the least data.

use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::common::{
    DrawResult, GRID, INK, MUTED, draw_legend, draw_text_at, finite_max, finite_min, fit_text, fmt_num,
    segments, text, titled,
};
use crate::model::PhaseSpan;

/// How a line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stroke {
    /// The main series.
    Solid,
    /// A reference (e.g. the target connection count).
    Dashed,
    /// A secondary series, drawn lighter.
    Faded,
}

/// One series over time.
pub(super) struct Line {
    /// Legend text; `None` draws the line without a legend entry.
    pub name: Option<String>,
    /// Seconds since the run start.
    pub xs: Vec<f64>,
    /// Values (NaN = missing).
    pub ys: Vec<f64>,
    pub color: RGBColor,
    pub width: u32,
    pub stroke: Stroke,
}

impl Line {
    pub(super) fn new(name: &str, xs: &[f64], ys: &[f64], color: RGBColor, stroke: Stroke) -> Self {
        let width = if stroke == Stroke::Faded { 1 } else { 2 };
        Line { name: Some(name.to_string()), xs: xs.to_vec(), ys: ys.to_vec(), color, width, stroke }
    }

    fn style(&self) -> ShapeStyle {
        let alpha = if self.stroke == Stroke::Faded { 0.55 } else { 1.0 };
        self.color.mix(alpha).stroke_width(self.width)
    }
}

/// A finding drawn on a chart: a translucent span over `[start, end]`, or a
/// thin dashed marker at `start`.
pub(super) struct Mark {
    pub start: f64,
    pub end: f64,
    pub color: RGBColor,
    /// Span opacity (by severity).
    pub alpha: f64,
    pub label: String,
}

/// Everything one time chart shows.
pub(super) struct TimeChart<'a> {
    pub title: String,
    pub title_size: u32,
    pub y_desc: &'a str,
    /// Right end of the x axis (seconds).
    pub x_end: f64,
    /// Background bands, named above the plot.
    pub phases: &'a [PhaseSpan],
    pub lines: Vec<Line>,
    pub spans: Vec<Mark>,
    pub markers: Vec<Mark>,
    /// Top of the y axis when there is no positive value.
    pub empty_top: f64,
    /// A note under the title's right end (e.g. "per-worker lines omitted").
    pub note: Option<String>,
}

/// Alternating phase band backgrounds.
const BANDS: [RGBColor; 2] = [RGBColor(236, 242, 250), RGBColor(247, 247, 247)];
/// Height of the strip above the plot holding the phase names.
const PHASE_STRIP: i32 = 24;
/// The x axis label every time chart uses.
pub(super) const X_DESC: &str = "time since start (s)";

impl TimeChart<'_> {
    /// Draws the chart on `area` (which it fills).
    pub(super) fn draw<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        area.fill(&WHITE)?;
        let body = titled(area, &self.title, self.title_size)?;
        let strip = if self.phases.is_empty() { 6 } else { PHASE_STRIP };
        let body = body.margin(strip, 6, 8, 28);
        let x_end = if self.x_end.is_finite() && self.x_end > 0.0 { self.x_end } else { 1.0 };

        let legend_rows = self.legend_rows();
        let (corner, y_top) = self.layout_legend(x_end, legend_rows, body.dim_in_pixel().1);
        // From 0, unless a series goes negative.
        let lowest = finite_min(self.lines.iter().flat_map(|l| l.ys.iter().copied())).unwrap_or(0.0);
        let y_bottom = if lowest < 0.0 { lowest * 1.1 } else { 0.0 };

        let mut chart = ChartBuilder::on(&body)
            .x_label_area_size(46)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..x_end, y_bottom..y_top)?;

        for (i, p) in self.phases.iter().enumerate() {
            let (s, e) = (p.start_s.max(0.0), p.end_s.min(x_end));
            if e > s {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(s, y_bottom), (e, y_top)],
                    BANDS[i % 2].filled(),
                )))?;
            }
        }

        let fmt = |v: &f64| fmt_num(*v);
        chart
            .configure_mesh()
            .x_desc(X_DESC)
            .y_desc(self.y_desc)
            .x_labels(10)
            .y_labels(8)
            .x_label_formatter(&fmt)
            .y_label_formatter(&fmt)
            .bold_line_style(GRID.stroke_width(1))
            .light_line_style(TRANSPARENT)
            .axis_style(MUTED.stroke_width(1))
            .label_style(text(14, INK))
            .axis_desc_style(text(15, INK))
            .draw()?;

        // Findings first, so data stays on top of them.
        let mut labelled: Vec<String> = Vec::new();
        // A one-second finding on a long run would be a hairline: widen it.
        let min_w = x_end * 0.008;
        for m in &self.spans {
            let (mut s, mut e) = (m.start.max(0.0), m.end.min(x_end));
            if e <= s {
                continue;
            }
            if e - s < min_w {
                let mid = (s + e) / 2.0;
                (s, e) = ((mid - min_w / 2.0).max(0.0), (mid + min_w / 2.0).min(x_end));
            }
            let fill = m.color.mix(m.alpha).filled();
            let anno =
                chart.draw_series(std::iter::once(Rectangle::new([(s, y_bottom), (e, y_top)], fill)))?;
            if !labelled.contains(&m.label) {
                labelled.push(m.label.clone());
                let legend_fill = m.color.mix(0.35).filled();
                anno.label(m.label.clone())
                    .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], legend_fill));
            }
        }

        for line in &self.lines {
            let style = line.style();
            let dashed = line.stroke == Stroke::Dashed;
            let segs = segments(&line.xs, &line.ys);
            let empty = segs.is_empty();
            for seg in segs {
                if seg.len() == 1 {
                    chart.draw_series(std::iter::once(Circle::new(
                        seg[0],
                        line.width + 1,
                        style.filled(),
                    )))?;
                } else if dashed {
                    chart.draw_series(DashedLineSeries::new(seg, 8, 5, style))?;
                } else {
                    chart.draw_series(LineSeries::new(seg, style))?;
                }
            }
            if let Some(name) = &line.name {
                let name = if empty { format!("{name} (no data)") } else { name.clone() };
                // An empty series carries the legend entry, so a line that is
                // all NaN still appears in the legend.
                let anno = chart.draw_series(LineSeries::new(std::iter::empty::<(f64, f64)>(), style))?;
                if dashed {
                    anno.label(name)
                        .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 20, y)], 6, 4, style));
                } else {
                    anno.label(name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
                }
            }
        }

        for m in &self.markers {
            if !(0.0..=x_end).contains(&m.start) {
                continue;
            }
            let style = m.color.mix(0.85).stroke_width(1);
            let pts = vec![(m.start, y_bottom), (m.start, y_top)];
            let anno = chart.draw_series(DashedLineSeries::new(pts, 6, 4, style))?;
            if !labelled.contains(&m.label) {
                labelled.push(m.label.clone());
                anno.label(m.label.clone()).legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x + 10, y - 7), (x + 10, y + 7)], 4, 3, style)
                });
            }
        }

        if legend_rows > 0 {
            draw_legend(&mut chart, corner)?;
        }

        self.draw_phase_names(area, &chart, x_end)?;
        if let Some(note) = &self.note {
            let (xr, yr) = chart.plotting_area().get_pixel_range();
            let style = text(12, MUTED).pos(Pos::new(HPos::Right, VPos::Top));
            draw_text_at(area, note, &style, (xr.end, yr.end + 30))?;
        }
        Ok(())
    }

    /// Number of legend entries.
    fn legend_rows(&self) -> usize {
        let mut labels: Vec<&str> = self.lines.iter().filter_map(|l| l.name.as_deref()).collect();
        for m in self.spans.iter().chain(&self.markers) {
            if !labels.contains(&m.label.as_str()) {
                labels.push(&m.label);
            }
        }
        labels.len()
    }

    /// Picks the upper corner whose data is lower, and raises the y axis
    /// (by at most 60 %) so that the data there stays below the legend.
    fn layout_legend(&self, x_end: f64, rows: usize, body_h: u32) -> (SeriesLabelPosition, f64) {
        let all = self.lines.iter().flat_map(|l| l.ys.iter().copied());
        let top = match finite_max(all) {
            Some(m) if m > 0.0 => m * 1.1,
            _ => self.empty_top,
        };
        let region_max = |lo: f64, hi: f64| {
            finite_max(self.lines.iter().flat_map(|l| {
                l.xs.iter().zip(&l.ys).filter(move |(x, _)| **x >= lo && **x <= hi).map(|(_, y)| *y)
            }))
            .unwrap_or(0.0)
        };
        // The legend covers about the outer 30 % of the width.
        let left = region_max(0.0, 0.3 * x_end);
        let right = region_max(0.7 * x_end, x_end);
        let (corner, under) = if right <= left {
            (SeriesLabelPosition::UpperRight, right)
        } else {
            (SeriesLabelPosition::UpperLeft, left)
        };
        if rows == 0 {
            return (corner, top);
        }
        let plot_h = (f64::from(body_h) - 46.0).max(50.0);
        let legend_frac = ((rows as f64 * 18.0 + 26.0) / plot_h).min(0.6);
        let needed = under / (1.0 - legend_frac);
        (corner, if needed > top { needed.min(top * 1.6) } else { top })
    }

    /// Writes each phase's name centred above its band, shortened or left
    /// out when the band is too narrow for it.
    fn draw_phase_names<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        chart: &ChartContext<
            DB,
            Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
        >,
        x_end: f64,
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        let (_, yr) = chart.plotting_area().get_pixel_range();
        let style = text(13, MUTED).pos(Pos::new(HPos::Center, VPos::Bottom));
        for p in self.phases {
            let (s, e) = (p.start_s.max(0.0), p.end_s.min(x_end));
            if e <= s {
                continue;
            }
            let x0 = chart.backend_coord(&(s, 0.0)).0;
            let x1 = chart.backend_coord(&(e, 0.0)).0;
            let room = (x1 - x0 - 6).max(0) as u32;
            let name = fit_text(area, &p.name, &style, room)?;
            // A lone letter and an ellipsis says nothing: leave it out.
            if name.chars().count() < 3 {
                continue;
            }
            draw_text_at(area, &name, &style, ((x0 + x1) / 2, yr.start - 4))?;
        }
        Ok(())
    }
}
