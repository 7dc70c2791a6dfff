//! Charts of a run (and of several runs side by side) as PNG and SVG.
//!
//! Every chart is drawn once, as SVG (plotters); the PNG file and the raw
//! RGB buffer of the tests are that SVG rasterized by resvg, antialiased,
//! so the PNG, the SVG file and the SVG embedded in the HTML report are the
//! same picture. Text uses the DejaVu Sans font shipped in `assets/`, for
//! plotters' text measuring and for resvg's drawing alike.

mod cdf;
mod common;
mod runcharts;
mod timechart;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::model::{Distribution, Finding, Timeline};
use common::DrawResult;

/// Which charts exist; file stems.
pub const CHARTS: &[&str] = &["latency", "connections", "throughput", "errors", "memory", "latency_cdf"];
/// The file stem of the comparison chart.
pub const COMPARE_CHART: &str = "compare_latency";
/// Size of a run chart, pixels (the SVG has the same size).
pub const CHART_SIZE: (u32, u32) = (1000, 560);
/// Size of the comparison chart (two panels stacked), pixels.
pub const COMPARE_SIZE: (u32, u32) = (1000, 900);

/// The font, relative to this file.
static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Why a chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// Drawing (or encoding) a chart failed; `path` is the file, or
    /// `<stem>.svg`/`<stem>.rgb` for in-memory charts.
    #[error("{path}: {message}")]
    Draw { path: PathBuf, message: String },
    /// The output folder or file could not be written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `stem` is not one of [`CHARTS`].
    #[error("unknown chart {0:?} (charts: {list})", list = CHARTS.join(", "))]
    UnknownChart(String),
    /// The bundled font could not be parsed.
    #[error("the bundled font DejaVuSans.ttf could not be loaded")]
    Font,
    /// A pixel buffer of this size cannot be drawn.
    #[error("invalid image size {width}x{height}")]
    Size { width: u32, height: u32 },
}

/// Registers the bundled font as "sans-serif" (once per process): without
/// it plotters' ab_glyph text rendering has no font and drawing text fails.
fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| register_font(common::FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

fn check_stem(stem: &str) -> Result<(), PlotError> {
    if CHARTS.contains(&stem) { Ok(()) } else { Err(PlotError::UnknownChart(stem.to_string())) }
}

/// Runs a drawing closure, turning its error, or a panic inside plotters,
/// into a [`PlotError::Draw`] for `path`.
fn guarded(path: &Path, draw: impl FnOnce() -> DrawResult) -> Result<(), PlotError> {
    let failed = |message: String| PlotError::Draw { path: path.to_path_buf(), message };
    match catch_unwind(AssertUnwindSafe(draw)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(failed(format!("drawing panicked: {what}")))
        }
    }
}

/// Draws chart `stem` (already checked) on `root` and presents it.
fn draw_chart<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    stem: &str,
    timeline: &Timeline,
    findings: &[Finding],
    latency: Option<&Distribution>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    match stem {
        "latency" => runcharts::latency(&root, timeline, findings)?,
        "connections" => runcharts::connections(&root, timeline, findings)?,
        "throughput" => runcharts::throughput(&root, timeline)?,
        "errors" => runcharts::errors(&root, timeline)?,
        "memory" => runcharts::memory(&root, timeline, findings)?,
        "latency_cdf" => cdf::single(&root, timeline, latency)?,
        other => return Err(format!("unknown chart {other:?}").into()),
    }
    root.present()?;
    Ok(())
}

/// The rasterizer's options: the bundled font as the sans-serif family
/// (the charts' only one), no system fonts.
fn raster_options() -> &'static resvg::usvg::Options<'static> {
    static OPTIONS: OnceLock<resvg::usvg::Options<'static>> = OnceLock::new();
    OPTIONS.get_or_init(|| {
        let mut options = resvg::usvg::Options::default();
        let fonts = options.fontdb_mut();
        fonts.load_font_data(DEJAVU_SANS.to_vec());
        fonts.set_sans_serif_family("DejaVu Sans");
        options
    })
}

/// `svg` (of `size` pixels) rasterized, antialiased; `path` names it in errors.
fn rasterize(svg: &str, size: (u32, u32), path: &Path) -> Result<resvg::tiny_skia::Pixmap, PlotError> {
    let failed = |message: String| PlotError::Draw { path: path.to_path_buf(), message };
    let tree = resvg::usvg::Tree::from_str(svg, raster_options()).map_err(|e| failed(e.to_string()))?;
    let mut pixmap = resvg::tiny_skia::Pixmap::new(size.0, size.1)
        .ok_or(PlotError::Size { width: size.0, height: size.1 })?;
    resvg::render(&tree, resvg::tiny_skia::Transform::default(), &mut pixmap.as_mut());
    Ok(pixmap)
}

