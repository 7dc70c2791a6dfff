//! A run in progress: the schedule driven phase by phase, the fleet's
//! events handled (see [`crate::members`] for joins, losses and
//! rebalancing), rows written as seconds complete, and the checks that end
//! a run early. All of it in one task, so no state is shared.

use std::collections::HashMap;
use std::time::Duration;

use stampede_model::results::Rebalance;
use stampede_proto::fleet::{Assign, Stop, controller_message::Body as Cmd};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::aggregate::Aggregator;
use crate::fleet::FleetEvent;
use crate::members::Member;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::results::ResultsWriter;
use crate::stress::StressWatch;
use crate::summary;
use crate::target_metrics::TargetSample;

/// Time for workers to close their connections after Stop.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Attempts without a single success after which the target is declared
/// unreachable (or the planned peak, if smaller).
const UNREACHABLE_AFTER: u64 = 10;

/// The state of a run in progress.
pub(crate) struct Running {
    /// The plan, as the run changes it (a stress stage that breaks ends
    /// early).
    pub(crate) plan: Plan,
    /// The stress stage, judged second by second.
    pub(crate) stress: Option<StressWatch>,
    pub(crate) members: Vec<Member>,
    /// Where each worker id is in `members` (members are only added during
    /// a run): every message is looked up by its worker, 1,000 a second.
    pub(crate) member_index: HashMap<String, usize>,
    pub(crate) agg: Aggregator,
    pub(crate) target_rx: mpsc::Receiver<(u64, TargetSample)>,
    pub(crate) writer: ResultsWriter,
    pub(crate) run_start: Instant,
    pub(crate) run_id: String,
    /// The load's target URL.
    pub(crate) target_url: String,
    pub(crate) next_phase: usize,
    pub(crate) stopping: Option<Instant>,
    pub(crate) aborted: Option<String>,
    pub(crate) progress: Progress,
    /// Workers lost so far, in order.
    pub(crate) lost: Vec<stampede_model::results::WorkerLost>,
    /// Each time the load was spread anew.
    pub(crate) rebalanced: Vec<Rebalance>,
    /// Fleet changes not rebalanced yet.
    pub(crate) unbalanced: Vec<String>,
    /// Where the status API reads the run (`--status-addr`).
    pub(crate) status: Option<tokio::sync::watch::Sender<std::sync::Arc<crate::status::Status>>>,
    /// What the workers of each group are assigned (a late joiner gets its
    /// group's, with its own clock offset).
    pub(crate) assigns: Vec<Assign>,
    /// Each worker's last written second, for the status and live view.
    pub(crate) worker_seconds: Vec<stampede_model::results::WorkerRow>,
    /// The last lines of test.log, for the status and live view.
    pub(crate) recent_log: std::cell::RefCell<std::collections::VecDeque<String>>,
}

/// Lines of test.log the status keeps.
const RECENT_LOG: usize = 8;

impl Running {
    /// The run as the status API shows it.
    pub(crate) fn status(&self, state: &'static str) -> crate::status::Status {
        let last = self.agg.rows.last();
        crate::status::Status {
            state,
            scenario: self.plan.name.clone(),
            phase: last.map_or(String::new(), |r| r.phase.clone()),
            elapsed_s: self.elapsed_s(),
            duration_s: self.plan.duration().as_secs_f64(),
            last_second: last.cloned(),
            counters: self.agg.run.counters,
            errors: self.agg.run.errors.clone(),
            latency_ms: stampede_model::results::Percentiles::of(&self.agg.run.latency),
            connect_ms: stampede_model::results::Percentiles::of(&self.agg.run.connect),
            workers: self.members.iter().map(|m| self.worker_status(m)).collect(),
            target: self.target_url.clone(),
            phases: self
                .plan
                .phases
                .iter()
                .map(|p| crate::status::PhaseSpan {
                    name: p.name().to_string(),
                    start_s: p.start.as_secs_f64(),
                    duration_s: p.duration.as_secs_f64(),
                })
                .collect(),
            thresholds: summary::thresholds_so_far(&self.plan, &self.agg),
            generator_stalled_seconds: self.agg.stalled_seconds(None).len() as u64,
            log: self.recent_log.borrow().iter().cloned().collect(),
        }
    }

