//! The validated plan: the scenario with command-line overrides applied,
//! defaults filled in, cross-field rules checked, and the schedule derived
//! (phase start times and connection levels), plus how a phase's connections
//! are split across workers.

mod phase;
mod target;

use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_model::{ConnectSpec, Phase, Ramp, Shape};
use stampede_proto::fleet::PhaseStart;

use crate::scenario::{PhasesSection, Scenario, ScenarioError, Seconds};
use crate::stages::{self, StressPlan};
use crate::threshold::{Condition, Metric};

pub use crate::fleet_plan::{FleetPlan, LostPolicy, split};
pub use crate::overrides::Overrides;
pub use phase::PhasePlan;
pub use target::TargetPlan;

/// Connections one local worker process takes at most before the fleet
/// grows by another process (one process may hold ~20,000 open files here).
pub const CONNECTIONS_PER_LOCAL_WORKER: u64 = 15_000;

/// Shortest message interval, s (a million messages per second per
/// connection).
pub const MIN_INTERVAL_S: f64 = stampede_model::limits::MIN_INTERVAL_US as f64 / 1e6;

/// Connections one bundled relay process serves at most, for the same reason.
pub const CONNECTIONS_PER_RELAY: u64 = 15_000;

/// A validated scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Scenario name.
    pub name: String,
    /// Target.
    pub target: TargetPlan,
    /// The target's Prometheus endpoint, if the scenario names one.
    pub target_metrics: Option<String>,
    /// Connections of the sustained phase.
    pub connections: u64,
    /// Time between messages on a connection; `None`: connect only.
    pub message_interval: Option<Duration>,
    /// Message size, bytes.
    pub payload_bytes: u32,
    /// Connect + upgrade limit.
    pub connect_timeout: Duration,
    /// Replace failed and dropped connections.
    pub reconnect: bool,
    /// Per-connection read buffer, bytes.
    pub buffer_bytes: u32,
    /// How connections are opened and what they do (sent to every worker;
    /// a browser group's workers get its session instead).
    pub connect: ConnectSpec,
    /// Client groups (one native group without `[[group]]`): each phase's
    /// level is split over them by weight.
    pub groups: Vec<crate::groups::GroupPlan>,
    /// The bundled relay requires JWTs signed with this secret.
    pub bundled_jwt: Option<stampede_model::spec::Secret>,
    /// The bundled relay serves `wss://` with a CA made for the run (added
    /// to `connect.tls` once the relay is up).
    pub bundled_tls: bool,
    /// Phases in order (zero-length ones left out).
    pub phases: Vec<PhasePlan>,
    /// The stress stage, if the schedule has one.
    pub stress: Option<StressPlan>,
    /// PASS/FAIL conditions.
    pub thresholds: Vec<(Metric, Condition)>,
    /// The fleet.
    pub fleet: FleetPlan,
    /// Folder that holds results folders.
    pub output_dir: PathBuf,
}

fn secs(s: Seconds) -> Duration {
    Duration::from_secs_f64(s.0)
}

