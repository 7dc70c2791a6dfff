//! The embedded local fleet: worker child processes on this machine, started
//! when the scenario configures no remote fleet. One process holds at most
//! ~20,000 sockets here, so the connection count decides how many. Children
//! are supervised ([`stampede_child`]): they die with the controller.

use std::net::IpAddr;
use std::path::Path;
use std::process::Stdio;

use stampede_model::TargetUrl;
use stampede_proto::auth::{FleetToken, TOKEN_ENV, TOKEN_FILE_ENV};

use stampede_child::{Supervised, command};

/// The running children.
pub struct LocalFleet {
    children: Vec<Supervised>,
}

impl LocalFleet {
    /// Starts `count` workers (`EXECUTABLE worker ...`) that join
    /// `controller_url`, sharing the machine's cores ([`threads`]).
    /// They get `token` by environment, never on their command line, and
    /// may load `target_url` (their allowlist: loopback otherwise).
    pub fn spawn(
        executable: &Path,
        count: u32,
        controller_url: &str,
        token: Option<&FleetToken>,
        target_url: &str,
    ) -> std::io::Result<LocalFleet> {
        let allow = TargetUrl::parse(target_url)
            .map(|t| match t.ip() {
                Some(ip) => std::net::SocketAddr::new(ip, t.port).to_string(),
                None => format!("{}:{}", t.host, t.port),
            })
            .ok();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = threads(cores, count, is_loopback(target_url));
        let mut children = Vec::new();
        for (i, threads) in (1..=count).zip(threads) {
            let id = format!("local-{i}");
            let mut cmd = command(executable);
            cmd.arg("worker")
                .args(["--controller", controller_url, "--id", &id, "--once", "--join-timeout", "30"])
                .args(["--threads", &threads.to_string()])
                .env("RUST_LOG", std::env::var("STAMPEDE_WORKER_LOG").unwrap_or_else(|_| "warn".into()))
                .args(allow.iter().flat_map(|a| ["--allow-target", a.as_str()]))
                .env_remove(TOKEN_FILE_ENV)
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if let Some(token) = token {
                cmd.env(TOKEN_ENV, token.as_env_value());
            }
            children.push(Supervised::spawn(format!("worker {id}"), &mut cmd)?);
        }
        Ok(LocalFleet { children })
    }

    /// A child that has exited, with how.
    pub fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(Supervised::exited)
    }

    /// Waits for every child to exit, killing those still there after
    /// `grace`.
    pub async fn finish(self, grace: std::time::Duration) {
        for child in self.children {
            child.wait_or_kill(grace).await;
        }
    }
}

/// Connection threads for each of `workers` local workers on `cores`
/// cores: the cores shared among them, less one left to the server under
/// test when it runs here too (`server_here`: a loopback target), and at
/// least one each. A generator that takes every core from the server it
/// measures measures its own contention: on 2 cores against a Node `ws`
/// echo server at 100,000 msg/s, one thread instead of two gave p50 0.5-0.7
/// ms instead of 9-23 ms, for 12 % less CPU (worker/src/shards.rs).
pub fn threads(cores: usize, workers: u32, server_here: bool) -> Vec<usize> {
    let workers = workers as usize;
    let spare = cores.saturating_sub(usize::from(server_here)).max(1);
    (0..workers).map(|i| (spare / workers + usize::from(i < spare % workers)).max(1)).collect()
}

/// Whether `target_url` names an IPv4 loopback address (127.0.0.0/8),
/// which local workers reach from many 127.0.x.y source addresses.
pub fn is_loopback(target_url: &str) -> bool {
    TargetUrl::parse(target_url).is_ok_and(|t| matches!(t.ip(), Some(IpAddr::V4(ip)) if ip.is_loopback()))
}

/// Loopback source addresses per local worker against a loopback target, so
/// workers do not share ephemeral ports. Two each: the kernel picks connect
/// ports among the even half of its ~28,000-port range first, and once one
/// address has used those (~14,000 connections to one target) every further
/// connect scans them all (measured here: a 30,000-connection run stalled
/// for a second at 14,000 per address, not at 10,000).
pub fn loopback_sources(target_url: &str, workers: usize) -> Vec<Vec<String>> {
    const PER_WORKER: usize = 2;
    if !is_loopback(target_url) {
        return Vec::new();
    }
    let address = |n: usize| format!("127.0.{}.{}", n / 250, n % 250 + 1);
    (0..workers).map(|w| (0..PER_WORKER).map(|k| address(w * PER_WORKER + k)).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::threads;

    #[test]
    fn local_workers_leave_a_core_to_a_server_on_this_machine() {
        assert_eq!(threads(2, 1, true), [1]);
        assert_eq!(threads(2, 1, false), [2]);
        assert_eq!(threads(8, 1, true), [7]);
        // Shared out, none left without a thread, none idle.
        assert_eq!(threads(8, 3, true), [3, 2, 2]);
        assert_eq!(threads(2, 5, true), [1, 1, 1, 1, 1]);
        assert_eq!(threads(1, 1, true), [1]);
        assert_eq!(threads(0, 2, false), [1, 1]);
        assert!(threads(4, 0, true).is_empty());
    }
}