/// Draws `draw` as an SVG string of `size` pixels; `path` names it in errors.
fn draw_svg(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    guarded(path, || draw(SVGBackend::with_string(&mut svg, size).into_drawing_area()))?;
    Ok(svg)
}

/// Writes `<stem>.svg` drawn by `draw` into `out_dir`, and `<stem>.png`, the
/// same picture rasterized.
fn write_pair(
    out_dir: &Path,
    stem: &str,
    size: (u32, u32),
    draw: impl FnOnce(DrawingArea<SVGBackend, Shift>) -> DrawResult,
) -> Result<Vec<PathBuf>, PlotError> {
    let svg_path = out_dir.join(format!("{stem}.svg"));
    let png = out_dir.join(format!("{stem}.png"));
    let svg = draw_svg(&svg_path, size, draw)?;
    let bytes = rasterize(&svg, size, &png)?
        .encode_png()
        .map_err(|e| PlotError::Draw { path: png.clone(), message: e.to_string() })?;
    std::fs::write(&svg_path, svg).map_err(|source| PlotError::Io { path: svg_path.clone(), source })?;
    std::fs::write(&png, bytes).map_err(|source| PlotError::Io { path: png.clone(), source })?;
    Ok(vec![png, svg_path])
}

fn create_dir(out_dir: &Path) -> Result<(), PlotError> {
    std::fs::create_dir_all(out_dir).map_err(|source| PlotError::Io { path: out_dir.to_path_buf(), source })
}

/// Draws every chart of one run into `out_dir` as `<stem>.png` and
/// `<stem>.svg`; returns the written paths.
pub fn render_run(
    timeline: &Timeline,
    findings: &[Finding],
    latency: Option<&Distribution>,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    ensure_font()?;
    create_dir(out_dir)?;
    let mut written = Vec::with_capacity(CHARTS.len() * 2);
    for stem in CHARTS {
        written.extend(write_pair(out_dir, stem, CHART_SIZE, |root| {
            draw_chart(root, stem, timeline, findings, latency)
        })?);
    }
    Ok(written)
}

/// Draws the overlay of several runs' latency (p95 over time, one line per
/// run, above their CDFs) into `out_dir` as `compare_latency.png/svg`.
pub fn render_comparison(
    runs: &[(&Timeline, Option<&Distribution>)],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    ensure_font()?;
    create_dir(out_dir)?;
    fn draw<DB: DrawingBackend>(
        root: DrawingArea<DB, Shift>,
        runs: &[(&Timeline, Option<&Distribution>)],
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        cdf::comparison(&root, runs)?;
        root.present()?;
        Ok(())
    }
    write_pair(out_dir, COMPARE_CHART, COMPARE_SIZE, |root| draw(root, runs))
}

/// One chart as an SVG string (for embedding in a self-contained HTML
/// report). `stem` is one of [`CHARTS`].
pub fn svg(
    stem: &str,
    timeline: &Timeline,
    findings: &[Finding],
    latency: Option<&Distribution>,
) -> Result<String, PlotError> {
    check_stem(stem)?;
    ensure_font()?;
    draw_svg(Path::new(&format!("{stem}.svg")), CHART_SIZE, |root| {
        draw_chart(root, stem, timeline, findings, latency)
    })
}

/// One chart's pixels, `width * height * 3` bytes of RGB rows (what the
/// PNG would contain, at any size).
pub fn render_rgb(
    stem: &str,
    timeline: &Timeline,
    findings: &[Finding],
    latency: Option<&Distribution>,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, PlotError> {
    check_stem(stem)?;
    if !(200..=10_000).contains(&width) || !(150..=10_000).contains(&height) {
        return Err(PlotError::Size { width, height });
    }
    ensure_font()?;
    let path = PathBuf::from(format!("{stem}.rgb"));
    let svg = draw_svg(&path, (width, height), |root| draw_chart(root, stem, timeline, findings, latency))?;
    let pixmap = rasterize(&svg, (width, height), &path)?;
    // Every chart paints a white background first: the pixels are opaque,
    // so dropping alpha loses nothing.
    Ok(pixmap.data().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect())
}
