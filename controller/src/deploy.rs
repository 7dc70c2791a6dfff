//! Fleet size and cost before a run, and the fleet's deployment: how many
//! workers a scenario needs and how much memory each (from the measured
//! memory per connection), how long they live at most and what that costs,
//! the scenario's cost limit, and `controller deploy kubernetes`, which
//! renders manifests for exactly that fleet ([`kubernetes`]).

use std::path::PathBuf;
use std::time::Duration;

use stampede_model::target::Scheme;

use crate::plan::{CONNECTIONS_PER_LOCAL_WORKER, Plan, TargetPlan};
use crate::{EXIT_CONFIG, EXIT_ERROR, EXIT_PASS};

pub mod kubernetes;
mod yaml;

pub use kubernetes::{RenderOptions, kubernetes_ready, render_kubernetes};

// Sizing rule. A worker needs BASELINE_MB, then per connection the idle
// cost measured for its scheme plus one message in flight (payload_bytes)
// and its read buffer (buffer_bytes), which the idle measurement does not
// hold, all times MARGIN. Connections per worker = the fewer of the cap
// (max_connections_per_worker, else CONNECTIONS_PER_LOCAL_WORKER: one
// process holds ~20,000 open files here) and what worker_memory_mb holds by
// this rule; workers = ceil(peak / connections per worker). KB and MB count
// as KiB and MiB, a few percent above the measurement's units. A check
// against a busy run (README "Measured here": 30,000 connections sending
// every 10 s on 2 workers, 133 MB RSS in all): the rule gives each worker's
// 15,000 connections 106 MB, so 128 MiB, where 67 MB were used.

/// Marginal RSS of one idle `ws://` connection in a worker, KB: 2,000 to
/// 10,000 idle connections in one release worker (README "Measured here",
/// `cargo bench -p stampede-worker --bench idle_wss`).
const IDLE_KB_WS: f64 = 2.9;
/// The same over `wss://` (rustls session state and the server's
/// certificate chain; README "Measured here").
const IDLE_KB_WSS: f64 = 7.1;
/// A worker before its first connection, MB. README measures 8.5 MB RSS
/// with one connection on 2 cores; a worker on a larger node runs a runtime
/// thread per core and keeps unacknowledged snapshots while its link is
/// down, so we allow 30 MB.
const BASELINE_MB: f64 = 30.0;
/// Over the measurement, which is idle connections on one quiet machine:
/// busy connections fragment the allocator and hold outstanding-echo state.
const MARGIN: f64 = 1.5;
/// Memory requests are rounded up to this many MiB.
const MEMORY_STEP_MB: u64 = 64;
/// Beyond the join timeout, what a fleet may take besides its schedule:
/// pods scheduled and the image pulled before the controller waits for its
/// workers, then the end (connections wait up to 1 s for their echoes,
/// workers send their last snapshots and close, the results are written).
pub const FINISH_ALLOWANCE: Duration = Duration::from_secs(120);

/// What limits the connections one worker is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// One process per 15,000 connections (the open-file limit).
    ProcessCap,
    /// The scenario's `max_connections_per_worker`.
    Scenario,
    /// What `worker_memory_mb` holds.
    Memory,
}

/// A scenario's fleet before it runs: size, memory, time and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Most connections the plan holds at once.
    pub peak: u64,
    /// Workers the run uses (`[fleet] workers`, or the local default).
    pub workers: u32,
    /// The fewest workers that hold the peak; 0 when one worker holds no
    /// connection at all (its memory is below [`BASELINE_MB`]).
    pub needed: u32,
    /// Most connections one worker is given.
    pub connections_per_worker: u64,
    /// What sets `connections_per_worker`.
    pub bound: Bound,
    /// Memory one connection is counted at, KB (margin included).
    pub kb_per_connection: f64,
    /// The target is `wss://`.
    pub tls: bool,
    /// Memory one worker gets, MiB: `worker_memory_mb`, else enough for
    /// `connections_per_worker`.
    pub memory_per_worker_mb: u64,
    /// Length of the schedule, s.
    pub planned_s: f64,
    /// Beyond the schedule, at most, s: the join timeout and
    /// [`FINISH_ALLOWANCE`].
    pub grace_s: f64,
    /// `planned_s + grace_s`: how long the fleet lives at most.
    pub duration_s: f64,
    /// `workers * duration_s` in hours.
    pub worker_hours: f64,
    /// `worker_hours * cost_per_worker_hour`, if the scenario gives a rate.
    pub cost: Option<f64>,
    /// The scenario's `[fleet]` values the estimate came from.
    pub fleet: FleetFacts,
}

