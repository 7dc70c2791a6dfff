//! Merges the workers' per-second snapshots into one row per second of the
//! run and into running totals per phase and for the whole run. Histograms
//! are merged with `add`, never percentiles averaged.
//!
//! A second becomes a row once every live worker has reported it (or, for a
//! straggler, after a grace period). A snapshot that arrives after its row
//! was written is not lost: it goes into the totals and, for seconds still
//! held (the last [`CORRECTABLE_S`]), into a corrected row that the results
//! writer appends (metrics.csv, workers.csv, latency.hlog).
//!
//! Snapshots are read as the buckets their histograms recorded and added
//! bucket by bucket ([`stampede_model::histogram::Decoder`]): no histogram
//! is allocated or walked whole per snapshot, so 1,000 workers reporting
//! every second cost the controller little.
//!
//! A run with a flow also merges each step's runs (ok, failed, durations)
//! the same way: per second, per phase and for the run. Only the flow's
//! step names are taken; a seconds' step histograms are kept encoded once
//! its row is written (a flow has up to 32 steps, and a decoded histogram
//! takes ~190 KB: 60 correctable seconds would hold ~370 MB).

mod second;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use stampede_model::Counters;
use stampede_model::clock::RunClock;
use stampede_model::histogram::{Buckets, Decoder, add_buckets, from_buckets};
use stampede_model::results::{BrowserFigures, ChannelFigures, MAX_CHANNEL_FIGURES, MetricsRow, WorkerRow};
use stampede_model::spec::SessionSpec;
use stampede_proto::fleet::{Gauges, Snapshot, StepStats};

use crate::plan::Plan;
use crate::target_metrics::TargetSample;
use crate::totals::{
    ConnectSplit, Sample, StepSample, StepTotals, Totals, add_steps, percentiles, step_names,
};
pub use second::Row;
use second::{Report, Second};

/// Seconds a row waits for a late worker before it is written without it.
pub const GRACE_S: u64 = 3;
/// Seconds after which a written row can no longer be corrected (its
/// histograms are let go; later data still counts in the totals).
pub const CORRECTABLE_S: u64 = 60;
/// A snapshot taken this much after its due time means the worker process
/// itself stalled. (So does any send more than 100 ms behind its schedule:
/// the counter `sends_stalled`.)
pub const STALL: Duration = Duration::from_millis(500);

/// A snapshot the aggregator cannot use.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// Undecodable or out-of-range histogram.
    #[error("bad histogram in snapshot: {0}")]
    Histogram(String),
    /// Counters the model does not know.
    #[error("bad snapshot: {0}")]
    Wire(#[from] stampede_proto::WireError),
    /// Error cause keys too long or too many (a broken or hostile worker).
    #[error(
        "bad snapshot: more than {MAX_CAUSES} distinct error causes, or a cause key over {MAX_CAUSE_LEN} bytes"
    )]
    Causes,
    /// A subprotocol the run did not offer (a broken or hostile worker).
    #[error("bad snapshot: subprotocol {0:?} was not offered")]
    Subprotocol(String),
    /// A step the run's flow does not have, or more step entries than it
    /// has steps (a broken or hostile worker).
    #[error("bad snapshot: {0}")]
    Steps(String),
    /// A channel the run does not have, in a run that reports none (a
    /// broken or hostile worker).
    #[error("bad snapshot: figures for channel {0}, which the run does not report")]
    Channel(u64),
    /// A second the run cannot have (a broken or hostile worker): taking it
    /// would make every second up to it a row.
    #[error("snapshot for second {second}, but the run lasts at most {last} s")]
    OutOfRange {
        /// The second claimed.
        second: u64,
        /// The last second the run can have.
        last: u64,
    },
}

/// Distinct error causes a run may have: far more than the model's causes
/// (HTTP statuses and close codes included), far fewer than a flood.
const MAX_CAUSES: usize = 512;
/// Longest error cause key, bytes.
const MAX_CAUSE_LEN: usize = 64;

/// Seconds after the plan's end in which snapshots may still arrive (the
/// stop grace, closing drains, a slow link).
const AFTER_END_S: u64 = 120;

