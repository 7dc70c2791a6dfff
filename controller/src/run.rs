//! One run, start to end: start the target and the fleet, wait for the
//! workers, hand out the plan, send each phase on schedule, merge snapshots
//! as they come, and write the results, also when the run is interrupted or
//! aborted. All run state lives in this one task; the fleet server feeds it
//! events over a bounded channel.

use std::path::PathBuf;
use std::time::Duration;

use stampede_model::clock::RunClock;
use stampede_model::results::{Rebalance, Summary, WorkerInfo, WorkerLost};
use stampede_proto::fleet::{
    Assign, Hello, SnapshotAck, Stop, controller_message::Body as Cmd, worker_message::Body,
};
use stampede_proto::{us, us_or_zero};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use stampede_proto::auth::{FleetToken, TOKEN_ENV, TOKEN_FILE_ENV};
use stampede_proto::transport::ServerTls;

use crate::aggregate::Aggregator;
use crate::bundled::{Bundled, BundledError};
use crate::fleet::{self, FleetEvent};
use crate::local_fleet::{self, LocalFleet};
use crate::members::{Member, SILENT_AFTER, wait_for_workers};
use crate::plan::{LostPolicy, Overrides, Plan, TargetPlan, split};
use crate::progress::Progress;
use crate::results::{ResultsError, ResultsWriter, iso8601, unix_s};
use crate::scenario::{Scenario, ScenarioError};
use crate::stages::StressWatch;
use crate::summary::{self, RunFacts};
use crate::target_metrics::{self, TargetSample};
use stampede_relay::RelayConfig;
use stampede_relay::jwt::JwtSecret;

/// Time for workers to close their connections after Stop.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Attempts without a single success after which the target is declared
/// unreachable (or the planned peak, if smaller).
const UNREACHABLE_AFTER: u64 = 10;

/// What `controller run` was asked.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The scenario file.
    pub scenario: PathBuf,
    /// Command-line overrides.
    pub overrides: Overrides,
    /// The stampede executable that local workers and relay processes run
    /// as (`EXE worker ...`, `EXE relay ...`); default: this executable.
    pub executable: Option<PathBuf>,
    /// No progress lines and no summary on stderr.
    pub quiet: bool,
    /// The fleet token remote workers must prove (a local fleet gets a
    /// fresh random one).
    pub fleet_token: Option<FleetToken>,
    /// TLS for the fleet server (remote fleets).
    pub fleet_tls: Option<ServerTls>,
}

/// A finished run.
#[derive(Debug)]
pub struct RunOutcome {
    /// What summary.json holds.
    pub summary: Summary,
    /// The results folder.
    pub dir: PathBuf,
    /// Ended by Ctrl-C.
    pub interrupted: bool,
}