impl Plan {
    /// Derives the plan; errors point into `source` (the scenario text).
    pub fn new(sc: &Scenario, path: &Path, source: &str) -> Result<Plan, ScenarioError> {
        let table_at = |name: &str| source.find(&format!("[{name}]")).unwrap_or(0);
        let err = |at: usize, msg: String| ScenarioError::at(path, source, at, msg);

        let target = target::from_section(sc, path, source, &err)?;

        let target_metrics = match &sc.target.metrics_url {
            Some(url) if !crate::target_metrics::valid_url(url.get_ref()) => {
                return Err(err(
                    url.span().start,
                    format!(
                        "metrics_url {:?} must be an http:// URL such as http://host:9090/metrics",
                        url.get_ref()
                    ),
                ));
            }
            Some(url) => Some(url.get_ref().clone()),
            None => None,
        };

        let connections = sc.load.connections.0;
        let thresholds: Vec<(Metric, Condition)> =
            sc.thresholds.iter().map(|(m, c)| (*m, *c.get_ref())).collect();
        let (mut phases, stress) = match (&sc.phases, sc.stages.first()) {
            (Some(_), Some(_)) => {
                return Err(err(
                    table_at("phases"),
                    "give either [phases] or [[stage]] (a list of load shapes), not both; \
                     --duration and --ramp-up set [phases]"
                        .into(),
                ));
            }
            (_, None) => {
                let default = PhasesSection::default();
                let p = sc.phases.as_ref().unwrap_or(&default);
                (fixed_phases(p, connections, &err, &table_at)?, None)
            }
            (None, Some(_)) => {
                let cx = stages::Context { path, source, connections, thresholds: &thresholds };
                stages::expand(&sc.stages, &cx)?
            }
        };
        // `message_interval_s` has a default, so whether it was written is
        // read from the text (a key at the start of a line).
        let interval_key = key_at(source, "message_interval_s");
        let message_rate = match &sc.load.message_rate {
            Some(_) if interval_key.is_some() => {
                let at = interval_key.unwrap_or_default();
                return Err(err(
                    at,
                    "give either message_interval_s (per connection) or message_rate (the fleet's), not both"
                        .into(),
                ));
            }
            Some(rate) if rate.get_ref().0 <= 0.0 => {
                return Err(err(
                    rate.span().start,
                    "message_rate 0: give messages per second above 0".into(),
                ));
            }
            Some(rate) => Some(rate.get_ref().0),
            None => None,
        };
        // A fleet rate is at most 1,000,000 a second (`Rate`) and a phase
        // that sends has at least one connection: no phase's interval falls
        // under MIN_INTERVAL_S (1 us).
        if let Some(rate) = message_rate {
            for p in &mut phases {
                p.message_interval = phase_interval(p, rate);
            }
        }

        let peak = phases.iter().map(PhasePlan::peak).max().unwrap_or(0);
        let target = target::sized(target, sc, peak, &err, table_at("target"))?;
        let fleet = FleetPlan::new(&sc.fleet, peak, &|at, msg| err(at, msg), table_at("fleet"))?;

        // Under message_rate the run starts with its first phase's interval.
        let interval = match message_rate {
            Some(_) => phases.iter().find_map(|p| p.message_interval).map_or(0.0, |iv| iv.as_secs_f64()),
            None => sc.load.message_interval_s.0,
        };
        if interval > 0.0 && interval < MIN_INTERVAL_S {
            return Err(err(
                source.find("message_interval_s").unwrap_or_else(|| table_at("load")),
                format!(
                    "message_interval_s {interval}: give 0 (connect only) or at least {MIN_INTERVAL_S} s"
                ),
            ));
        }

        let mut connect = ConnectSpec::default();
        let src = crate::connect::Source { path, text: source };
        crate::connect::fill(&mut connect, &sc.target, &src)?;
        connect.session = crate::messages::session_spec(sc, path, source)?;
        let groups = crate::groups::groups(sc, path, source, &connect.session)?;
        crate::flow::check_step_thresholds(sc, path, source, &crate::groups::run_step_names(&groups))?;
        let mut fleet = fleet;
        if fleet.workers < groups.len() as u32 {
            match (fleet.local, sc.fleet.workers) {
                // A local fleet starts a worker per group at least.
                (Some(_), None) => {
                    fleet.workers = groups.len() as u32;
                    fleet.local = Some(fleet.workers);
                }
                _ => {
                    return Err(err(
                        table_at("fleet"),
                        format!(
                            "workers = {}: the {} groups need at least one worker each",
                            fleet.workers,
                            groups.len()
                        ),
                    ));
                }
            }
        }
        let sends = interval > 0.0 || phases.iter().any(|p| p.message_interval.is_some());
        if matches!(connect.session, stampede_model::spec::SessionSpec::Request(_)) && !sends {
            return Err(err(
                key_at(source, "mode").unwrap_or_else(|| table_at("messages")),
                "mode = \"request\" sends a request every message_interval_s, which is 0 (connect only): \
                 give message_interval_s (or message_rate)"
                    .into(),
            ));
        }
        crate::tls::fill(&mut connect.tls, &sc.target, path, source)?;
        let bundled_jwt = match &sc.target.bundled_jwt {
            Some(_) if !sc.target.bundled => {
                return Err(err(
                    table_at("target"),
                    "bundled_jwt configures the bundled relay: it needs `bundled = true`".into(),
                ));
            }
            Some(r) => Some(src.secret(r.get_ref(), r.span().start, "bundled_jwt")?),
            None => None,
        };

        Ok(Plan {
            name: sc.name.0.clone(),
            target,
            target_metrics,
            connections,
            message_interval: (interval > 0.0).then(|| Duration::from_secs_f64(interval)),
            payload_bytes: sc.load.payload_bytes.0,
            connect_timeout: Duration::from_secs_f64(sc.load.connect_timeout_s.0),
            reconnect: sc.load.reconnect,
            buffer_bytes: sc.load.buffer_bytes.0,
            connect,
            groups,
            bundled_jwt,
            bundled_tls: sc.target.bundled && sc.target.bundled_tls.as_ref().is_some_and(|b| *b.get_ref()),
            phases,
            stress,
            thresholds,
            fleet,
            output_dir: sc.output.dir.clone(),
        })
    }