/// The `[fleet]` values an [`Estimate`] depends on, to say where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetFacts {
    /// The workers dial in (`remote = true`); else local processes.
    pub remote: bool,
    /// How long the controller waits for its workers, s.
    pub join_timeout_s: f64,
    /// The memory is the scenario's `worker_memory_mb`.
    pub memory_given: bool,
    /// `cost_per_worker_hour`.
    pub cost_per_worker_hour: Option<f64>,
    /// `max_cost`.
    pub max_cost: Option<f64>,
}

/// The fleet `plan` needs and what it costs at most.
pub fn estimate(plan: &Plan) -> Estimate {
    let tls = match &plan.target {
        TargetPlan::Url(url) => stampede_model::TargetUrl::parse(url).is_ok_and(|u| u.scheme == Scheme::Wss),
        TargetPlan::Bundled { .. } => plan.bundled_tls,
    };
    let idle = if tls { IDLE_KB_WSS } else { IDLE_KB_WS };
    let in_flight = f64::from(plan.payload_bytes) + f64::from(plan.buffer_bytes);
    let kb_per_connection = (idle + in_flight / 1024.0) * MARGIN;
    let (cap, cap_bound) = match plan.fleet.max_connections_per_worker {
        Some(n) => (n, Bound::Scenario),
        None => (CONNECTIONS_PER_LOCAL_WORKER, Bound::ProcessCap),
    };
    let (connections_per_worker, bound, memory_per_worker_mb) = match plan.fleet.worker_memory_mb {
        Some(mb) => {
            let holds = connections_in(mb, kb_per_connection);
            if holds < cap { (holds, Bound::Memory, mb) } else { (cap, cap_bound, mb) }
        }
        None => (cap, cap_bound, memory_for(cap, kb_per_connection)),
    };
    let peak = plan.peak();
    let needed = match connections_per_worker {
        0 => 0,
        n => u32::try_from(peak.div_ceil(n).max(1)).unwrap_or(u32::MAX),
    };
    let planned_s = plan.duration().as_secs_f64();
    let grace_s = (plan.fleet.join_timeout + FINISH_ALLOWANCE).as_secs_f64();
    let duration_s = planned_s + grace_s;
    let workers = plan.fleet.workers;
    let worker_hours = f64::from(workers) * duration_s / 3600.0;
    Estimate {
        peak,
        workers,
        needed,
        connections_per_worker,
        bound,
        kb_per_connection,
        tls,
        memory_per_worker_mb,
        planned_s,
        grace_s,
        duration_s,
        worker_hours,
        cost: plan.fleet.cost_per_worker_hour.map(|rate| worker_hours * rate),
        fleet: FleetFacts {
            remote: plan.fleet.local.is_none(),
            join_timeout_s: plan.fleet.join_timeout.as_secs_f64(),
            memory_given: plan.fleet.worker_memory_mb.is_some(),
            cost_per_worker_hour: plan.fleet.cost_per_worker_hour,
            max_cost: plan.fleet.max_cost,
        },
    }
}

/// MiB a worker holding `connections` needs, rounded up to [`MEMORY_STEP_MB`].
fn memory_for(connections: u64, kb_per_connection: f64) -> u64 {
    let mb = BASELINE_MB + connections as f64 * kb_per_connection / 1024.0;
    (mb.ceil() as u64).div_ceil(MEMORY_STEP_MB).max(1) * MEMORY_STEP_MB
}

