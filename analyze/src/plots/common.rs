//! Shared pieces of the charts: styles, colours, number formatting, NaN
//! handling and the layout helpers every chart uses.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// What the drawing functions return; errors become [`super::PlotError`].
pub(super) type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// The family the bundled font is registered under.
pub(super) const FAMILY: &str = "sans-serif";

/// Text colour.
pub(super) const INK: RGBColor = RGBColor(40, 40, 40);
/// Grid lines and frames.
pub(super) const GRID: RGBColor = RGBColor(222, 222, 222);
/// Secondary text (notes, messages).
pub(super) const MUTED: RGBColor = RGBColor(110, 110, 110);

/// Distinct line colours (one per run or worker).
pub(super) const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Height reserved above a chart for its title.
pub(super) const TITLE_H: i32 = 38;

/// A text style of the bundled font.
pub(super) fn text(size: u32, color: RGBColor) -> TextStyle<'static> {
    let mut style = TextStyle::from((FAMILY, size).into_font());
    style.color = color.to_backend_color();
    style
}

/// The colour of palette entry `i` (wrapping).
pub(super) fn palette(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// The largest finite value, if any.
pub(super) fn finite_max(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values.into_iter().filter(|v| v.is_finite()).fold(None, |m, v| Some(m.map_or(v, |m: f64| m.max(v))))
}

/// The smallest finite value, if any.
pub(super) fn finite_min(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    values.into_iter().filter(|v| v.is_finite()).fold(None, |m, v| Some(m.map_or(v, |m: f64| m.min(v))))
}

/// The runs of consecutive finite points of a series: a NaN (missing second)
/// breaks the line instead of dragging it to 0.
pub(super) fn segments(xs: &[f64], ys: &[f64]) -> Vec<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    for (&x, &y) in xs.iter().zip(ys) {
        if x.is_finite() && y.is_finite() {
            current.push((x, y));
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A tick or value label: no float noise, no needless decimals.
pub(super) fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_string();
    }
    if v.abs() < 1e-9 {
        return "0".to_string();
    }
    if v.abs() >= 1000.0 {
        return format!("{v:.0}");
    }
    let decimals = if v.abs() >= 100.0 {
        1
    } else if v.abs() >= 0.01 {
        3
    } else {
        5
    };
    let s = format!("{v:.decimals$}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// A value with its unit for annotations: `2.14 ms`, `1250 ms`.
pub(super) fn fmt_value(v: f64, unit: &str) -> String {
    let digits = if v.abs() >= 100.0 {
        0
    } else if v.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{v:.digits$} {unit}")
}

/// The run label for titles.
pub(super) fn run_name(label: &str) -> &str {
    if label.trim().is_empty() { "(unnamed run)" } else { label }
}

/// Draws `title` centred at the top of `area` and returns the area below it.
pub(super) fn titled<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    size: u32,
) -> Result<DrawingArea<DB, Shift>, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let (w, _) = area.dim_in_pixel();
    let style = text(size, INK).pos(Pos::new(HPos::Center, VPos::Top));
    let title = fit_text(area, title, &style, w.saturating_sub(20))?;
    area.draw_text(&title, &style, (w as i32 / 2, 10))?;
    Ok(area.margin(TITLE_H, 0, 0, 0))
}

/// `text`, or its longest prefix with an ellipsis, that is at most
/// `max_width` pixels wide; empty when not even one character fits.
pub(super) fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    max_width: u32,
) -> Result<String, Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    if area.estimate_text_size(text, style)?.0 <= max_width {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    for n in (1..chars.len()).rev() {
        let candidate: String = chars[..n].iter().collect::<String>().trim_end().to_string() + "…";
        if area.estimate_text_size(&candidate, style)?.0 <= max_width {
            return Ok(candidate);
        }
    }
    Ok(String::new())
}

/// A chart that only says why there is nothing to draw (no rows, no
/// histogram): the title, a light frame and a centred message.
pub(super) fn message_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    message: &str,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.fill(&WHITE)?;
    let body = titled(area, title, 20)?;
    let (w, h) = body.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    body.draw(&Rectangle::new([(20, 4), (w - 20, h - 20)], GRID.stroke_width(1)))?;
    let style = text(18, MUTED).pos(Pos::new(HPos::Center, VPos::Center));
    body.draw_text(message, &style, (w / 2, (h - 16) / 2))?;
    Ok(())
}

/// Draws `text` at backend (absolute) pixel `pos` on `area`.
pub(super) fn draw_text_at<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    style: &TextStyle,
    pos: (i32, i32),
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let (xr, yr) = area.get_pixel_range();
    area.draw_text(text, style, (pos.0 - xr.start, pos.1 - yr.start))?;
    Ok(())
}

/// Draws the legend of `chart` in the house style at `position`.
pub(super) fn draw_legend<'a, DB, CT>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult
where
    DB: DrawingBackend + 'a,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .margin(8)
        .legend_area_size(26)
        .label_font(text(13, INK))
        .background_style(WHITE.mix(0.85))
        .border_style(GRID.stroke_width(1))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_break_at_nan() {
        let xs = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        let ys = [1.0, f64::NAN, 2.0, 3.0, f64::NAN, f64::NAN];
        assert_eq!(segments(&xs, &ys), vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]);
        assert!(segments(&xs, &[f64::NAN; 6]).is_empty());
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(fmt_num(0.30000000000000004), "0.3");
        assert_eq!(fmt_num(-0.0), "0");
        assert_eq!(fmt_num(50.0), "50");
        assert_eq!(fmt_num(1500.0), "1500");
        assert_eq!(fmt_num(0.001), "0.001");
        assert_eq!(finite_max([f64::NAN, 2.0, 1.0]), Some(2.0));
        assert_eq!(finite_min([f64::NAN]), None);
    }
}
