//! The validated plan: the scenario with command-line overrides applied,
//! defaults filled in, cross-field rules checked, and the schedule derived
//! (phase start times and connection levels), plus how a phase's connections
//! are split across workers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use stampede_model::target::Scheme;
use stampede_model::{ConnectSpec, Phase, Ramp, TargetUrl};
use stampede_relay::config::{DropAt, Faults, SlowWindow};

pub use crate::overrides::Overrides;
use crate::scenario::{Count, Scenario, ScenarioError, Seconds, TargetSection};
use crate::threshold::{Condition, Metric};

/// Connections one local worker process takes at most before the fleet
/// grows by another process (one process may hold ~20,000 open files here).
pub const CONNECTIONS_PER_LOCAL_WORKER: u64 = 15_000;

/// Shortest message interval, s (1,000 messages per second per connection).
pub const MIN_INTERVAL_S: f64 = 0.001;

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
    },
    /// A server at this URL.
    Url(String),
}

/// One phase of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    /// Which phase.
    pub phase: Phase,
    /// Offset from the run start.
    pub start: Duration,
    /// Length.
    pub duration: Duration,
    /// Connections at the phase's start.
    pub from: u64,
    /// Connections at the end of its ramp.
    pub to: u64,
    /// Time to move from `from` to `to`.
    pub ramp: Duration,
}

impl PhasePlan {
    /// Its name in files and logs.
    pub fn name(&self) -> &'static str {
        self.phase.name()
    }

    /// End offset from the run start.
    pub fn end(&self) -> Duration {
        self.start + self.duration
    }

    /// The connection move this phase makes (what its workers follow).
    pub fn ramp(&self) -> Ramp {
        Ramp { from: self.from, to: self.to, ramp: self.ramp }
    }

    fn level_at(&self, t: Duration) -> u64 {
        self.ramp().level_at(t.saturating_sub(self.start))
    }
}