/// Connections `mb` MiB of worker memory holds.
fn connections_in(mb: u64, kb_per_connection: f64) -> u64 {
    ((mb as f64 - BASELINE_MB).max(0.0) * 1024.0 / kb_per_connection).floor() as u64
}

impl Estimate {
    /// Why this fleet cannot hold the plan's peak, and what to change.
    pub fn shortfall(&self) -> Option<String> {
        if self.needed == 0 {
            return Some(format!(
                "worker_memory_mb = {} holds no connection: a worker takes {BASELINE_MB} MB before its first \
                 and {:.1} KB for each; give at least {} MB",
                self.memory_per_worker_mb,
                self.kb_per_connection,
                memory_for(1, self.kb_per_connection)
            ));
        }
        if self.workers >= self.needed {
            return None;
        }
        let raise = match self.bound {
            Bound::Memory => ", or raise worker_memory_mb",
            Bound::Scenario => ", or raise max_connections_per_worker",
            Bound::ProcessCap => "",
        };
        Some(format!(
            "the peak of {} connections needs {} workers of at most {} connections ({}); the scenario has {}: \
             set [fleet] workers = {}{raise}",
            self.peak,
            self.needed,
            self.connections_per_worker,
            self.bound_words(),
            self.workers,
            self.needed
        ))
    }

    fn bound_words(&self) -> &'static str {
        match self.bound {
            Bound::ProcessCap => "one process per 15000",
            Bound::Scenario => "max_connections_per_worker",
            Bound::Memory => "what worker_memory_mb holds",
        }
    }

    /// The estimate in words, a line per subject, for `controller check`
    /// and the manifests' header.
    pub fn lines(&self) -> Vec<String> {
        let kind = match (self.fleet.remote, self.workers) {
            (true, 1) => "remote worker",
            (true, _) => "remote workers",
            (false, 1) => "local worker process",
            (false, _) => "local worker processes",
        };
        let scheme = if self.tls { "wss://" } else { "ws://" };
        let idle = if self.tls { IDLE_KB_WSS } else { IDLE_KB_WS };
        let memory_source = if self.fleet.memory_given {
            "worker_memory_mb".to_string()
        } else {
            format!("for {} connections", self.connections_per_worker)
        };
        let in_flight = self.kb_per_connection / MARGIN - idle;
        let mut lines = vec![
            format!(
                "fleet: {} {kind}, up to {} connections each ({}); the peak of {} needs {}",
                self.workers,
                self.connections_per_worker,
                self.bound_words(),
                self.peak,
                self.needed
            ),
            format!(
                "memory: {} MiB per worker ({memory_source}): {BASELINE_MB} MB + {:.1} KB per connection \
                 ({idle} KB idle on {scheme} as README \"Measured here\" + {in_flight:.1} KB in flight, x{MARGIN})",
                self.memory_per_worker_mb, self.kb_per_connection
            ),
            format!(
                "time: {:.0} s planned + {:.0} s grace (join timeout {:.0} s + {} s to start and finish) = \
                 {:.0} s at most: {:.2} worker-hours",
                self.planned_s,
                self.grace_s,
                self.fleet.join_timeout_s,
                FINISH_ALLOWANCE.as_secs(),
                self.duration_s,
                self.worker_hours
            ),
        ];
        if let (Some(cost), Some(rate)) = (self.cost, self.fleet.cost_per_worker_hour) {
            let limit = match self.fleet.max_cost {
                Some(max) if cost > max => format!(", above max_cost {max}"),
                Some(max) => format!(", max_cost {max}: ok"),
                None => String::new(),
            };
            lines.push(format!("cost: at most {cost:.2} ({rate} per worker-hour){limit}"));
        }
        lines
    }
}

