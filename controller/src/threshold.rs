//! Thresholds: conditions on the run's figures that decide PASS or FAIL.
//! Written in the scenario as `metric = "< limit"`; the metric names are a
//! closed set, so a misspelt one is an error at its line, never a silent pass.
//! One definition ([`evaluate`] on [`Figures`]) serves the whole run, each
//! judged phase (a step), and each second of a stress stage while it runs.
//! A flow's steps add metrics of their own (`step_<name>_p95_ms`, ...);
//! that the step exists is checked against the flow when the plan is built
//! ([`crate::flow`]).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use stampede_model::flow::MAX_STEP_NAME;
use stampede_model::results::{Figures, Percentiles, StepFigures, ThresholdOutcome};

macro_rules! metrics {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// A figure of the run a threshold can test.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Metric {
            $(#[doc = $doc] $variant,)*
            /// Any counter of the model, by its name (`messages_unmatched`,
            /// `messages_duplicated`, ...), summed over the run.
            Counter(&'static str),
            /// A figure of one step of the flow (`step_<name>_p95_ms`).
            Step(StepMetric),
        }

        impl Metric {
            /// Every figure besides the counters, in documentation order.
            pub const ALL: &[Metric] = &[$(Metric::$variant),*];

            /// The name used in scenarios and reports.
            pub fn name(self) -> &'static str {
                match self {
                    $(Metric::$variant => $name,)*
                    Metric::Counter(name) => name,
                    Metric::Step(step) => step.name(),
                }
            }

            /// What it measures.
            pub fn doc(self) -> &'static str {
                match self {
                    $(Metric::$variant => $doc,)*
                    Metric::Counter(_) => "a counter, summed over the run",
                    Metric::Step(step) => step.stat().doc(),
                }
            }

            /// The metric called `name`: a figure, else a counter, else a
            /// step's figure.
            pub fn from_name(name: &str) -> Option<Metric> {
                Metric::ALL.iter().copied().find(|m| m.name() == name).or_else(|| {
                    stampede_model::Counters::NAMES.iter().find(|n| **n == name).map(|n| Metric::Counter(n))
                }).or_else(|| StepMetric::parse(name)?.ok().map(Metric::Step))
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
            Metric::Step(step) => f.steps.get(step.step()).and_then(|s| step.stat().value(s)),
        }
    }
}

/// A figure of a flow step's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepStat {
    /// Median duration, ms.
    P50,
    /// 90th percentile duration, ms.
    P90,
    /// 95th percentile duration, ms.
    P95,
    /// 99th percentile duration, ms.
    P99,
    /// Slowest, ms.
    Max,
    /// Mean duration, ms.
    Mean,
    /// failed / (ok + failed).
    FailureRate,
    /// Successful runs.
    Ok,
    /// Failed runs.
    Failed,
}

impl StepStat {
    /// Every figure, in documentation order.
    pub const ALL: [StepStat; 9] = [
        StepStat::P50,
        StepStat::P90,
        StepStat::P95,
        StepStat::P99,
        StepStat::Max,
        StepStat::Mean,
        StepStat::FailureRate,
        StepStat::Ok,
        StepStat::Failed,
    ];

