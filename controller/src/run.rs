//! One run, start to end: start the target and the fleet, wait for the
//! workers, hand out the plan, send each phase on schedule, merge snapshots
//! as they come, and write the results, also when the run is interrupted or
//! aborted. All run state lives in this one task; the fleet server feeds it
//! events over a bounded channel.

use std::path::PathBuf;
use std::time::Duration;

use stampede_model::ConnectSpec;
use stampede_model::clock::RunClock;
use stampede_model::results::{Summary, WorkerInfo};
use stampede_model::spec::SessionSpec;
use stampede_proto::fleet::{Assign, controller_message::Body as Cmd};
use stampede_proto::{us, us_or_zero};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use stampede_proto::auth::{FleetToken, TOKEN_ENV, TOKEN_FILE_ENV};
use stampede_proto::transport::ServerTls;

use crate::aggregate::Aggregator;
use crate::bundled::{Bundled, BundledError};
use crate::fleet;
use crate::local_fleet::{self, LocalFleet};
use crate::members::wait_for_workers;
use crate::plan::{Overrides, Plan, TargetPlan, split};
use crate::progress::Progress;
use crate::results::{ResultsError, ResultsWriter, iso8601, unix_s};
use crate::running::Running;
use crate::scenario::{Scenario, ScenarioError};
use crate::stress::StressWatch;
use crate::summary::{self, RunFacts};
use crate::target_metrics;
use stampede_relay::RelayConfig;
use stampede_relay::jwt::JwtSecret;

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
    /// Serve the status API here ([`crate::status`]); `None`: off.
    pub status_addr: Option<std::net::SocketAddr>,
    /// Show the live view ([`crate::tui`]) if stdin and stdout are terminals.
    pub tui: bool,
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
    /// A command-line value the scenario has no use for.
    #[error("{0}")]
    Flag(String),
    /// The estimated cost is above the scenario's `max_cost`.
    #[error("{0}")]
    Cost(String),
    /// A local run this machine cannot hold (memory, ports, kernel tables).
    #[error("{0}")]
    Machine(String),
    /// Interrupted before the run began.
    #[error("interrupted before the run started")]
    Interrupted,
}

