//! The workers of a run: waiting for them to join, sending them commands
//! without ever waiting on one (a command that cannot be delivered is
//! reported, never silently dropped), and, once the run goes, what the
//! fleet does to it: snapshots taken or refused, workers lost (silent,
//! gone, or sending nonsense), coming back or joining late, and the
//! current phase spread anew over those that are live.

use std::time::Duration;

use stampede_model::results::{Rebalance, WorkerLost};
use stampede_proto::fleet::{
    ControllerMessage, Hello, Snapshot, SnapshotAck, controller_message::Body as Cmd, worker_message::Body,
};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::fleet::{FleetEvent, Link};
use crate::local_fleet::LocalFleet;
use crate::plan::{FleetPlan, LostPolicy, Plan};
use crate::run::RunError;
use crate::running::Running;

/// Time without a word (snapshot or heartbeat; workers send one every
/// second) after which a worker is taken as lost.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);
/// Time without a snapshot after which a worker that still sends
/// heartbeats is taken as lost: a worker in a run reports every second, so
/// one that only heartbeats holds a share of the load it does not serve.
pub const UNREPORTED_AFTER: Duration = Duration::from_secs(6);

/// Memory a browser session is given room for when a worker's share is
/// sized: above what one costs in the isolated mode (README, "Browser
/// sessions"), so a worker is not asked for more pages than its memory.
pub const BROWSER_SESSION_BYTES: u64 = 64 << 20;

/// A worker of this run.
pub struct Member {
    /// What it said when it joined.
    pub hello: Hello,
    /// Commands to it; `None` once it is gone.
    pub link: Option<Link>,
    /// Its current stream (events of older ones are stale).
    pub session: u64,
    /// Connections it is given at most: its claim, capped by its own
    /// open-file limit and the scenario's `max_connections_per_worker`.
    pub capacity: u64,
    /// Controller clock minus its clock, us.
    pub offset_us: i64,
    /// It sent Finished.
    pub finished: bool,
    /// When it was last heard from.
    pub last_heard: Instant,
    /// When it last sent a snapshot of this run (or joined).
    pub last_report: Instant,
    /// Why it may not come back (it sent nonsense).
    pub banned: Option<String>,
    /// It came back with its load already stopped: it only delivers.
    pub stopped: bool,
    /// The client group it runs (an index into the plan's groups).
    pub group: usize,
}

impl Member {
    /// A member that just joined on stream `session`, capped by `fleet`.
    pub fn new(hello: Hello, link: Link, offset_us: i64, session: u64, fleet: &FleetPlan) -> Member {
        let claimed = hello.capacity.map_or(0, |c| c.max_connections.min(c.open_files_limit));
        Member {
            hello,
            link: Some(link),
            session,
            capacity: fleet.capacity(claimed),
            offset_us,
            finished: false,
            last_heard: Instant::now(),
            last_report: Instant::now(),
            banned: None,
            stopped: false,
            group: 0,
        }
    }

    /// Still taking part: its link is up and it has not finished.
    pub fn live(&self) -> bool {
        self.link.is_some() && !self.finished
    }

    /// Sends a command; false if it could not be delivered (the worker has
    /// stopped reading or is gone). Never waits: the run loop must not stall
    /// on one worker.
    pub fn send(&self, body: Cmd) -> bool {
        let Some(link) = &self.link else { return false };
        let ack = matches!(body, Cmd::SnapshotAck(_));
        match link.try_send(Ok(ControllerMessage { body: Some(body) })) {
            Ok(()) => true,
            // Acknowledgements are cumulative: a later one covers this one.
            Err(mpsc::error::TrySendError::Full(_)) if ack => true,
            Err(_) => false,
        }
    }

    /// Puts it in group `group`: a browser group's worker is also held to
    /// the sessions its memory allows ([`BROWSER_SESSION_BYTES`] each).
    pub fn join_group(&mut self, group: usize, engine: crate::groups::EngineKind) {
        self.group = group;
        if engine == crate::groups::EngineKind::Browser {
            let memory = self.hello.capacity.map_or(0, |c| c.memory_bytes);
            self.capacity = self.capacity.min(memory / BROWSER_SESSION_BYTES);
        }
    }

    /// Connections it can be given now: none once it is gone.
    pub fn room(&self) -> u64 {
        if self.live() && !self.stopped { self.capacity } else { 0 }
    }
}

