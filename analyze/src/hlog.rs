//! Reads `latency.hlog`, the HdrHistogram interval log the controller
//! writes: one `latency` and one `connect` histogram per second, plus, after
//! a late worker snapshot, an extra interval for that second holding only the
//! late histograms (merging every interval of a second is then right).
//! Percentiles over any window are recomputed by merging these, never by
//! averaging per-second percentiles.

use std::path::Path;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use stampede_model::histogram::new_histogram;
use stampede_model::results::{Percentiles, hlog_tags};

use crate::model::Distribution;

/// A run's histograms merged per phase while the log is read: a day-long
/// run has ~100,000 seconds, and keeping each second's histogram (hundreds
/// of KB unpacked) would not fit in memory. A second's phase is the `phase`
/// of its metrics.csv row, so percentiles and the rows' figures cover the
/// same seconds.
#[derive(Debug)]
pub struct Hlog {
    /// Per phase, in order of first appearance: (name, round trips, connect times), us.
    pub phases: Vec<(String, Histogram<u64>, Histogram<u64>)>,
    /// Intervals merged.
    pub intervals: usize,
    /// Intervals of seconds that have no metrics.csv row, left out.
    pub unmatched: usize,
    /// Whether the last line was incomplete (and left out).
    pub cut_short: bool,
}

/// Why the log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a valid interval log.
    #[error("entry {line}: {message}")]
    Format {
        /// Entry number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl Hlog {
    /// Reads a log file, merging each second into the phase of its row:
    /// `seconds` (ascending) and `phase` are metrics.csv's `elapsed_s` and
    /// `phase` columns.
    pub fn read(path: &Path, seconds: &[f64], phase: &[String]) -> Result<Hlog, HlogError> {
        let mut bytes = std::fs::read(path)?;
        // A crashed run can leave half a line: everything before it is whole.
        let cut_short = bytes.last().is_some_and(|&b| b != b'\n');
        if cut_short {
            let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            bytes.truncate(whole);
        }
        let mut log = Hlog { phases: Vec::new(), intervals: 0, unmatched: 0, cut_short };
        // Each row's index into `log.phases`.
        let mut row_phase = Vec::with_capacity(phase.len());
        for name in phase {
            let k = match log.phases.iter().position(|(n, _, _)| n == name) {
                Some(k) => k,
                None => {
                    log.phases.push((name.clone(), new_histogram(), new_histogram()));
                    log.phases.len() - 1
                }
            };
            row_phase.push(k);
        }
        let mut decoder = Deserializer::new();
        let mut raw = Vec::new();
        for (i, entry) in IntervalLogIterator::new(&bytes).enumerate() {
            let format = |message: String| HlogError::Format { line: i + 1, message };
            let entry = entry.map_err(|e| format(format!("{e:?}")))?;
            let LogEntry::Interval(h) = entry else { continue };
            let is_latency = match h.tag().map(|t| t.as_str()) {
                Some(hlog_tags::LATENCY) => true,
                Some(hlog_tags::CONNECT) => false,
                _ => continue,
            };
            let second = h.start_timestamp().as_secs() as f64;
            let Ok(row) = seconds.binary_search_by(|s| s.total_cmp(&second)) else {
                log.unmatched += 1;
                continue;
            };
            raw.clear();
            base64::engine::general_purpose::STANDARD
                .decode_vec(h.encoded_histogram(), &mut raw)
                .map_err(|e| format(format!("bad base64: {e}")))?;
            // A file is an input like any other: its header is checked
            // before decoding allocates what it claims.
            stampede_model::histogram::check_encoded(&raw)
                .map_err(|e| format(format!("bad histogram: {e}")))?;
            let decoded: Histogram<u64> = decoder
                .deserialize(&mut raw.as_slice())
                .map_err(|e| format(format!("bad histogram: {e:?}")))?;
            let (_, latency, connect) = &mut log.phases[row_phase[row]];
            let into = if is_latency { latency } else { connect };
            into.add(&decoded).map_err(|e| format(format!("histogram out of range: {e:?}")))?;
            log.intervals += 1;
        }
        Ok(log)
    }

    /// Round trips and connect times of the phases named `names`.
    pub fn merged(&self, names: &[&str]) -> (Histogram<u64>, Histogram<u64>) {
        let (mut latency, mut connect) = (new_histogram(), new_histogram());
        for (_, l, c) in self.phases.iter().filter(|(name, _, _)| names.contains(&name.as_str())) {
            latency.add(l).expect("same bounds");
            connect.add(c).expect("same bounds");
        }
        (latency, connect)
    }
}

/// Percentiles of a microsecond histogram, in ms.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles::of(h)
}

/// The cumulative distribution of a histogram, for a CDF chart.
pub fn distribution(label: &str, h: &Histogram<u64>) -> Distribution {
    let total = h.len() as f64;
    let mut seen = 0u64;
    let points = h
        .iter_recorded()
        .map(|v| {
            seen += v.count_at_value();
            (h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0, seen as f64 / total)
        })
        .collect();
    Distribution { label: label.to_string(), points }
}
