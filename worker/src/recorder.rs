//! Where every connection task records what it measured: lock-free counters,
//! HDR histograms (round trips, connect times and their parts) behind a
//! short mutex, and error counts by cause. Only
//! the per-second snapshot crosses a channel or the network (pre-aggregation
//! at the source), so the hot path costs an atomic add or one histogram
//! record.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2Serializer};
use stampede_model::{AtomicCounters, Cause, Counters};
use stampede_proto::{counters_to_wire, fleet};

pub use stampede_model::histogram::new_histogram;

struct Histograms {
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    /// The parts of `connect`: TCP connect, TLS handshake (`wss://` only),
    /// WebSocket upgrade; one sample each per opened connection.
    connect_tcp: Histogram<u64>,
    connect_tls: Histogram<u64>,
    connect_upgrade: Histogram<u64>,
}

impl Histograms {
    fn new() -> Histograms {
        Histograms {
            latency: new_histogram(),
            connect: new_histogram(),
            connect_tcp: new_histogram(),
            connect_tls: new_histogram(),
            connect_upgrade: new_histogram(),
        }
    }
}

/// How long opening one connection took, in all and by part.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConnectTimes {
    /// From the start of the TCP connect to the end of the upgrade.
    pub total: Duration,
    /// TCP connect.
    pub tcp: Duration,
    /// TLS handshake; `None` for `ws://`.
    pub tls: Option<Duration>,
    /// WebSocket upgrade (request sent to 101 checked).
    pub upgrade: Duration,
}

/// The shared recorder of one worker.
pub struct Recorder {
    /// Event counters.
    pub counters: AtomicCounters,
    /// Open connections now.
    pub active: AtomicU64,
    /// Browser sessions: the largest JS heap of the pages that closed
    /// since the last snapshot (taken and reset by it).
    pub js_heap_max: AtomicU64,
    /// The worst scheduling lag the probe saw since the last snapshot, us
    /// (taken and reset by it).
    pub sched_lag_max_us: AtomicU64,
    histograms: Mutex<Histograms>,
    errors: Mutex<BTreeMap<Cause, u64>>,
    /// Opened connections by the subprotocol the server picked (one of
    /// those offered: a bounded set).
    subprotocols: Mutex<BTreeMap<String, u64>>,
    /// Flow steps, by their metric index: their names and this interval's
    /// runs (empty unless the run is a flow).
    steps: Mutex<Vec<StepRecord>>,
    step_names: Vec<String>,
    /// Broadcast: this interval's deliveries by channel number (empty
    /// unless the run reports per channel).
    channels: Mutex<BTreeMap<u64, fleet::ChannelStats>>,
}

/// One flow step's runs in the current interval.
struct StepRecord {
    ok: u64,
    failed: u64,
    durations: Histogram<u64>,
}

