//! Reads `metrics.csv` and checks every cell: a damaged file (cut short,
//! edited, out of order, absurd values) is an error naming its row, never a
//! NaN or a silently wrong figure. Late corrections (rows of revision > 0,
//! appended when a worker's snapshot came after its second was written) replace
//! the row of their second.

use std::collections::HashMap;
use std::path::Path;

use polars::prelude::*;
use stampede_model::Counters;
use stampede_model::histogram::MAX_US;
use stampede_model::results::{MetricsRow, metrics_columns};

use crate::load::LoadError;

/// The largest `elapsed_s` accepted: 10^7 s is 116 days, beyond any run.
pub const MAX_ELAPSED_S: u64 = 10_000_000;
/// The largest count accepted for one second. A trillion events in a second
/// is no real run; it also keeps a sum over [`MAX_ELAPSED_S`] rows within u64.
pub const MAX_PER_SECOND: u64 = 1_000_000_000_000;
/// The largest latency a row can hold: the histograms' upper bound, ms.
const MAX_LATENCY_MS: f64 = MAX_US as f64 / 1000.0;
/// The largest memory, CPU or connection gauge accepted.
const MAX_GAUGE: f64 = 1e12;

/// Columns added after the first stampede versions: absent means "not
/// measured", never damage.
/// The counters every stampede metrics.csv has had since schema 2.
const FIRST_COUNTERS: &[&str] = &[
    "connections_attempted",
    "connections_opened",
    "connections_failed",
    "messages_sent",
    "messages_received",
    "messages_lost",
];

const OPTIONAL_COLUMNS: &[&str] = &[
    "workers_reporting",
    "browser_pss_mb",
    "browser_sessions",
    "target_rss_mb",
    "target_cpu_pct",
    "target_connections",
    "connect_tcp_p95_ms",
    "connect_tls_p95_ms",
    "connect_upgrade_p95_ms",
];

/// The final rows of `metrics.csv`, one per second in order, and how many
/// corrections were applied.
pub struct Rows {
    /// One row per second, each at its highest revision.
    pub rows: Vec<MetricsRow>,
    /// Rows of revision > 0 that replaced an earlier row.
    pub corrections: usize,
}

/// An error at data row `row` (1-based) of the file.
fn at_row(path: &Path, row: usize, message: impl Into<String>) -> LoadError {
    LoadError::Row { path: path.to_path_buf(), row, message: message.into() }
}

pub(crate) fn at_line(path: &Path, line: usize, message: impl Into<String>) -> LoadError {
    LoadError::Line { path: path.to_path_buf(), line, message: message.into() }
}

pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::Invalid { path: path.to_path_buf(), message: message.into() }
}

/// The cells of a CSV line (quotes as stampede writes them); `None` when a
/// quote is left open.
pub fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut()?.push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut()?.push(c),
        }
    }
    (!quoted).then_some(cells)
}

/// Reads and checks the file.
pub fn read(path: &Path) -> Result<Rows, LoadError> {
    check_complete(path)?;
    // Every column as text: each cell is then parsed and range-checked here,
    // so a bad cell is reported with its row instead of becoming a null or
    // turning its whole column into floats.
    let mut df = LazyCsvReader::new(PlRefPath::new(path.to_string_lossy().as_ref()))
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .finish()
        .and_then(LazyFrame::collect)
        .map_err(|e| invalid(path, e.to_string()))?;
    // One chunk per column: cells are then read by index in constant time.
    df.rechunk_mut_par();
    let names: Vec<String> = df.get_column_names().iter().map(|n| n.to_string()).collect();
    let missing: Vec<&str> = metrics_columns()
        .into_iter()
        .filter(|c| !OPTIONAL_COLUMNS.contains(c) && !names.iter().any(|n| n == c))
        // Counters added since the first schema are absent from older runs'
        // files (they counted 0 of them); the first counters must be there.
        .filter(|c| FIRST_COUNTERS.contains(c) || !Counters::NAMES.contains(c))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            path,
            format!("not a stampede metrics file: missing columns {}", missing.join(", ")),
        ));
    }
    if df.height() == 0 {
        return Err(at_line(path, 2, "no rows after the header (the run wrote no second)"));
    }
    let columns = Cells::new(&df, path)?;
    let mut rows = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        rows.push(columns.row(i).map_err(|message| at_row(path, i + 1, message))?);
    }
    resolve(path, rows)
}