/// A worker's scheduling lag at which its second is flagged: every
/// latency it measured then may include this much of its own.
pub const SATURATED_LAG: Duration = Duration::from_millis(50);
/// A worker's CPU use, of all its cores, at which its second is flagged.
pub const SATURATED_CPU: f64 = 0.9;

/// Whether a worker's gauges say it was saturated: its scheduling probe
/// waited [`SATURATED_LAG`] or more, or it used [`SATURATED_CPU`] of its
/// cores (gauges of a worker that does not send `cores` flag no CPU).
pub fn saturated(g: &Gauges) -> bool {
    let busy = g.cores > 0 && g.cpu_us as f64 / 1e6 / f64::from(g.cores) >= SATURATED_CPU;
    g.sched_lag_us >= SATURATED_LAG.as_micros() as u64 || busy
}

/// What the aggregator knows of one worker.
#[derive(Debug, Default, Clone)]
struct WorkerState {
    id: String,
    applied_seq: u64,
    reported_up_to: Option<u64>,
    live: bool,
}

/// The controller's one aggregator.
pub struct Aggregator {
    plan: Plan,
    clock: RunClock,
    workers: Vec<WorkerState>,
    /// Seconds not yet written.
    pending: BTreeMap<u64, Second>,
    /// Written seconds that can still be corrected.
    written: BTreeMap<u64, Second>,
    /// Last known gauges per worker, carried into seconds it did not report.
    gauges: Vec<Gauges>,
    target: BTreeMap<u64, TargetSample>,
    next_row: u64,
    /// Every row, final values (corrections applied), by second.
    pub rows: Vec<MetricsRow>,
    /// Rows corrected since the last [`Aggregator::take_corrections`].
    corrections: Vec<Row>,
    /// Whole run.
    pub run: Totals,
    /// Per phase, in plan order.
    pub phases: Vec<Totals>,
    /// Snapshots received per worker.
    pub snapshots: Vec<u64>,
    /// Snapshots too late to correct their row (counted in the totals only).
    pub too_late: u64,
    /// Connections opened, by the subprotocol the server picked.
    pub subprotocols: BTreeMap<String, u64>,
    /// Broadcast: deliveries by channel number, over the run.
    pub channels: BTreeMap<u64, ChannelFigures>,
    /// The flow's step names (empty without a flow).
    step_names: Arc<[String]>,
    /// Browser sessions: the largest page JS heap any worker reported, bytes.
    js_heap_max: u64,
    decoder: Decoder,
    /// The snapshot being added, decoded (buffers reused).
    sample: Sample,
}

impl Aggregator {
    /// An aggregator for the workers `ids` of a run on `clock`.
    pub fn new(plan: &Plan, ids: &[String], clock: RunClock) -> Self {
        let step_names: Arc<[String]> = step_names(plan).into();
        let totals = Totals { steps: vec![StepTotals::default(); step_names.len()], ..Totals::default() };
        Aggregator {
            plan: plan.clone(),
            clock,
            workers: ids
                .iter()
                .map(|id| WorkerState { id: id.clone(), live: true, ..Default::default() })
                .collect(),
            pending: BTreeMap::new(),
            written: BTreeMap::new(),
            gauges: vec![Gauges::default(); ids.len()],
            target: BTreeMap::new(),
            next_row: 0,
            rows: Vec::new(),
            corrections: Vec::new(),
            run: totals.clone(),
            phases: vec![totals; plan.phases.len()],
            snapshots: vec![0; ids.len()],
            too_late: 0,
            subprotocols: BTreeMap::new(),
            channels: BTreeMap::new(),
            step_names,
            js_heap_max: 0,
            decoder: Decoder::new(),
            sample: Sample::default(),
        }
    }

    /// The flow's step names, in order (empty without a flow).
    pub fn step_names(&self) -> &[String] {
        &self.step_names
    }

    /// Takes the plan changed while the run goes (a stress stage ended
    /// early): `removed` are the indices of the phases dropped from it,
    /// none of which had started, so none holds data.
    pub fn replan(&mut self, plan: &Plan, removed: std::ops::Range<usize>) {
        self.phases.drain(removed);
        self.plan = plan.clone();
    }