impl StepRecord {
    fn new() -> StepRecord {
        StepRecord { ok: 0, failed: 0, durations: new_histogram() }
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            counters: AtomicCounters::default(),
            active: AtomicU64::new(0),
            js_heap_max: AtomicU64::new(0),
            sched_lag_max_us: AtomicU64::new(0),
            histograms: Mutex::new(Histograms::new()),
            errors: Mutex::new(BTreeMap::new()),
            subprotocols: Mutex::new(BTreeMap::new()),
            steps: Mutex::new(Vec::new()),
            step_names: Vec::new(),
            channels: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Recorder {
    /// A recorder for a flow whose steps have these metric names.
    pub fn with_steps(names: &[String]) -> Recorder {
        Recorder {
            steps: Mutex::new(names.iter().map(|_| StepRecord::new()).collect()),
            step_names: names.to_vec(),
            ..Recorder::default()
        }
    }

    /// Records one run of flow step `metric`: a success that took `took`,
    /// or a failure (`None`; its cause goes to [`Recorder::record_error`]).
    pub fn record_step(&self, metric: usize, took: Option<Duration>) {
        let mut steps = self.steps.lock().expect("poisoned");
        let Some(step) = steps.get_mut(metric) else { return };
        match took {
            Some(d) => {
                step.ok += 1;
                step.durations.saturating_record((d.as_micros() as u64).max(1));
            }
            None => step.failed += 1,
        }
    }

    /// Counts something on broadcast channel `n`.
    pub fn record_channel(&self, n: u64, count: impl FnOnce(&mut fleet::ChannelStats)) {
        count(self.channels.lock().expect("poisoned").entry(n).or_default());
    }

    /// Counts one message delivered (its first intact copy) of `bytes`,
    /// with its latency when it has one; `reordered` if a later message
    /// came first. One definition for echo, pairs and broadcast.
    pub fn record_delivered(&self, latency: Option<Duration>, bytes: usize, reordered: bool) {
        if let Some(latency) = latency {
            self.record_latency(latency);
        }
        self.counters.messages_received.fetch_add(1, Relaxed);
        self.counters.bytes_received.fetch_add(bytes as u64, Relaxed);
        if reordered {
            self.counters.messages_out_of_order.fetch_add(1, Relaxed);
        }
    }

    /// Records one message round trip.
    pub fn record_latency(&self, rtt: Duration) {
        let us = (rtt.as_micros() as u64).max(1);
        self.histograms.lock().expect("poisoned").latency.saturating_record(us);
    }

    /// Records one successful connect: its total and its parts.
    pub fn record_connect(&self, times: ConnectTimes) {
        let us = |d: Duration| (d.as_micros() as u64).max(1);
        let mut h = self.histograms.lock().expect("poisoned");
        h.connect.saturating_record(us(times.total));
        h.connect_tcp.saturating_record(us(times.tcp));
        if let Some(tls) = times.tls {
            h.connect_tls.saturating_record(us(tls));
        }
        h.connect_upgrade.saturating_record(us(times.upgrade));
    }

    /// Counts one connection opened with the subprotocol `picked`.
    pub fn record_subprotocol(&self, picked: &str) {
        let mut map = self.subprotocols.lock().expect("poisoned");
        match map.get_mut(picked) {
            Some(n) => *n += 1,
            None => _ = map.insert(picked.to_string(), 1),
        }
    }

    /// Counts one failure or drop by cause.
    pub fn record_error(&self, cause: Cause) {
        self.record_errors(cause, 1);
    }

    /// Counts `n` errors of one cause.
    pub fn record_errors(&self, cause: Cause, n: u64) {
        if n > 0 {
            *self.errors.lock().expect("poisoned").entry(cause).or_default() += n;
        }
    }
}

/// Turns the recorder's running totals into per-interval snapshots.
pub struct Snapshotter {
    /// The histograms of the interval before, swapped in and out so that no
    /// histogram (~190 KB each) is allocated per second.
    spare: Histograms,
    last: Counters,
    last_errors: BTreeMap<Cause, u64>,
    last_subprotocols: BTreeMap<String, u64>,
    /// Plain V2, not deflated: a second's histogram is small either way,
    /// and inflating cost the controller most of its CPU with 1,000
    /// workers (a fresh inflate state per histogram; bench (e)).
    serializer: V2Serializer,
    seq: u64,
}

impl Snapshotter {
    /// A snapshotter whose first snapshot gets sequence number 1.
    pub fn new() -> Self {
        Snapshotter {
            spare: Histograms::new(),
            last: Counters::default(),
            last_errors: BTreeMap::new(),
            last_subprotocols: BTreeMap::new(),
            serializer: V2Serializer::new(),
            seq: 0,
        }
    }

    /// Takes the interval's deltas and resets the histograms; `taken_late`
    /// is how long after its due time this happens.
    pub fn take(
        &mut self,
        recorder: &Recorder,
        second: u64,
        taken_late: Duration,
        process: fleet::Gauges,
    ) -> fleet::Snapshot {
        // Swap under the lock, encode outside it: recording never waits
        // for encoding.
        std::mem::swap(&mut *recorder.histograms.lock().expect("poisoned"), &mut self.spare);
        let errors_now = recorder.errors.lock().expect("poisoned").clone();
        let errors = errors_now
            .iter()
            .filter_map(|(cause, n)| {
                let d = n - self.last_errors.get(cause).copied().unwrap_or(0);
                (d > 0).then(|| (cause.key(), d))
            })
            .collect();
        self.last_errors = errors_now;
        let picked_now = recorder.subprotocols.lock().expect("poisoned").clone();
        let subprotocols = picked_now
            .iter()
            .filter_map(|(name, n)| {
                let d = n - self.last_subprotocols.get(name).copied().unwrap_or(0);
                (d > 0).then(|| (name.clone(), d))
            })
            .collect();
        self.last_subprotocols = picked_now;
        let steps = self.take_steps(recorder);
        let channels =
            std::mem::take(&mut *recorder.channels.lock().expect("poisoned")).into_iter().collect();
        let now = recorder.counters.read();
        let counters = now.since(&self.last);
        self.last = now;
        self.seq += 1;
        fleet::Snapshot {
            seq: self.seq,
            second,
            counters: counters_to_wire(&counters),
            gauges: Some(fleet::Gauges { connections_active: recorder.active.load(Relaxed), ..process }),
            latency_histogram: encode(&mut self.serializer, &mut self.spare.latency),
            connect_histogram: encode(&mut self.serializer, &mut self.spare.connect),
            connect_tcp_histogram: encode(&mut self.serializer, &mut self.spare.connect_tcp),
            connect_tls_histogram: encode(&mut self.serializer, &mut self.spare.connect_tls),
            connect_upgrade_histogram: encode(&mut self.serializer, &mut self.spare.connect_upgrade),
            errors,
            taken_late_us: stampede_proto::us(taken_late),
            subprotocols,
            // Filled in by the engine and the link.
            run_id: String::new(),
            clock_offset_us: 0,
            steps,
            channels,
        }
    }

    /// The flow steps' runs of the interval, by name (steps that did not
    /// run are left out); the records start over.
    fn take_steps(&mut self, recorder: &Recorder) -> std::collections::HashMap<String, fleet::StepStats> {
        if recorder.step_names.is_empty() {
            return Default::default();
        }
        let fresh: Vec<StepRecord> = recorder.step_names.iter().map(|_| StepRecord::new()).collect();
        let taken = std::mem::replace(&mut *recorder.steps.lock().expect("poisoned"), fresh);
        taken
            .into_iter()
            .zip(&recorder.step_names)
            .filter(|(r, _)| r.ok + r.failed > 0)
            .map(|(mut r, name)| {
                let histogram = encode(&mut self.serializer, &mut r.durations);
                (name.clone(), fleet::StepStats { ok: r.ok, failed: r.failed, histogram })
            })
            .collect()
    }
}

/// Encodes `h` and empties it for reuse.
fn encode(serializer: &mut V2Serializer, h: &mut Histogram<u64>) -> Vec<u8> {
    let mut buf = Vec::new();
    serializer.serialize(h, &mut buf).expect("serializing into a Vec cannot fail");
    h.reset();
    buf
}

impl Default for Snapshotter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::Deserializer;

    #[test]
    fn snapshots_carry_deltas_and_reset_histograms() {
        let rec = Recorder::default();
        let mut snap = Snapshotter::new();
        rec.counters.messages_sent.fetch_add(5, Relaxed);
        rec.record_latency(Duration::from_millis(20));
        rec.record_error(Cause::Refused);
        rec.record_error(Cause::HttpStatus(503));
        let first = snap.take(&rec, 0, Duration::ZERO, fleet::Gauges::default());
        rec.counters.messages_sent.fetch_add(2, Relaxed);
        rec.record_error(Cause::Refused);
        let second = snap.take(&rec, 1, Duration::ZERO, fleet::Gauges::default());

        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(first.counters["messages_sent"], 5);
        assert_eq!(second.counters["messages_sent"], 2);
        assert_eq!(first.errors.get("http_503"), Some(&1));
        assert_eq!(second.errors.get("refused"), Some(&1));
        assert!(!second.errors.contains_key("http_503"));

        let h1: Histogram<u64> =
            Deserializer::new().deserialize(&mut first.latency_histogram.as_slice()).unwrap();
        let h2: Histogram<u64> =
            Deserializer::new().deserialize(&mut second.latency_histogram.as_slice()).unwrap();
        assert_eq!(h1.len(), 1);
        assert!(h1.equivalent(h1.value_at_quantile(0.5), 20_000));
        assert_eq!(h2.len(), 0);
    }

    #[test]
    fn connect_times_are_split_into_their_parts() {
        let rec = Recorder::default();
        let mut snap = Snapshotter::new();
        let ms = Duration::from_millis;
        rec.record_connect(ConnectTimes { total: ms(6), tcp: ms(1), tls: Some(ms(3)), upgrade: ms(2) });
        rec.record_connect(ConnectTimes { total: ms(3), tcp: ms(1), tls: None, upgrade: ms(2) });
        let s = snap.take(&rec, 0, Duration::ZERO, fleet::Gauges::default());
        let decode =
            |bytes: &[u8]| -> Histogram<u64> { Deserializer::new().deserialize(&mut &bytes[..]).unwrap() };
        let (total, tcp) = (decode(&s.connect_histogram), decode(&s.connect_tcp_histogram));
        let (tls, upgrade) = (decode(&s.connect_tls_histogram), decode(&s.connect_upgrade_histogram));
        assert_eq!(
            (total.len(), tcp.len(), tls.len(), upgrade.len()),
            (2, 2, 1, 2),
            "no TLS sample for ws://"
        );
        assert!(tls.equivalent(tls.max(), 3_000));
        assert!(upgrade.equivalent(upgrade.min(), 2_000));
        assert!(total.equivalent(total.max(), 6_000));
    }
}