/// The file must end with a newline: the controller writes whole lines, so
/// anything else is a file cut short (crash, disk full, interrupted copy).
fn check_complete(path: &Path) -> Result<(), LoadError> {
    use std::io::{Read, Seek, SeekFrom};
    let io = |e: std::io::Error| invalid(path, e.to_string());
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(at_line(path, 1, "empty file (0 bytes): the run wrote nothing"));
    }
    let mut last = [0u8];
    f.seek(SeekFrom::Start(len - 1)).and_then(|_| f.read_exact(&mut last)).map_err(io)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    // Cut short: name the incomplete line.
    let bytes = std::fs::read(path).map_err(io)?;
    match bytes.iter().filter(|&&b| b == b'\n').count() {
        0 => Err(at_line(path, 1, "truncated: the header line is incomplete")),
        complete => {
            Err(at_row(path, complete, "truncated: the last line is incomplete (the file was cut short)"))
        }
    }
}

/// The columns as text, by name.
struct Cells<'a> {
    columns: HashMap<&'static str, &'a StringChunked>,
}

impl<'a> Cells<'a> {
    fn new(df: &'a DataFrame, path: &Path) -> Result<Cells<'a>, LoadError> {
        let mut columns = HashMap::new();
        for name in metrics_columns() {
            let Ok(column) = df.column(name) else { continue };
            let text = column.str().map_err(|e| invalid(path, format!("column {name}: {e}")))?;
            columns.insert(name, text);
        }
        Ok(Cells { columns })
    }

    /// The cell of column `name` in row `i`, trimmed; `None` when empty or
    /// when the column is absent.
    fn get(&self, name: &str, i: usize) -> Option<&'a str> {
        self.columns.get(name)?.get(i).map(str::trim).filter(|s| !s.is_empty())
    }

    fn has(&self, name: &str) -> bool {
        self.columns.contains_key(name)
    }

    /// A count that must be present, at most `max`.
    fn count(&self, name: &str, i: usize, max: u64) -> Result<u64, String> {
        let text = self.get(name, i).ok_or_else(|| format!("no {name} (empty cell): cut or edited row"))?;
        count(name, text, max)
    }

    /// A measurement; empty means "no sample" (NaN) when `may_be_empty`.
    fn float(&self, name: &str, i: usize, max: f64, may_be_empty: bool) -> Result<f64, String> {
        match self.get(name, i) {
            None if may_be_empty || !self.has(name) => Ok(f64::NAN),
            None => Err(format!("no {name} (empty cell): cut or edited row")),
            Some(text) => float(name, text, max),
        }
    }