    /// Takes a worker that joined during the run; returns its index.
    pub fn add_worker(&mut self, id: &str) -> usize {
        self.workers.push(WorkerState { id: id.to_string(), live: true, ..Default::default() });
        self.gauges.push(Gauges::default());
        self.snapshots.push(0);
        self.workers.len() - 1
    }

    /// Marks a worker gone (rows stop waiting for it) or back.
    pub fn set_live(&mut self, worker: usize, live: bool) {
        self.workers[worker].live = live;
    }

    /// Takes one snapshot; `Ok(false)` for a duplicate (already applied).
    pub fn add(&mut self, worker: usize, snap: &Snapshot) -> Result<bool, AggregateError> {
        if snap.seq <= self.workers[worker].applied_seq {
            return Ok(false);
        }
        let last = self.plan.duration().as_secs() + AFTER_END_S;
        if snap.second > last {
            return Err(AggregateError::OutOfRange { second: snap.second, last });
        }
        let counters = snap.model_counters()?;
        // Error causes are a small, fixed vocabulary (model/src/cause.rs):
        // a worker sending many, long or never-seen-before keys would grow
        // every phase's map without bound.
        let fresh = snap.errors.keys().filter(|k| !self.run.errors.contains_key(*k)).count();
        if snap.errors.keys().any(|k| k.len() > MAX_CAUSE_LEN) || self.run.errors.len() + fresh > MAX_CAUSES {
            return Err(AggregateError::Causes);
        }
        let offered = &self.plan.connect.handshake.subprotocols;
        if let Some(name) = snap.subprotocols.keys().find(|name| !offered.contains(name)) {
            return Err(AggregateError::Subprotocol(name.chars().take(64).collect()));
        }
        self.sample.decode(&mut self.decoder, snap)?;
        let steps = self.decode_steps(&snap.steps)?;
        // Broadcast runs of few channels report each: only channel numbers
        // of the run are taken, so a worker cannot grow the map.
        let reported = match &self.plan.connect.session {
            SessionSpec::Broadcast(b) if b.channels <= MAX_CHANNEL_FIGURES => b.channels,
            _ => 0,
        };
        if let Some(n) = snap.channels.keys().find(|n| **n >= reported) {
            return Err(AggregateError::Channel(*n));
        }
        for (n, c) in &snap.channels {
            let total =
                self.channels.entry(*n).or_insert(ChannelFigures { channel: *n, ..Default::default() });
            for (into, add) in [
                (&mut total.published, c.published),
                (&mut total.expected, c.expected),
                (&mut total.received, c.received),
                (&mut total.lost, c.lost),
                (&mut total.duplicated, c.duplicated),
                (&mut total.out_of_order, c.out_of_order),
            ] {
                *into = into.saturating_add(add);
            }
        }
        for (name, n) in &snap.subprotocols {
            let total = self.subprotocols.entry(name.clone()).or_default();
            *total = total.saturating_add(*n);
        }
        let state = &mut self.workers[worker];
        state.applied_seq = snap.seq;
        let newest = state.reported_up_to.is_none_or(|r| snap.second >= r);
        state.reported_up_to = Some(state.reported_up_to.map_or(snap.second, |r| r.max(snap.second)));
        self.snapshots[worker] += 1;
        let errors: u64 = snap.errors.values().fold(0u64, |a, n| a.saturating_add(*n));
        let js_heap = snap.gauges.map_or(0, |g| g.browser_js_heap_bytes);
        self.js_heap_max = self.js_heap_max.max(js_heap);
        if newest {
            // Carried into the seconds it does not report (its last word,
            // also when that word came late: a worker back from an outage).
            self.gauges[worker] = snap.gauges.unwrap_or_default();
        }
        let report = Report {
            counters,
            errors,
            gauges: snap.gauges.unwrap_or_default(),
            stalled: snap.taken_late() > STALL
                || counters.sends_stalled > 0
                || saturated(&snap.gauges.unwrap_or_default()),
            clock_offset_us: snap.clock_offset_us,
        };

        let phase = self.plan.phase_at(Duration::from_secs(snap.second));
        for totals in [&mut self.run, &mut self.phases[phase]] {
            totals.counters.add(&counters);
            add_buckets(&mut totals.latency, &self.sample.latency);
            add_buckets(&mut totals.connect, &self.sample.connect);
            totals.connect_split.add_sample(&self.sample);
            for (cause, n) in &snap.errors {
                let e = totals.errors.entry(cause.clone()).or_default();
                *e = e.saturating_add(*n);
            }
            add_steps(&mut totals.steps, &steps);
        }
        let s = snap.second;
        let late = s < self.next_row;
        let second = if late {
            match self.written.get_mut(&s) {
                Some(second) => {
                    second.unpack_steps(&mut self.decoder)?;
                    second
                }
                None => {
                    self.too_late += 1;
                    return Ok(true);
                }
            }
        } else {
            self.pending.entry(s).or_default()
        };
        if second.steps.is_empty() && !steps.is_empty() {
            second.steps = vec![StepTotals::default(); self.step_names.len()];
        }
        add_steps(&mut second.steps, &steps);
        second.add_sample(&self.sample);
        second.errors = second.errors.saturating_add(errors);
        for (cause, n) in &snap.errors {
            let e = second.causes.entry(cause.clone()).or_default();
            *e = e.saturating_add(*n);
        }
        let r = second.workers.entry(worker).or_default();
        r.counters.add(&report.counters);
        r.errors = r.errors.saturating_add(report.errors);
        r.gauges = report.gauges;
        r.stalled |= report.stalled;
        r.clock_offset_us = report.clock_offset_us;
        if late {
            second.revision += 1;
            let mut row = self.build_row(s, &self.written[&s]);
            // Only what came late goes to the log.
            row.latency = from_buckets(&self.sample.latency);
            row.connect = from_buckets(&self.sample.connect);
            row.connect_split = ConnectSplit::default();
            row.connect_split.add_sample(&self.sample);
            row.workers.retain(|w| w.worker == self.workers[worker].id);
            self.rows[s as usize] = row.metrics.clone();
            self.corrections.push(row);
            self.written.get_mut(&s).expect("the second just corrected").pack_steps();
        }
        Ok(true)
    }