    /// Length of the schedule.
    pub fn duration(&self) -> Duration {
        self.phases.last().map_or(Duration::ZERO, PhasePlan::end)
    }

    /// Index of the phase running at offset `t` (the last one after the end).
    pub fn phase_at(&self, t: Duration) -> usize {
        self.phases.iter().position(|p| t < p.end()).unwrap_or(self.phases.len() - 1)
    }

    /// Connections the plan asks for at offset `t`.
    pub fn level_at(&self, t: Duration) -> u64 {
        if t >= self.duration() {
            return 0;
        }
        self.phases[self.phase_at(t)].level_at(t)
    }

    /// Most connections the plan asks for at once.
    pub fn peak(&self) -> u64 {
        self.phases.iter().map(PhasePlan::peak).max().unwrap_or(0)
    }

    /// Whether a group runs browser sessions.
    pub fn has_browsers(&self) -> bool {
        self.groups.iter().any(|g| g.engine == crate::groups::EngineKind::Browser)
    }

    /// The groups' weights, in order.
    pub fn weights(&self) -> Vec<u64> {
        self.groups.iter().map(|g| g.weight).collect()
    }

    /// Phase `index` as group `g` runs it.
    pub fn group_phase(&self, index: usize, g: usize) -> PhasePlan {
        self.phases[index].part(&self.weights(), g)
    }

    /// The PhaseStart of each worker for phase `index`, `into` it: worker
    /// `i` runs group `groups[i]` and has room for `capacities[i]`; each
    /// group's part of the phase is split over its own workers.
    pub fn commands(
        &self,
        index: usize,
        groups: &[usize],
        capacities: &[u64],
        into: Duration,
    ) -> Vec<PhaseStart> {
        let mut out = vec![PhaseStart::default(); capacities.len()];
        for g in 0..self.groups.len().max(1) {
            let mine: Vec<u64> =
                capacities.iter().zip(groups).map(|(c, of)| if *of == g { *c } else { 0 }).collect();
            let commands = self.group_phase(index, g).commands(index, &mine, into);
            for (i, command) in commands.into_iter().enumerate() {
                if groups.get(i) == Some(&g) {
                    out[i] = command;
                }
            }
        }
        out
    }

    /// Most connections (or sessions) group `g` runs at once.
    pub fn group_peak(&self, g: usize) -> u64 {
        (0..self.phases.len()).map(|i| self.group_phase(i, g).peak()).max().unwrap_or(0)
    }

