//! Reads a results folder into a [`Run`]: summary.json (typed, schema
//! checked), metrics.csv and workers.csv through polars, latency.hlog. What
//! is optional may be missing; the run then records which figures are
//! approximate and why.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use stampede_model::results::{METRICS_COLUMNS, SUMMARY_SCHEMA_VERSION, Summary, files};

use crate::hlog::Hlog;
use crate::model::{PhaseSpan, Timeline};

/// Workers beyond which per-worker memory lines are not kept for plotting.
pub const MAX_PLOTTED_WORKERS: usize = 10;

/// A loaded results folder.
pub struct Run {
    /// The folder.
    pub dir: PathBuf,
    /// Its name, the run's label.
    pub label: String,
    /// summary.json, if present and readable.
    pub summary: Option<Summary>,
    /// metrics.csv as series.
    pub timeline: Timeline,
    /// latency.hlog, if present.
    pub hlog: Option<Hlog>,
    /// workers.csv's `elapsed_s`, `worker` and `rss_mb`, if present, read
    /// once (a day of a large fleet is millions of rows).
    pub workers: Option<DataFrame>,
    /// What is approximate or missing, for the report.
    pub notes: Vec<String>,
}

/// Why a folder cannot be analyzed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a folder.
    #[error("{0}: no such results folder")]
    Missing(PathBuf),
    /// A required file is missing.
    #[error("{0}: missing (is this a stampede results folder?)")]
    MissingFile(PathBuf),
    /// A file is not what stampede writes.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn invalid(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::Invalid { path: path.to_path_buf(), message: message.into() }
}

/// Loads the folder `dir`.
pub fn load(dir: &Path) -> Result<Run, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::Missing(dir.to_path_buf()));
    }
    let label = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string());
    let mut notes = Vec::new();

    let summary = read_summary(&dir.join(files::SUMMARY), &mut notes)?;
    let metrics_path = dir.join(files::METRICS_CSV);
    if !metrics_path.is_file() {
        return Err(LoadError::MissingFile(metrics_path));
    }
    let mut timeline = read_metrics(&metrics_path)?;
    timeline.label = label.clone();
    timeline.phases = phases(&timeline, summary.as_ref());

    let hlog_path = dir.join(files::LATENCY_HLOG);
    let hlog = if hlog_path.is_file() {
        match Hlog::read(&hlog_path, &timeline.phases) {
            Ok(h) => Some(h),
            Err(e) => {
                notes.push(format!(
                    "{}: unreadable ({e}); percentiles are approximate (from summary.json or per-second rows)",
                    files::LATENCY_HLOG
                ));
                None
            }
        }
    } else {
        notes.push(format!(
            "{} missing: percentiles are approximate (from summary.json or per-second rows)",
            files::LATENCY_HLOG
        ));
        None
    };
    if timeline.target_rss_mb.iter().all(|v| v.is_nan()) {
        notes.push("no target server series (no /metrics scraped): target memory not analyzed".into());
    }

    let workers_path = dir.join(files::WORKERS_CSV);
    let workers = if workers_path.is_file() {
        let df = read_workers(dir, &workers_path, PARQUET_CACHE_ABOVE)?;
        timeline.worker_rss = per_worker_rss(&df, &workers_path, &timeline)?;
        Some(df)
    } else {
        notes.push(format!("{} missing: per-worker memory not analyzed", files::WORKERS_CSV));
        None
    };
    Ok(Run { dir: dir.to_path_buf(), label, summary, timeline, hlog, workers, notes })
}

/// workers.csv above this size is cached as Parquet for the next analysis.
pub const PARQUET_CACHE_ABOVE: u64 = 64 << 20;

/// Where the Parquet copy of a large workers.csv is kept.
pub fn workers_cache(dir: &Path) -> PathBuf {
    dir.join("analysis").join("workers.parquet")
}

/// The columns of workers.csv the analysis needs. A day of a large fleet is
/// a CSV of hundreds of MB; its Parquet copy (written beside the analysis,
/// used while it is newer than the CSV) reads several times faster.
fn read_workers(dir: &Path, csv: &Path, cache_above: u64) -> Result<DataFrame, LoadError> {
    let cache = workers_cache(dir);
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(c), Some(w)) = (modified(&cache), modified(csv))
        && c >= w
        && let Ok(df) =
            LazyFrame::scan_parquet(PlRefPath::new(cache.to_string_lossy().as_ref()), Default::default())
                .and_then(LazyFrame::collect)
    {
        return Ok(df);
    }
    let mut df = scan_csv(csv)?
        .select([
            col("elapsed_s").cast(DataType::Float64),
            col("worker").cast(DataType::String),
            col("rss_mb").cast(DataType::Float64),
        ])
        .collect()
        .map_err(|e| invalid(csv, e.to_string()))?;
    if std::fs::metadata(csv).is_ok_and(|m| m.len() > cache_above) {
        // Best effort: a read-only results folder just gets no cache.
        // Written aside and renamed, so an interrupted write leaves no cache.
        let partial = cache.with_extension("parquet.partial");
        let written = std::fs::create_dir_all(cache.parent().expect("has a parent"))
            .map_err(PolarsError::from)
            .and_then(|_| std::fs::File::create(&partial).map_err(PolarsError::from))
            .and_then(|f| {
                ParquetWriter::new(f).with_compression(ParquetCompression::Zstd(None)).finish(&mut df)
            })
            .and_then(|_| std::fs::rename(&partial, &cache).map_err(PolarsError::from));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
    }
    Ok(df)
}