/// Runs a scenario. Errors before the run starts are returned; once it has
/// started, every ending (schedule done, aborted, Ctrl-C) writes results.
pub async fn run(opts: RunOptions, shutdown: CancellationToken) -> Result<RunOutcome, RunError> {
    let (mut scenario, source) = Scenario::load(&opts.scenario)?;
    opts.overrides.apply(&mut scenario).map_err(RunError::Flag)?;
    let mut plan = Plan::new(&scenario, &opts.scenario, &source)?;
    let scenario_toml = toml::to_string_pretty(&scenario).unwrap_or_else(|_| source.clone());
    // Refused before anything starts, as `controller check` says.
    crate::deploy::check_cost(&plan).map_err(RunError::Cost)?;
    crate::machine::check(&plan, &crate::machine::Machine::read()).map_err(RunError::Machine)?;
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
        TargetPlan::Bundled { delay, processes, faults, max_connections, pubsub } => {
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
                pubsub: pubsub.clone(),
                ..RelayConfig::default()
            };
            let (relay, url) = Bundled::start(config, *processes, &executable, services.clone()).await?;
            // Pairs, broadcast and flows speak the relay's channel protocol.
            let url = match &plan.connect.session {
                SessionSpec::Pairs(_) | SessionSpec::Broadcast(_) | SessionSpec::Flow(_) => {
                    format!("{}/pubsub", url.strip_suffix("/ws").unwrap_or(&url))
                }
                _ => url,
            };
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
    // The status API outlives the run's services: it answers until the
    // results are written, and a little after.
    let status_tasks = TaskTracker::new();
    let status_done = CancellationToken::new();
    let _status_done = status_done.clone().drop_guard();
    // The live view draws on a terminal; without one the progress lines stay.
    let tui = opts.tui && crate::tui::available();
    if opts.tui && !tui {
        eprintln!("--tui needs a terminal on stdin and stdout: showing progress lines instead");
    }
    // The status API and the live view read the same status.
    let status = (opts.status_addr.is_some() || tui).then(|| {
        let starting =
            crate::status::Status { state: "starting", scenario: plan.name.clone(), ..Default::default() };
        tokio::sync::watch::channel(std::sync::Arc::new(starting))
    });
    if let (Some(at), Some((_, rx))) = (opts.status_addr, &status) {
        // Only a token the user gave unlocks /stop (a local fleet's is random).
        let bound = crate::status::serve(
            at,
            rx.clone(),
            opts.fleet_token.clone(),
            shutdown.clone(),
            status_done.clone(),
            &status_tasks,
        )
        .await
        .map_err(|e| RunError::Fleet(format!("status API on {at}: {e}")))?;
        eprintln!("status API on http://{bound}/status (/metrics, /health, POST /stop)");
    }
    let (status, status_rx) = status.unzip();
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
    let mut members = wait_for_workers(&plan, &mut events, &mut local, &shutdown).await?;
    let engines: Vec<Vec<String>> = members.iter().map(|m| m.hello.engines.clone()).collect();
    let placed = crate::groups::place(&plan.groups, &engines).map_err(RunError::Fleet)?;
    for (m, g) in members.iter_mut().zip(&placed) {
        m.join_group(*g, plan.groups[*g].engine);
    }
    for (g, group) in plan.groups.iter().enumerate() {
        let capacities: Vec<u64> = members.iter().map(|m| if m.group == g { m.room() } else { 0 }).collect();
        let needed = plan.group_peak(g);
        if split(needed, &capacities).is_none() {
            let of = if plan.groups.len() > 1 { format!(" of group {}", group.name) } else { String::new() };
            return Err(RunError::Fleet(format!(
                "the fleet can hold {} connections{of}, the scenario needs {needed}: add workers (--workers or \
                 [fleet] workers)",
                capacities.iter().sum::<u64>(),
            )));
        }
    }

    let clock = RunClock::starting_in(Duration::from_millis(200));
    let run_start = Instant::from_std(clock.mono);
    let run_start_wall = clock.wall;
    let run_start_us = clock.unix_us();
    let writer = ResultsWriter::create(&plan.output_dir, &plan.name, run_start_wall, &scenario_toml)?;
    let run_id = format!("{}-{}", plan.name, run_start_us);
    // Channel names of this run start with a prefix no other run shares.
    name_channels(&mut plan.connect.session, run_start_us);
    for g in &mut plan.groups {
        name_channels(&mut g.session, run_start_us);
    }
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
    let base = Assign {
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
        connect_spec_json: String::new(),
    };
    let screenshots = plan.fleet.local.is_some().then(|| screenshot_dir(writer.dir())).flatten();
    let assigns: Vec<Assign> = plan
        .groups
        .iter()
        .map(|g| {
            let mut connect = ConnectSpec { session: g.session.clone(), ..plan.connect.clone() };
            if let SessionSpec::Browser(b) = &mut connect.session
                && g.screenshots
            {
                b.screenshot_dir.clone_from(&screenshots);
            }
            Assign { connect_spec_json: connect.to_json(), ..base.clone() }
        })
        .collect();
    let mut unassigned = Vec::new();
    let group_sizes: Vec<usize> =
        (0..plan.groups.len()).map(|g| members.iter().filter(|m| m.group == g).count()).collect();
    let mut group_index = vec![0; plan.groups.len()];
    for (i, m) in members.iter_mut().enumerate() {
        // Its first snapshot is due a second from now, however long the
        // fleet took to gather.
        m.last_report = Instant::now();
        let g = m.group;
        let sent = m.send(Cmd::Assign(Assign {
            source_addresses: sources.get(i).cloned().unwrap_or_default(),
            ..assign_for(&assigns[g], group_index[g], group_sizes[g], m.offset_us)
        }));
        group_index[g] += 1;
        if !sent {
            unassigned.push(i);
        }
    }
    let mut run = Running {
        stress: plan.stress.as_ref().map(|s| StressWatch::new(s, &plan.thresholds)),
        plan: plan.clone(),
        member_index: members.iter().enumerate().map(|(i, m)| (m.hello.worker_id.clone(), i)).collect(),
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
        status,
        assigns,
        target_url: target_url.clone(),
        worker_seconds: Vec::new(),
        recent_log: Default::default(),
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
    let live = match status_rx.filter(|_| tui) {
        Some(rx) => match crate::tui::LiveView::start(rx, shutdown.clone()) {
            Ok(view) => {
                run.progress.set_quiet(true);
                Some(view)
            }
            Err(e) => {
                eprintln!("the live view could not start ({e}): showing progress lines instead");
                None
            }
        },
        None => None,
    };
    run.publish("running");
    let interrupted = run.drive(&mut events, &shutdown).await;
    // The terminal is given back before the summary is printed on it.
    if let Some(view) = live {
        view.finish();
    }

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
    // The final figures, for a last scrape.
    run.publish("finished");
    let _ = run.writer.finish(&summary, &run.agg.rows, human).await;
    status_done.cancel();
    status_tasks.close();
    let _ = tokio::time::timeout(crate::status::LINGER + Duration::from_secs(1), status_tasks.wait()).await;
    if let Some(relay) = relay {
        relay.finish().await;
    }
    Ok(RunOutcome { summary, dir, interrupted })
}

/// Gives the run's channels a prefix of their own (`stampede/<run start,
/// µs>`), so runs sharing a relay never read each other's messages.
fn name_channels(session: &mut SessionSpec, run_start_us: i64) {
    let prefix = format!("stampede/{run_start_us}");
    match session {
        SessionSpec::Pairs(p) => p.channel_prefix = prefix,
        SessionSpec::Broadcast(b) => b.channel_prefix = prefix,
        _ => {}
    }
}

/// Where local workers save failure screenshots: the results folder's
/// `screenshots/`, relative to our directory (workers only write under
/// theirs, which local workers share with us); `None` when the results are
/// elsewhere.
fn screenshot_dir(results: &std::path::Path) -> Option<String> {
    let cwd = std::env::current_dir().ok()?;
    let relative = match results.strip_prefix(&cwd) {
        Ok(r) => r.to_path_buf(),
        Err(_) if results.is_relative() => results.to_path_buf(),
        Err(_) => return None,
    };
    let dir = relative.join("screenshots");
    dir.components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
        .then(|| dir.to_string_lossy().into_owned())
}

/// Worker `index`'s Assign in a fleet of `workers`: its clock offset, and
/// in broadcast its share of the publishers and its place in the fleet's
/// numbering of connections (a worker joining late publishes nothing).
pub(crate) fn assign_for(assign: &Assign, index: usize, workers: usize, offset_us: i64) -> Assign {
    let mut mine = Assign { clock_offset_us: offset_us, ..assign.clone() };
    if let Ok(mut spec) = ConnectSpec::from_json(&assign.connect_spec_json)
        && let SessionSpec::Broadcast(b) = &mut spec.session
    {
        let (index, workers) = (index as u64, workers.max(1) as u64);
        b.publishers = if index < workers {
            b.publishers / workers + u64::from(index < b.publishers % workers)
        } else {
            0
        };
        b.worker_index = index;
        b.workers = workers;
        mine.connect_spec_json = spec.to_json();
    }
    mine
}
