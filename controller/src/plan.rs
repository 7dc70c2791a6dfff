//! The validated plan: the scenario with command-line overrides applied,
//! defaults filled in, cross-field rules checked, and the schedule derived
//! (phase start times and connection levels), plus how a phase's connections
//! are split across workers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_model::{Arrivals, Churn, ConnectSpec, Phase, Ramp, Shape, StageKind, TargetUrl, Wave};
use stampede_proto::fleet::PhaseStart;
use stampede_proto::{us, us_or_zero};
use stampede_relay::config::{DropAt, Faults, PubsubConfig, SlowWindow};

pub use crate::fleet_plan::{FleetPlan, LostPolicy, split};
pub use crate::overrides::Overrides;
use toml::Spanned;

use crate::scenario::{Count, PhasesSection, Scenario, ScenarioError, Seconds, TargetSection};
use crate::stages::{self, StressPlan};
use crate::threshold::{Condition, Metric};

/// Connections one local worker process takes at most before the fleet
/// grows by another process (one process may hold ~20,000 open files here).
pub const CONNECTIONS_PER_LOCAL_WORKER: u64 = 15_000;

/// Shortest message interval, s (a million messages per second per
/// connection).
pub const MIN_INTERVAL_S: f64 = stampede_model::limits::MIN_INTERVAL_US as f64 / 1e6;

/// Connections one bundled relay process serves at most, for the same reason.
pub const CONNECTIONS_PER_RELAY: u64 = 15_000;

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

/// One phase of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    /// Its name in metrics.csv, summary.json and logs (unique in the run).
    pub name: String,
    /// The stage kind that made it; `None`: the fixed `[phases]` table.
    pub kind: Option<StageKind>,
    /// Offset from the run start.
    pub start: Duration,
    /// Length.
    pub duration: Duration,
    /// How the connection count moves, from the phase's start (what its
    /// workers follow).
    pub shape: Shape,
    /// Connections replaced per second while the level holds.
    pub churn: Option<Churn>,
    /// Gets its own verdict from the thresholds over its seconds (the steps
    /// of `steps` and `stress` stages).
    pub judged: bool,
    /// The per-connection message interval of the phase under an open
    /// message model (`load.message_rate`); `None`: the run's.
    pub message_interval: Option<Duration>,
}

impl PhasePlan {
    /// Its name in files and logs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// End offset from the run start.
    pub fn end(&self) -> Duration {
        self.start + self.duration
    }

    fn level_at(&self, t: Duration) -> u64 {
        self.shape.level_at(t.saturating_sub(self.start))
    }

    /// Connections planned at the phase's start.
    pub fn from(&self) -> u64 {
        self.shape.level_at(Duration::ZERO)
    }

    /// Connections planned at the phase's end.
    pub fn to(&self) -> u64 {
        self.shape.level_at(self.duration)
    }

    /// Most connections the phase plans at once.
    pub fn peak(&self) -> u64 {
        self.shape.peak()
    }

    /// The part of this phase that group `g` of groups weighing `weights`
    /// runs: counts split by weight ([`crate::groups::by_weight`], so the
    /// groups' parts add up to the phase's), rates by the same fraction.
    pub fn part(&self, weights: &[u64], g: usize) -> PhasePlan {
        if weights.len() <= 1 {
            return self.clone();
        }
        let count = |n: u64| crate::groups::by_weight(n, weights)[g];
        let fraction = weights[g] as f64 / weights.iter().map(|w| *w as f64).sum::<f64>();
        let shape = match self.shape {
            Shape::Ramp(r) => Shape::Ramp(Ramp { from: count(r.from), to: count(r.to), ..r }),
            Shape::Wave(w) => Shape::Wave(Wave { from: count(w.from), to: count(w.to), ..w }),
            Shape::Arrivals(a) => Shape::Arrivals(Arrivals {
                from_rate: a.from_rate * fraction,
                rate: a.rate * fraction,
                max: count(a.max),
                ..a
            }),
        };
        let churn = self.churn.map(|c| Churn { per_s: c.per_s * fraction });
        PhasePlan { shape, churn, ..self.clone() }
    }