/// Refuses a plan whose estimated cost is above its `max_cost`; the error
/// says the estimate, the limit and what to change.
pub fn check_cost(plan: &Plan) -> Result<(), String> {
    let e = estimate(plan);
    match (e.cost, e.fleet.max_cost, e.fleet.cost_per_worker_hour) {
        (Some(cost), Some(max), Some(rate)) if cost > max => Err(format!(
            "the estimated cost {cost:.2} is above max_cost {max}: {} workers x {:.2} h ({:.0} s planned + \
             {:.0} s grace) x {rate} per worker-hour; shorten the run, use fewer or cheaper workers, or raise \
             max_cost in [fleet]",
            e.workers,
            e.duration_s / 3600.0,
            e.planned_s,
            e.grace_s
        )),
        _ => Ok(()),
    }
}

/// `controller deploy ...`: what to render.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeployCommand {
    /// Print Kubernetes manifests for exactly the scenario's fleet (needs
    /// `[fleet] remote = true` and a target url).
    Kubernetes(KubernetesArgs),
}

/// Flags of `controller deploy kubernetes`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubernetesArgs {
    /// The scenario file (TOML).
    pub scenario: PathBuf,
    /// Container image holding the `controller` binary (deploy/Dockerfile).
    #[arg(long, value_name = "IMG", default_value = kubernetes::DEFAULT_IMAGE, value_parser = kubernetes::image)]
    pub image: String,
    /// Namespace of every object (default: kubectl's current one).
    #[arg(long, value_name = "NS", value_parser = kubernetes::namespace)]
    pub namespace: Option<String>,
    /// Write the manifests to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `controller deploy`: renders the manifests; returns the exit code (2 for
