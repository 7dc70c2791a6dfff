//! Merges the workers' per-second snapshots into one row per second of the
//! run and into running totals per phase and for the whole run. Histograms
//! are merged with `add`, never percentiles averaged.
//!
//! A second becomes a row once every live worker has reported it (or, for a
//! straggler, after a grace period). A snapshot that arrives after its row
//! was written still counts in the totals, so the summary loses nothing.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;
use stampede_proto::fleet::{Counters, Gauges, Snapshot};
use stampede_proto::histogram::new_histogram;
use stampede_proto::results::{MetricsRow, Percentiles, WorkerRow};

use crate::plan::Plan;
use crate::target_metrics::TargetSample;

/// Seconds a row waits for a late worker before it is written without it.
pub const GRACE_S: u64 = 3;

/// Running totals of a phase or of the whole run.
#[derive(Debug, Clone)]
pub struct Totals {
    /// Summed counters.
    pub counters: Counters,
    /// Merged round-trip histogram, us.
    pub latency: Histogram<u64>,
    /// Merged connect-time histogram, us.
    pub connect: Histogram<u64>,
    /// Errors by cause.
    pub errors: BTreeMap<String, u64>,
    /// Most connections open at once, from the rows.
    pub peak_active: u64,
    /// Most connections planned at once, from the rows.
    pub peak_target: u64,
    /// Peak worker RSS summed over workers, bytes.
    pub peak_rss: u64,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            counters: Counters::default(),
            latency: new_histogram(),
            connect: new_histogram(),
            errors: BTreeMap::new(),
            peak_active: 0,
            peak_target: 0,
            peak_rss: 0,
        }
    }
}

/// Adds `b` into `a` field by field.
pub fn add_counters(a: &mut Counters, b: &Counters) {
    a.connections_attempted += b.connections_attempted;
    a.connections_opened += b.connections_opened;
    a.connections_failed += b.connections_failed;
    a.connections_closed_by_server += b.connections_closed_by_server;
    a.connections_closed_by_client += b.connections_closed_by_client;
    a.connections_dropped += b.connections_dropped;
    a.messages_sent += b.messages_sent;
    a.messages_received += b.messages_received;
    a.messages_lost += b.messages_lost;
    a.messages_out_of_order += b.messages_out_of_order;
    a.messages_unmatched += b.messages_unmatched;
    a.bytes_sent += b.bytes_sent;
    a.bytes_received += b.bytes_received;
    a.sends_late += b.sends_late;
}

/// Errors of every cause in a set of counters.
pub fn error_count(c: &Counters) -> u64 {
    c.connections_failed + c.connections_closed_by_server + c.connections_dropped + c.messages_lost
}

/// Merges `from` into `into`; both share stampede's bounds, so this cannot
/// fail for histograms we made, and a foreign one that does not fit is
/// reported.
pub fn merge(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<(), AggregateError> {
    into.add(from).map_err(|e| AggregateError::Histogram(format!("{e:?}")))
}

/// Percentiles of a microsecond histogram, in milliseconds.
pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    Percentiles::of(h)
}

/// A snapshot the aggregator cannot use.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    /// Undecodable or out-of-range histogram.
    #[error("bad histogram in snapshot: {0}")]
    Histogram(String),
}

/// A second still waiting for reports.
struct Pending {
    counters: Counters,
    cpu_us: u64,
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    /// Per worker: its counters and last gauges of this second.
    workers: BTreeMap<usize, (Counters, Gauges)>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            counters: Counters::default(),
            cpu_us: 0,
            latency: new_histogram(),
            connect: new_histogram(),
            workers: BTreeMap::new(),
        }
    }
}

/// What the aggregator knows of one worker.
#[derive(Debug, Default, Clone)]
struct WorkerState {
    id: String,
    applied_seq: u64,
    reported_up_to: Option<u64>,
    gauges: Gauges,
    live: bool,
}

/// A finished row with the histograms it was computed from (for the log).
pub struct Row {
    /// The CSV/JSON row.
    pub metrics: MetricsRow,
    /// The second's merged round trips.
    pub latency: Histogram<u64>,
    /// The second's merged connect times.
    pub connect: Histogram<u64>,
    /// The second of each worker.
    pub workers: Vec<WorkerRow>,
}