    /// A snapshot's steps by the flow's step index: only the flow's names,
    /// each at most once, histograms checked as every other.
    fn decode_steps(
        &mut self,
        wire: &std::collections::HashMap<String, StepStats>,
    ) -> Result<Vec<StepSample>, AggregateError> {
        if self.step_names.is_empty() && !wire.is_empty() {
            return Err(AggregateError::Steps(format!(
                "{} step entries, and the run has no flow",
                wire.len()
            )));
        }
        if wire.len() > self.step_names.len() {
            return Err(AggregateError::Steps(format!(
                "{} step entries, and the run's flow has {} steps",
                wire.len(),
                self.step_names.len()
            )));
        }
        let mut steps = Vec::with_capacity(wire.len());
        for (name, stats) in wire {
            let Some(index) = self.step_names.iter().position(|n| n == name) else {
                let shown: String = name.chars().take(64).collect();
                return Err(AggregateError::Steps(format!("step {shown:?} is not a step of the run's flow")));
            };
            let mut durations = Buckets::new();
            self.decoder.decode(&stats.histogram, &mut durations).map_err(AggregateError::Histogram)?;
            steps.push(StepSample { index, ok: stats.ok, failed: stats.failed, durations });
        }
        Ok(steps)
    }

    /// Takes the target server's figures for second `second`.
    pub fn add_target(&mut self, second: u64, sample: TargetSample) {
        if second >= self.next_row {
            self.target.insert(second, sample);
        }
    }