    /// What the phase does, in words, for test.log.
    pub fn describe(&self) -> String {
        let d = self.duration.as_secs_f64();
        let what = match self.shape {
            Shape::Ramp(r) => {
                format!("{} -> {} connections over {:.1} s", r.from, r.to, r.ramp.as_secs_f64())
            }
            Shape::Wave(w) => {
                format!("wave {} <-> {} connections every {:.1} s", w.from, w.to, w.period.as_secs_f64())
            }
            Shape::Arrivals(a) => format!(
                "arrivals {} -> {}/s, each session {:.1} s, at most {} open",
                a.from_rate,
                a.rate,
                a.session.as_secs_f64(),
                a.max
            ),
        };
        let churn = self.churn.map_or(String::new(), |c| format!(", churn {}/s", c.per_s));
        let interval = self
            .message_interval
            .map_or(String::new(), |iv| format!(", message interval {:.3} s", iv.as_secs_f64()));
        format!("{what}{churn}{interval}, lasts {d:.1} s")
    }

    /// The PhaseStart of each worker, `into` the phase (0 unless a worker
    /// rejoined): counts split by capacity ([`split`], so the shares add
    /// up to the fleet's), rates in proportion to each worker's share of the
    /// count they go with, so the fleet's rates are the phase's.
    pub fn commands(&self, index: usize, capacities: &[u64], into: Duration) -> Vec<PhaseStart> {
        let shares = |total: u64| split(total, capacities).unwrap_or_else(|| capacities.to_vec());
        let base = PhaseStart {
            index: index as u32,
            name: self.name.clone(),
            duration_us: us(self.duration),
            message_interval_us: us_or_zero(self.message_interval),
            offset_us: us(into),
            ..Default::default()
        };
        let part = |rate: f64, share: u64, total: u64| {
            if total > 0 { rate * share as f64 / total as f64 } else { 0.0 }
        };
        match self.shape {
            Shape::Ramp(r) => shares(r.to)
                .into_iter()
                .map(|share| PhaseStart {
                    connections: share,
                    ramp_us: us(r.ramp.saturating_sub(into)),
                    churn_per_s: self.churn.map_or(0.0, |c| part(c.per_s, share, r.to)),
                    ..base.clone()
                })
                .collect(),
            Shape::Wave(w) => shares(w.from)
                .into_iter()
                .zip(shares(w.to))
                .map(|(low, high)| PhaseStart {
                    connections: high,
                    wave_low: low,
                    wave_period_us: us(w.period),
                    ..base.clone()
                })
                .collect(),
            Shape::Arrivals(a) => shares(a.max)
                .into_iter()
                .map(|max| PhaseStart {
                    connections: max,
                    arrival_from_per_s: part(a.from_rate, max, a.max),
                    arrival_per_s: part(a.rate, max, a.max),
                    session_us: us(a.session),
                    duration_us: us(a.ramp),
                    ..base.clone()
                })
                .collect(),
        }
    }
}

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

        let target = match (&sc.target.url, sc.target.bundled) {
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
                    table_at("target"),
                    "[target] needs `url = \"ws://HOST:PORT/PATH\"` or `bundled = true`".into(),
                ));
            }
        };

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
        let target = match target {
            TargetPlan::Bundled { delay, faults, max_connections, pubsub, .. } => {
                let auto = peak.div_ceil(CONNECTIONS_PER_RELAY);
                if crate::messages::mode_of(sc).uses_channels() || !sc.flow.is_empty() {
                    // A pair's two sides, or a channel's publishers and
                    // subscribers, must meet in one relay process.
                    if let Some(Count(n)) = sc.target.bundled_processes.filter(|c| c.0 > 1) {
                        return Err(err(
                            table_at("target"),
                            format!(
                                "bundled_processes = {n}: channels live in one relay process, and pairs, \
                                 broadcast and flows use channels: leave bundled_processes out"
                            ),
                        ));
                    }
                    if auto > 1 {
                        return Err(err(
                            table_at("target"),
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
        };
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

#[cfg(test)]
pub(crate) mod tests;
