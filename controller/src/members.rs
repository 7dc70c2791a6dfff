//! The workers of a run: waiting for them to join, and sending them
//! commands without ever waiting on one (a command that cannot be delivered
//! is reported, never silently dropped).

use std::time::Duration;

use stampede_proto::fleet::{ControllerMessage, Hello, controller_message::Body as Cmd};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::fleet::{FleetEvent, Link};
use crate::local_fleet::LocalFleet;
use crate::plan::{FleetPlan, Plan};
use crate::run::RunError;

/// Time without a word (snapshot or heartbeat; workers send one every
/// second) after which a worker is taken as lost.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);

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
    /// Why it may not come back (it sent nonsense).
    pub banned: Option<String>,
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
            banned: None,
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

    /// Connections it can be given now: none once it is gone.
    pub fn room(&self) -> u64 {
        if self.live() { self.capacity } else { 0 }
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
