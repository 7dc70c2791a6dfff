//! What the aggregator adds up: the running totals of a phase or a run
//! (counters, merged histograms, errors by cause, a flow's steps), and one
//! snapshot's histograms read as buckets so they are added without
//! allocating a histogram per snapshot.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use stampede_model::Counters;
use stampede_model::histogram::{Buckets, Decoder, add_buckets, new_histogram};
use stampede_model::results::{Percentiles, StepFigures, StepSecond};
use stampede_proto::fleet::Snapshot;

use crate::aggregate::AggregateError;
use crate::plan::Plan;

/// Running totals of a phase or of the whole run.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Summed counters.
    pub counters: Counters,
    /// Merged round-trip histogram, us.
    pub latency: Histogram<u64>,
    /// Merged connect-time histogram, us.
    pub connect: Histogram<u64>,
    /// Its parts, merged likewise.
    pub connect_split: ConnectSplit,
    /// Errors by cause.
    pub errors: BTreeMap<String, u64>,
    /// The flow's steps, in the flow's order (empty without a flow, or
    /// before any step was reported).
    pub steps: Vec<StepTotals>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            counters: Counters::default(),
            latency: new_histogram(),
            connect: new_histogram(),
            connect_split: ConnectSplit::default(),
            errors: BTreeMap::new(),
            steps: Vec::new(),
        }
    }
}

/// One flow step's runs: counts, and the durations of the successful ones
/// (us), merged like every histogram.
#[derive(Debug, Clone, Default)]
pub struct StepTotals {
    /// Runs that succeeded.
    pub ok: u64,
    /// Runs that failed.
    pub failed: u64,
    /// Durations of the successful runs; `None` until there is one (a
    /// histogram is allocated only for a step that has samples).
    pub durations: Option<Histogram<u64>>,
}

impl StepTotals {
    /// Adds runs to these.
    pub fn add(
        &mut self,
        ok: u64,
        failed: u64,
        durations: Option<&Histogram<u64>>,
    ) -> Result<(), AggregateError> {
        self.ok = self.ok.saturating_add(ok);
        self.failed = self.failed.saturating_add(failed);
        match (durations.filter(|h| !h.is_empty()), &mut self.durations) {
            (None, _) => Ok(()),
            (Some(h), Some(ours)) => merge(ours, h),
            (Some(h), ours @ None) => {
                let mut fresh = new_histogram();
                merge(&mut fresh, h)?;
                *ours = Some(fresh);
                Ok(())
            }
        }
    }

    /// Adds one snapshot's runs of this step.
    fn add_sample(&mut self, sample: &StepSample) {
        self.ok = self.ok.saturating_add(sample.ok);
        self.failed = self.failed.saturating_add(sample.failed);
        if !sample.durations.is_empty() {
            add_buckets(self.durations.get_or_insert_with(new_histogram), &sample.durations);
        }
    }

    /// Merges `other` into these.
    pub fn merge(&mut self, other: &StepTotals) -> Result<(), AggregateError> {
        self.add(other.ok, other.failed, other.durations.as_ref())
    }

    /// The step's figures (percentiles from the merged histogram).
    pub fn figures(&self) -> StepFigures {
        StepFigures::of(self.ok, self.failed, self.durations.as_ref())
    }

    /// Its cells in a row of metrics.csv.
    pub fn second(&self) -> StepSecond {
        let f = self.figures();
        StepSecond { ok: self.ok, failed: self.failed, p95_ms: f.p95_ms.unwrap_or(f64::NAN) }
    }
}

/// The step names of every flow `plan` runs, group by group (none
/// without a flow).
pub fn step_names(plan: &Plan) -> Vec<String> {
    crate::groups::run_step_names(&plan.groups)
}

/// Connect time split into its parts, us: TCP connect, TLS handshake
/// (empty for `ws://`), WebSocket upgrade. Each goes wherever the whole
/// connect time goes (totals, phases, seconds, the interval log).
#[derive(Debug, Clone)]
pub struct ConnectSplit {
    /// TCP connect.
    pub tcp: Histogram<u64>,
    /// TLS handshake.
    pub tls: Histogram<u64>,
    /// WebSocket upgrade.
    pub upgrade: Histogram<u64>,
}

impl Default for ConnectSplit {
    fn default() -> Self {
        ConnectSplit { tcp: new_histogram(), tls: new_histogram(), upgrade: new_histogram() }
    }
}

impl ConnectSplit {
    pub(crate) fn add_sample(&mut self, sample: &Sample) {
        add_buckets(&mut self.tcp, &sample.tcp);
        add_buckets(&mut self.tls, &sample.tls);
        add_buckets(&mut self.upgrade, &sample.upgrade);
    }

    /// Merges `from` into this split.
    pub fn merge(&mut self, from: &ConnectSplit) -> Result<(), AggregateError> {
        merge(&mut self.tcp, &from.tcp)?;
        merge(&mut self.tls, &from.tls)?;
        merge(&mut self.upgrade, &from.upgrade)
    }

    /// The parts with their interval-log tags.
    pub fn tagged(&self) -> [(&Histogram<u64>, &'static str); 3] {
        use stampede_model::results::hlog_tags;
        [
            (&self.tcp, hlog_tags::CONNECT_TCP),
            (&self.tls, hlog_tags::CONNECT_TLS),
            (&self.upgrade, hlog_tags::CONNECT_UPGRADE),
        ]
    }
}

impl Totals {
    /// Errors of every cause.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Merges `from` into `into`; both share stampede's bounds, so this cannot
/// fail for histograms we made, and a foreign one that does not fit is
/// reported.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<(), AggregateError> {
    into.add(from).map_err(|e| AggregateError::Histogram(format!("{e:?}")))
}

/// A snapshot's histograms as the buckets they recorded; its buffers are
/// kept from one snapshot to the next.
#[derive(Debug, Default)]
pub(crate) struct Sample {
    pub(crate) latency: Buckets,
    pub(crate) connect: Buckets,
    pub(crate) tcp: Buckets,
    pub(crate) tls: Buckets,
    pub(crate) upgrade: Buckets,
}

impl Sample {
    /// Reads a snapshot's histograms; an error leaves nothing applied.
    pub(crate) fn decode(&mut self, decoder: &mut Decoder, snap: &Snapshot) -> Result<(), AggregateError> {
        for (bytes, out) in [
            (&snap.latency_histogram, &mut self.latency),
            (&snap.connect_histogram, &mut self.connect),
            (&snap.connect_tcp_histogram, &mut self.tcp),
            (&snap.connect_tls_histogram, &mut self.tls),
            (&snap.connect_upgrade_histogram, &mut self.upgrade),
        ] {
            decoder.decode(bytes, out).map_err(AggregateError::Histogram)?;
        }
        Ok(())
    }
}

/// One snapshot's runs of one flow step (by the flow's step index).
#[derive(Debug)]
pub(crate) struct StepSample {
    pub(crate) index: usize,
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) durations: Buckets,
}

/// Adds a snapshot's steps into `into`, which holds every step of the flow.
pub(crate) fn add_steps(into: &mut [StepTotals], steps: &[StepSample]) {
    for step in steps {
        into[step.index].add_sample(step);
    }
}

/// Percentiles of a microsecond histogram, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles::of(h)
}