    /// Rows that are complete: every live worker reported them, or they are
    /// older than the grace period at `elapsed_s` seconds into the run. With
    /// `flush`, every second that has a report.
    pub fn ready_rows(&mut self, elapsed_s: f64, flush: bool) -> Vec<Row> {
        let mut rows = Vec::new();
        loop {
            let s = self.next_row;
            let mut live = self.workers.iter().filter(|w| w.live).peekable();
            let all_reported =
                live.peek().is_some() && live.all(|w| w.reported_up_to.is_some_and(|r| r >= s));
            let data_ahead = self.pending.range(s..).next().is_some();
            let overdue = elapsed_s >= (s + 1 + GRACE_S) as f64;
            if !(all_reported || (data_ahead && (overdue || flush))) {
                return rows;
            }
            let second = self.pending.remove(&s).unwrap_or_default();
            for (w, r) in &second.workers {
                self.gauges[*w] = r.gauges;
            }
            let row = self.build_row(s, &second);
            self.rows.push(row.metrics.clone());
            rows.push(row);
            let mut second = second;
            second.pack_steps();
            self.written.insert(s, second);
            self.written.retain(|k, _| k + CORRECTABLE_S > s);
            self.target.retain(|k, _| *k > s);
            self.next_row += 1;
        }
    }

    /// Rows corrected by late snapshots since the last call.
    pub fn take_corrections(&mut self) -> Vec<Row> {
        std::mem::take(&mut self.corrections)
    }

    /// Seconds flagged as a generator stall, in order.
    pub fn stalled_seconds(&self, phase: Option<usize>) -> Vec<u64> {
        let name = phase.map(|p| self.plan.phases[p].name());
        self.rows
            .iter()
            .filter(|r| r.generator_stalled > 0 && name.is_none_or(|n| r.phase == n))
            .map(|r| r.elapsed_s)
            .collect()
    }

    /// Rows (seconds) of a phase, or of the run.
    pub fn row_count(&self, phase: Option<usize>) -> u64 {
        match phase {
            None => self.rows.len() as u64,
            Some(p) => self.rows.iter().filter(|r| r.phase == self.plan.phases[p].name()).count() as u64,
        }
    }

    /// Peak connections of a phase, or of the run ([`stampede_model::figures::peak`]).
    pub fn peak(&self, phase: Option<usize>) -> u64 {
        let Some(p) = phase else {
            return stampede_model::figures::peak(0, self.rows.iter().map(|r| r.connections_active));
        };
        let name = self.plan.phases[p].name();
        let first = self.rows.iter().position(|r| r.phase == name);
        let before = first.and_then(|i| i.checked_sub(1)).map_or(0, |i| self.rows[i].connections_active);
        stampede_model::figures::peak(
            before,
            self.rows.iter().filter(|r| r.phase == name).map(|r| r.connections_active),
        )
    }

    /// Most connections planned at once in a phase, or in the run (from the rows).
    pub fn peak_target(&self, phase: Option<usize>) -> u64 {
        let name = phase.map(|p| self.plan.phases[p].name());
        self.rows
            .iter()
            .filter(|r| name.is_none_or(|n| r.phase == n))
            .map(|r| r.connections_target)
            .max()
            .unwrap_or(0)
    }

    /// What the browser sessions cost: at the second with the most open
    /// (the latest such second), and the peak PSS (from the rows).
    pub fn browser_figures(&self) -> BrowserFigures {
        let peak = self.rows.iter().max_by_key(|r| (r.browser_sessions, r.elapsed_s));
        let (sessions, pss) = peak.map_or((0, 0.0), |r| (r.browser_sessions, r.browser_pss_mb));
        let pss = if pss.is_nan() { 0.0 } else { pss };
        BrowserFigures {
            peak_sessions: sessions,
            pss_mb_at_peak: pss,
            pss_mb_per_session: if sessions > 0 { pss / sessions as f64 } else { 0.0 },
            pss_mb_peak: self
                .rows
                .iter()
                .map(|r| r.browser_pss_mb)
                .filter(|v| !v.is_nan())
                .fold(0.0, f64::max),
            js_heap_mb_max: self.js_heap_max as f64 / 1e6,
        }
    }

    /// Peak worker memory, bytes (from the rows).
    pub fn peak_rss_mb(&self) -> f64 {
        self.rows.iter().map(|r| r.worker_rss_mb).fold(0.0, f64::max)
    }

