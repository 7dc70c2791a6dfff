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
use crate::plan::Plan;
use crate::run::RunError;

/// Seconds without a snapshot after which a worker is reported silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(3);

/// A worker of this run.
pub struct Member {
    /// What it said when it joined.
    pub hello: Hello,
    /// Commands to it; `None` once it is gone.
    pub link: Option<Link>,
    /// Controller clock minus its clock, us.
    pub offset_us: i64,
    /// It sent Finished.
    pub finished: bool,
    /// When its last snapshot arrived.
    pub last_heard: Instant,
    /// Reported silent and not heard from since.
    pub silent: bool,
}

impl Member {
    /// A member that just joined.
    pub fn new(hello: Hello, link: Link, offset_us: i64) -> Member {
        Member {
            hello,
            link: Some(link),
            offset_us,
            finished: false,
            last_heard: Instant::now(),
            silent: false,
        }
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

    /// Connections it can hold.
    pub fn max_connections(&self) -> u64 {
        self.hello.capacity.map_or(0, |c| c.max_connections)
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
                Some(FleetEvent::Joined { hello, link, offset_us }) => {
                    if members.iter().any(|m| m.hello.worker_id == hello.worker_id) {
                        tracing::warn!("a second worker calls itself {:?}; refused", hello.worker_id);
                        continue;
                    }
                    tracing::info!("worker {} joined", hello.worker_id);
                    members.push(Member::new(hello, link, offset_us));
                }
                Some(FleetEvent::Left { worker, reason }) => {
                    members.retain(|m| m.hello.worker_id != worker);
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
