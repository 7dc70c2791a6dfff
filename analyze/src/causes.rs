//! Reads `errors.csv`: each second's errors by cause, for the errors chart
//! stacked by cause. The file is checked as metrics.csv is: a damaged line
//! is an error naming it; a second corrected by late data counts at its
//! highest revision; memory stays bounded whatever the file holds (lines
//! of at most [`MAX_LINE`] bytes, at most [`MAX_SERIES`] causes kept apart,
//! the others summed as one).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use stampede_model::results::ERROR_COLUMNS;

use crate::load::LoadError;
use crate::metrics::{MAX_ELAPSED_S, MAX_PER_SECOND, at_line, invalid, split_csv};

/// The longest line accepted, bytes (a line of stampede's is under 150).
pub const MAX_LINE: usize = 4096;
/// Causes drawn apart; beyond, the least frequent are summed as one.
pub const MAX_SERIES: usize = 32;
/// Causes read apart before the rest are summed as [`OTHER`] (the least
/// frequent of them join it when the file is read).
const MAX_KEPT: usize = 4 * MAX_SERIES;
/// The name of the sum of the causes beyond [`MAX_SERIES`].
pub const OTHER: &str = "other causes";
/// The name of errors metrics.csv counts that errors.csv does not name.
pub const UNRECORDED: &str = "cause not recorded";

/// Each cause's errors per second, aligned with the timeline's seconds.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Causes {
    /// (cause, errors per second), most errors first.
    pub series: Vec<(String, Vec<f64>)>,
    /// Rows about seconds metrics.csv does not have (ignored).
    pub outside: u64,
    /// Seconds whose causes do not add up to metrics.csv's `errors`.
    pub disagree: u64,
}

/// Reads `path` for the seconds `elapsed_s` (metrics.csv's, ascending),
/// whose error totals are `errors`.
pub fn read(path: &Path, elapsed_s: &[f64], errors: &[f64]) -> Result<Causes, LoadError> {
    let file = std::fs::File::open(path).map_err(|e| invalid(path, e.to_string()))?;
    read_from(BufReader::new(file), path, elapsed_s, errors)
}

fn read_from(
    mut input: impl BufRead,
    path: &Path,
    elapsed_s: &[f64],
    errors: &[f64],
) -> Result<Causes, LoadError> {
    let n = elapsed_s.len();
    // Cause -> series; the revision each second was last read at.
    let mut series: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut revision: Vec<Option<u32>> = vec![None; n];
    let mut outside = 0u64;
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let read = (&mut input).take(MAX_LINE as u64 + 1).read_line(&mut line);
        let read = read.map_err(|e| at_line(path, number + 1, e.to_string()))?;
        if read == 0 {
            break;
        }
        number += 1;
        if line.len() > MAX_LINE {
            return Err(at_line(path, number, format!("longer than {MAX_LINE} bytes")));
        }
        if !line.ends_with('\n') {
            // A run killed mid-write leaves its last line cut: not data.
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if number == 1 {
            if text != ERROR_COLUMNS.join(",") {
                return Err(at_line(path, 1, format!("the header is not {}", ERROR_COLUMNS.join(","))));
            }
            continue;
        }
        let cells = split_csv(text).ok_or_else(|| at_line(path, number, "unbalanced quotes"))?;
        let [second, _timestamp, rev, cause, count] = cells.as_slice() else {
            return Err(at_line(path, number, format!("{} cells, not {}", cells.len(), ERROR_COLUMNS.len())));
        };
        let second: u64 = number_in(second, MAX_ELAPSED_S).ok_or_else(|| {
            at_line(path, number, format!("elapsed_s {second:?} is not a second from 0 to {MAX_ELAPSED_S}"))
        })?;
        let rev: u32 =
            rev.parse().map_err(|_| at_line(path, number, format!("revision {rev:?} is not a count")))?;
        let count = number_in(count, MAX_PER_SECOND).ok_or_else(|| {
            at_line(path, number, format!("errors {count:?} is not a count up to {MAX_PER_SECOND}"))
        })?;
        if cause.is_empty() || cause.len() > 64 {
            return Err(at_line(path, number, "the cause is empty or longer than 64 bytes"));
        }
        let Ok(i) = elapsed_s.binary_search_by(|e| e.total_cmp(&(second as f64))) else {
            outside += 1;
            continue;
        };
        match revision[i] {
            Some(r) if rev < r => continue, // superseded by a correction read earlier
            Some(r) if rev == r => {}
            // A newer revision of the second: it replaces what was read.
            _ => {
                series.values_mut().for_each(|s| s[i] = 0.0);
                revision[i] = Some(rev);
            }
        }
        // Bounded: causes beyond the limit are summed as one. A cause given
        // twice for one revision of a second keeps its last count.
        let kept = series.len();
        match series.get_mut(cause.as_str()) {
            Some(s) => s[i] = count as f64,
            None if kept < MAX_KEPT => {
                let mut s = vec![0.0; n];
                s[i] = count as f64;
                series.insert(cause.clone(), s);
            }
            None => series.entry(OTHER.to_string()).or_insert_with(|| vec![0.0; n])[i] += count as f64,
        }
    }
    Ok(finish(series, errors, outside))
}