    /// What follows the step's name in the metric's name.
    pub fn suffix(self) -> &'static str {
        match self {
            StepStat::P50 => "_p50_ms",
            StepStat::P90 => "_p90_ms",
            StepStat::P95 => "_p95_ms",
            StepStat::P99 => "_p99_ms",
            StepStat::Max => "_max_ms",
            StepStat::Mean => "_mean_ms",
            StepStat::FailureRate => "_failure_rate",
            StepStat::Ok => "_ok",
            StepStat::Failed => "_failed",
        }
    }

    /// What it measures.
    pub fn doc(self) -> &'static str {
        match self {
            StepStat::P50 => "a flow step's median duration (successful runs), ms",
            StepStat::P90 => "a flow step's 90th percentile duration, ms",
            StepStat::P95 => "a flow step's 95th percentile duration, ms",
            StepStat::P99 => "a flow step's 99th percentile duration, ms",
            StepStat::Max => "a flow step's slowest successful run, ms",
            StepStat::Mean => "a flow step's mean duration, ms",
            StepStat::FailureRate => "a flow step's failed / (ok + failed) runs, 0..1",
            StepStat::Ok => "a flow step's successful runs, count",
            StepStat::Failed => "a flow step's failed runs, count",
        }
    }

    /// Its value in a step's figures; `None` without a sample.
    pub fn value(self, s: &StepFigures) -> Option<f64> {
        match self {
            StepStat::P50 => s.p50_ms,
            StepStat::P90 => s.p90_ms,
            StepStat::P95 => s.p95_ms,
            StepStat::P99 => s.p99_ms,
            StepStat::Max => s.max_ms,
            StepStat::Mean => s.mean_ms,
            StepStat::FailureRate => s.failure_rate,
            StepStat::Ok => Some(s.ok as f64),
            StepStat::Failed => Some(s.failed as f64),
        }
    }
}

/// `step_<name><suffix>`: a figure of the flow step called `name`. The
/// name is interned, so a metric stays `Copy` like the others (a scenario
/// names a few dozen at most; each distinct name is kept once per process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepMetric {
    name: &'static str,
    stat: StepStat,
}

/// The names of step metrics seen so far.
static STEP_METRICS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());

fn intern(name: &str) -> &'static str {
    let mut names = STEP_METRICS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = names.get(name) {
        return known;
    }
    let kept: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.insert(kept);
    kept
}

