//! Relay counters and the `/metrics` exposition.
//!
//! Owns the shared atomics every connection task bumps, and renders them in
//! the Prometheus text format together with process memory/CPU read from
//! `/proc`, so a load test can watch the target without extra tooling.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters shared by all connection tasks.
///
/// Relaxed ordering is enough: each counter is independent and readers only
/// want an eventually-consistent view for reporting.
#[derive(Debug, Default)]
pub struct Stats {
    /// WebSocket sessions currently open.
    pub connections_active: AtomicU64,
    /// WebSocket sessions ever upgraded (plain HTTP requests do not count).
    pub connections_total: AtomicU64,
    /// Text and binary messages received (control frames excluded).
    pub messages_in: AtomicU64,
    /// Text and binary messages echoed back.
    pub messages_out: AtomicU64,
    /// Payload bytes of received data messages.
    pub bytes_in: AtomicU64,
    /// Payload bytes of echoed data messages.
    pub bytes_out: AtomicU64,
    /// Channels (`/pubsub` sessions and `POST /publish`).
    pub pubsub: PubsubStats,
}

/// Defines [`PubsubStats`], its snapshot and its metric rows from one
/// list, so a counter is named once.
macro_rules! pubsub_stats {
    ($($field:ident: $kind:literal, $metric:literal, $help:literal;)*) => {
        /// Channel counters and gauges (relaxed atomics, like [`Stats`]).
        #[derive(Debug, Default)]
        pub struct PubsubStats {
            $(#[doc = $help] pub $field: AtomicU64,)*
        }

        /// A plain copy of [`PubsubStats`].
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct PubsubSnapshot {
            $(#[doc = $help] pub $field: u64,)*
        }

        impl PubsubStats {
            /// Reads every value once; the values are not mutually atomic.
            pub fn snapshot(&self) -> PubsubSnapshot {
                PubsubSnapshot { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }

        impl PubsubSnapshot {
            /// (name, type, help, value) of each metric.
            fn rows(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
                vec![$(($metric, $kind, $help, self.$field),)*]
            }
        }
    };
}

pubsub_stats! {
    connections: "gauge", "relay_pubsub_connections", "Open /pubsub sessions.";
    channels: "gauge", "relay_pubsub_channels", "Channels that exist.";
    subscriptions: "gauge", "relay_pubsub_subscriptions", "Subscriptions of open sessions, conn/<id> included.";
    published: "counter", "relay_pubsub_published_total", "Messages published (WebSocket and HTTP).";
    delivered: "counter", "relay_pubsub_delivered_total", "Live message frames written to subscribers (duplicates excluded).";
    replayed: "counter", "relay_pubsub_replayed_total", "History message frames written to subscribers (duplicates excluded).";
    slow_closed: "counter", "relay_pubsub_slow_closed_total", "Subscribers closed with 1008 because their outbound queue was full.";
    http_published: "counter", "relay_pubsub_http_published_total", "Messages published by POST /publish.";
    duplicated: "counter", "relay_pubsub_duplicated_total", "Extra copies sent by the duplicate fault.";
    reordered: "counter", "relay_pubsub_reordered_total", "Deliveries the reorder fault sent after a later one.";
}

impl PubsubStats {
    /// Counts an open `/pubsub` session until the guard drops.
    pub(crate) fn open_session(&self) -> PubsubSessionGuard<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        PubsubSessionGuard { stats: self }
    }
}

/// Decrements the open `/pubsub` sessions however the session ends.
pub(crate) struct PubsubSessionGuard<'a> {
    stats: &'a PubsubStats,
}

impl Drop for PubsubSessionGuard<'_> {
    fn drop(&mut self) {
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A plain copy of [`Stats`], for callers that want numbers, not atomics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub connections_active: u64,
    pub connections_total: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Stats {
    /// Reads every counter once; the values are not mutually atomic.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            connections_active: get(&self.connections_active),
            connections_total: get(&self.connections_total),
            messages_in: get(&self.messages_in),
            messages_out: get(&self.messages_out),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
        }
    }

    /// Reserves a session slot, or returns `None` when `max` (non-zero) is
    /// reached. Reserving with a CAS loop instead of load-then-add keeps the
    /// limit exact under concurrent upgrades.
    pub(crate) fn try_open(&self, max: usize) -> Option<ConnectionGuard<'_>> {
        let max = max as u64;
        self.connections_active
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                (max == 0 || cur < max).then_some(cur + 1)
            })
            .ok()?;
        self.connections_total.fetch_add(1, Ordering::Relaxed);
        Some(ConnectionGuard { stats: self })
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.messages_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.messages_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Renders the Prometheus text exposition (format 0.0.4).
    /// The Prometheus text; `process`: with this process's memory and CPU.
    pub fn render_metrics(&self, process: bool) -> String {
        let s = self.snapshot();
        let mut out = String::with_capacity(4096);
        let rows: [(&str, &str, &str, u64); 6] = [
            ("relay_connections_active", "gauge", "Open WebSocket sessions.", s.connections_active),
            ("relay_connections_total", "counter", "WebSocket sessions accepted.", s.connections_total),
            ("relay_messages_received_total", "counter", "Data messages received.", s.messages_in),
            ("relay_messages_sent_total", "counter", "Data messages echoed.", s.messages_out),
            ("relay_bytes_received_total", "counter", "Payload bytes received.", s.bytes_in),
            ("relay_bytes_sent_total", "counter", "Payload bytes echoed.", s.bytes_out),
        ];
        for (name, kind, help, value) in rows.into_iter().chain(self.pubsub.snapshot().rows()) {
            metric(&mut out, name, kind, help, value);
        }
        if !process {
            return out;
        }
        if let Some(rss) = resident_memory_bytes() {
            metric(&mut out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", rss);
        }
        if let Some(cpu) = cpu_seconds() {
            metric(
                &mut out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                cpu,
            );
        }
        out
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    // Writing into a String cannot fail.
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
}

/// Decrements `connections_active` however the session ends, including
/// panics and early returns.
pub(crate) struct ConnectionGuard<'a> {
    stats: &'a Stats,
}

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.stats.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// RSS from `/proc/self/statm` (second field, in pages).
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_ascii_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it only reads a system value.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page_size).ok().filter(|&p| p > 0)?)
}