/// The controller's one aggregator.
pub struct Aggregator {
    plan: Plan,
    run_start_unix_s: f64,
    workers: Vec<WorkerState>,
    pending: BTreeMap<u64, Pending>,
    target: BTreeMap<u64, TargetSample>,
    next_row: u64,
    /// Whole run.
    pub run: Totals,
    /// Per phase, in plan order.
    pub phases: Vec<Totals>,
    /// Snapshots received.
    pub snapshots: Vec<u64>,
    decoder: Deserializer,
}

impl Aggregator {
    /// An aggregator for the workers `ids` of a run started at
    /// `run_start_unix_s` (seconds since the epoch).
    pub fn new(plan: &Plan, ids: &[String], run_start_unix_s: f64) -> Self {
        Aggregator {
            plan: plan.clone(),
            run_start_unix_s,
            workers: ids
                .iter()
                .map(|id| WorkerState { id: id.clone(), live: true, ..Default::default() })
                .collect(),
            pending: BTreeMap::new(),
            target: BTreeMap::new(),
            next_row: 0,
            run: Totals::default(),
            phases: vec![Totals::default(); plan.phases.len()],
            snapshots: vec![0; ids.len()],
            decoder: Deserializer::new(),
        }
    }

    /// Marks a worker gone (rows stop waiting for it) or back.
    pub fn set_live(&mut self, worker: usize, live: bool) {
        self.workers[worker].live = live;
    }

    /// Takes one snapshot; `Ok(false)` for a duplicate (already applied).
    pub fn add(&mut self, worker: usize, snap: &Snapshot) -> Result<bool, AggregateError> {
        let state = &mut self.workers[worker];
        if snap.seq <= state.applied_seq {
            return Ok(false);
        }
        let latency = self.decode(&snap.latency_histogram)?;
        let connect = self.decode(&snap.connect_histogram)?;
        let state = &mut self.workers[worker];
        state.applied_seq = snap.seq;
        state.reported_up_to = Some(state.reported_up_to.map_or(snap.second, |r| r.max(snap.second)));
        self.snapshots[worker] += 1;
        let counters = snap.counters.unwrap_or_default();
        let gauges = snap.gauges.unwrap_or_default();

        let phase = self.plan.phase_at(std::time::Duration::from_secs(snap.second));
        for totals in [&mut self.run, &mut self.phases[phase]] {
            add_counters(&mut totals.counters, &counters);
            merge(&mut totals.latency, &latency)?;
            merge(&mut totals.connect, &connect)?;
            for (cause, n) in &snap.errors {
                *totals.errors.entry(cause.clone()).or_default() += n;
            }
        }
        if snap.second >= self.next_row {
            let p = self.pending.entry(snap.second).or_default();
            add_counters(&mut p.counters, &counters);
            p.cpu_us += gauges.cpu_us;
            merge(&mut p.latency, &latency)?;
            merge(&mut p.connect, &connect)?;
            let (c, g) = p.workers.entry(worker).or_default();
            add_counters(c, &counters);
            *g = gauges;
        } else {
            tracing::debug!("late snapshot for second {} from worker {worker}", snap.second);
        }
        Ok(true)
    }

    /// Takes the target server's figures for second `second`.
    pub fn add_target(&mut self, second: u64, sample: TargetSample) {
        if second >= self.next_row {
            self.target.insert(second, sample);
        }
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<Histogram<u64>, AggregateError> {
        if bytes.is_empty() {
            return Ok(new_histogram());
        }
        let h: Histogram<u64> = self
            .decoder
            .deserialize(&mut &bytes[..])
            .map_err(|e| AggregateError::Histogram(format!("{e:?}")))?;
        let mut ours = new_histogram();
        merge(&mut ours, &h)?;
        Ok(ours)
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
            rows.push(self.finish_row(s));
            self.next_row += 1;
        }
    }