fn read_summary(path: &Path, notes: &mut Vec<String>) -> Result<Option<Summary>, LoadError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        notes.push(format!("{} missing: verdict, thresholds and error causes unknown", files::SUMMARY));
        return Ok(None);
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| invalid(path, format!("not JSON: {e}")))?;
    let version = value.get("schema_version").and_then(|v| v.as_u64());
    match version {
        Some(v) if v > u64::from(SUMMARY_SCHEMA_VERSION) => {
            return Err(invalid(
                path,
                format!(
                    "schema version {v} is newer than this analyze understands ({SUMMARY_SCHEMA_VERSION}): update stampede"
                ),
            ));
        }
        None => return Err(invalid(path, "no schema_version: not a stampede summary")),
        _ => {}
    }
    serde_json::from_value(value).map(Some).map_err(|e| invalid(path, format!("unexpected content: {e}")))
}

fn scan_csv(path: &Path) -> Result<LazyFrame, LoadError> {
    LazyCsvReader::new(PlRefPath::new(path.to_string_lossy().as_ref()))
        .with_has_header(true)
        .with_infer_schema_length(Some(10_000))
        .finish()
        .map_err(|e| invalid(path, e.to_string()))
}

/// A column as f64, nulls (empty cells) as NaN.
fn floats(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<f64>, LoadError> {
    let column = df.column(name).map_err(|_| invalid(path, format!("no column {name:?}")))?;
    let cast = column.cast(&DataType::Float64).map_err(|e| invalid(path, format!("column {name:?}: {e}")))?;
    let values = cast.f64().map_err(|e| invalid(path, format!("column {name:?}: {e}")))?;
    Ok(values.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn strings(df: &DataFrame, name: &str, path: &Path) -> Result<Vec<String>, LoadError> {
    let column = df.column(name).map_err(|_| invalid(path, format!("no column {name:?}")))?;
    let cast = column.cast(&DataType::String).map_err(|e| invalid(path, format!("column {name:?}: {e}")))?;
    let values = cast.str().map_err(|e| invalid(path, format!("column {name:?}: {e}")))?;
    Ok(values.iter().map(|v| v.unwrap_or("").to_string()).collect())
}

/// Whether the file's last byte ends a line: the controller writes whole
/// lines, so anything else is a file cut short (disk full, copy interrupted).
fn ends_with_newline(path: &Path) -> Result<bool, LoadError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).map_err(|e| invalid(path, e.to_string()))?;
    let len = f.metadata().map_err(|e| invalid(path, e.to_string()))?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8];
    f.seek(SeekFrom::Start(len - 1))
        .and_then(|_| f.read_exact(&mut last))
        .map_err(|e| invalid(path, e.to_string()))?;
    Ok(last[0] == b'\n')
}

/// Columns the controller always fills: an empty cell there means the row
/// was cut or edited.
const ALWAYS_FILLED: &[&str] = &[
    "elapsed_s",
    "connections_target",
    "connections_active",
    "messages_sent",
    "messages_received",
    "errors",
    "worker_rss_mb",
    "worker_cpu_pct",
];