/// Who generates the load.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPlan {
    /// Start this many local worker processes; `None`: wait for remote ones.
    pub local: Option<u32>,
    /// Workers to wait for.
    pub workers: u32,
    /// Address of the fleet gRPC server.
    pub listen: SocketAddr,
    /// How long to wait for them.
    pub join_timeout: Duration,
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
    /// How connections are opened and what they do (sent to every worker).
    pub connect: ConnectSpec,
    /// Phases in order (zero-length ones left out).
    pub phases: Vec<PhasePlan>,
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
                let u = url.get_ref();
                let parsed = TargetUrl::parse(u).map_err(|e| err(url.span().start, e.to_string()))?;
                if parsed.scheme == Scheme::Wss {
                    return Err(err(
                        url.span().start,
                        format!("target url {u:?}: wss:// is not supported yet"),
                    ));
                }
                TargetPlan::Url(u.clone())
            }
            (None, true) => TargetPlan::Bundled {
                delay: Duration::from_millis(sc.target.bundled_delay_ms),
                processes: 0,
                faults: faults(&sc.target),
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
        let warmup_connections = match &sc.phases.warmup_connections {
            Some(w) if *w.get_ref() > connections || *w.get_ref() == 0 => {
                return Err(err(
                    w.span().start,
                    format!("warmup_connections must be between 1 and load.connections ({connections})"),
                ));
            }
            Some(w) => *w.get_ref(),
            None => (connections / 10).max(1),
        };

        let p = &sc.phases;
        let mut phases = Vec::new();
        let mut start = Duration::ZERO;
        let mut level = 0;
        let mut push = |phase, duration: Duration, to: u64, ramp: Duration| {
            if duration.is_zero() {
                return;
            }
            phases.push(PhasePlan { phase, start, duration, from: level, to, ramp });
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

        let peak = phases.iter().map(|p| p.to.max(p.from)).max().unwrap_or(0);
        let target = match target {
            TargetPlan::Bundled { delay, faults, .. } => {
                let auto = peak.div_ceil(CONNECTIONS_PER_RELAY);
                let processes = match sc.target.bundled_processes {
                    Some(Count(n)) => n,
                    None if auto <= 1 => 0,
                    None => auto,
                };
                TargetPlan::Bundled { delay, processes, faults }
            }
            url => url,
        };
        let f = &sc.fleet;
        let workers = match (f.workers, f.remote) {
            (Some(Count(n)), _) => n,
            (None, false) => peak.div_ceil(CONNECTIONS_PER_LOCAL_WORKER).max(1),
            (None, true) => {
                return Err(err(
                    table_at("fleet"),
                    "a remote fleet needs `workers = N`: how many workers to wait for".into(),
                ));
            }
        };
        let workers = u32::try_from(workers)
            .ok()
            .filter(|n| *n <= 1000)
            .ok_or_else(|| err(table_at("fleet"), format!("{workers} workers is more than 1000")))?;
        let default_listen = if f.remote { "0.0.0.0:7700" } else { "127.0.0.1:0" };
        let listen_text = f.listen.clone().unwrap_or_else(|| default_listen.to_string());
        let listen = listen_text.parse().map_err(|_| {
            err(table_at("fleet"), format!("listen {listen_text:?} is not an address like 0.0.0.0:7700"))
        })?;

        let interval = sc.load.message_interval_s.0;
        if interval > 0.0 && interval < MIN_INTERVAL_S {
            return Err(err(
                source.find("message_interval_s").unwrap_or_else(|| table_at("load")),
                format!(
                    "message_interval_s {interval}: give 0 (connect only) or at least {MIN_INTERVAL_S} s"
                ),
            ));
        }

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
            connect: ConnectSpec::default(),
            phases,
            thresholds: sc.thresholds.iter().map(|(m, c)| (*m, *c.get_ref())).collect(),
            fleet: FleetPlan {
                local: (!f.remote).then_some(workers),
                workers,
                listen,
                join_timeout: f.join_timeout_s.map_or(Duration::from_secs(30), secs),
            },
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
        self.phases.iter().map(|p| p.from.max(p.to)).max().unwrap_or(0)
    }
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
    keys.sort_by_key(|(_, at)| *at);
    keys
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

/// Splits `total` connections over workers in proportion to their
/// capacities (largest remainder), never giving one more than it can hold.
/// `None` if the fleet cannot hold them all.
pub fn split(total: u64, capacities: &[u64]) -> Option<Vec<u64>> {
    let room: u64 = capacities.iter().sum();
    if total > room {
        return None;
    }
    if total == 0 {
        return Some(vec![0; capacities.len()]);
    }
    let mut shares: Vec<u64> =
        capacities.iter().map(|&c| (u128::from(total) * u128::from(c) / u128::from(room)) as u64).collect();
    let mut left = total - shares.iter().sum::<u64>();
    // Hand out the rest by largest remainder, ties to the lower index.
    let mut order: Vec<usize> = (0..capacities.len()).collect();
    let remainder = |i: usize| u128::from(total) * u128::from(capacities[i]) % u128::from(room);
    order.sort_by_key(|&i| std::cmp::Reverse(remainder(i)));
    for i in order.into_iter().cycle() {
        if left == 0 {
            break;
        }
        if shares[i] < capacities[i] {
            shares[i] += 1;
            left -= 1;
        }
    }
    Some(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, ScenarioError> {
        let path = Path::new("t.toml");
        let sc = Scenario::parse(path, text)?;
        Plan::new(&sc, path, text)
    }

    #[test]
    fn every_example_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let (sc, source) = Scenario::load(&path).unwrap();
                Plan::new(&sc, &path, &source).unwrap_or_else(|e| panic!("{e}"));
                checked += 1;
            }
        }
        assert!(checked >= 3, "examples/ holds the scenarios");
    }

    #[test]
    fn split_follows_capacity_and_adds_up() {
        assert_eq!(split(100, &[1000, 1000]), Some(vec![50, 50]));
        assert_eq!(split(101, &[1000, 1000]), Some(vec![51, 50]));
        assert_eq!(split(90, &[2000, 1000]), Some(vec![60, 30]));
        assert_eq!(split(10, &[7, 3, 0]), Some(vec![7, 3, 0]));
        assert_eq!(split(0, &[5, 5]), Some(vec![0, 0]));
        assert_eq!(split(11, &[5, 5]), None);
        for total in 0..=300 {
            let caps = [97, 13, 200, 1];
            let shares = split(total, &caps).unwrap();
            assert_eq!(shares.iter().sum::<u64>(), total);
            assert!(shares.iter().zip(caps).all(|(s, c)| *s <= c), "{total}: {shares:?}");
        }
    }

    #[test]
    fn schedule_is_derived_from_the_phases() {
        let p = plan(
            "name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 100\n\
             [phases]\nwarmup_s = 4\nramp_up_s = 10\nsustained_s = 20\ncooldown_s = 0\n",
        )
        .unwrap();
        let names: Vec<_> = p.phases.iter().map(PhasePlan::name).collect();
        assert_eq!(names, ["warmup", "ramp-up", "sustained"]);
        assert_eq!(p.duration(), Duration::from_secs(34));
        assert_eq!(p.level_at(Duration::from_secs(2)), 5, "half of the 10% warmup");
        assert_eq!(p.level_at(Duration::from_secs(9)), 55, "half way up from 10 to 100");
        assert_eq!(p.level_at(Duration::from_secs(20)), 100);
        assert_eq!(p.level_at(Duration::from_secs(34)), 0, "after the end");
        assert_eq!(p.phase_at(Duration::from_secs(14)), 2);
        assert_eq!(p.peak(), 100);
        assert_eq!(p.fleet.local, Some(1));
    }

    #[test]
    fn local_fleet_grows_with_the_connection_count() {
        let p = plan("name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 40000\n").unwrap();
        assert_eq!(p.fleet.local, Some(3));
    }

    #[test]
    fn cross_field_errors_point_at_the_line() {
        let err =
            plan("name = \"s\"\n[target]\nbundled = true\nurl = \"ws://x/\"\n").unwrap_err().to_string();
        assert!(err.starts_with("t.toml:4:7: give either"), "{err}");
        let err = plan("name = \"s\"\n[target]\n").unwrap_err().to_string();
        assert!(err.starts_with("t.toml:2:1: [target] needs"), "{err}");
        let err = plan(
            "name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 5\n[phases]\nwarmup_connections = 6\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("t.toml:7:22: warmup_connections must be"), "{err}");
        let err =
            plan("name = \"s\"\n[target]\nbundled = true\n[fleet]\nremote = true\n").unwrap_err().to_string();
        assert!(err.contains("remote fleet needs `workers = N`"), "{err}");
        let err = plan(
            "name = \"s\"\n[target]\nbundled = true\n[phases]\nwarmup_s = 0\nramp_up_s = 0\nsustained_s = 0\ncooldown_s = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("every phase lasts 0 s"), "{err}");
    }

    #[test]
    fn values_are_checked_where_they_are_written() {
        for (text, at, says) in [
            ("name = \"a b\"\n[target]\nbundled = true\n", "t.toml:1:8", "names the results folder"),
            ("name = \"s\"\n[target]\nbundled = true\n[phases]\nsustained_s = -1\n", "t.toml:5:15", "-1"),
            (
                "name = \"s\"\n[target]\nbundled = true\n[load]\npayload_bytes = 10\n",
                "t.toml:5:17",
                "between 64",
            ),
            (
                "name = \"s\"\n[target]\nbundled = true\n[thresholds]\nerror_rate = \"< x\"\n",
                "t.toml:5:14",
                "not a number",
            ),
            (
                "name = \"s\"\n[target]\nbundled = true\n[surprise]\n",
                "t.toml:4:2",
                "unknown field `surprise`",
            ),
        ] {
            let err = plan(text).unwrap_err().to_string();
            assert!(err.starts_with(at) && err.contains(says), "{text:?} gave {err}");
        }
    }

    #[test]
    fn bundled_faults_reach_the_plan() {
        let p = plan(
            "name = \"s\"\n[target]\nbundled = true\n\
             bundled_fault_slow = { start_s = 30, length_s = 20, extra_ms = 50 }\n\
             bundled_fault_drop = { at_s = 60, fraction = 0.3 }\n\
             bundled_fault_leak_mb_per_min = 5.0\n",
        )
        .unwrap();
        let TargetPlan::Bundled { faults, .. } = p.target else { panic!("{:?}", p.target) };
        assert_eq!(
            faults,
            Faults {
                slow: Some(SlowWindow {
                    start: Duration::from_secs(30),
                    length: Duration::from_secs(20),
                    extra: Duration::from_millis(50),
                }),
                drop: Some(DropAt { at: Duration::from_secs(60), fraction: 0.3 }),
                leak_mb_per_min: Some(5.0),
                external_clock: false,
            }
        );
        let p = plan("name = \"s\"\n[target]\nbundled = true\n").unwrap();
        assert!(matches!(p.target, TargetPlan::Bundled { faults, .. } if faults == Faults::default()));
    }

    #[test]
    fn bad_fault_values_point_at_the_line() {
        let head = "name = \"s\"\n[target]\nbundled = true\n";
        for (line, at, says) in [
            ("bundled_fault_drop = { at_s = 60, fraction = 1.5 }", "t.toml:4:", "fraction 1.5"),
            ("bundled_fault_drop = { at_s = 60, fraction = 0 }", "t.toml:4:", "above 0 and at most 1"),
            ("bundled_fault_drop = { at_s = -1, fraction = 0.5 }", "t.toml:4:", "-1"),
            ("bundled_fault_drop = { at_s = 60 }", "t.toml:4:", "fraction"),
            ("bundled_fault_slow = { start_s = 1, length_s = 2, extra_ms = 0 }", "t.toml:4:", "extra_ms 0"),
            ("bundled_fault_slow = { start_s = 1, length_s = 0, extra_ms = 5 }", "t.toml:4:", "above 0"),
            ("bundled_fault_slow = { start_s = 1, length_s = 2, extra = 5 }", "t.toml:4:", "unknown field"),
            ("bundled_fault_leak_mb_per_min = -2", "t.toml:4:", "MB per minute"),
        ] {
            let err = plan(&format!("{head}{line}\n")).unwrap_err().to_string();
            assert!(err.starts_with(at) && err.contains(says), "{line:?} gave {err}");
        }
        let err = plan("name = \"s\"\n[target]\nurl = \"ws://x/\"\nbundled_fault_leak_mb_per_min = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t.toml:4:33: bundled_fault_leak_mb_per_min injects faults"), "{err}");
    }

    #[test]
    fn durations_take_units_and_errors_are_in_words() {
        let head = "name = \"s\"\n[target]\nbundled = true\n";
        let p = plan(&format!("{head}[phases]\nsustained_s = \"5m\"\nwarmup_s = \"1500ms\"\n")).unwrap();
        assert_eq!(p.phases[0].duration, Duration::from_millis(1500));
        assert_eq!(p.phases[2].duration, Duration::from_secs(300));
        for (text, at, says) in [
            ("[phases]\nsustained_s = \"20x\"", "t.toml:5:", "\"20x\" is not a duration"),
            ("[phases]\nsustained_s = true", "t.toml:5:", "true is not a duration"),
            ("[phases]\nsustained_s = \"8d\"", "t.toml:5:", "not a duration"),
            ("[phases]\nsustained_s = 700000", "t.toml:5:", "out of range"),
            ("[load]\nconnections = \"many\"", "t.toml:5:", "\"many\" is not a count"),
            ("[load]\nconnections = 0", "t.toml:5:", "at least 1"),
            ("[load]\nbuffer_bytes = 100", "t.toml:5:", "between 512 and 1048576"),
            ("[load]\nconnect_timeout_s = 0", "t.toml:5:", "above 0"),
            ("[load]\npayload_bytes = \"64\"", "t.toml:5:", "is not a number of bytes"),
            ("[load]\nmessage_interval_s = 0.0001", "t.toml:5:", "at least 0.001 s"),
        ] {
            let err = plan(&format!("{head}{text}\n")).unwrap_err().to_string();
            assert!(err.starts_with(at) && err.contains(says), "{text:?} gave {err}");
            assert!(!err.contains("invalid type"), "no serde internals: {err}");
        }
    }
}