    fn finish_row(&mut self, s: u64) -> Row {
        let p = self.pending.remove(&s).unwrap_or_default();
        let timestamp = stampede_proto::time::iso8601(self.run_start_unix_s + s as f64);
        let mut workers = Vec::with_capacity(self.workers.len());
        let (mut active, mut rss) = (0, 0);
        for (i, w) in self.workers.iter_mut().enumerate() {
            let this = p.workers.get(&i);
            if let Some((_, g)) = this {
                w.gauges = *g;
            }
            if !w.live && this.is_none() {
                continue;
            }
            active += w.gauges.connections_active;
            rss += w.gauges.rss_bytes;
            let c = this.map(|(c, _)| *c).unwrap_or_default();
            workers.push(WorkerRow {
                elapsed_s: s,
                timestamp: timestamp.clone(),
                worker: w.id.clone(),
                connections_active: w.gauges.connections_active,
                connections_opened: c.connections_opened,
                connections_failed: c.connections_failed,
                messages_sent: c.messages_sent,
                messages_received: c.messages_received,
                errors: error_count(&c),
                rss_mb: w.gauges.rss_bytes as f64 / 1e6,
                cpu_pct: this.map_or(0.0, |(_, g)| g.cpu_us as f64 / 1e4),
                reported: this.is_some(),
            });
        }
        let target_sample = self.target.remove(&s);
        self.target.retain(|second, _| *second > s);
        let t = std::time::Duration::from_secs(s);
        let phase = self.plan.phase_at(t);
        let target = self.plan.level_at(t + std::time::Duration::from_secs(1));
        for totals in [&mut self.run, &mut self.phases[phase]] {
            totals.peak_active = totals.peak_active.max(active);
            totals.peak_target = totals.peak_target.max(target);
            totals.peak_rss = totals.peak_rss.max(rss);
        }
        let lat = percentiles(&p.latency);
        let conn = percentiles(&p.connect);
        let or_nan = |count: u64, v: f64| if count > 0 { v } else { f64::NAN };
        let c = &p.counters;
        let ts = target_sample.unwrap_or_default();
        let metrics = MetricsRow {
            elapsed_s: s,
            timestamp,
            phase: self.plan.phases[phase].name.to_string(),
            connections_target: target,
            connections_active: active,
            connections_opened: c.connections_opened,
            connections_failed: c.connections_failed,
            connections_closed_by_server: c.connections_closed_by_server + c.connections_dropped,
            messages_sent: c.messages_sent,
            messages_received: c.messages_received,
            messages_lost: c.messages_lost,
            latency_p50_ms: or_nan(lat.count, lat.p50),
            latency_p95_ms: or_nan(lat.count, lat.p95),
            latency_p99_ms: or_nan(lat.count, lat.p99),
            latency_max_ms: or_nan(lat.count, lat.max),
            connect_p95_ms: or_nan(conn.count, conn.p95),
            errors: error_count(c),
            worker_rss_mb: rss as f64 / 1e6,
            worker_cpu_pct: p.cpu_us as f64 / 1e6 * 100.0,
            workers_reporting: p.workers.len() as u32,
            target_rss_mb: ts.rss_bytes.map_or(f64::NAN, |b| b / 1e6),
            target_cpu_pct: ts.cpu_pct.unwrap_or(f64::NAN),
            target_connections: ts.connections.unwrap_or(f64::NAN),
        };
        Row { metrics, latency: p.latency, connect: p.connect, workers }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    use std::path::Path;

    fn plan() -> Plan {
        let text = "name = \"t\"\n[target]\nbundled = true\n[phases]\nwarmup_s = 2\nramp_up_s = 2\nsustained_s = 2\ncooldown_s = 0\n";
        let sc = crate::scenario::Scenario::parse(Path::new("t"), text).unwrap();
        Plan::new(&sc, Path::new("t"), text).unwrap()
    }

    fn ids(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("w{i}")).collect()
    }