/// Whether `name` can name a flow step: 1 to [`MAX_STEP_NAME`] of `a-z`,
/// `0-9` and `_` (it becomes part of column and metric names).
pub fn valid_step_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_STEP_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl StepMetric {
    /// `None` when `name` is not a step metric's (no `step_` prefix); an
    /// error says what is wrong with one that has the prefix.
    pub fn parse(name: &str) -> Option<Result<StepMetric, String>> {
        let rest = name.strip_prefix("step_")?;
        let Some((step, stat)) =
            StepStat::ALL.iter().find_map(|s| rest.strip_suffix(s.suffix()).map(|step| (step, *s)))
        else {
            let suffixes: Vec<&str> = StepStat::ALL.iter().map(|s| s.suffix()).collect();
            return Some(Err(format!(
                "threshold metric `{name}`: a step's metric is step_<name> followed by one of {}",
                suffixes.join(", ")
            )));
        };
        if !valid_step_name(step) {
            return Some(Err(format!(
                "threshold metric `{name}`: `{step}` cannot be a step name (1 to {MAX_STEP_NAME} of a-z, 0-9, _)"
            )));
        }
        Some(Ok(StepMetric { name: intern(name), stat }))
    }

    /// The metric's name, `step_<name><suffix>`.
    pub fn name(self) -> &'static str {
        self.name
    }

    /// The step's name.
    pub fn step(self) -> &'static str {
        &self.name["step_".len()..self.name.len() - self.stat.suffix().len()]
    }

    /// Which figure of the step.
    pub fn stat(self) -> StepStat {
        self.stat
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if let Some(Err(e)) = StepMetric::parse(&name) {
            return Err(serde::de::Error::custom(e));
        }
        Metric::from_name(&name).ok_or_else(|| {
            let known: Vec<&str> = Metric::ALL
                .iter()
                .map(|m| m.name())
                .chain(stampede_model::Counters::NAMES.iter().copied())
                .collect();
            serde::de::Error::custom(format!(
                "unknown threshold metric `{name}`; use one of: {}, or a flow step's \
                 step_<name>_p95_ms (also _p50_ms, _p90_ms, _p99_ms, _max_ms, _mean_ms, _failure_rate, _ok, _failed)",
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
    fn step_metrics_name_a_step_and_one_of_its_figures() {
        let m: Metric = serde_json::from_str("\"step_tunnel_http_p95_ms\"").unwrap();
        let Metric::Step(s) = m else { panic!("{m:?}") };
        assert_eq!((s.step(), s.stat(), m.name()), ("tunnel_http", StepStat::P95, "step_tunnel_http_p95_ms"));
        for stat in StepStat::ALL {
            let name = format!("step_x_1{}", stat.suffix());
            let m = Metric::from_name(&name).unwrap();
            assert_eq!(
                (m.name(), m),
                (name.as_str(), Metric::Step(StepMetric::parse(&name).unwrap().unwrap()))
            );
            let Metric::Step(s) = m else { panic!() };
            assert_eq!((s.step(), s.stat()), ("x_1", stat));
        }
        // A step whose name ends like a figure: the last suffix decides.
        let Some(Metric::Step(s)) = Metric::from_name("step_a_ok_failed") else { panic!() };
        assert_eq!((s.step(), s.stat()), ("a_ok", StepStat::Failed));
        // Interned: one copy of a name, however often it is read.
        let (a, b) = (Metric::from_name("step_b_ok").unwrap(), Metric::from_name("step_b_ok").unwrap());
        assert!(std::ptr::eq(a.name(), b.name()));
        for (name, says) in [
            ("step_x_p42_ms", "followed by one of _p50_ms"),
            ("step_X_ok", "`X` cannot be a step name"),
            ("step__ok", "`` cannot be a step name"),
            ("steps_ok", "unknown threshold metric `steps_ok`"),
        ] {
            let err = serde_json::from_str::<Metric>(&format!("\"{name}\"")).unwrap_err().to_string();
            assert!(err.contains(says), "{name}: {err}");
        }
        assert!(Metric::from_name(&format!("step_{}_ok", "a".repeat(41))).is_none());
    }

    #[test]
    fn step_metrics_evaluate_on_the_steps_figures() {
        use stampede_model::results::{StepFigures, StepsFigures};
        let mut h = stampede_model::histogram::new_histogram();
        h.record_n(1_000, 90).unwrap();
        h.record_n(20_000, 10).unwrap();
        let figures = Figures {
            steps: StepsFigures(vec![
                ("tunnel_http".into(), StepFigures::of(100, 5, Some(&h))),
                ("established".into(), StepFigures::of(0, 3, None)),
                ("idle".into(), StepFigures::of(0, 0, None)),
            ]),
            ..Default::default()
        };
        let check = |metric: &str, cond: &str| {
            let out = evaluate(Metric::from_name(metric).unwrap(), cond.parse().unwrap(), &figures);
            assert_eq!(out.metric, metric);
            assert_eq!(out.expression, format!("{metric} {cond}"));
            (out.value, out.pass)
        };
        let (p95, pass) = check("step_tunnel_http_p95_ms", "< 25");
        assert!(pass && (p95.unwrap() - 20.0).abs() < 0.02, "{p95:?}");
        assert!(check("step_tunnel_http_p50_ms", "< 1.5").1);
        assert_eq!(check("step_tunnel_http_ok", ">= 100"), (Some(100.0), true));
        assert_eq!(check("step_tunnel_http_failed", "< 5"), (Some(5.0), false));
        let (rate, pass) = check("step_tunnel_http_failure_rate", "< 0.01");
        assert!(!pass && (rate.unwrap() - 5.0 / 105.0).abs() < 1e-12);
        // No successful run: no duration, so a duration threshold fails.
        assert_eq!(check("step_established_p99_ms", "< 1000"), (None, false));
        assert_eq!(check("step_established_failure_rate", "<= 1"), (Some(1.0), true));
        // Never ran: counts are 0, a rate has no value.
        assert_eq!(check("step_idle_ok", "< 1"), (Some(0.0), true));
        assert_eq!(check("step_idle_failure_rate", "< 1"), (None, false));
        // Not in these figures at all.
        assert_eq!(check("step_other_ok", ">= 0"), (None, false));
    }

    #[test]
    fn metric_names_round_trip() {
        for m in Metric::ALL {
            let parsed: Metric = serde_json::from_str(&format!("\"{}\"", m.name())).unwrap();
            assert_eq!(parsed, *m);
        }
    }
}
