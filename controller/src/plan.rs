//! The validated plan: the scenario with command-line overrides applied,
//! defaults filled in, cross-field rules checked, and the schedule derived
//! (phase start times and connection levels), plus how a phase's connections
//! are split across workers.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scenario::{Count, Scenario, ScenarioError, Seconds};
use crate::threshold::{Condition, Metric};

/// Connections one local worker process takes at most before the fleet
/// grows by another process (one process may hold ~20,000 open files here).
pub const CONNECTIONS_PER_LOCAL_WORKER: u64 = 15_000;

/// Command-line values that replace the scenario's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--target URL`
    pub target: Option<String>,
    /// `--connections N`
    pub connections: Option<u64>,
    /// `--duration SECS` (the sustained phase)
    pub duration_s: Option<f64>,
    /// `--ramp-up SECS`
    pub ramp_up_s: Option<f64>,
    /// `--message-interval SECS`
    pub message_interval_s: Option<f64>,
    /// `--workers N`
    pub workers: Option<u64>,
    /// `--output DIR`
    pub output: Option<PathBuf>,
}

impl Overrides {
    /// Writes the overrides into the scenario, so the copy saved with the
    /// results is what actually ran.
    pub fn apply(&self, sc: &mut Scenario) {
        if let Some(url) = &self.target {
            sc.target.url = Some(toml::Spanned::new(0..0, url.clone()));
            sc.target.bundled = false;
        }
        if let Some(n) = self.connections {
            sc.load.connections = Count(n.max(1));
        }
        if let Some(s) = self.duration_s {
            sc.phases.sustained_s = Seconds(s);
        }
        if let Some(s) = self.ramp_up_s {
            sc.phases.ramp_up_s = Seconds(s);
        }
        if let Some(s) = self.message_interval_s {
            sc.load.message_interval_s = Seconds(s);
        }
        if let Some(n) = self.workers {
            sc.fleet.workers = Some(Count(n.max(1)));
        }
        if let Some(dir) = &self.output {
            sc.output.dir = dir.clone();
        }
    }
}

/// What the run loads.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetPlan {
    /// The bundled relay, started in-process, with this injected echo delay.
    Bundled {
        /// Injected echo delay.
        delay: Duration,
    },
    /// A server at this URL.
    Url(String),
}

/// One phase of the schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasePlan {
    /// `warmup`, `ramp-up`, `sustained` or `cooldown`.
    pub name: &'static str,
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
    /// End offset from the run start.
    pub fn end(&self) -> Duration {
        self.start + self.duration
    }

    fn level_at(&self, t: Duration) -> u64 {
        let done = t.saturating_sub(self.start);
        if self.ramp.is_zero() || done >= self.ramp {
            return self.to;
        }
        let f = done.as_secs_f64() / self.ramp.as_secs_f64();
        (self.from as f64 + (self.to as f64 - self.from as f64) * f).round() as u64
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
                let u = url.get_ref();
                if !u.starts_with("ws://") || u.len() <= "ws://".len() {
                    return Err(err(
                        url.span().start,
                        format!("target url {u:?} must start with ws:// (wss:// is not supported yet)"),
                    ));
                }
                TargetPlan::Url(u.clone())
            }
            (None, true) => TargetPlan::Bundled { delay: Duration::from_millis(sc.target.bundled_delay_ms) },
            (None, false) => {
                return Err(err(
                    table_at("target"),
                    "[target] needs `url = \"ws://HOST:PORT/PATH\"` or `bundled = true`".into(),
                ));
            }
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
        let mut push = |name, duration: Duration, to: u64, ramp: Duration| {
            if duration.is_zero() {
                return;
            }
            phases.push(PhasePlan { name, start, duration, from: level, to, ramp });
            start += duration;
            level = to;
        };
        push("warmup", secs(p.warmup_s), warmup_connections, secs(p.warmup_s));
        push("ramp-up", secs(p.ramp_up_s), connections, secs(p.ramp_up_s));
        push("sustained", secs(p.sustained_s), connections, Duration::ZERO);
        push("cooldown", secs(p.cooldown_s), 0, secs(p.cooldown_s));
        if phases.is_empty() {
            return Err(err(table_at("phases"), "every phase lasts 0 s: give the run some time".into()));
        }

        let peak = phases.iter().map(|p| p.to.max(p.from)).max().unwrap_or(0);
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
        if interval > 0.0 && interval < 0.001 {
            return Err(err(
                table_at("load"),
                "message_interval_s below 0.001 (1000 messages/s per connection) is not supported".into(),
            ));
        }

        Ok(Plan {
            name: sc.name.0.clone(),
            target,
            connections,
            message_interval: (interval > 0.0).then(|| Duration::from_secs_f64(interval)),
            payload_bytes: sc.load.payload_bytes.0,
            connect_timeout: secs(sc.load.connect_timeout_s).max(Duration::from_millis(1)),
            reconnect: sc.load.reconnect,
            buffer_bytes: sc.load.buffer_bytes.clamp(512, 1 << 20),
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