/// Waits until the plan's workers have joined (a second worker of the same
/// name is refused), the join timeout passes, or a local worker exits.
pub async fn wait_for_workers(
    plan: &Plan,
    events: &mut mpsc::Receiver<FleetEvent>,
    local: &mut Option<LocalFleet>,
    shutdown: &CancellationToken,
) -> Result<Vec<Member>, RunError> {
    let deadline = Instant::now() + plan.fleet.join_timeout;
    let mut members: Vec<Member> = Vec::new();
    let mut check = tokio::time::interval(Duration::from_millis(200));
    while members.len() < plan.fleet.workers as usize {
        tokio::select! {
            _ = shutdown.cancelled() => return Err(RunError::Interrupted),
            _ = sleep_until(deadline) => {
                return Err(RunError::Fleet(format!(
                    "only {} of {} workers joined within {:.0} s",
                    members.len(), plan.fleet.workers, plan.fleet.join_timeout.as_secs_f64()
                )));
            }
            _ = check.tick() => {
                if let Some(why) = local.as_mut().and_then(LocalFleet::exited) {
                    return Err(RunError::Fleet(format!("{why} before the run started")));
                }
            }
            event = events.recv() => match event {
                Some(FleetEvent::Joined { session, hello, link, offset_us }) => {
                    if members.iter().any(|m| m.hello.worker_id == hello.worker_id) {
                        tracing::warn!("a second worker calls itself {:?}; refused", hello.worker_id);
                        continue;
                    }
                    tracing::info!("worker {} joined", hello.worker_id);
                    members.push(Member::new(hello, link, offset_us, session, &plan.fleet));
                }
                Some(FleetEvent::Left { worker, session, reason }) => {
                    let before = members.len();
                    members.retain(|m| m.hello.worker_id != worker || m.session != session);
                    if members.len() == before {
                        continue;
                    }
                    tracing::warn!("worker {worker} left before the run: {reason}");
                }
                Some(FleetEvent::Refused { peer, reason }) => {
                    eprintln!("refused a worker from {peer}: {reason}");
                }
                Some(FleetEvent::Message { .. }) => {}
                None => return Err(RunError::Fleet("the fleet server stopped".into())),
            }
        }
    }
    Ok(members)
}

