//! Thresholds: conditions on the run's figures that decide PASS or FAIL.
//! Written in the scenario as `metric = "< limit"`; the metric names are a
//! closed set, so a misspelt one is an error at its line, never a silent pass.
//! One definition ([`evaluate`] on [`Figures`]) serves the whole run, each
//! judged phase (a step), and each second of a stress stage while it runs.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stampede_model::results::{Figures, Percentiles, ThresholdOutcome};

macro_rules! metrics {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// A figure of the run a threshold can test.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Metric {
            $(#[doc = $doc] $variant,)*
            /// Any counter of the model, by its name (`messages_unmatched`,
            /// `messages_duplicated`, ...), summed over the run.
            Counter(&'static str),
        }

        impl Metric {
            /// Every figure besides the counters, in documentation order.
            pub const ALL: &[Metric] = &[$(Metric::$variant),*];

            /// The name used in scenarios and reports.
            pub fn name(self) -> &'static str {
                match self { $(Metric::$variant => $name,)* Metric::Counter(name) => name }
            }

            /// What it measures.
            pub fn doc(self) -> &'static str {
                match self { $(Metric::$variant => $doc,)* Metric::Counter(_) => "a counter, summed over the run" }
            }

            /// The metric called `name`: a figure, else a counter.
            pub fn from_name(name: &str) -> Option<Metric> {
                Metric::ALL.iter().copied().find(|m| m.name() == name).or_else(|| {
                    stampede_model::Counters::NAMES.iter().find(|n| **n == name).map(|n| Metric::Counter(n))
                })
            }
        }
    };
}

metrics! {
    LatencyP50 => "latency_p50_ms", "median message round trip, ms";
    LatencyP90 => "latency_p90_ms", "90th percentile round trip, ms";
    LatencyP95 => "latency_p95_ms", "95th percentile round trip, ms";
    LatencyP99 => "latency_p99_ms", "99th percentile round trip, ms";
    LatencyP999 => "latency_p999_ms", "99.9th percentile round trip, ms";
    LatencyMax => "latency_max_ms", "slowest round trip, ms";
    LatencyMean => "latency_mean_ms", "mean round trip, ms";
    ConnectP50 => "connect_p50_ms", "median connect time (TCP + TLS + upgrade), ms";
    ConnectP95 => "connect_p95_ms", "95th percentile connect time, ms";
    ConnectP99 => "connect_p99_ms", "99th percentile connect time, ms";
    ConnectMax => "connect_max_ms", "slowest connect, ms";
    ConnectTcpP50 => "connect_tcp_p50_ms", "median TCP connect part of the connect time, ms";
    ConnectTcpP95 => "connect_tcp_p95_ms", "95th percentile TCP connect, ms";
    ConnectTcpP99 => "connect_tcp_p99_ms", "99th percentile TCP connect, ms";
    ConnectTcpMax => "connect_tcp_max_ms", "slowest TCP connect, ms";
    ConnectTlsP50 => "connect_tls_p50_ms", "median TLS handshake (wss:// only), ms";
    ConnectTlsP95 => "connect_tls_p95_ms", "95th percentile TLS handshake, ms";
    ConnectTlsP99 => "connect_tls_p99_ms", "99th percentile TLS handshake, ms";
    ConnectTlsMax => "connect_tls_max_ms", "slowest TLS handshake, ms";
    ConnectUpgradeP50 => "connect_upgrade_p50_ms", "median WebSocket upgrade (request to 101), ms";
    ConnectUpgradeP95 => "connect_upgrade_p95_ms", "95th percentile WebSocket upgrade, ms";
    ConnectUpgradeP99 => "connect_upgrade_p99_ms", "99th percentile WebSocket upgrade, ms";
    ConnectUpgradeMax => "connect_upgrade_max_ms", "slowest WebSocket upgrade, ms";
    ErrorRate => "error_rate", "errors / (connection attempts + scheduled sends), 0..1";
    ErrorsTotal => "errors_total", "errors of every cause, count";
    GeneratorStalled => "generator_stalled_seconds", "seconds in which the load generator could not keep its schedule, count";
    WorkersLost => "workers_lost", "workers lost during the run (died, link broken, plan refused), count";
    ConnectSuccessRate => "connect_success_rate", "opened / attempted connections, 0..1";
    MessageLossRate => "message_loss_rate", "lost / owed deliveries (sends; broadcast: messages x subscribers), 0..1";
    ConnectionsFailed => "connections_failed", "failed connection attempts, count";
    ConnectionsClosedByServer => "connections_closed_by_server", "connections the server closed or dropped, count";
    ConnectionsPeak => "connections_peak", "most connections open at once, count";
    MessagesReceived => "messages_received", "echoes received, count";
    Throughput => "throughput_msg_per_s", "echoes received per second over the run";
}