/// a bad scenario or one that cannot be deployed so, 1 if the output cannot
/// be written).
pub fn deploy_command(command: &DeployCommand) -> i32 {
    let DeployCommand::Kubernetes(args) = command;
    let loaded = crate::scenario::Scenario::load(&args.scenario)
        .and_then(|(sc, source)| crate::plan::Plan::new(&sc, &args.scenario, &source).map(|p| (p, source)));
    let (plan, source) = match loaded {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_CONFIG;
        }
    };
    if let Err(err) = kubernetes_ready(&plan) {
        eprintln!("error: {}: {err}", args.scenario.display());
        return EXIT_CONFIG;
    }
    let options = RenderOptions {
        image: args.image.clone(),
        namespace: args.namespace.clone(),
        scenario_text: source,
        scenario_path: args.scenario.display().to_string(),
    };
    let manifests = render_kubernetes(&plan, &options);
    match &args.output {
        None => {
            print!("{manifests}");
            EXIT_PASS
        }
        Some(path) => match std::fs::write(path, manifests) {
            Ok(()) => EXIT_PASS,
            Err(err) => {
                eprintln!("error: {}: cannot write: {err}", path.display());
                EXIT_ERROR
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::plan;

    /// A scenario of `connections` held for 600 s (with 10 s ramps), with
    /// `fleet` as its `[fleet]` table.
    fn scenario(url: &str, connections: u64, fleet: &str) -> Plan {
        plan(&format!(
            "name = \"k\"\n[target]\nurl = \"{url}\"\n[load]\nconnections = {connections}\n\
             [phases]\nwarmup_s = 0\nramp_up_s = 10\nsustained_s = 580\ncooldown_s = 10\n[fleet]\n{fleet}\n"
        ))
        .unwrap()
    }

    #[test]
    fn workers_follow_the_cap_or_the_memory_whichever_holds_fewer() {
        // Default cap: one process per 15,000 connections.
        let e = estimate(&scenario("ws://t:80/", 40_000, "remote = true\nworkers = 3"));
        assert_eq!(
            (e.connections_per_worker, e.bound, e.needed, e.workers),
            (15_000, Bound::ProcessCap, 3, 3)
        );
        // ws://: (2.9 KB + 576 B in flight) x 1.5 = 5.2 KB; 30 MB + 15,000 x 5.2 KB = 106 MB -> 128 MiB.
        assert!((e.kb_per_connection - 5.19375).abs() < 1e-9, "{}", e.kb_per_connection);
        assert_eq!(e.memory_per_worker_mb, 128);
        assert!(!e.tls);

        // The scenario's cap.
        let e = estimate(&scenario(
            "ws://t:80/",
            40_000,
            "remote = true\nworkers = 8\nmax_connections_per_worker = 5000",
        ));
        assert_eq!((e.connections_per_worker, e.bound, e.needed), (5_000, Bound::Scenario, 8));
        assert_eq!(e.memory_per_worker_mb, 64, "30 MB + 5,000 x 5.2 KB = 55 MB");

        // Memory: 256 MiB over wss:// holds (256 - 30) x 1024 / ((7.1 + 0.5625) x 1.5) = 20,137,
        // more than the cap; 128 MiB holds 8,731, fewer.
        let e = estimate(&scenario("wss://t/", 40_000, "remote = true\nworkers = 3\nworker_memory_mb = 256"));
        assert!(e.tls);
        assert_eq!(
            (e.connections_per_worker, e.bound, e.memory_per_worker_mb),
            (15_000, Bound::ProcessCap, 256)
        );
        let e = estimate(&scenario("wss://t/", 40_000, "remote = true\nworkers = 3\nworker_memory_mb = 128"));
        assert_eq!((e.connections_per_worker, e.bound, e.needed), (8_731, Bound::Memory, 5));
        let short = e.shortfall().unwrap();
        assert!(short.contains("needs 5 workers") && short.contains("set [fleet] workers = 5"), "{short}");
        assert!(short.contains("raise worker_memory_mb"), "{short}");

        // Too little memory for any connection.
        let e = estimate(&scenario("ws://t/", 10, "remote = true\nworkers = 1\nworker_memory_mb = 16"));
        assert_eq!((e.connections_per_worker, e.needed), (0, 0));
        assert!(e.shortfall().unwrap().contains("holds no connection"), "{:?}", e.shortfall());
    }

    #[test]
    fn duration_is_the_schedule_plus_a_stated_grace_and_cost_follows() {
        let e = estimate(&scenario(
            "ws://t/",
            1000,
            "remote = true\nworkers = 10\njoin_timeout_s = 60\ncost_per_worker_hour = 0.5\nmax_cost = 2",
        ));
        assert_eq!(e.planned_s, 600.0);
        assert_eq!(e.grace_s, 60.0 + FINISH_ALLOWANCE.as_secs_f64());
        assert_eq!(e.duration_s, 780.0);
        assert!((e.worker_hours - 10.0 * 780.0 / 3600.0).abs() < 1e-9);
        assert!((e.cost.unwrap() - e.worker_hours * 0.5).abs() < 1e-9);
        let lines = e.lines();
        assert!(lines[0].starts_with("fleet: 10 remote workers, up to 15000 connections each"), "{lines:?}");
        assert!(lines[2].starts_with("time: 600 s planned + 180 s grace (join timeout 60 s"), "{lines:?}");
        assert_eq!(lines[3], "cost: at most 1.08 (0.5 per worker-hour), max_cost 2: ok");
        // No rate: no cost.
        assert_eq!(estimate(&scenario("ws://t/", 1000, "remote = true\nworkers = 2")).cost, None);
    }

    #[test]
    fn max_cost_refuses_an_estimate_above_it_and_says_what_to_change() {
        // 10 workers x (600 + 150) s = 2.08 worker-hours at 1.0 = 2.08.
        let fleet = "remote = true\nworkers = 10\ncost_per_worker_hour = 1.0\nmax_cost = ";
        assert_eq!(check_cost(&scenario("ws://t/", 1000, &format!("{fleet}3"))), Ok(()));
        let err = check_cost(&scenario("ws://t/", 1000, &format!("{fleet}2"))).unwrap_err();
        for part in ["estimated cost 2.08 is above max_cost 2", "10 workers x 0.21 h", "raise max_cost"] {
            assert!(err.contains(part), "{part:?} in {err}");
        }
        // No limit, no refusal.
        assert_eq!(
            check_cost(&scenario("ws://t/", 1000, "remote = true\nworkers = 900\ncost_per_worker_hour = 9")),
            Ok(())
        );
    }
}