    fn row(&self, i: usize) -> Result<MetricsRow, String> {
        let elapsed_s = self.count("elapsed_s", i, MAX_ELAPSED_S)?;
        let phase = self.get("phase", i).ok_or("no phase (empty cell): cut or edited row")?;
        let revision = self.count("revision", i, u64::from(u32::MAX))? as u32;
        let mut counters = Counters::default();
        for name in Counters::NAMES {
            if self.has(name) {
                *counters.get_mut(name).expect("a counter's own name") =
                    self.count(name, i, MAX_PER_SECOND)?;
            }
        }
        let stalled = self.count("generator_stalled", i, 1)?;
        Ok(MetricsRow {
            elapsed_s,
            timestamp: self.get("timestamp", i).unwrap_or_default().to_string(),
            phase: phase.to_string(),
            revision,
            connections_target: self.count("connections_target", i, MAX_PER_SECOND)?,
            connections_active: self.count("connections_active", i, MAX_PER_SECOND)?,
            counters,
            errors: self.count("errors", i, MAX_PER_SECOND)?,
            latency_p50_ms: self.float("latency_p50_ms", i, MAX_LATENCY_MS, true)?,
            latency_p95_ms: self.float("latency_p95_ms", i, MAX_LATENCY_MS, true)?,
            latency_p99_ms: self.float("latency_p99_ms", i, MAX_LATENCY_MS, true)?,
            latency_max_ms: self.float("latency_max_ms", i, MAX_LATENCY_MS, true)?,
            connect_p95_ms: self.float("connect_p95_ms", i, MAX_LATENCY_MS, true)?,
            connect_tcp_p95_ms: self.float("connect_tcp_p95_ms", i, MAX_LATENCY_MS, true)?,
            connect_tls_p95_ms: self.float("connect_tls_p95_ms", i, MAX_LATENCY_MS, true)?,
            connect_upgrade_p95_ms: self.float("connect_upgrade_p95_ms", i, MAX_LATENCY_MS, true)?,
            generator_stalled: stalled as u8,
            worker_rss_mb: self.float("worker_rss_mb", i, MAX_GAUGE, false)?,
            worker_cpu_pct: self.float("worker_cpu_pct", i, MAX_GAUGE, false)?,
            browser_pss_mb: self.float("browser_pss_mb", i, MAX_GAUGE, true)?,
            browser_sessions: match self.get("browser_sessions", i) {
                Some(text) => count("browser_sessions", text, MAX_PER_SECOND)?,
                None => 0,
            },
            workers_reporting: match self.get("workers_reporting", i) {
                Some(text) => count("workers_reporting", text, u64::from(u32::MAX))? as u32,
                None => 0,
            },
            target_rss_mb: self.float("target_rss_mb", i, MAX_GAUGE, true)?,
            target_cpu_pct: self.float("target_cpu_pct", i, MAX_GAUGE, true)?,
            target_connections: self.float("target_connections", i, MAX_GAUGE, true)?,
        })
    }
}

/// A whole number in `0..=max`, or what is wrong with `text`.
fn count(name: &str, text: &str, max: u64) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(v) if v <= max => Ok(v),
        Ok(v) => Err(format!("{name} {v} is out of range (at most {max})")),
        Err(_) if text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{name} {text} is out of range (beyond u64)"))
        }
        Err(_) => Err(match text.parse::<f64>() {
            Ok(v) if !v.is_finite() => format!("{name} {text} is not a finite number"),
            Ok(v) if v < 0.0 => format!("{name} {text} is negative"),
            Ok(_) => format!("{name} {text} is not a whole number"),
            Err(_) => format!("{name} {text:?} is not a number"),
        }),
    }
}

/// A finite number in `0..=max`, or what is wrong with `text`.
fn float(name: &str, text: &str, max: f64) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if !v.is_finite() => Err(format!("{name} {text} is not a finite number")),
        Ok(v) if v < 0.0 => Err(format!("{name} {text} is negative")),
        Ok(v) if v > max => Err(format!("{name} {text} is out of range (at most {max})")),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("{name} {text:?} is not a number")),
    }
}