/// Why a run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad scenario.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// Results could not be written.
    #[error("cannot write results: {0}")]
    Results(#[from] ResultsError),
    /// The bundled relay would not start.
    #[error("cannot start the bundled relay: {0}")]
    Relay(#[from] BundledError),
    /// The fleet server would not start.
    #[error(transparent)]
    Serve(#[from] fleet::ServeError),
    /// Local workers would not start.
    #[error("cannot start local workers ({program}): {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The fleet is not fit for the run.
    #[error("{0}")]
    Fleet(String),
    /// The estimated cost is above the scenario's `max_cost`.
    #[error("{0}")]
    Cost(String),
    /// Interrupted before the run began.
    #[error("interrupted before the run started")]
    Interrupted,
}

/// Runs a scenario. Errors before the run starts are returned; once it has
/// started, every ending (schedule done, aborted, Ctrl-C) writes results.
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> Result<RunOutcome, RunError> {
    let (mut scenario, source) = Scenario::load(&opts.scenario)?;
    opts.overrides.apply(&mut scenario);
    let mut plan = Plan::new(&scenario, &opts.scenario, &source)?;
    let scenario_toml = toml::to_string_pretty(&scenario).unwrap_or_else(|_| source.clone());
    // Refused before anything starts, as `controller check` says.
    crate::deploy::check_cost(&plan).map_err(RunError::Cost)?;
    let services = CancellationToken::new();
    let _stop_services = services.clone().drop_guard();
    // The fleet server, its stream readers and the target scraper: stopped
    // and awaited when the run ends.
    let tasks = TaskTracker::new();

    let executable = match opts.executable.clone() {
        Some(exe) => exe,
        None => std::env::current_exe()
            .map_err(|source| RunError::Spawn { program: "controller".into(), source })?,
    };
    let (mut relay, target_url) = match &plan.target {
        TargetPlan::Bundled { delay, processes, faults, max_connections } => {
            let tls = if plan.bundled_tls { Some(crate::bundled::make_tls()?) } else { None };
            if let Some((ca, _)) = &tls {
                crate::tls::trust(&mut plan.connect.tls, ca);
            }
            let config = RelayConfig {
                delay: *delay,
                faults: faults.clone(),
                max_connections: usize::try_from(*max_connections).unwrap_or(usize::MAX),
                tls: tls.map(|(_, settings)| settings),
                jwt_secret: plan.bundled_jwt.as_ref().map(|s| JwtSecret::new(s.expose().as_bytes().to_vec())),
                ..RelayConfig::default()
            };
            let (relay, url) = Bundled::start(config, *processes, &executable, services.clone()).await?;
            (Some(relay), url)
        }
        TargetPlan::Url(url) => (None, url.clone()),
    };

    let (events_tx, mut events) = mpsc::channel(1024);
    let listen = plan.fleet.listen;
    // Worker certificates checked by TLS stand in for the token.
    let mutual_tls = opts.fleet_tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    let token = match (plan.fleet.local, &opts.fleet_token) {
        (Some(_), _) => Some(FleetToken::random()),
        (None, Some(token)) => Some(token.clone()),
        (None, None) if listen.ip().is_loopback() || mutual_tls => None,
        (None, None) => {
            return Err(RunError::Fleet(format!(
                "a remote fleet listening on {listen} needs a fleet token, or anyone who reaches the port \
                 commands the fleet: give --token-file FILE (or {TOKEN_FILE_ENV} / {TOKEN_ENV}) here and to \
                 every worker, or require worker certificates (--fleet-client-ca)"
            )));
        }
    };
    let tls = opts.fleet_tls.as_ref().filter(|_| plan.fleet.local.is_none());
    let addr = fleet::serve(listen, token.clone(), tls, events_tx, services.clone(), &tasks).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut local = match plan.fleet.local {
        Some(n) => Some(
            LocalFleet::spawn(&executable, n, &format!("http://{addr}"), token.as_ref(), &target_url)
                .map_err(|source| RunError::Spawn { program: executable.clone(), source })?,
        ),
        None => {
            eprintln!("waiting for {} workers to join at {scheme}://{addr} ...", plan.fleet.workers);
            None
        }
    };
    let progress = Progress::new(opts.quiet);
    progress.line(format!(
        "stampede: {} -> {target_url}: {} connections, {:.0} s, {} worker(s)",
        plan.name,
        plan.peak(),
        plan.duration().as_secs_f64(),
        plan.fleet.workers
    ));

    // What a remote fleet costs, said before it starts (a local fleet
    // costs nothing extra); test.log gets it too.
    let estimate =
        if plan.fleet.local.is_none() { crate::deploy::estimate(&plan).lines() } else { Vec::new() };
    for line in &estimate {
        progress.line(line.clone());
    }
    let members = wait_for_workers(&plan, &mut events, &mut local, &shutdown).await?;
    let capacities: Vec<u64> = members.iter().map(Member::room).collect();
    if split(plan.peak(), &capacities).is_none() {
        return Err(RunError::Fleet(format!(
            "the fleet can hold {} connections, the scenario needs {}: add workers (--workers or [fleet] workers)",
            capacities.iter().sum::<u64>(),
            plan.peak()
        )));
    }

    let clock = RunClock::starting_in(Duration::from_millis(200));
    let run_start = Instant::from_std(clock.mono);
    let run_start_wall = clock.wall;
    let run_start_us = clock.unix_us();
    let writer = ResultsWriter::create(&plan.output_dir, &plan.name, run_start_wall, &scenario_toml)?;
    let run_id = format!("{}-{}", plan.name, run_start_us);
    if let Some(relay) = &mut relay {
        // Fault times count from the run's start, not the relay's.
        relay.start_fault_clock(run_start.into_std(), run_start_wall).await;
    }
    let (target_tx, target_rx) = mpsc::channel(8);
    let metrics_url = plan.target_metrics.clone().or_else(|| relay.as_ref().and_then(Bundled::metrics_url));
    if let Some(url) = metrics_url {
        tasks.spawn(target_metrics::scrape(url, run_start, target_tx, services.clone()));
    }
    let sources = match plan.fleet.local {
        Some(_) => local_fleet::loopback_sources(&target_url, members.len()),
        None => Vec::new(),
    };
    let ids: Vec<String> = members.iter().map(|m| m.hello.worker_id.clone()).collect();
    let assign = Assign {
        run_id: run_id.clone(),
        target_url: target_url.clone(),
        message_interval_us: us_or_zero(plan.message_interval),
        payload_bytes: plan.payload_bytes,
        connect_timeout_us: us(plan.connect_timeout),
        run_start_unix_us: run_start_us,
        clock_offset_us: 0,
        source_addresses: Vec::new(),
        reconnect: plan.reconnect,
        buffer_bytes: plan.buffer_bytes,
        connect_spec_json: plan.connect.to_json(),
    };
    let mut unassigned = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let sent = m.send(Cmd::Assign(Assign {
            clock_offset_us: m.offset_us,
            source_addresses: sources.get(i).cloned().unwrap_or_default(),
            ..assign.clone()
        }));
        if !sent {
            unassigned.push(i);
        }
    }
    let mut run = Running {
        stress: plan.stress.as_ref().map(|s| StressWatch::new(s, &plan.thresholds)),
        plan: plan.clone(),
        members,
        agg: Aggregator::new(&plan, &ids, clock),
        target_rx,
        writer,
        run_start,
        run_id,
        next_phase: 0,
        stopping: None,
        aborted: None,
        progress,
        lost: Vec::new(),
        rebalanced: Vec::new(),
        unbalanced: Vec::new(),
        assign,
    };
    run.log(format!("run {} started with {} workers", run.run_id, run.members.len())).await;
    for line in estimate {
        run.log(format!("fleet estimate: {line}")).await;
    }
    if plan.connect.tls.insecure_skip_verify {
        // Said even with --quiet: a run that trusts anything should not look
        // like one that checked.
        eprintln!("{}", crate::tls::INSECURE_WARNING);
        run.log(crate::tls::INSECURE_WARNING.to_string()).await;
    }
    for i in unassigned {
        run.lose(i, "its assignment could not be delivered").await;
    }
    let interrupted = run.drive(&mut events, &shutdown).await;

    for m in &mut run.members {
        m.link = None; // ends the streams: workers see the run is over
    }
    if let Some(local) = local {
        local.finish(Duration::from_secs(5)).await;
    }
    services.cancel();
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await.is_err() {
        tracing::warn!("fleet server tasks still running 5 s after the run");
    }
    let duration_s = run.run_start.elapsed().as_secs_f64();
    let facts = RunFacts {
        target: target_url,
        started_at: iso8601(unix_s(run_start_wall)),
        duration_s,
        workers: run
            .members
            .iter()
            .zip(&run.agg.snapshots)
            .map(|(m, n)| WorkerInfo {
                id: m.hello.worker_id.clone(),
                hostname: m.hello.hostname.clone(),
                max_connections: m.capacity,
                snapshots: *n,
            })
            .collect(),
        aborted: run.aborted.clone(),
        workers_lost: run.lost.clone(),
        rebalanced: run.rebalanced.clone(),
    };
    let mut summary = summary::build(&run.plan, &run.agg, facts);
    if let Some(watch) = &run.stress {
        summary.breaking_point = Some(watch.found.clone());
        summary.breaking_point_reason = Some(watch.reason(summary.aborted.is_some()));
    }
    let human = summary::render(&summary, run.writer.dir());
    // The verdict is printed even when a results file could not be written.
    if !opts.quiet {
        eprintln!("\n{human}");
    }
    // A results file that could not be written was reported on stderr as it
    // happened; the verdict still stands and decides the exit code.
    let dir = run.writer.dir().to_path_buf();
    let _ = run.writer.finish(&summary, &run.agg.rows, human).await;
    if let Some(relay) = relay {
        relay.finish().await;
    }
    Ok(RunOutcome { summary, dir, interrupted })
}

/// The state of a run in progress.
struct Running {
    /// The plan, as the run changes it (a stress stage that breaks ends
    /// early).
    plan: Plan,
    /// The stress stage, judged second by second.
    stress: Option<StressWatch>,
    members: Vec<Member>,
    agg: Aggregator,
    target_rx: mpsc::Receiver<(u64, TargetSample)>,
    writer: ResultsWriter,
    run_start: Instant,
    run_id: String,
    next_phase: usize,
    stopping: Option<Instant>,
    aborted: Option<String>,
    progress: Progress,
    /// Workers lost so far, in order.
    lost: Vec<stampede_model::results::WorkerLost>,
    /// Each time the load was spread anew.
    rebalanced: Vec<Rebalance>,
    /// Fleet changes not rebalanced yet.
    unbalanced: Vec<String>,
    /// What every worker is assigned (a late joiner gets it too, with its
    /// own clock offset).
    assign: Assign,
}

impl Running {
    fn elapsed_s(&self) -> f64 {
        Instant::now().saturating_duration_since(self.run_start).as_secs_f64()
    }

    async fn log(&self, what: String) {
        let line = format!("[{:>8.1} s] {what}", self.elapsed_s());
        tracing::info!("{what}");
        self.writer.log(line).await;
    }

    /// Runs the schedule to its end; returns whether Ctrl-C ended it.
    async fn drive(&mut self, events: &mut mpsc::Receiver<FleetEvent>, shutdown: &CancellationToken) -> bool {
        let mut interrupted = false;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            // Read each time: a stress stage that breaks shortens the plan.
            let end = self.run_start + self.plan.duration();
            let next_phase_at =
                self.plan.phases.get(self.next_phase).map_or(end, |p| self.run_start + p.start);
            tokio::select! {
                _ = shutdown.cancelled(), if self.stopping.is_none() => {
                    interrupted = true;
                    self.abort("interrupted (Ctrl-C or SIGTERM)".into()).await;
                }
                _ = sleep_until(next_phase_at), if self.stopping.is_none() => {
                    if self.next_phase < self.plan.phases.len() {
                        self.start_phase(self.next_phase, Duration::ZERO).await;
                        self.next_phase += 1;
                    } else {
                        self.log("schedule complete: stopping workers".into()).await;
                        self.stop("schedule complete");
                    }
                }
                event = events.recv() => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                Some((second, sample)) = self.target_rx.recv() => self.agg.add_target(second, sample),
                _ = tick.tick() => {
                    self.write_rows(false).await;
                    self.check_silence().await;
                    self.check_health().await;
                    if self.stopping.is_some_and(|deadline| Instant::now() >= deadline) {
                        self.log("stop grace over: workers still running are left behind".into()).await;
                        break;
                    }
                }
            }
            self.settle().await;
            if self.stopping.is_some() && self.members.iter().all(|m| m.finished || m.link.is_none()) {
                break;
            }
        }
        self.write_rows(true).await;
        interrupted
    }

    async fn start_phase(&mut self, index: usize, elapsed_in_phase: Duration) {
        let phase = &self.plan.phases[index];
        let capacities: Vec<u64> = self.members.iter().map(Member::room).collect();
        let commands = phase.commands(index, &capacities, elapsed_in_phase);
        let started = format!("phase {} started: {}", phase.name(), phase.describe());
        let mut undelivered = Vec::new();
        for (i, (m, command)) in self.members.iter().zip(commands).enumerate() {
            if m.live() && !m.send(Cmd::PhaseStart(command)) {
                undelivered.push(i);
            }
        }
        for i in undelivered {
            self.lose(i, "a phase command could not be delivered").await;
        }
        self.log(started).await;
    }

    /// A stress stage broke: say so, and unless the run is past the
    /// stage's steps, end them now and start its cooldown within the second.
    async fn stress_broke(&mut self, bp: stampede_model::results::BreakingPoint) {
        let value = bp.failing_value.map_or("no data".into(), |v| format!("{v:.4}"));
        let line = format!(
            "stress: breaking point {} connections: {} failed from second {} at the {}-connection step (last value {value})",
            bp.connections, bp.expression, bp.at_s, bp.broke_at_connections
        );
        self.progress.line(line.clone());
        self.log(line).await;
        let Some(current) = self.next_phase.checked_sub(1) else { return };
        if self.stopping.is_some() {
            return;
        }
        // The next whole second: after the current phase's start, since
        // that lies in the past.
        let at = Duration::from_secs(self.elapsed_s().floor() as u64 + 1);
        if let Some(removed) = self.plan.end_stress_at(current, at) {
            self.agg.replan(&self.plan, removed);
            let cooldown = &self.plan.phases[current + 1];
            self.log(format!(
                "stress: steps end at {:.0} s, then {} ({})",
                at.as_secs_f64(),
                cooldown.name,
                cooldown.describe()
            ))
            .await;
        }
    }

    fn stop(&mut self, reason: &str) {
        for m in &mut self.members {
            if !m.send(Cmd::Stop(Stop { reason: reason.to_string() })) {
                // It cannot hear us: do not wait for it to finish.
                m.link = None;
            }
        }
        self.stopping = Some(Instant::now() + STOP_GRACE);
    }

    /// Marks worker `i` lost: rows stop waiting for it, its link is
    /// dropped (a worker that still hears will rejoin), and its share goes
    /// to the others or the run aborts, as the scenario says.
    async fn lose(&mut self, i: usize, reason: &str) {
        let m = &mut self.members[i];
        m.link = None;
        if m.finished {
            return;
        }
        self.agg.set_live(i, false);
        let id = m.hello.worker_id.clone();
        let at_s = self.elapsed_s();
        self.lost.push(WorkerLost { id: id.clone(), at_s, reason: reason.to_string(), back_at_s: None });
        self.progress.line(format!("worker {id} lost at {at_s:.1} s: {reason}"));
        self.log(format!("worker {id} lost: {reason}")).await;
        if self.stopping.is_some() {
            return;
        }
        match self.plan.fleet.on_worker_lost {
            LostPolicy::Abort => {
                self.abort(format!("worker {id} lost ({reason}) and on_worker_lost = \"abort\"")).await;
            }
            LostPolicy::Rebalance => self.unbalanced.push(format!("{id} lost")),
        }
    }

    /// Rebalances for what changed in the fleet since the last time (a
    /// rebalance may lose a worker it cannot reach: then once more).
    async fn settle(&mut self) {
        while !self.unbalanced.is_empty() {
            let reason = std::mem::take(&mut self.unbalanced).join(", ");
            self.rebalance(reason).await;
        }
    }

    /// Spreads the current phase anew over the live workers, `into` the
    /// phase: each moves from where it is to its new share.
    async fn rebalance(&mut self, reason: String) {
        let Some(current) = self.next_phase.checked_sub(1) else { return };
        if self.stopping.is_some() || self.members.iter().all(|m| !m.live()) {
            return;
        }
        let phase = &self.plan.phases[current];
        let into = self.run_start.elapsed().saturating_sub(phase.start);
        let planned = phase.peak();
        let room: u64 = self.members.iter().map(Member::room).sum();
        let capacities: Vec<u64> = self.members.iter().map(Member::room).collect();
        let shares = split(planned, &capacities).unwrap_or(capacities);
        let connections: std::collections::BTreeMap<String, u64> = self
            .members
            .iter()
            .zip(&shares)
            .filter(|(m, _)| m.live())
            .map(|(m, n)| (m.hello.worker_id.clone(), *n))
            .collect();
        let unplaced = planned.saturating_sub(room);
        let listed: Vec<String> = connections.iter().map(|(w, n)| format!("{w} {n}")).collect();
        let short =
            if unplaced > 0 { format!("; {unplaced} connections have no room") } else { String::new() };
        let line = format!("rebalanced after {reason}: {}{short}", listed.join(", "));
        self.progress.line(line.clone());
        self.log(line).await;
        self.rebalanced.push(Rebalance {
            at_s: self.elapsed_s(),
            reason,
            phase: phase.name().to_string(),
            connections,
            unplaced,
        });
        self.start_phase(current, into).await;
    }

    async fn abort(&mut self, why: String) {
        if self.stopping.is_some() {
            return;
        }
        self.log(format!("aborting: {why}")).await;
        self.progress.line(format!("aborting: {why}"));
        self.aborted = Some(why.clone());
        self.stop(&why);
    }

    fn member(&self, id: &str) -> Option<usize> {
        self.members.iter().position(|m| m.hello.worker_id == id)
    }

    async fn on_event(&mut self, event: FleetEvent) {
        match event {
            FleetEvent::Message { worker, session, body } => {
                let current = |m: &Member| m.session == session && m.link.is_some();
                let Some(i) = self.member(&worker).filter(|&i| current(&self.members[i])) else {
                    return; // an earlier stream, or a worker taken as lost
                };
                self.members[i].last_heard = Instant::now();
                match body {
                    Body::Snapshot(snap) => self.on_snapshot(i, snap).await,
                    Body::Finished(_) => {
                        self.members[i].finished = true;
                        self.log(format!("worker {worker} finished")).await;
                    }
                    Body::Error(err) if err.fatal => {
                        let message: String = err.message.chars().take(1000).collect();
                        self.abort(format!("worker {worker}: {message}")).await;
                    }
                    Body::Error(err) => {
                        let message: String = err.message.chars().take(1000).collect();
                        self.log(format!("worker {worker}: {message}")).await;
                    }
                    Body::PhaseAck(_) | Body::Hello(_) | Body::Heartbeat(_) => {}
                }
            }
            FleetEvent::Refused { peer, reason } => {
                self.log(format!("refused a worker from {peer}: {reason}")).await;
            }
            FleetEvent::Left { worker, session, reason } => {
                let Some(i) = self.member(&worker) else { return };
                let m = &self.members[i];
                if m.session == session && m.link.is_some() {
                    self.lose(i, &reason).await;
                }
            }
            FleetEvent::Joined { session, hello, link, offset_us } => {
                self.on_join(session, hello, link, offset_us).await
            }
        }
    }

    async fn on_snapshot(&mut self, i: usize, snap: stampede_proto::fleet::Snapshot) {
        let worker = self.members[i].hello.worker_id.clone();
        if snap.run_id != self.run_id {
            // An outbox from another run: acknowledged so the worker drops
            // it, never counted here.
            let run: String = snap.run_id.chars().take(100).collect();
            self.log(format!("worker {worker}: snapshot {} of another run ({run:?}) ignored", snap.seq))
                .await;
            self.members[i].send(Cmd::SnapshotAck(SnapshotAck { seq: snap.seq }));
            return;
        }
        match self.agg.add(i, &snap) {
            Ok(_) => {
                self.members[i].send(Cmd::SnapshotAck(SnapshotAck { seq: snap.seq }));
            }
            Err(err) => {
                // Nonsense from a worker: its figures cannot be trusted, so
                // it leaves the run (and may not rejoin it); the run goes on.
                let why = format!("sent a snapshot that was refused ({err})");
                self.log(format!("worker {worker}: snapshot {} dropped: {err}", snap.seq)).await;
                self.members[i].banned = Some(why.clone());
                self.lose(i, &why).await;
            }
        }
    }

    /// A worker said Hello during the run: one of ours coming back, a new
    /// one taking a share, or one that may not take part.
    async fn on_join(&mut self, session: u64, hello: Hello, link: fleet::Link, offset_us: i64) {
        let id = hello.worker_id.clone();
        if self.stopping.is_some() {
            self.log(format!("worker {id} refused: the run is ending")).await;
            return; // dropping `link` ends its stream
        }
        match self.member(&id) {
            Some(i) if self.members[i].banned.is_some() => {
                let why = self.members[i].banned.clone().unwrap_or_default();
                self.log(format!("worker {id} refused: it {why}")).await;
            }
            Some(i) if self.members[i].link.is_some() => {
                self.log(format!("worker {id} refused: a worker of that name is taking part")).await;
            }
            Some(i) if self.members[i].finished => {
                self.log(format!("worker {id} refused: it finished its part")).await;
            }
            Some(i) if hello.resume_run_id == self.run_id => {
                let m = &mut self.members[i];
                m.link = Some(link);
                m.session = session;
                m.offset_us = offset_us;
                m.last_heard = Instant::now();
                self.agg.set_live(i, true);
                let at_s = self.elapsed_s();
                if let Some(lost) = self.lost.iter_mut().rev().find(|l| l.id == id) {
                    lost.back_at_s = Some(at_s);
                }
                self.progress.line(format!("worker {id} rejoined at {at_s:.1} s"));
                self.log(format!("worker {id} rejoined")).await;
                self.unbalanced.push(format!("{id} rejoined"));
            }
            Some(_) => {
                self.log(format!("worker {id} refused: it lost its run, and a name in use cannot join anew"))
                    .await;
            }
            None if self.members.len() >= 1000 => {
                self.log(format!("worker {id} refused: the fleet has 1000 workers")).await;
            }
            None => {
                let member = Member::new(hello, link, offset_us, session, &self.plan.fleet);
                let assign = Assign { clock_offset_us: offset_us, ..self.assign.clone() };
                if !member.send(Cmd::Assign(assign)) {
                    return;
                }
                self.agg.add_worker(&id);
                self.members.push(member);
                self.progress.line(format!("worker {id} joined at {:.1} s", self.elapsed_s()));
                self.log(format!("worker {id} joined the run late")).await;
                self.unbalanced.push(format!("{id} joined"));
            }
        }
    }

    async fn write_rows(&mut self, flush: bool) {
        let elapsed = self.elapsed_s();
        for row in self.agg.take_corrections() {
            let workers: Vec<&str> = row.workers.iter().map(|w| w.worker.as_str()).collect();
            let line = format!(
                "late data from {} for second {}: row corrected (revision {})",
                workers.join(", "),
                row.metrics.elapsed_s,
                row.metrics.revision
            );
            self.log(line).await;
            self.writer.row(row).await;
        }
        let mut broke = None;
        for row in self.agg.ready_rows(elapsed, flush) {
            self.progress.row(&row.metrics, &self.plan, elapsed, &self.agg.run);
            if let Some(watch) = &mut self.stress {
                let s = row.metrics.elapsed_s;
                let before = s.checked_sub(1).and_then(|b| self.agg.rows.get(b as usize));
                let figures = summary::second_figures(&row, before.map_or(0, |r| r.connections_active));
                if let Some(bp) = watch.second(s, &row.metrics.phase, &figures) {
                    broke = Some(bp);
                }
            }
            self.writer.row(row).await;
        }
        if let Some(bp) = broke {
            self.stress_broke(bp).await;
        }
    }

    /// Loses workers that have sent nothing, not even a heartbeat, for
    /// [`SILENT_AFTER`]: a frozen process or a stalled link.
    async fn check_silence(&mut self) {
        let silent: Vec<(usize, f64)> = (0..self.members.len())
            .filter(|&i| self.members[i].live())
            .map(|i| (i, self.members[i].last_heard.elapsed().as_secs_f64()))
            .filter(|(_, quiet)| *quiet >= SILENT_AFTER.as_secs_f64())
            .collect();
        for (i, quiet) in silent {
            self.lose(i, &format!("silent for {quiet:.0} s (no snapshot, no heartbeat)")).await;
        }
    }

    /// Aborts on what makes going on pointless.
    async fn check_health(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        let c = self.agg.run.counters;
        let need = UNREACHABLE_AFTER.min(self.plan.peak()).max(1);
        if c.connections_opened == 0 && c.connections_failed >= need {
            let causes: Vec<String> = self.agg.run.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let why = format!(
                "target unreachable: {} connection attempts, none succeeded ({})",
                c.connections_failed,
                causes.join(", ")
            );
            self.abort(why).await;
            return;
        }
        if self.members.iter().all(|m| m.link.is_none()) {
            self.abort("every worker was lost".into()).await;
        }
    }
}
