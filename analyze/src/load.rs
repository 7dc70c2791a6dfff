//! Reads a results folder into a [`Run`]: summary.json (typed, schema
//! checked), metrics.csv (every cell checked, late corrections applied: see
//! [`crate::metrics`]) and workers.csv through polars, latency.hlog. What is
//! optional may be missing; the run then records which figures are
//! approximate and why.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use stampede_model::results::{MetricsRow, SUMMARY_SCHEMA_VERSION, Summary, files};

use crate::hlog::Hlog;
use crate::metrics;
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
    /// latency.hlog, if present and holding intervals.
    pub hlog: Option<Hlog>,
    /// Why there is no `hlog` ("latency.hlog missing", "latency.hlog
    /// empty", "latency.hlog unreadable", "latency.hlog matches no row"):
    /// percentiles are then taken from summary.json and marked
    /// approximate, or not given.
    pub hlog_problem: Option<String>,
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
    /// A data row of a CSV file is damaged.
    #[error("{path} row {row}: {message}")]
    Row {
        /// The file.
        path: PathBuf,
        /// 1-based data row (the header is not counted).
        row: usize,
        /// What is wrong.
        message: String,
    },
    /// A line of a file is damaged (or missing).
    #[error("{path} line {line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
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
    let rows = metrics::read(&metrics_path)?;
    if rows.corrections > 0 {
        notes.push(format!(
            "{}: {} late correction row(s) applied (the run did not end normally, so the file was not rewritten in order)",
            files::METRICS_CSV,
            rows.corrections
        ));
    }
    let mut timeline = timeline(rows.rows);
    timeline.label = label.clone();
    timeline.phases = phases(&timeline);

    let (hlog, hlog_problem) = read_hlog(&dir.join(files::LATENCY_HLOG), &timeline, &mut notes);
    if timeline.target_rss_mb.iter().all(|v| v.is_nan()) {
        notes.push("no target server series (no /metrics scraped): target memory not analyzed".into());
    }

    let errors_path = dir.join(files::ERRORS_CSV);
    if errors_path.is_file() {
        let causes = crate::causes::read(&errors_path, &timeline.elapsed_s, &timeline.errors)?;
        if causes.outside > 0 {
            notes.push(format!(
                "{}: {} row(s) about seconds {} does not have (ignored)",
                files::ERRORS_CSV,
                causes.outside,
                files::METRICS_CSV
            ));
        }
        if causes.disagree > 0 {
            notes.push(format!(
                "{}: the causes of {} second(s) do not add up to {}'s errors (the rest is drawn as \"{}\")",
                files::ERRORS_CSV,
                causes.disagree,
                files::METRICS_CSV,
                crate::causes::UNRECORDED
            ));
        }
        timeline.errors_by_cause = causes.series;
    } else if timeline.errors.iter().any(|e| *e > 0.0) {
        notes.push(format!("{} missing: errors are not broken down by cause per second", files::ERRORS_CSV));
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
    Ok(Run { dir: dir.to_path_buf(), label, summary, timeline, hlog, hlog_problem, workers, notes })
}