/// Keeps, for each second, the row of the highest revision (the last of
/// equal ones). Rows must come in order of their second, except corrections
/// (revision > 0) appended after later seconds by a run that did not end
/// normally; a run that did rewrites the file in order, where a row may
/// carry a revision > 0 in its place.
fn resolve(path: &Path, rows: Vec<MetricsRow>) -> Result<Rows, LoadError> {
    let mut out: Vec<MetricsRow> = Vec::with_capacity(rows.len());
    let mut applied = 0;
    for (i, row) in rows.into_iter().enumerate() {
        let last = out.last().map(|r| r.elapsed_s);
        // In order: a first write, or a corrected row in its place (the
        // controller writes every second, so that place is right after the
        // last one).
        let next = last.map_or(0, |l| l + 1);
        if (row.revision == 0 && last.is_none_or(|l| row.elapsed_s > l)) || row.elapsed_s == next {
            out.push(row);
            continue;
        }
        let Some(last) = last else {
            return Err(at_row(
                path,
                i + 1,
                format!(
                    "correction (revision {}) of second {}, which has no earlier row",
                    row.revision, row.elapsed_s
                ),
            ));
        };
        if row.revision == 0 {
            return Err(at_row(
                path,
                i + 1,
                format!("elapsed_s {} after {last}: rows out of order", row.elapsed_s),
            ));
        }
        let Ok(k) = out.binary_search_by_key(&row.elapsed_s, |r| r.elapsed_s) else {
            return Err(at_row(
                path,
                i + 1,
                format!(
                    "correction (revision {}) of second {}, which has no earlier row",
                    row.revision, row.elapsed_s
                ),
            ));
        };
        if row.revision >= out[k].revision {
            out[k] = row;
        }
        applied += 1;
    }
    Ok(Rows { rows: out, corrections: applied })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_say_what_is_wrong() {
        assert_eq!(count("x", "12", 100), Ok(12));
        assert_eq!(count("x", "101", 100).unwrap_err(), "x 101 is out of range (at most 100)");
        assert!(count("x", "99999999999999999999999", u64::MAX).unwrap_err().contains("beyond u64"));
        assert_eq!(count("x", "-3", 100).unwrap_err(), "x -3 is negative");
        assert_eq!(count("x", "1.5", 100).unwrap_err(), "x 1.5 is not a whole number");
        assert_eq!(count("x", "NaN", 100).unwrap_err(), "x NaN is not a finite number");
        assert_eq!(count("x", "abc", 100).unwrap_err(), "x \"abc\" is not a number");
        assert_eq!(float("y", "2.5", 10.0), Ok(2.5));
        assert_eq!(float("y", "inf", 10.0).unwrap_err(), "y inf is not a finite number");
        assert_eq!(float("y", "-0.5", 10.0).unwrap_err(), "y -0.5 is negative");
    }

    fn row(elapsed_s: u64, revision: u32, received: u64) -> MetricsRow {
        let counters = Counters { messages_received: received, ..Default::default() };
        MetricsRow { elapsed_s, revision, counters, ..Default::default() }
    }

    #[test]
    fn the_highest_revision_of_each_second_wins() {
        let p = Path::new("metrics.csv");
        let rows = vec![row(0, 0, 1), row(1, 0, 2), row(2, 0, 3), row(1, 2, 7), row(1, 1, 5)];
        let r = resolve(p, rows).unwrap();
        let got: Vec<(u64, u32, u64)> =
            r.rows.iter().map(|r| (r.elapsed_s, r.revision, r.counters.messages_received)).collect();
        assert_eq!(got, [(0, 0, 1), (1, 2, 7), (2, 0, 3)]);
        assert_eq!(r.corrections, 2);

        let err = resolve(p, vec![row(0, 0, 1), row(5, 0, 1), row(3, 0, 1)]).err().unwrap();
        assert_eq!(err.to_string(), "metrics.csv row 3: elapsed_s 3 after 5: rows out of order");
        let err = resolve(p, vec![row(0, 0, 1), row(5, 0, 1), row(4, 1, 1)]).err().unwrap();
        assert!(
            err.to_string().starts_with("metrics.csv row 3: correction (revision 1) of second 4"),
            "{err}"
        );
        // A run that ended normally rewrote the file in order, corrected rows
        // in their place.
        let r = resolve(p, vec![row(0, 0, 1), row(1, 1, 5), row(2, 0, 3)]).unwrap();
        assert_eq!(r.rows.len(), 3);
        assert_eq!(r.corrections, 0);
    }
}
