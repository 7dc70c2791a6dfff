//! Reads `latency.hlog`, the HdrHistogram interval log the controller
//! writes: one `latency` and one `connect` histogram per second. Percentiles
//! over any window are recomputed by merging these, never by averaging
//! per-second percentiles.

use std::path::Path;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use stampede_proto::histogram::new_histogram;
use stampede_proto::results::{Percentiles, hlog_tags};

use crate::model::Distribution;

/// The histograms of one run, by second.
#[derive(Debug, Default)]
pub struct Hlog {
    /// (second since run start, round trips in us).
    pub latency: Vec<(u64, Histogram<u64>)>,
    /// (second since run start, connect times in us).
    pub connect: Vec<(u64, Histogram<u64>)>,
}

/// Why the log cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum HlogError {
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a valid interval log.
    #[error("line {line}: {message}")]
    Format {
        /// Entry number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl Hlog {
    /// Reads a log file.
    pub fn read(path: &Path) -> Result<Hlog, HlogError> {
        let bytes = std::fs::read(path)?;
        let mut log = Hlog::default();
        let mut decoder = Deserializer::new();
        for (i, entry) in IntervalLogIterator::new(&bytes).enumerate() {
            let format = |message: String| HlogError::Format { line: i + 1, message };
            let entry = entry.map_err(|e| format(format!("{e:?}")))?;
            let LogEntry::Interval(h) = entry else { continue };
            let raw = base64::engine::general_purpose::STANDARD
                .decode(h.encoded_histogram())
                .map_err(|e| format(format!("bad base64: {e}")))?;
            let decoded: Histogram<u64> = decoder
                .deserialize(&mut raw.as_slice())
                .map_err(|e| format(format!("bad histogram: {e:?}")))?;
            let mut hist = new_histogram();
            hist.add(&decoded).map_err(|e| format(format!("histogram out of range: {e:?}")))?;
            let second = h.start_timestamp().as_secs();
            match h.tag().map(|t| t.as_str()) {
                Some(hlog_tags::LATENCY) => log.latency.push((second, hist)),
                Some(hlog_tags::CONNECT) => log.connect.push((second, hist)),
                _ => {}
            }
        }
        Ok(log)
    }
}

/// Merges the histograms whose second satisfies `keep`.
pub fn merged(series: &[(u64, Histogram<u64>)], keep: impl Fn(u64) -> bool) -> Histogram<u64> {
    let mut all = new_histogram();
    for (second, h) in series {
        if keep(*second) {
            all.add(h).expect("same bounds");
        }
    }
    all
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
