//! What the run loads, as `[target]` says: a server's URL, or the bundled
//! relay with its delay, faults, channels and (from the plan's peak) how
//! many relay processes.

use std::path::Path;
use std::time::Duration;

use stampede_model::TargetUrl;
use stampede_relay::config::{DropAt, Faults, PubsubConfig, SlowWindow};
use toml::Spanned;

use super::CONNECTIONS_PER_RELAY;
use crate::scenario::{Count, Scenario, ScenarioError, TargetSection};

/// What the run loads.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetPlan {
    /// The bundled relay, started in-process, with this injected echo delay.
    Bundled {
        /// Injected echo delay.
        delay: Duration,
        /// Relay child processes to start; 0: one relay inside the controller.
        processes: u64,
        /// Faults to inject; their times count from the run's start.
        faults: Faults,
        /// Upgrades beyond this many open connections get 503; 0: no limit.
        max_connections: u64,
        /// Its channels: history and delivery faults.
        pubsub: PubsubConfig,
    },
    /// A server at this URL.
    Url(String),
}

/// The target `[target]` names, checked; errors point into `source`
/// (`err`) or, for a missing target, at the table.
pub(super) fn from_section(
    sc: &Scenario,
    path: &Path,
    source: &str,
    err: &impl Fn(usize, String) -> ScenarioError,
) -> Result<TargetPlan, ScenarioError> {
    let target_at = source.find("[target]").unwrap_or(0);
    Ok(match (&sc.target.url, sc.target.bundled) {
        (Some(url), true) => {
            return Err(err(
                url.span().start,
                "give either `url` or `bundled = true` in [target], not both".into(),
            ));
        }
        (Some(url), false) => {
            if let Some((key, at)) = fault_keys(&sc.target).into_iter().next() {
                return Err(err(
                    at,
                    format!(
                        "{key} injects faults into the bundled relay: it needs `bundled = true`, \
                         not a target url"
                    ),
                ));
            }
            let u = crate::connect::Source { path, text: source }.expand(url)?;
            TargetUrl::parse(&u).map_err(|e| err(url.span().start, e.to_string()))?;
            TargetPlan::Url(u)
        }
        (None, true) => TargetPlan::Bundled {
            delay: Duration::from_millis(sc.target.bundled_delay_ms),
            processes: 0,
            faults: faults(&sc.target),
            max_connections: sc.target.bundled_max_connections.as_ref().map_or(0, |m| m.get_ref().0),
            pubsub: pubsub(&sc.target, &err)?,
        },
        (None, false) => {
            return Err(err(
                target_at,
                "[target] needs `url = \"ws://HOST:PORT/PATH\"` or `bundled = true`".into(),
            ));
        }
    })
}

/// `target` sized for a plan whose peak is `peak` connections: the bundled
/// relay gets its processes (one per [`CONNECTIONS_PER_RELAY`] unless the
/// scenario says), and keys that need it are refused without it.
pub(super) fn sized(
    target: TargetPlan,
    sc: &Scenario,
    peak: u64,
    err: &impl Fn(usize, String) -> ScenarioError,
    target_at: usize,
) -> Result<TargetPlan, ScenarioError> {
    Ok(match target {
        TargetPlan::Bundled { delay, faults, max_connections, pubsub, .. } => {
            let auto = peak.div_ceil(CONNECTIONS_PER_RELAY);
            if crate::messages::mode_of(sc).uses_channels() || !sc.flow.is_empty() {
                // A pair's two sides, or a channel's publishers and
                // subscribers, must meet in one relay process.
                if let Some(Count(n)) = sc.target.bundled_processes.filter(|c| c.0 > 1) {
                    return Err(err(
                        target_at,
                        format!(
                            "bundled_processes = {n}: channels live in one relay process, and pairs, \
                             broadcast and flows use channels: leave bundled_processes out"
                        ),
                    ));
                }
                if auto > 1 {
                    return Err(err(
                        target_at,
                        format!(
                            "{peak} connections: channels live in one relay process, which holds at most \
                             {CONNECTIONS_PER_RELAY} here; point [target] url at a relay that can hold more"
                        ),
                    ));
                }
            }
            let processes = match (sc.target.bundled_processes, &sc.target.bundled_max_connections) {
                (Some(_), Some(max)) => {
                    return Err(err(
                        max.span().start,
                        "bundled_max_connections limits the one in-process relay: leave out bundled_processes"
                            .into(),
                    ));
                }
                // A limit counts one relay's connections; behind a
                // shared port each process would count its own.
                (None, Some(_)) => 0,
                (Some(Count(n)), None) => n,
                (None, None) if auto <= 1 => 0,
                (None, None) => auto,
            };
            TargetPlan::Bundled { delay, processes, faults, max_connections, pubsub }
        }
        url => {
            if let Some(max) = &sc.target.bundled_max_connections {
                return Err(err(
                    max.span().start,
                    "bundled_max_connections limits the bundled relay: it needs `bundled = true`".into(),
                ));
            }
            url
        }
    })
}