    /// Ends the stress stage's steps at `at` (a break was found while phase
    /// `current` runs): `current` is cut short, the steps after it are
    /// dropped, the stage's cooldown ramps down from the level reached, and
    /// every later phase moves earlier. Returns the indices of the dropped
    /// phases (none has started), or `None` when `current` is not a step of
    /// the stage (the break was found after it). `at` must lie after the
    /// start of `current`.
    pub fn end_stress_at(&mut self, current: usize, at: Duration) -> Option<std::ops::Range<usize>> {
        let stress = self.stress.as_ref()?;
        let cooldown = self.phases.iter().position(|p| p.name == stress.cooldown)?;
        let name = &self.phases.get(current)?.name;
        if current >= cooldown || !stress.steps.iter().any(|(n, _)| n == name) {
            return None;
        }
        let cut = &mut self.phases[current];
        cut.duration = at.saturating_sub(cut.start);
        let reached = cut.shape.level_at(cut.duration);
        let removed = current + 1..cooldown;
        self.phases.drain(removed.clone());
        let cooldown = &mut self.phases[current + 1];
        if let Shape::Ramp(r) = &mut cooldown.shape {
            r.from = reached;
        }
        let mut start = at;
        for p in &mut self.phases[current + 1..] {
            p.start = start;
            start += p.duration;
        }
        Some(removed)
    }
}

/// The fixed table's four phases (a phase of 0 s left out).
fn fixed_phases(
    p: &PhasesSection,
    connections: u64,
    err: &dyn Fn(usize, String) -> ScenarioError,
    table_at: &dyn Fn(&str) -> usize,
) -> Result<Vec<PhasePlan>, ScenarioError> {
    let warmup_connections = match &p.warmup_connections {
        Some(w) if *w.get_ref() > connections || *w.get_ref() == 0 => {
            return Err(err(
                w.span().start,
                format!("warmup_connections must be between 1 and load.connections ({connections})"),
            ));
        }
        Some(w) => *w.get_ref(),
        None => (connections / 10).max(1),
    };
    let mut phases = Vec::new();
    let mut start = Duration::ZERO;
    let mut level = 0;
    let mut push = |phase: Phase, duration: Duration, to: u64, ramp: Duration| {
        if duration.is_zero() {
            return;
        }
        phases.push(PhasePlan {
            name: phase.name().to_string(),
            kind: None,
            start,
            duration,
            shape: Shape::Ramp(Ramp { from: level, to, ramp }),
            churn: None,
            judged: false,
            message_interval: None,
        });
        start += duration;
        level = to;
    };
    push(Phase::Warmup, secs(p.warmup_s), warmup_connections, secs(p.warmup_s));
    push(Phase::RampUp, secs(p.ramp_up_s), connections, secs(p.ramp_up_s));
    push(Phase::Sustained, secs(p.sustained_s), connections, Duration::ZERO);
    push(Phase::Cooldown, secs(p.cooldown_s), 0, secs(p.cooldown_s));
    if phases.is_empty() {
        return Err(err(table_at("phases"), "every phase lasts 0 s: give the run some time".into()));
    }
    Ok(phases)
}

/// The per-connection interval that spreads `rate` messages per second
/// over the connections phase `p` plans at its peak (for arrivals: the
/// sessions Little's law expects at the full rate); `None` for a phase
/// without connections, which keeps the interval it finds.
fn phase_interval(p: &PhasePlan, rate: f64) -> Option<Duration> {
    let level = match p.shape {
        Shape::Arrivals(a) => {
            ((a.rate.max(a.from_rate) * a.session.as_secs_f64()).round() as u64).clamp(1, a.max)
        }
        shape => shape.peak(),
    };
    (level > 0).then(|| Duration::from_secs_f64(level as f64 / rate))
}

/// Where a line of `source` sets `key` (`key = ...`), if one does.
fn key_at(source: &str, key: &str) -> Option<usize> {
    let mut at = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(at + line.len() - trimmed.len());
        }
        at += line.len();
    }
    None
}

#[cfg(test)]
pub(crate) mod tests;