    /// The row of second `s` from what the workers reported for it, gauges
    /// carried from earlier seconds for workers that did not.
    fn build_row(&self, s: u64, second: &Second) -> Row {
        let timestamp = self.clock.timestamp_of(s);
        let mut workers = Vec::with_capacity(self.workers.len());
        let (mut active, mut rss, mut cpu_us, mut stalled) = (0, 0, 0, false);
        let (mut browser_pss, mut browser_sessions) = (0u64, 0u64);
        let mut counters = Counters::default();
        for (i, w) in self.workers.iter().enumerate() {
            let this = second.workers.get(&i);
            if !w.live && this.is_none() {
                continue;
            }
            let gauges = this.map_or(self.gauges[i], |r| r.gauges);
            let r = this.copied().unwrap_or_default();
            counters.add(&r.counters);
            // Saturating: gauges come from workers, who may send anything.
            active = gauges.connections_active.saturating_add(active);
            rss = gauges.rss_bytes.saturating_add(rss);
            browser_pss = gauges.browser_pss_bytes.saturating_add(browser_pss);
            browser_sessions = gauges.browser_sessions.saturating_add(browser_sessions);
            cpu_us = r.gauges.cpu_us.saturating_add(cpu_us);
            stalled |= r.stalled;
            workers.push(WorkerRow {
                elapsed_s: s,
                timestamp: timestamp.clone(),
                worker: w.id.clone(),
                connections_active: gauges.connections_active,
                connections_opened: r.counters.connections_opened,
                connections_failed: r.counters.connections_failed,
                messages_sent: r.counters.messages_sent,
                messages_received: r.counters.messages_received,
                errors: r.errors,
                rss_mb: gauges.rss_bytes as f64 / 1e6,
                cpu_pct: r.gauges.cpu_us as f64 / 1e4,
                reported: this.is_some(),
                clock_offset_ms: r.clock_offset_us as f64 / 1e3,
            });
        }
        let ts = self.target.get(&s).cloned().unwrap_or_default();
        let t = Duration::from_secs(s);
        let lat = percentiles(&second.latency);
        let conn = percentiles(&second.connect);
        let (tcp, tls) = (percentiles(&second.connect_split.tcp), percentiles(&second.connect_split.tls));
        let upgrade = percentiles(&second.connect_split.upgrade);
        let or_nan = |count: u64, v: f64| if count > 0 { v } else { f64::NAN };
        let metrics = MetricsRow {
            elapsed_s: s,
            timestamp,
            phase: self.plan.phases[self.plan.phase_at(t)].name().to_string(),
            revision: second.revision,
            // Just before the second's end: a step the next phase takes at
            // that instant belongs to the next second.
            connections_target: self.plan.level_at(t + Duration::from_secs(1) - Duration::from_micros(1)),
            connections_active: active,
            counters,
            errors: second.errors,
            latency_p50_ms: or_nan(lat.count, lat.p50),
            latency_p95_ms: or_nan(lat.count, lat.p95),
            latency_p99_ms: or_nan(lat.count, lat.p99),
            latency_max_ms: or_nan(lat.count, lat.max),
            connect_p95_ms: or_nan(conn.count, conn.p95),
            connect_tcp_p95_ms: or_nan(tcp.count, tcp.p95),
            connect_tls_p95_ms: or_nan(tls.count, tls.p95),
            connect_upgrade_p95_ms: or_nan(upgrade.count, upgrade.p95),
            generator_stalled: u8::from(stalled),
            worker_rss_mb: rss as f64 / 1e6,
            worker_cpu_pct: cpu_us as f64 / 1e6 * 100.0,
            browser_pss_mb: if self.plan.has_browsers() { browser_pss as f64 / 1e6 } else { f64::NAN },
            browser_sessions,
            workers_reporting: second.workers.len() as u32,
            target_rss_mb: ts.rss_bytes.map_or(f64::NAN, |b| b / 1e6),
            target_cpu_pct: ts.cpu_pct.unwrap_or(f64::NAN),
            target_connections: ts.connections.unwrap_or(f64::NAN),
        };
        let steps = match second.steps.is_empty() {
            true => vec![StepTotals::default(); self.step_names.len()],
            false => second.steps.clone(),
        };
        Row {
            metrics,
            latency: second.latency.clone(),
            connect: second.connect.clone(),
            connect_split: second.connect_split.clone(),
            workers,
            errors: second.causes.clone(),
            step_names: self.step_names.clone(),
            steps,
        }
    }
}

#[cfg(test)]
mod tests;