impl Running {
    /// Marks worker `i` lost: rows stop waiting for it, its link is
    /// dropped (a worker that still hears will rejoin), and its share goes
    /// to the others or the run aborts, as the scenario says.
    pub(crate) async fn lose(&mut self, i: usize, reason: &str) {
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
    pub(crate) async fn settle(&mut self) {
        while !self.unbalanced.is_empty() {
            let reason = std::mem::take(&mut self.unbalanced).join(", ");
            self.rebalance(reason).await;
        }
    }

    /// Spreads the current phase anew over the live workers, `into` the
    /// phase: each moves from where it is to its new share.
    pub(crate) async fn rebalance(&mut self, reason: String) {
        let Some(current) = self.next_phase.checked_sub(1) else { return };
        if self.stopping.is_some() || self.members.iter().all(|m| !m.live()) {
            return;
        }
        let phase = &self.plan.phases[current];
        let into = self.run_start.elapsed().saturating_sub(phase.start);
        let capacities: Vec<u64> = self.members.iter().map(Member::room).collect();
        let groups: Vec<usize> = self.members.iter().map(|m| m.group).collect();
        // Each group's part goes to its own workers.
        let unplaced: u64 = (0..self.plan.groups.len())
            .map(|g| {
                let room: u64 =
                    capacities.iter().zip(&groups).filter(|(_, of)| **of == g).map(|(c, _)| c).sum();
                self.plan.group_phase(current, g).peak().saturating_sub(room)
            })
            .sum();
        let shares: Vec<u64> = self
            .plan
            .commands(current, &groups, &capacities, Duration::ZERO)
            .iter()
            .map(|c| c.connections)
            .collect();
        let connections: std::collections::BTreeMap<String, u64> = self
            .members
            .iter()
            .zip(&shares)
            .filter(|(m, _)| m.live())
            .map(|(m, n)| (m.hello.worker_id.clone(), *n))
            .collect();
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

    pub(crate) async fn on_event(&mut self, event: FleetEvent) {
        match event {
            FleetEvent::Message { worker, session, body } => {
                let current = |m: &Member| m.session == session && m.link.is_some();
                let Some(i) = self.member(&worker).filter(|&i| current(&self.members[i])) else {
                    return; // an earlier stream, or a worker taken as lost
                };
                self.members[i].last_heard = Instant::now();
                match *body {
                    Body::Snapshot(snap) => self.on_snapshot(i, snap).await,
                    Body::Finished(_) => {
                        self.members[i].finished = true;
                        self.log(format!("worker {worker} finished")).await;
                        if self.stopping.is_none() {
                            // Its load ended on its own (it was without us
                            // past its grace): the others take its share,
                            // and rows no longer wait for it.
                            self.agg.set_live(i, false);
                            self.unbalanced.push(format!("{worker} finished early"));
                        }
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

    pub(crate) async fn on_snapshot(&mut self, i: usize, snap: Snapshot) {
        let worker = self.members[i].hello.worker_id.clone();
        if snap.run_id != self.run_id {
            // An outbox from another run: never counted here, and not
            // acknowledged either (acknowledgements are cumulative by
            // sequence, which restarts with each run: acking an old run's
            // seq would drop this run's unsent snapshots). The worker drops
            // that outbox when it is assigned this run.
            let run: String = snap.run_id.chars().take(100).collect();
            self.log(format!("worker {worker}: snapshot {} of another run ({run:?}) ignored", snap.seq))
                .await;
            return;
        }
        self.members[i].last_report = Instant::now();
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
    pub(crate) async fn on_join(&mut self, session: u64, hello: Hello, link: Link, offset_us: i64) {
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
                let stopped = hello.load_stopped;
                let m = &mut self.members[i];
                m.link = Some(link);
                m.session = session;
                m.offset_us = offset_us;
                m.last_heard = Instant::now();
                m.last_report = Instant::now();
                m.stopped = stopped;
                let at_s = self.elapsed_s();
                if let Some(lost) = self.lost.iter_mut().rev().find(|l| l.id == id) {
                    lost.back_at_s = Some(at_s);
                }
                self.progress.line(format!("worker {id} rejoined at {at_s:.1} s"));
                if stopped {
                    // Past its grace it closed its load: it delivers what it
                    // measured and finishes; it takes no share meanwhile.
                    self.log(format!(
                        "worker {id} rejoined with its load stopped: it delivers what it measured"
                    ))
                    .await;
                } else {
                    self.agg.set_live(i, true);
                    self.log(format!("worker {id} rejoined")).await;
                    self.unbalanced.push(format!("{id} rejoined"));
                }
            }
            Some(_) => {
                self.log(format!("worker {id} refused: it lost its run, and a name in use cannot join anew"))
                    .await;
            }
            None if self.members.len() >= 1000 => {
                self.log(format!("worker {id} refused: the fleet has 1000 workers")).await;
            }
            None => {
                let mut member = Member::new(hello, link, offset_us, session, &self.plan.fleet);
                // The group it can run that has the least weight per worker
                // already would gain most from it.
                let Some(group) = self.late_group(&member) else {
                    self.log(format!(
                        "worker {id} refused: it cannot run any group of this run (no Chromium)"
                    ))
                    .await;
                    return;
                };
                member.join_group(group, self.plan.groups[group].engine);
                let index = self.members.iter().filter(|m| m.group == group).count();
                let assign = crate::run::assign_for(&self.assigns[group], index, index + 1, offset_us);
                if !member.send(Cmd::Assign(assign)) {
                    return;
                }
                self.agg.add_worker(&id);
                self.add_member(member);
                self.progress.line(format!("worker {id} joined at {:.1} s", self.elapsed_s()));
                self.log(format!("worker {id} joined the run late")).await;
                self.unbalanced.push(format!("{id} joined"));
            }
        }
    }

    /// The group a worker joining late runs: of those its engines can run,
    /// the one with the most weight per live worker; `None` if it can run
    /// none.
    fn late_group(&self, member: &Member) -> Option<usize> {
        let groups = &self.plan.groups;
        let live = |g: usize| self.members.iter().filter(|m| m.live() && m.group == g).count() as u128;
        (0..groups.len())
            .filter(|&g| member.hello.engines.iter().any(|e| e == groups[g].engine.name()))
            .max_by(|&a, &b| {
                let (wa, wb) = (u128::from(groups[a].weight), u128::from(groups[b].weight));
                // wa / (live(a) + 1) against wb / (live(b) + 1), without division.
                (wa * (live(b) + 1)).cmp(&(wb * (live(a) + 1))).then(b.cmp(&a))
            })
    }

    /// Loses workers that have sent nothing, not even a heartbeat, for
    /// [`SILENT_AFTER`] (a frozen process or a stalled link), and those
    /// that heartbeat but have reported no second for [`UNREPORTED_AFTER`].
    pub(crate) async fn check_silence(&mut self) {
        let silent: Vec<(usize, f64)> = (0..self.members.len())
            .filter(|&i| self.members[i].live())
            .map(|i| (i, self.members[i].last_heard.elapsed().as_secs_f64()))
            .filter(|(_, quiet)| *quiet >= SILENT_AFTER.as_secs_f64())
            .collect();
        for (i, quiet) in silent {
            self.lose(i, &format!("silent for {quiet:.0} s (no snapshot, no heartbeat)")).await;
        }
        let unreported: Vec<(usize, f64)> = (0..self.members.len())
            .filter(|&i| self.members[i].live())
            .map(|i| (i, self.members[i].last_report.elapsed().as_secs_f64()))
            .filter(|(_, quiet)| *quiet >= UNREPORTED_AFTER.as_secs_f64())
            .collect();
        for (i, quiet) in unreported {
            self.lose(i, &format!("no snapshot for {quiet:.0} s (heartbeats only)")).await;
        }
    }
}