    fn snapshot(seq: u64, second: u64, latencies_us: &[u64], sent: u64, active: u64) -> Snapshot {
        let mut h = new_histogram();
        latencies_us.iter().for_each(|v| h.record(*v).unwrap());
        let mut bytes = Vec::new();
        V2DeflateSerializer::new().serialize(&h, &mut bytes).unwrap();
        Snapshot {
            seq,
            second,
            counters: Some(Counters {
                messages_sent: sent,
                messages_received: latencies_us.len() as u64,
                ..Default::default()
            }),
            gauges: Some(Gauges {
                connections_active: active,
                rss_bytes: 10_000_000,
                cpu_us: 250_000,
                ..Default::default()
            }),
            latency_histogram: bytes,
            ..Default::default()
        }
    }

    #[test]
    fn percentiles_come_from_merged_histograms_not_averages() {
        let mut agg = Aggregator::new(&plan(), &ids(2), 0.0);
        // Worker 0: 90 fast echoes; worker 1: 10 slow ones.
        agg.add(0, &snapshot(1, 0, &[1_000; 90], 90, 5)).unwrap();
        agg.add(1, &snapshot(1, 0, &[100_000; 10], 10, 5)).unwrap();
        let rows = agg.ready_rows(0.5, false);
        assert_eq!(rows.len(), 1, "both workers reported second 0");
        let row = &rows[0].metrics;
        // Averaging the two workers' p50s would say ~50 ms.
        assert!((row.latency_p50_ms - 1.0).abs() < 0.01, "p50 {}", row.latency_p50_ms);
        assert!((row.latency_p95_ms - 100.0).abs() < 0.1, "p95 {}", row.latency_p95_ms);
        assert_eq!(row.messages_sent, 100);
        assert_eq!(row.connections_active, 10);
        assert!((row.worker_rss_mb - 20.0).abs() < 1e-9);
        assert!((row.worker_cpu_pct - 50.0).abs() < 1e-9);
        assert_eq!(agg.run.latency.len(), 100);
        assert_eq!(agg.run.peak_active, 10);
    }

    #[test]
    fn rows_wait_for_every_worker_then_for_the_grace_period() {
        let mut agg = Aggregator::new(&plan(), &ids(2), 0.0);
        agg.add(0, &snapshot(1, 0, &[500], 1, 1)).unwrap();
        assert!(agg.ready_rows(1.5, false).is_empty(), "worker 1 has not reported");
        let rows = agg.ready_rows(1.0 + GRACE_S as f64, false);
        assert_eq!(rows.len(), 1, "written without the straggler after the grace period");
        assert_eq!(rows[0].metrics.workers_reporting, 1);
        // The straggler's snapshot arrives late: not in the row, but in the totals.
        agg.add(1, &snapshot(1, 0, &[700], 1, 1)).unwrap();
        assert_eq!(agg.run.counters.messages_sent, 2);
        assert_eq!(agg.phases[0].latency.len(), 2);
    }

    #[test]
    fn duplicates_are_ignored_and_gauges_carry_forward() {
        let mut agg = Aggregator::new(&plan(), &ids(1), 0.0);
        let first = snapshot(1, 0, &[500], 1, 3);
        assert!(agg.add(0, &first).unwrap());
        assert!(!agg.add(0, &first).unwrap(), "a resent snapshot counts once");
        assert_eq!(agg.run.counters.messages_sent, 1);
        // Second 1 missing, second 2 present: flushing writes both rows, and
        // the gap keeps the last known connection count.
        agg.add(0, &snapshot(2, 2, &[], 0, 4)).unwrap();
        let rows = agg.ready_rows(10.0, true);
        let active: Vec<u64> = rows.iter().map(|r| r.metrics.connections_active).collect();
        assert_eq!(active, [3, 3, 4]);
        assert!(rows[1].metrics.latency_p50_ms.is_nan(), "no samples: no number");
        let phases: Vec<&str> = rows.iter().map(|r| r.metrics.phase.as_str()).collect();
        assert_eq!(phases, ["warmup", "warmup", "ramp-up"]);
    }

    #[test]
    fn a_foreign_histogram_is_an_error_not_a_panic() {
        let mut agg = Aggregator::new(&plan(), &ids(1), 0.0);
        let mut snap = snapshot(1, 0, &[], 0, 0);
        snap.latency_histogram = b"not a histogram".to_vec();
        assert!(agg.add(0, &snap).is_err());
    }
}
