//! The generic "value per second" chart: phase bands, finding overlays,
//! NaN-broken lines and a legend placed where it hides the least data.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
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

/// A filled band between two series (a layer of a stacked chart).
pub(super) struct Area {
    /// Legend text.
    pub name: String,
    /// Seconds since the run start.
    pub xs: Vec<f64>,
    /// The band's lower and upper edges (finite).
    pub lower: Vec<f64>,
    pub upper: Vec<f64>,
    pub color: RGBColor,
}

/// A finding drawn on a chart: a translucent span over `[start, end]`.
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
    /// Filled bands under the lines (stacked layers), bottom first.
    pub areas: Vec<Area>,
    /// Top of the y axis when there is no positive value.
    pub empty_top: f64,
    /// A note under the title's right end (e.g. "per-worker lines omitted").
    pub note: Option<String>,
    /// A log y axis when the values span more than two decades.
    pub log_y: bool,
}

/// Alternating phase band backgrounds.
const BANDS: [RGBColor; 2] = [RGBColor(236, 242, 250), RGBColor(247, 247, 247)];
/// Height of one row of phase names above the plot.
const PHASE_ROW: i32 = 17;
/// Rows of phase names at most (narrow phases take turns).
const PHASE_ROWS: usize = 3;
/// Width of the y axis labels.
const Y_LABEL_AREA: i32 = 72;
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
        let x_end = if self.x_end.is_finite() && self.x_end > 0.0 { self.x_end } else { 1.0 };
        // The phase names take as many rows above the plot as they need.
        let (xr, _) = body.get_pixel_range();
        let labels = self.phase_labels(area, (xr.start + 6 + Y_LABEL_AREA)..(xr.end - 8), x_end)?;
        let rows = labels.iter().map(|l| l.row + 1).max().unwrap_or(0) as i32;
        let strip = if self.phases.is_empty() { 6 } else { 8 + rows.max(1) * PHASE_ROW };
        let body = body.margin(strip, 6, 8, 28);

        let legend_rows = self.legend_rows();
        let (corner, under, legend_frac) = self.layout_legend(x_end, legend_rows, body.dim_in_pixel().1);
        let values = || self.lines.iter().flat_map(|l| l.ys.iter().copied());
        let top = match finite_max(values()) {
            Some(m) if m > 0.0 => m,
            _ => self.empty_top,
        };
        // A log axis when the values span more than two decades: a
        // sub-millisecond run next to a 100 ms one both stay readable.
        let low = finite_min(values().filter(|v| *v > 0.0));
        if self.log_y
            && let Some(low) = low.filter(|low| top / low > 100.0)
        {
            let bottom = low / 1.5;
            let (lt, lb) = ((top * 1.3).ln(), bottom.ln());
            // The data in the legend's corner stays below the legend.
            let needed = lb + (under.max(bottom).ln() - lb) / (1.0 - legend_frac);
            let y_top = needed.max(lt).min(lt + 0.6 * (lt - lb)).exp();
            let y: LogCoord<f64> = (bottom..y_top).log_scale().into();
            return self.draw_on(area, &body, x_end, y, (bottom, y_top), corner, &labels);
        }
        // From 0, unless a series goes negative.
        let lowest = finite_min(values()).unwrap_or(0.0);
        let y_bottom = if lowest < 0.0 { lowest * 1.1 } else { 0.0 };
        let top = top * 1.1;
        let needed = under / (1.0 - legend_frac);
        let y_top = if legend_rows > 0 && needed > top { needed.min(top * 1.6) } else { top };
        self.draw_on(
            area,
            &body,
            x_end,
            RangedCoordf64::from(y_bottom..y_top),
            (y_bottom, y_top),
            corner,
            &labels,
        )
    }

    /// Draws the chart on `body` with the y axis `y` spanning `(bottom, top)`.
    #[allow(clippy::too_many_arguments)]
    fn draw_on<DB, Y>(
        &self,
        area: &DrawingArea<DB, Shift>,
        body: &DrawingArea<DB, Shift>,
        x_end: f64,
        y: Y,
        (y_bottom, y_top): (f64, f64),
        corner: SeriesLabelPosition,
        labels: &[PhaseLabel],
    ) -> DrawResult
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(body)
            .x_label_area_size(46)
            .y_label_area_size(Y_LABEL_AREA)
            .build_cartesian_2d(RangedCoordf64::from(0f64..x_end), y)?;

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
            .y_desc(if self.log_y && y_bottom > 0.0 {
                format!("{} (log scale)", self.y_desc)
            } else {
                self.y_desc.to_string()
            })
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

        for a in &self.areas {
            let edge: Vec<(f64, f64)> = a.xs.iter().zip(&a.upper).map(|(x, y)| (*x, *y)).collect();
            let back = a.xs.iter().zip(&a.lower).rev().map(|(x, y)| (*x, *y));
            let outline: Vec<(f64, f64)> = edge.into_iter().chain(back).collect();
            let fill = a.color.mix(0.85).filled();
            chart
                .draw_series(std::iter::once(Polygon::new(outline, fill)))?
                .label(a.name.clone())
                .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], fill));
        }

        for line in &self.lines {
            let style = line.style();
            let dashed = line.stroke == Stroke::Dashed;
            // On a log axis a value of 0 has no place: it breaks the line.
            let ys: Vec<f64> = match y_bottom > 0.0 {
                true => line.ys.iter().map(|&v| if v > 0.0 { v } else { f64::NAN }).collect(),
                false => line.ys.clone(),
            };
            let segs = segments(&line.xs, &ys);
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

        if self.legend_rows() > 0 {
            draw_legend(&mut chart, corner)?;
        }

        // The phase names, each centred over its band, in the row it was given.
        let (_, yr) = chart.plotting_area().get_pixel_range();
        let style = text(13, MUTED).pos(Pos::new(HPos::Center, VPos::Bottom));
        for l in labels {
            let y = yr.start - 4 - l.row as i32 * PHASE_ROW;
            draw_text_at(area, &l.text, &style, (l.center, y))?;
        }
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
        labels.extend(self.areas.iter().map(|a| a.name.as_str()));
        for m in &self.spans {
            if !labels.contains(&m.label.as_str()) {
                labels.push(&m.label);
            }
        }
        labels.len()
    }

    /// Picks the upper corner whose data is lower: (corner, the highest
    /// value under it, the share of the plot's height the legend takes).
    fn layout_legend(&self, x_end: f64, rows: usize, body_h: u32) -> (SeriesLabelPosition, f64, f64) {
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
        let plot_h = (f64::from(body_h) - 46.0).max(50.0);
        let legend_frac = if rows == 0 { 0.0 } else { ((rows as f64 * 18.0 + 26.0) / plot_h).min(0.6) };
        (corner, under, legend_frac)
    }

    /// Each phase's name in full, centred over its band (`plot_x`: the
    /// plot's pixel columns), in the first row where it overlaps no other
    /// name; a name that fits in no row is shortened to its band, and left
    /// out when even that says nothing.
    fn phase_labels<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        plot_x: std::ops::Range<i32>,
        x_end: f64,
    ) -> Result<Vec<PhaseLabel>, Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        let style = text(13, MUTED);
        let width = f64::from((plot_x.end - plot_x.start).max(1));
        let px = |t: f64| plot_x.start + (t / x_end * width).round() as i32;
        let mut right_edge = [i32::MIN; PHASE_ROWS];
        let mut out = Vec::new();
        for p in self.phases {
            let (s, e) = (p.start_s.max(0.0), p.end_s.min(x_end));
            if e <= s {
                continue;
            }
            let (x0, x1) = (px(s), px(e));
            let center = (x0 + x1) / 2;
            let w = area.estimate_text_size(&p.name, &style)?.0 as i32;
            // Kept inside the plot's width.
            let left = (center - w / 2).clamp(plot_x.start, (plot_x.end - w).max(plot_x.start));
            let free = right_edge.iter().position(|&r| r + 8 <= left);
            let (text, row, left, w) = match free {
                Some(row) => (p.name.clone(), row, left, w),
                None => {
                    let short = fit_text(area, &p.name, &style, (x1 - x0 - 6).max(0) as u32)?;
                    let sw = area.estimate_text_size(&short, &style)?.0 as i32;
                    (short, 0, center - sw / 2, sw)
                }
            };
            // A lone letter and an ellipsis says nothing: leave it out.
            if text.chars().count() < 3 {
                continue;
            }
            right_edge[row] = right_edge[row].max(left + w);
            out.push(PhaseLabel { text, center: left + w / 2, row });
        }
        Ok(out)
    }
}

/// A phase name placed above the plot.
struct PhaseLabel {
    text: String,
    /// Its centre, backend pixels.
    center: i32,
    /// Its row, 0 nearest the plot.
    row: usize,
}
