//! Who generates the load: the `[fleet]` table checked and filled in, what
//! happens when a worker is lost, and how connections are split across
//! workers.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::plan::CONNECTIONS_PER_LOCAL_WORKER;
use crate::scenario::{Count, FleetSection, ScenarioError};

/// What the run does when a worker is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LostPolicy {
    /// The lost share goes to the remaining workers, within their capacity.
    #[default]
    Rebalance,
    /// The run stops (FAIL).
    Abort,
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
    /// No worker gets more connections than this, whatever it claims.
    pub max_connections_per_worker: Option<u64>,
    /// What a lost worker does to the run.
    pub on_worker_lost: LostPolicy,
    /// What one worker costs per hour (any currency), for the estimate.
    pub cost_per_worker_hour: Option<f64>,
    /// The run refuses to start when its estimate is above this.
    pub max_cost: Option<f64>,
    /// Memory one worker has, MB (sizes the fleet in `controller check`
    /// and the Kubernetes manifests).
    pub worker_memory_mb: Option<u64>,
}

impl FleetPlan {
    /// Checks `[fleet]` for a schedule whose peak is `peak` connections;
    /// errors are made by `err` at offsets into the scenario text, `at` is
    /// where the `[fleet]` table starts.
    pub fn new(
        f: &FleetSection,
        peak: u64,
        err: &dyn Fn(usize, String) -> ScenarioError,
        at: usize,
    ) -> Result<FleetPlan, ScenarioError> {
        let workers = match (f.workers, f.remote) {
            (Some(Count(n)), _) => n,
            (None, false) => peak.div_ceil(CONNECTIONS_PER_LOCAL_WORKER).max(1),
            (None, true) => {
                return Err(err(
                    at,
                    "a remote fleet needs `workers = N`: how many workers to wait for".into(),
                ));
            }
        };
        let workers = u32::try_from(workers)
            .ok()
            .filter(|n| *n <= 1000)
            .ok_or_else(|| err(at, format!("{workers} workers is more than 1000")))?;
        let default_listen = if f.remote { "0.0.0.0:7700" } else { "127.0.0.1:0" };
        let listen_text = f.listen.clone().unwrap_or_else(|| default_listen.to_string());
        let listen = listen_text
            .parse()
            .map_err(|_| err(at, format!("listen {listen_text:?} is not an address like 0.0.0.0:7700")))?;
        if f.max_cost.is_some() && f.cost_per_worker_hour.is_none() {
            return Err(err(
                at,
                "max_cost needs cost_per_worker_hour: what one worker costs per hour".into(),
            ));
        }
        Ok(FleetPlan {
            local: (!f.remote).then_some(workers),
            workers,
            listen,
            join_timeout: f.join_timeout_s.map_or(Duration::from_secs(30), |s| Duration::from_secs_f64(s.0)),
            max_connections_per_worker: f.max_connections_per_worker.map(|c| c.0),
            on_worker_lost: f.on_worker_lost.unwrap_or_default(),
            cost_per_worker_hour: f.cost_per_worker_hour.map(|m| m.0),
            max_cost: f.max_cost.map(|m| m.0),
            worker_memory_mb: f.worker_memory_mb.map(|c| c.0),
        })
    }

    /// What a worker that claims `claimed` connections is given at most.
    pub fn capacity(&self, claimed: u64) -> u64 {
        self.max_connections_per_worker.map_or(claimed, |cap| claimed.min(cap))
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
    use crate::plan::tests::plan;

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
    fn fleet_values_are_checked() {
        let p = plan(
            "name = \"s\"\n[target]\nbundled = true\n[fleet]\nmax_connections_per_worker = 40\n\
             on_worker_lost = \"abort\"\ncost_per_worker_hour = 0.25\nmax_cost = 3\n",
        )
        .unwrap();
        assert_eq!(p.fleet.on_worker_lost, LostPolicy::Abort);
        assert_eq!((p.fleet.capacity(1_000_000_000), p.fleet.capacity(7)), (40, 7));
        assert_eq!((p.fleet.cost_per_worker_hour, p.fleet.max_cost), (Some(0.25), Some(3.0)));
        let base = "name = \"s\"\n[target]\nbundled = true\n[fleet]\n";
        for (extra, says) in [
            ("on_worker_lost = \"retry\"", "unknown variant `retry`, expected `rebalance` or `abort`"),
            ("max_connections_per_worker = 0", "0 is not a count"),
            ("cost_per_worker_hour = -1", "-1 is not an amount"),
            ("cost_per_worker_hour = \"cheap\"", "\"cheap\" is not an amount"),
            ("max_cost = 5", "max_cost needs cost_per_worker_hour"),
        ] {
            let err = plan(&format!("{base}{extra}\n")).unwrap_err().to_string();
            assert!(err.contains(says), "{extra}: {err}");
            assert!(err.starts_with("t.toml:"), "{err}");
        }
    }
}