/// The series largest first, the small ones beyond [`MAX_SERIES`] summed,
/// and what metrics.csv counts but no cause names.
fn finish(series: BTreeMap<String, Vec<f64>>, errors: &[f64], outside: u64) -> Causes {
    let n = errors.len();
    let mut all: Vec<(String, Vec<f64>)> = series.into_iter().collect();
    let total = |s: &[f64]| s.iter().sum::<f64>();
    all.sort_by(|a, b| total(&b.1).total_cmp(&total(&a.1)).then(a.0.cmp(&b.0)));
    if all.len() > MAX_SERIES {
        let rest = all.split_off(MAX_SERIES - 1);
        let mut other = vec![0.0; n];
        for (_, s) in rest {
            other.iter_mut().zip(s).for_each(|(o, v)| *o += v);
        }
        all.push((OTHER.to_string(), other));
    }
    let mut unrecorded = vec![0.0; n];
    let mut disagree = 0;
    for i in 0..n {
        let named: f64 = all.iter().map(|(_, s)| s[i]).sum();
        let counted = if errors[i].is_finite() { errors[i] } else { 0.0 };
        if named != counted {
            disagree += 1;
            unrecorded[i] = (counted - named).max(0.0);
        }
    }
    if unrecorded.iter().any(|v| *v > 0.0) {
        all.push((UNRECORDED.to_string(), unrecorded));
    }
    Causes { series: all, outside, disagree }
}

/// A whole number in `0..=max`.
fn number_in(cell: &str, max: u64) -> Option<u64> {
    cell.parse().ok().filter(|v| *v <= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "elapsed_s,timestamp,revision,cause,errors\n";

    fn parse(body: &str, seconds: usize, errors: &[f64]) -> Result<Causes, LoadError> {
        let elapsed: Vec<f64> = (0..seconds).map(|s| s as f64).collect();
        let text = format!("{HEADER}{body}");
        read_from(text.as_bytes(), Path::new("errors.csv"), &elapsed, errors)
    }

    #[test]
    fn causes_per_second_with_corrections_and_disagreements() {
        let body = "0,t,0,timeout,2\n1,t,0,refused,5\n1,t,0,timeout,1\n0,t,1,timeout,3\n0,t,1,\"http,503\",1\n9,t,0,eof,1\n";
        let c = parse(body, 3, &[4.0, 6.0, 2.0]).unwrap();
        let get = |name: &str| c.series.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone()).unwrap();
        assert_eq!(get("timeout"), [3.0, 1.0, 0.0], "second 0 at its revision 1");
        assert_eq!(get("refused"), [0.0, 5.0, 0.0]);
        assert_eq!(get("http,503"), [1.0, 0.0, 0.0]);
        assert_eq!(get(UNRECORDED), [0.0, 0.0, 2.0], "second 2 counts 2 errors errors.csv does not name");
        assert_eq!((c.outside, c.disagree), (1, 1));
        assert_eq!(c.series[0].0, "refused", "largest first");
    }

    #[test]
    fn damaged_lines_are_errors_naming_them() {
        let cases = [
            ("0,t,0,timeout\n", "line 2: 4 cells"),
            ("0,t,0,timeout,-1\n", "line 2: errors \"-1\""),
            ("0,t,0,timeout,99999999999999999999\n", "line 2: errors"),
            ("x,t,0,timeout,1\n", "line 2: elapsed_s \"x\""),
            ("0,t,0,\"timeout,1\n", "line 2: unbalanced quotes"),
            ("0,t,0,,1\n", "line 2: the cause is empty"),
        ];
        for (body, want) in cases {
            let err = parse(body, 2, &[0.0, 0.0]).unwrap_err().to_string();
            assert!(err.contains(want), "{body:?}: {err}");
        }
        let long = format!("0,t,0,{},1\n", "x".repeat(MAX_LINE));
        assert!(parse(&long, 1, &[0.0]).unwrap_err().to_string().contains("longer than 4096 bytes"));
        let bad_header = read_from("a,b\n".as_bytes(), Path::new("errors.csv"), &[0.0], &[0.0]);
        assert!(bad_header.unwrap_err().to_string().contains("line 1: the header is not"));
        // A repeated line keeps its last count.
        let twice = parse("0,t,0,timeout,1\n0,t,0,timeout,3\n", 1, &[3.0]).unwrap();
        assert_eq!(twice.series, [("timeout".to_string(), vec![3.0])]);
        // A last line cut by a crash is not data; an empty file is no causes.
        assert_eq!(parse("0,t,0,timeout,1\n0,t,0,ref", 1, &[1.0]).unwrap().series.len(), 1);
        assert!(parse("", 1, &[0.0]).unwrap().series.is_empty());
    }

    #[test]
    fn a_flood_of_causes_stays_bounded() {
        let body: String = (0..10_000).map(|i| format!("{},t,0,cause_{i},1\n", i % 100)).collect();
        let c = parse(&body, 100, &[100.0; 100]).unwrap();
        assert!(c.series.len() <= MAX_SERIES + 1, "{}", c.series.len());
        let sum: f64 = c.series.iter().flat_map(|(_, s)| s).sum();
        assert_eq!(sum, 10_000.0, "every error is still counted");
        assert!(c.series.iter().any(|(n, _)| n == OTHER));
        assert_eq!(c.disagree, 0);
    }
}