/// latency.hlog merged by the rows' phases, or why there is none.
fn read_hlog(path: &Path, timeline: &Timeline, notes: &mut Vec<String>) -> (Option<Hlog>, Option<String>) {
    let name = files::LATENCY_HLOG;
    if !path.is_file() {
        notes.push(format!("{name} missing: percentiles approximate (from summary.json) or not given"));
        return (None, Some(format!("{name} missing")));
    }
    let hlog = match Hlog::read(path, &timeline.elapsed_s, &timeline.phase) {
        Ok(h) => h,
        Err(e) => {
            notes.push(format!(
                "{name}: unreadable ({e}): percentiles approximate (from summary.json) or not given"
            ));
            return (None, Some(format!("{name} unreadable")));
        }
    };
    if hlog.cut_short {
        notes.push(format!("{name}: the last line is incomplete (the file was cut short): it was left out"));
    }
    if hlog.unmatched > 0 {
        notes.push(format!(
            "{name}: {} interval(s) of seconds without a row in {} were left out of the percentiles",
            hlog.unmatched,
            files::METRICS_CSV
        ));
    }
    if hlog.intervals + hlog.unmatched == 0 {
        notes.push(format!(
            "{name} empty (no intervals): percentiles approximate (from summary.json) or not given"
        ));
        return (None, Some(format!("{name} empty")));
    }
    if hlog.intervals == 0 {
        notes.push(format!(
            "{name}: no interval falls on a second of {}: percentiles approximate (from summary.json) or not given",
            files::METRICS_CSV
        ));
        return (None, Some(format!("{name} matches no row")));
    }
    (Some(hlog), None)
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
    // A late snapshot appends a replacement row for its (second, worker):
    // the last row of each wins. Finding whether any second repeats a
    // worker is cheap; removing repeats hashes every (second, worker) of
    // millions of rows, so it is done only when there are some.
    let repeats = df
        .clone()
        .lazy()
        .group_by([col("elapsed_s")])
        .agg([len().alias("rows"), col("worker").n_unique().alias("workers")])
        .select([col("rows").gt(col("workers")).any(true).alias("repeats")])
        .collect()
        .and_then(|r| r.column("repeats")?.bool()?.get(0).ok_or_else(|| polars_err!(NoData: "empty")))
        // Should the check fail, removing repeats is always right, only slower.
        .unwrap_or(true);
    if repeats {
        df = df
            .lazy()
            .unique_stable_generic(Some(vec![col("elapsed_s"), col("worker")]), UniqueKeepStrategy::Last)
            .collect()
            .map_err(|e| invalid(csv, e.to_string()))?;
    }
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
        Some(v) if v < u64::from(SUMMARY_SCHEMA_VERSION) => {
            return Err(invalid(
                path,
                format!(
                    "schema version {v} is older than this analyze reads ({SUMMARY_SCHEMA_VERSION}): use the analyze of the stampede that wrote it"
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

/// The per-second series of the final rows.
fn timeline(rows: Vec<MetricsRow>) -> Timeline {
    let f = |get: fn(&MetricsRow) -> f64| rows.iter().map(get).collect::<Vec<f64>>();
    Timeline {
        label: String::new(),
        elapsed_s: f(|r| r.elapsed_s as f64),
        phase: rows.iter().map(|r| r.phase.clone()).collect(),
        phases: Vec::new(),
        latency_p50_ms: f(|r| r.latency_p50_ms),
        latency_p95_ms: f(|r| r.latency_p95_ms),
        latency_p99_ms: f(|r| r.latency_p99_ms),
        latency_max_ms: f(|r| r.latency_max_ms),
        connections_target: f(|r| r.connections_target as f64),
        connections_active: f(|r| r.connections_active as f64),
        connections_opened: f(|r| r.counters.connections_opened as f64),
        connections_failed: f(|r| r.counters.connections_failed as f64),
        connections_closed_by_server: f(|r| r.counters.connections_closed_by_server as f64),
        connections_dropped: f(|r| r.counters.connections_dropped as f64),
        messages_sent: f(|r| r.counters.messages_sent as f64),
        messages_received: f(|r| r.counters.messages_received as f64),
        errors: f(|r| r.errors as f64),
        worker_rss_mb: f(|r| r.worker_rss_mb),
        worker_cpu_pct: f(|r| r.worker_cpu_pct),
        target_rss_mb: f(|r| r.target_rss_mb),
        target_cpu_pct: f(|r| r.target_cpu_pct),
        worker_rss: Vec::new(),
        errors_by_cause: Vec::new(),
        generator_stalled: rows.iter().map(|r| r.generator_stalled > 0).collect(),
        counters: rows.iter().map(|r| r.counters).collect(),
    }
}

/// Phase spans from the rows: a second's phase is its row's `phase` (the
/// controller assigns seconds after the plan's end to the last phase).
fn phases(timeline: &Timeline) -> Vec<PhaseSpan> {
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
    // Rows are one per second in order, not necessarily without gaps.
    for ((t, w), rss) in t.iter().zip(&w).zip(&rss) {
        if let Ok(i) = timeline.elapsed_s.binary_search_by(|e| e.total_cmp(t))
            && let Some((_, series)) = out.iter_mut().find(|(id, _)| id == w)
        {
            series[i] = *rss;
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