/// The fault keys present in `[target]`, with where their values start.
fn fault_keys(t: &TargetSection) -> Vec<(&'static str, usize)> {
    let mut keys = Vec::new();
    if let Some(v) = &t.bundled_fault_slow {
        keys.push(("bundled_fault_slow", v.span().start));
    }
    if let Some(v) = &t.bundled_fault_drop {
        keys.push(("bundled_fault_drop", v.span().start));
    }
    if let Some(v) = &t.bundled_fault_leak_mb_per_min {
        keys.push(("bundled_fault_leak_mb_per_min", v.span().start));
    }
    for (key, v) in [
        ("bundled_fault_duplicate", &t.bundled_fault_duplicate),
        ("bundled_fault_reorder", &t.bundled_fault_reorder),
    ] {
        if let Some(v) = v {
            keys.push((key, v.span().start));
        }
    }
    if let Some(v) = &t.bundled_history_messages {
        keys.push(("bundled_history_messages", v.span().start));
    }
    if let Some(v) = &t.bundled_history_age {
        keys.push(("bundled_history_age", v.span().start));
    }
    keys.sort_by_key(|(_, at)| *at);
    keys
}

/// The bundled relay's channels as `[target]` configures them.
fn pubsub(
    t: &TargetSection,
    err: &impl Fn(usize, String) -> ScenarioError,
) -> Result<PubsubConfig, ScenarioError> {
    let fraction = |v: &Option<Spanned<f64>>, key: &str| -> Result<Option<f64>, ScenarioError> {
        match v {
            Some(f) if !(0.0..=1.0).contains(f.get_ref()) => {
                Err(err(f.span().start, format!("{key}: give a share from 0 to 1, e.g. 0.01")))
            }
            Some(f) => Ok(Some(*f.get_ref())),
            None => Ok(None),
        }
    };
    let mut config = PubsubConfig {
        fault_duplicate: fraction(&t.bundled_fault_duplicate, "bundled_fault_duplicate")?,
        fault_reorder: fraction(&t.bundled_fault_reorder, "bundled_fault_reorder")?,
        ..PubsubConfig::default()
    };
    if let Some(n) = &t.bundled_history_messages {
        config.history_messages = usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| *n <= 1_000_000)
            .ok_or_else(|| err(n.span().start, "bundled_history_messages: give 0 to 1000000".into()))?;
    }
    if let Some(age) = &t.bundled_history_age {
        config.history_age = Duration::from_secs_f64(age.get_ref().0);
    }
    Ok(config)
}

/// The bundled relay's faults as `[target]` configures them.
fn faults(t: &TargetSection) -> Faults {
    Faults {
        slow: t.bundled_fault_slow.as_ref().map(|s| {
            let s = s.get_ref();
            SlowWindow {
                start: Duration::from_secs_f64(s.start_s.0),
                length: Duration::from_secs_f64(s.length_s.0),
                extra: Duration::from_secs_f64(s.extra_ms.0 / 1000.0),
            }
        }),
        drop: t.bundled_fault_drop.as_ref().map(|d| {
            let d = d.get_ref();
            DropAt { at: Duration::from_secs_f64(d.at_s.0), fraction: d.fraction.0 }
        }),
        leak_mb_per_min: t.bundled_fault_leak_mb_per_min.as_ref().map(|l| l.get_ref().0),
        external_clock: false,
    }
}
