//! Reads `latency.hlog`, the HdrHistogram interval log the controller
//! writes: one `latency` and one `connect` histogram per second. Percentiles
//! over any window are recomputed by merging these, never by averaging
//! per-second percentiles.

use std::path::Path;

use base64::Engine;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use stampede_model::histogram::new_histogram;
use stampede_model::results::{Percentiles, hlog_tags};

use crate::model::{Distribution, PhaseSpan};

/// A run's histograms merged per phase while the log is read: a day-long
/// run has ~100,000 seconds, and keeping each second's histogram (hundreds
/// of KB unpacked) would not fit in memory.
#[derive(Debug)]
pub struct Hlog {
    /// Per phase, in the order given: (name, round trips, connect times), us.
    pub phases: Vec<(String, Histogram<u64>, Histogram<u64>)>,
    /// Seconds outside every phase (the closing second after the last one).
    pub outside: (Histogram<u64>, Histogram<u64>),
    /// Intervals read.
    pub intervals: usize,
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
    /// Reads a log file, merging each second into the phase it falls in.
    pub fn read(path: &Path, phases: &[PhaseSpan]) -> Result<Hlog, HlogError> {
        let bytes = std::fs::read(path)?;
        let mut log = Hlog {
            phases: phases.iter().map(|p| (p.name.clone(), new_histogram(), new_histogram())).collect(),
            outside: (new_histogram(), new_histogram()),
            intervals: 0,
        };
        let mut decoder = Deserializer::new();
        let mut raw = Vec::new();
        for (i, entry) in IntervalLogIterator::new(&bytes).enumerate() {
            let format = |message: String| HlogError::Format { line: i + 1, message };
            let entry = entry.map_err(|e| format(format!("{e:?}")))?;
            let LogEntry::Interval(h) = entry else { continue };
            raw.clear();
            base64::engine::general_purpose::STANDARD
                .decode_vec(h.encoded_histogram(), &mut raw)
                .map_err(|e| format(format!("bad base64: {e}")))?;
            let decoded: Histogram<u64> = decoder
                .deserialize(&mut raw.as_slice())
                .map_err(|e| format(format!("bad histogram: {e:?}")))?;
            let second = h.start_timestamp().as_secs_f64();
            let index = phases.iter().position(|p| second >= p.start_s && second < p.end_s);
            let (latency, connect) = match index {
                Some(k) => {
                    let (_, l, c) = &mut log.phases[k];
                    (l, c)
                }
                None => (&mut log.outside.0, &mut log.outside.1),
            };
            let into = match h.tag().map(|t| t.as_str()) {
                Some(hlog_tags::LATENCY) => latency,
                Some(hlog_tags::CONNECT) => connect,
                _ => continue,
            };
            into.add(&decoded).map_err(|e| format(format!("histogram out of range: {e:?}")))?;
            log.intervals += 1;
        }
        Ok(log)
    }

    /// Round trips and connect times of the phases named `names`, plus the
    /// seconds outside every phase when `outside`.
    pub fn merged(&self, names: &[&str], outside: bool) -> (Histogram<u64>, Histogram<u64>) {
        let (mut latency, mut connect) = (new_histogram(), new_histogram());
        let parts = self
            .phases
            .iter()
            .filter(|(name, _, _)| names.contains(&name.as_str()))
            .map(|(_, l, c)| (l, c))
            .chain(outside.then_some((&self.outside.0, &self.outside.1)));
        for (l, c) in parts {
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
