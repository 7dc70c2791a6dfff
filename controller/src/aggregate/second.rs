//! One second of the run as the aggregator holds it: what each worker
//! reported for it and the histograms merged so far, until it becomes a
//! [`Row`] (and after, while late snapshots may still correct it).

use std::collections::BTreeMap;
use std::sync::Arc;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use stampede_model::Counters;
use stampede_model::histogram::{Buckets, Decoder, add_buckets, from_buckets, new_histogram};
use stampede_model::results::{MetricsRow, StepSecond, WorkerRow};
use stampede_proto::fleet::Gauges;

use super::AggregateError;
use crate::totals::{ConnectSplit, Sample, StepTotals};

/// One worker's report for one second.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Report {
    pub(super) counters: Counters,
    pub(super) errors: u64,
    pub(super) gauges: Gauges,
    pub(super) stalled: bool,
    pub(super) clock_offset_us: i64,
}

/// A second: what the workers reported for it so far.
pub(super) struct Second {
    pub(super) latency: Histogram<u64>,
    pub(super) connect: Histogram<u64>,
    pub(super) connect_split: ConnectSplit,
    pub(super) errors: u64,
    /// `errors` by cause (as many causes as the run may have, at most).
    pub(super) causes: BTreeMap<String, u64>,
    pub(super) workers: BTreeMap<usize, Report>,
    /// Corrections written so far.
    pub(super) revision: u32,
    /// The flow's steps (empty until one is reported). Once the row is
    /// written, their histograms are kept encoded in `packed`.
    pub(super) steps: Vec<StepTotals>,
    /// Encoded step histograms of a written second, by step (empty: none).
    pub(super) packed: Vec<Vec<u8>>,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            latency: new_histogram(),
            connect: new_histogram(),
            connect_split: ConnectSplit::default(),
            errors: 0,
            causes: BTreeMap::new(),
            workers: BTreeMap::new(),
            revision: 0,
            steps: Vec::new(),
            packed: Vec::new(),
        }
    }
}

impl Second {
    /// Encodes the step histograms (the row is written; they are needed
    /// again only if late data corrects it).
    pub(super) fn pack_steps(&mut self) {
        let mut serializer = V2Serializer::new();
        self.packed = self
            .steps
            .iter_mut()
            .map(|step| {
                let mut bytes = Vec::new();
                if let Some(h) = step.durations.take() {
                    // Our own histogram into a Vec: cannot fail.
                    serializer.serialize(&h, &mut bytes).expect("a histogram encodes into memory");
                }
                bytes
            })
            .collect();
    }

    /// Decodes what [`Second::pack_steps`] encoded.
    pub(super) fn unpack_steps(&mut self, decoder: &mut Decoder) -> Result<(), AggregateError> {
        let mut buckets = Buckets::new();
        for (step, bytes) in self.steps.iter_mut().zip(std::mem::take(&mut self.packed)) {
            if !bytes.is_empty() {
                decoder.decode(&bytes, &mut buckets).map_err(AggregateError::Histogram)?;
                step.durations = Some(from_buckets(&buckets));
            }
        }
        Ok(())
    }

    /// Adds a snapshot's histograms.
    pub(super) fn add_sample(&mut self, sample: &Sample) {
        add_buckets(&mut self.latency, &sample.latency);
        add_buckets(&mut self.connect, &sample.connect);
        self.connect_split.add_sample(sample);
    }
}

/// A finished row with the histograms it was computed from (for the log).
pub struct Row {
    /// The CSV/JSON row.
    pub metrics: MetricsRow,
    /// Round trips to add to the log for this second (for a correction:
    /// only the late ones).
    pub latency: Histogram<u64>,
    /// Connect times to add likewise.
    pub connect: Histogram<u64>,
    /// Their parts, likewise.
    pub connect_split: ConnectSplit,
    /// The second of each worker (for a correction: the late workers).
    pub workers: Vec<WorkerRow>,
    /// The second's errors by cause (for a correction: the whole second).
    pub errors: BTreeMap<String, u64>,
    /// The flow's step names, in order (empty without a flow).
    pub step_names: Arc<[String]>,
    /// Each step's runs in this second, as `step_names` (for a correction:
    /// the whole second, as its row).
    pub steps: Vec<StepTotals>,
}

impl Row {
    /// The steps' cells of this row in metrics.csv, as `step_names`.
    pub fn step_cells(&self) -> Vec<StepSecond> {
        self.steps.iter().map(StepTotals::second).collect()
    }
}
