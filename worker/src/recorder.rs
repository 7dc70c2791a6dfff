//! Where every connection task records what it measured: lock-free counters,
//! two HDR histograms behind a short mutex, and error counts by cause. Only
//! the per-second snapshot crosses a channel or the network (pre-aggregation
//! at the source), so the hot path costs an atomic add or one histogram
//! record.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use stampede_proto::fleet;

pub use stampede_proto::histogram::new_histogram;

/// Why a connection attempt failed or an open connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cause {
    /// TCP connection refused (nothing listens).
    Refused,
    /// Connect or upgrade took longer than the connect timeout.
    Timeout,
    /// The server answered the upgrade with another HTTP status.
    HttpStatus(u16),
    /// The upgrade response was not a valid WebSocket handshake.
    BadHandshake,
    /// The server sent a close frame with this code (1005: none given).
    ClosedByServer(u16),
    /// The connection was reset.
    Reset,
    /// The server closed TCP without a close frame.
    Eof,
    /// The server broke the WebSocket protocol.
    Protocol,
    /// Name resolution failed.
    Dns,
    /// Any other I/O error, by kind.
    Io(std::io::ErrorKind),
}

impl Cause {
    /// The key under which the cause is reported, e.g. `refused`, `http_503`,
    /// `closed_1001`.
    pub fn key(&self) -> String {
        match self {
            Cause::Refused => "refused".into(),
            Cause::Timeout => "timeout".into(),
            Cause::HttpStatus(code) => format!("http_{code}"),
            Cause::BadHandshake => "bad_handshake".into(),
            Cause::ClosedByServer(code) => format!("closed_{code}"),
            Cause::Reset => "reset".into(),
            Cause::Eof => "eof".into(),
            Cause::Protocol => "protocol".into(),
            Cause::Dns => "dns".into(),
            Cause::Io(kind) => format!("io_{}", format!("{kind:?}").to_lowercase()),
        }
    }

    /// Classifies an I/O error.
    pub fn from_io(err: &std::io::Error) -> Cause {
        use std::io::ErrorKind::*;
        match err.kind() {
            ConnectionRefused => Cause::Refused,
            ConnectionReset | ConnectionAborted | BrokenPipe => Cause::Reset,
            TimedOut => Cause::Timeout,
            UnexpectedEof => Cause::Eof,
            kind => Cause::Io(kind),
        }
    }
}

/// Monotonic counters; snapshots report the difference since the last one.
#[derive(Debug, Default)]
pub struct Counters {
    pub connections_attempted: AtomicU64,
    pub connections_opened: AtomicU64,
    pub connections_failed: AtomicU64,
    pub connections_closed_by_server: AtomicU64,
    pub connections_closed_by_client: AtomicU64,
    pub connections_dropped: AtomicU64,
    pub messages_sent: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_lost: AtomicU64,
    pub messages_out_of_order: AtomicU64,
    pub messages_unmatched: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub sends_late: AtomicU64,
}

impl Counters {
    fn read(&self) -> fleet::Counters {
        fleet::Counters {
            connections_attempted: self.connections_attempted.load(Relaxed),
            connections_opened: self.connections_opened.load(Relaxed),
            connections_failed: self.connections_failed.load(Relaxed),
            connections_closed_by_server: self.connections_closed_by_server.load(Relaxed),
            connections_closed_by_client: self.connections_closed_by_client.load(Relaxed),
            connections_dropped: self.connections_dropped.load(Relaxed),
            messages_sent: self.messages_sent.load(Relaxed),
            messages_received: self.messages_received.load(Relaxed),
            messages_lost: self.messages_lost.load(Relaxed),
            messages_out_of_order: self.messages_out_of_order.load(Relaxed),
            messages_unmatched: self.messages_unmatched.load(Relaxed),
            bytes_sent: self.bytes_sent.load(Relaxed),
            bytes_received: self.bytes_received.load(Relaxed),
            sends_late: self.sends_late.load(Relaxed),
        }
    }
}

/// Field-wise `now - before` of two counter readings.
fn delta(now: &fleet::Counters, before: &fleet::Counters) -> fleet::Counters {
    fleet::Counters {
        connections_attempted: now.connections_attempted - before.connections_attempted,
        connections_opened: now.connections_opened - before.connections_opened,
        connections_failed: now.connections_failed - before.connections_failed,
        connections_closed_by_server: now.connections_closed_by_server - before.connections_closed_by_server,
        connections_closed_by_client: now.connections_closed_by_client - before.connections_closed_by_client,
        connections_dropped: now.connections_dropped - before.connections_dropped,
        messages_sent: now.messages_sent - before.messages_sent,
        messages_received: now.messages_received - before.messages_received,
        messages_lost: now.messages_lost - before.messages_lost,
        messages_out_of_order: now.messages_out_of_order - before.messages_out_of_order,
        messages_unmatched: now.messages_unmatched - before.messages_unmatched,
        bytes_sent: now.bytes_sent - before.bytes_sent,
        bytes_received: now.bytes_received - before.bytes_received,
        sends_late: now.sends_late - before.sends_late,
    }
}