    fn worker_status(&self, m: &Member) -> crate::status::WorkerStatus {
        let id = &m.hello.worker_id;
        let second = self.worker_seconds.iter().find(|w| &w.worker == id);
        let state = match () {
            _ if m.banned.is_some() => "banned",
            _ if m.finished => "finished",
            _ if m.link.is_none() => "lost",
            _ => "live",
        };
        crate::status::WorkerStatus {
            id: id.clone(),
            live: m.live(),
            group: self.plan.groups.get(m.group).map_or(String::new(), |g| g.name.clone()),
            state,
            connections: second.map_or(0, |w| w.connections_active),
            cpu_pct: second.map_or(0.0, |w| w.cpu_pct),
            rss_mb: second.map_or(0.0, |w| w.rss_mb),
            clock_offset_ms: second.map_or(m.offset_us as f64 / 1000.0, |w| w.clock_offset_ms),
        }
    }

    /// Publishes the run's state to the status API, if it is on.
    pub(crate) fn publish(&self, state: &'static str) {
        if let Some(tx) = &self.status {
            tx.send_replace(std::sync::Arc::new(self.status(state)));
        }
    }

    pub(crate) fn elapsed_s(&self) -> f64 {
        Instant::now().saturating_duration_since(self.run_start).as_secs_f64()
    }

    pub(crate) async fn log(&self, what: String) {
        let line = format!("[{:>8.1} s] {what}", self.elapsed_s());
        tracing::info!("{what}");
        {
            let mut recent = self.recent_log.borrow_mut();
            if recent.len() == RECENT_LOG {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        self.writer.log(line).await;
    }

    /// Runs the schedule to its end; returns whether Ctrl-C ended it.
    pub(crate) async fn drive(
        &mut self,
        events: &mut mpsc::Receiver<FleetEvent>,
        shutdown: &CancellationToken,
    ) -> bool {
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

    pub(crate) async fn start_phase(&mut self, index: usize, elapsed_in_phase: Duration) {
        let phase = &self.plan.phases[index];
        let capacities: Vec<u64> = self.members.iter().map(Member::room).collect();
        let groups: Vec<usize> = self.members.iter().map(|m| m.group).collect();
        let commands = self.plan.commands(index, &groups, &capacities, elapsed_in_phase);
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

    pub(crate) fn stop(&mut self, reason: &str) {
        for m in &mut self.members {
            if !m.send(Cmd::Stop(Stop { reason: reason.to_string() })) {
                // It cannot hear us: do not wait for it to finish.
                m.link = None;
            }
        }
        self.stopping = Some(Instant::now() + STOP_GRACE);
    }

    pub(crate) async fn abort(&mut self, why: String) {
        if self.stopping.is_some() {
            return;
        }
        self.log(format!("aborting: {why}")).await;
        self.progress.line(format!("aborting: {why}"));
        self.aborted = Some(why.clone());
        self.stop(&why);
    }

    pub(crate) fn member(&self, id: &str) -> Option<usize> {
        self.member_index.get(id).copied()
    }

    /// Adds a worker that joined during the run.
    pub(crate) fn add_member(&mut self, member: Member) {
        self.member_index.insert(member.hello.worker_id.clone(), self.members.len());
        self.members.push(member);
    }

    async fn write_rows(&mut self, flush: bool) {
        let elapsed = self.elapsed_s();
        // One line per run of seconds corrected by the same workers: a
        // worker back from 30 s away corrects 30 rows at once.
        let mut spans: Vec<(String, u64, u64)> = Vec::new();
        for row in self.agg.take_corrections() {
            let workers: Vec<&str> = row.workers.iter().map(|w| w.worker.as_str()).collect();
            let (who, s) = (workers.join(", "), row.metrics.elapsed_s);
            match spans.last_mut() {
                Some((w, _, last)) if *w == who && *last + 1 == s => *last = s,
                _ => spans.push((who, s, s)),
            }
            self.writer.row(row).await;
        }
        for (who, first, last) in spans {
            let line = match last - first {
                0 => format!("late data from {who} for second {first}: row corrected"),
                n => format!("late data from {who} for seconds {first}-{last}: {} rows corrected", n + 1),
            };
            self.log(line).await;
        }
        let mut broke = None;
        for row in self.agg.ready_rows(elapsed, flush) {
            let fleet =
                crate::progress::Fleet { lost: self.lost.iter().filter(|l| l.back_at_s.is_none()).count() };
            self.progress.row(&row, &self.plan, elapsed, &self.agg.run, fleet);
            self.worker_seconds.clone_from(&row.workers);
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
        self.publish("running");
        if let Some(bp) = broke {
            self.stress_broke(bp).await;
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