fn pct(p: &Percentiles, f: impl Fn(&Percentiles) -> f64) -> Option<f64> {
    (p.count > 0).then(|| f(p))
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl Metric {
    /// The metric's value in the figures of a run, a phase or a second;
    /// `None` when they have no sample of it.
    pub fn value(self, f: &Figures) -> Option<f64> {
        let (l, c) = (&f.latency_ms, &f.connect_ms);
        match self {
            Metric::LatencyP50 => pct(l, |p| p.p50),
            Metric::LatencyP90 => pct(l, |p| p.p90),
            Metric::LatencyP95 => pct(l, |p| p.p95),
            Metric::LatencyP99 => pct(l, |p| p.p99),
            Metric::LatencyP999 => pct(l, |p| p.p999),
            Metric::LatencyMax => pct(l, |p| p.max),
            Metric::LatencyMean => pct(l, |p| p.mean),
            Metric::ConnectP50 => pct(c, |p| p.p50),
            Metric::ConnectP95 => pct(c, |p| p.p95),
            Metric::ConnectP99 => pct(c, |p| p.p99),
            Metric::ConnectMax => pct(c, |p| p.max),
            Metric::ConnectTcpP50 => pct(&f.connect_tcp_ms, |p| p.p50),
            Metric::ConnectTcpP95 => pct(&f.connect_tcp_ms, |p| p.p95),
            Metric::ConnectTcpP99 => pct(&f.connect_tcp_ms, |p| p.p99),
            Metric::ConnectTcpMax => pct(&f.connect_tcp_ms, |p| p.max),
            Metric::ConnectTlsP50 => pct(&f.connect_tls_ms, |p| p.p50),
            Metric::ConnectTlsP95 => pct(&f.connect_tls_ms, |p| p.p95),
            Metric::ConnectTlsP99 => pct(&f.connect_tls_ms, |p| p.p99),
            Metric::ConnectTlsMax => pct(&f.connect_tls_ms, |p| p.max),
            Metric::ConnectUpgradeP50 => pct(&f.connect_upgrade_ms, |p| p.p50),
            Metric::ConnectUpgradeP95 => pct(&f.connect_upgrade_ms, |p| p.p95),
            Metric::ConnectUpgradeP99 => pct(&f.connect_upgrade_ms, |p| p.p99),
            Metric::ConnectUpgradeMax => pct(&f.connect_upgrade_ms, |p| p.max),
            Metric::ErrorRate => Some(f.error_rate),
            Metric::ErrorsTotal => Some(f.errors_total as f64),
            Metric::GeneratorStalled => Some(f.generator_stalled_seconds.len() as f64),
            Metric::WorkersLost => Some(f.workers_lost.len() as f64),
            Metric::Counter(name) => f.counters.iter().find(|(n, _)| *n == name).map(|(_, v)| v as f64),
            Metric::ConnectSuccessRate => ratio(f.connections.opened, f.connections.attempted),
            Metric::MessageLossRate => stampede_model::figures::loss_rate(&f.counters),
            Metric::ConnectionsFailed => Some(f.connections.failed as f64),
            Metric::ConnectionsClosedByServer => Some(f.connections.closed_by_server as f64),
            Metric::ConnectionsPeak => Some(f.connections.peak as f64),
            Metric::MessagesReceived => Some(f.messages.received as f64),
            Metric::Throughput => Some(f.throughput_msg_per_s),
        }
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Metric::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Metric::ALL
                .iter()
                .map(|m| m.name())
                .chain(stampede_model::Counters::NAMES.iter().copied())
                .collect();
            serde::de::Error::custom(format!(
                "unknown threshold metric `{name}`; use one of: {}",
                known.join(", ")
            ))
        })
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Op::Lt => value < limit,
            Op::Le => value <= limit,
            Op::Gt => value > limit,
            Op::Ge => value >= limit,
        }
    }
}

/// `< 100`, `>= 0.99`, ...
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Condition {
    /// The comparison.
    pub op: Op,
    /// The limit.
    pub limit: f64,
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (op, rest) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
            .iter()
            .find_map(|(sym, op)| s.strip_prefix(sym).map(|rest| (*op, rest)))
            .ok_or_else(|| format!("{s:?}: write a comparison such as \"< 100\" or \">= 0.99\""))?;
        let limit: f64 = rest
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("{s:?}: the limit {:?} is not a number", rest.trim()))?;
        Ok(Condition { op, limit })
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.limit)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Evaluates one threshold on the figures of a run, a phase or a second; a
/// metric without a sample fails (an empty run proves nothing).
pub fn evaluate(metric: Metric, cond: Condition, figures: &Figures) -> ThresholdOutcome {
    let value = metric.value(figures);
    ThresholdOutcome {
        expression: format!("{metric} {cond}"),
        metric: metric.name().to_string(),
        op: cond.op.symbol().to_string(),
        limit: cond.limit,
        value,
        pass: value.is_some_and(|v| cond.op.holds(v, cond.limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conditions() {
        assert_eq!("< 100".parse::<Condition>(), Ok(Condition { op: Op::Lt, limit: 100.0 }));
        assert_eq!(">=0.99".parse::<Condition>(), Ok(Condition { op: Op::Ge, limit: 0.99 }));
        assert!("100".parse::<Condition>().is_err());
        assert!("< fast".parse::<Condition>().is_err());
        assert!("< inf".parse::<Condition>().is_err());
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            let parsed: Metric = serde_json::from_str(&format!("\"{}\"", m.name())).unwrap();
            assert_eq!(parsed, *m);
        }
    }
}