struct Histograms {
    latency: Histogram<u64>,
    connect: Histogram<u64>,
}

/// The shared recorder of one worker.
pub struct Recorder {
    /// Event counters.
    pub counters: Counters,
    /// Open connections now.
    pub active: AtomicU64,
    /// Connections the current phase asks of this worker now.
    pub target: AtomicU64,
    histograms: Mutex<Histograms>,
    errors: Mutex<BTreeMap<Cause, u64>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            counters: Counters::default(),
            active: AtomicU64::new(0),
            target: AtomicU64::new(0),
            histograms: Mutex::new(Histograms { latency: new_histogram(), connect: new_histogram() }),
            errors: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Recorder {
    /// Records one message round trip.
    pub fn record_latency(&self, rtt: Duration) {
        let us = (rtt.as_micros() as u64).max(1);
        self.histograms.lock().expect("poisoned").latency.saturating_record(us);
    }

    /// Records one successful connect (TCP + upgrade).
    pub fn record_connect(&self, took: Duration) {
        let us = (took.as_micros() as u64).max(1);
        self.histograms.lock().expect("poisoned").connect.saturating_record(us);
    }

    /// Counts one failure or drop by cause.
    pub fn record_error(&self, cause: Cause) {
        *self.errors.lock().expect("poisoned").entry(cause).or_default() += 1;
    }
}

/// Turns the recorder's running totals into per-interval snapshots.
pub struct Snapshotter {
    /// The histograms of the interval before, swapped in and out so that no
    /// histogram (~190 KB each) is allocated per second.
    spare: Histograms,
    last: fleet::Counters,
    last_errors: BTreeMap<Cause, u64>,
    serializer: V2DeflateSerializer,
    seq: u64,
}

impl Snapshotter {
    /// A snapshotter whose first snapshot gets sequence number 1.
    pub fn new() -> Self {
        Snapshotter {
            spare: Histograms { latency: new_histogram(), connect: new_histogram() },
            last: fleet::Counters::default(),
            last_errors: BTreeMap::new(),
            serializer: V2DeflateSerializer::new(),
            seq: 0,
        }
    }

    /// Takes the interval's deltas and resets the histograms.
    pub fn take(
        &mut self,
        recorder: &Recorder,
        second: u64,
        phase_index: u32,
        process: fleet::Gauges,
    ) -> fleet::Snapshot {
        // Swap under the lock, encode outside it: recording never waits
        // for compression.
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
        let now = recorder.counters.read();
        let counters = delta(&now, &self.last);
        self.last = now;
        self.seq += 1;
        fleet::Snapshot {
            seq: self.seq,
            second,
            phase_index,
            counters: Some(counters),
            gauges: Some(fleet::Gauges {
                connections_active: recorder.active.load(Relaxed),
                connections_target: recorder.target.load(Relaxed),
                ..process
            }),
            latency_histogram: encode(&mut self.serializer, &mut self.spare.latency),
            connect_histogram: encode(&mut self.serializer, &mut self.spare.connect),
            errors,
        }
    }
}

/// Encodes `h` and empties it for reuse.
fn encode(serializer: &mut V2DeflateSerializer, h: &mut Histogram<u64>) -> Vec<u8> {
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
        let first = snap.take(&rec, 0, 0, fleet::Gauges::default());
        rec.counters.messages_sent.fetch_add(2, Relaxed);
        rec.record_error(Cause::Refused);
        let second = snap.take(&rec, 1, 0, fleet::Gauges::default());

        assert_eq!((first.seq, second.seq), (1, 2));
        assert_eq!(first.counters.unwrap().messages_sent, 5);
        assert_eq!(second.counters.unwrap().messages_sent, 2);
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
    fn cause_keys_are_stable() {
        assert_eq!(Cause::ClosedByServer(1001).key(), "closed_1001");
        assert_eq!(Cause::from_io(&std::io::ErrorKind::ConnectionRefused.into()).key(), "refused");
        assert_eq!(Cause::Io(std::io::ErrorKind::AddrNotAvailable).key(), "io_addrnotavailable");
    }
}