fn read_metrics(path: &Path) -> Result<Timeline, LoadError> {
    if !ends_with_newline(path)? {
        return Err(invalid(path, "truncated: the last line is incomplete (or the file is empty)"));
    }
    let df = scan_csv(path)?.collect().map_err(|e| invalid(path, e.to_string()))?;
    // The columns every stampede version writes; later ones are optional.
    let required =
        &METRICS_COLUMNS[..METRICS_COLUMNS.iter().position(|c| *c == "workers_reporting").unwrap_or(0)];
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    let missing: Vec<&str> = required.iter().copied().filter(|c| !names.iter().any(|n| n == c)).collect();
    if !missing.is_empty() {
        return Err(invalid(
            path,
            format!("not a stampede metrics file: missing columns {}", missing.join(", ")),
        ));
    }
    let get = |name: &str| floats(&df, name, path);
    let optional = |name: &str| {
        if names.iter().any(|n| n == name) {
            floats(&df, name, path)
        } else {
            Ok(vec![f64::NAN; df.height()])
        }
    };
    for name in ALWAYS_FILLED {
        if let Some(i) = get(name)?.iter().position(|v| v.is_nan()) {
            return Err(invalid(path, format!("line {}: no {name}: truncated or edited file", i + 2)));
        }
    }
    let elapsed_s = get("elapsed_s")?;
    Ok(Timeline {
        label: String::new(),
        phase: strings(&df, "phase", path)?,
        phases: Vec::new(),
        latency_p50_ms: get("latency_p50_ms")?,
        latency_p95_ms: get("latency_p95_ms")?,
        latency_p99_ms: get("latency_p99_ms")?,
        latency_max_ms: get("latency_max_ms")?,
        connections_target: get("connections_target")?,
        connections_active: get("connections_active")?,
        connections_opened: get("connections_opened")?,
        connections_failed: get("connections_failed")?,
        connections_closed_by_server: get("connections_closed_by_server")?,
        messages_sent: get("messages_sent")?,
        messages_received: get("messages_received")?,
        errors: get("errors")?,
        worker_rss_mb: get("worker_rss_mb")?,
        worker_cpu_pct: get("worker_cpu_pct")?,
        target_rss_mb: optional("target_rss_mb")?,
        target_cpu_pct: optional("target_cpu_pct")?,
        worker_rss: Vec::new(),
        elapsed_s,
    })
}

/// Phase spans: from summary.json when present, else from the rows.
fn phases(timeline: &Timeline, summary: Option<&Summary>) -> Vec<PhaseSpan> {
    if let Some(s) = summary.filter(|s| !s.phases.is_empty()) {
        return s
            .phases
            .iter()
            .map(|p| PhaseSpan { name: p.name.clone(), start_s: p.start_s, end_s: p.start_s + p.duration_s })
            .collect();
    }
    let mut spans: Vec<PhaseSpan> = Vec::new();
    for (t, name) in timeline.elapsed_s.iter().zip(&timeline.phase) {
        match spans.last_mut() {
            Some(last) if &last.name == name => last.end_s = t + 1.0,
            _ => spans.push(PhaseSpan { name: name.clone(), start_s: *t, end_s: t + 1.0 }),
        }
    }
    spans
}

/// Per-worker RSS series aligned with the timeline, for a few workers.
fn per_worker_rss(
    df: &DataFrame,
    path: &Path,
    timeline: &Timeline,
) -> Result<Vec<(String, Vec<f64>)>, LoadError> {
    let ids = df
        .clone()
        .lazy()
        .select([col("worker")])
        .unique(None, UniqueKeepStrategy::First)
        .limit((MAX_PLOTTED_WORKERS + 1) as IdxSize)
        .collect()
        .map_err(|e| invalid(path, e.to_string()))?;
    let ids = strings(&ids, "worker", path)?;
    if ids.len() > MAX_PLOTTED_WORKERS {
        return Ok(Vec::new());
    }
    let (t, w, rss) =
        (floats(df, "elapsed_s", path)?, strings(df, "worker", path)?, floats(df, "rss_mb", path)?);
    let mut out: Vec<(String, Vec<f64>)> =
        ids.iter().map(|id| (id.clone(), vec![f64::NAN; timeline.len()])).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    let first = timeline.elapsed_s.first().copied().unwrap_or(0.0);
    for ((t, w), rss) in t.iter().zip(&w).zip(&rss) {
        let i = (t - first).round();
        if i >= 0.0
            && (i as usize) < timeline.len()
            && let Some((_, series)) = out.iter_mut().find(|(id, _)| id == w)
        {
            series[i as usize] = *rss;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_worker_files_are_cached_as_parquet_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("workers.csv");
        let header = stampede_model::results::WORKER_COLUMNS.join(",");
        std::fs::write(&csv, format!("{header}\n0,t,w1,1,0,0,1,1,0,10.0,1.0,1\n")).unwrap();
        let first = read_workers(dir.path(), &csv, 0).unwrap();
        assert!(workers_cache(dir.path()).is_file(), "written beside the analysis");
        // The CSV changes but stays older than the cache: the cache is used.
        std::fs::write(&csv, format!("{header}\n0,t,w1,1,0,0,1,1,0,99.0,1.0,1\n")).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&csv).unwrap().set_modified(old).unwrap();
        assert_eq!(read_workers(dir.path(), &csv, 0).unwrap(), first);
        // Newer than the cache: read again.
        std::fs::File::options()
            .write(true)
            .open(&csv)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(workers_cache(dir.path()))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = read_workers(dir.path(), &csv, u64::MAX).unwrap();
        assert_eq!(fresh.column("rss_mb").unwrap().f64().unwrap().get(0), Some(99.0));
    }
}