/// utime + stime from `/proc/self/stat`, converted from clock ticks.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).and_then(|ticks| {
        // SAFETY: sysconf has no preconditions; it only reads a system value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (hz > 0).then(|| ticks as f64 / hz as f64)
    })
}

/// The command name (field 2) may contain spaces and parentheses, so fields
/// are counted from the last `)`; utime and stime are fields 14 and 15.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_tricky_comm() {
        let stat = "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn limit_is_enforced_and_released() {
        let stats = Stats::default();
        let a = stats.try_open(1).expect("first slot");
        assert!(stats.try_open(1).is_none());
        drop(a);
        assert!(stats.try_open(1).is_some());
        assert_eq!(stats.snapshot().connections_total, 2);
        assert_eq!(stats.snapshot().connections_active, 0);
    }

    #[test]
    fn metrics_have_help_and_type() {
        let text = Stats::default().render_metrics(true);
        assert!(text.contains("# TYPE relay_connections_active gauge\n"));
        assert!(text.contains("relay_bytes_sent_total 0\n"));
        assert!(text.contains("# TYPE relay_pubsub_channels gauge\n"));
        assert!(
            text.contains("# TYPE relay_pubsub_reordered_total counter\nrelay_pubsub_reordered_total 0\n")
        );
        assert!(text.contains("\nprocess_resident_memory_bytes "), "{text}");
    }

    #[test]
    fn a_relay_inside_another_program_gives_no_process_figures() {
        let text = Stats::default().render_metrics(false);
        assert!(text.contains("relay_connections_active 0\n"));
        assert!(!text.contains("process_"), "{text}");
    }
}
