//! A throwaway network of "hosts" on this machine: one network namespace
//! per host, each with a veth link to a bridge that lives in a namespace of
//! its own. Nothing is added to the root namespace (no interface, address
//! or route), so every packet of a test stays inside namespaces the test
//! made, and names cannot collide with the machine's own interfaces.
//!
//! ```text
//!   <lab>-relay    <lab>-ctl     <lab>-w1   ...      (one namespace per host)
//!     lan0           lan0          lan0               10.213.K.10, .11, .12, ...
//!      |              |             |
//!   p-relay -------- p-ctl ------- p-w1 --- br0       (<lab>-br: the bridge namespace)
//! ```
//!
//! Needs CAP_NET_ADMIN and CAP_SYS_ADMIN (root) and iproute2's `ip netns`.
//! Without them [`Lab::new`] prints why and returns `None`: the test
//! returns early and passes with the message visible in the test output
//! (set `STAMPEDE_REQUIRE_NETNS=1` to make that a failure instead).
//!
//! Everything is removed when the [`Lab`] is dropped, also when the test
//! panics: every process still running in its namespaces is SIGKILLed, then
//! the namespaces are deleted (which destroys their veths and the bridge).

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Namespaces of this harness are called `stp<pid>-<n>-<host>`.
const PREFIX: &str = "stp";
/// The interface each host has on the lab network.
pub const HOST_IF: &str = "lan0";
const BRIDGE: &str = "br0";

static LABS: AtomicU32 = AtomicU32::new(0);

/// One host of a lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// What the test calls it (`relay`, `w1`, ...).
    pub name: String,
    /// Its network namespace.
    pub ns: String,
    /// Its address on the lab network.
    pub ip: Ipv4Addr,
    /// The bridge-side end of its veth pair (in the bridge namespace).
    pub port: String,
}

/// Namespaces, veths and a bridge made for one test; removed when dropped.
pub struct Lab {
    /// `stp<pid>-<n>`: what every namespace name starts with.
    pub name: String,
    /// The namespace holding the bridge.
    pub bridge_ns: String,
    /// The hosts, in the order given to [`Lab::new`].
    pub hosts: Vec<Host>,
    /// Namespaces made so far, removed on drop.
    made: Vec<String>,
}

impl Lab {
    /// A lab with one namespace per name in `hosts` (at most 13 characters
    /// each, at most 200 hosts), all on one /24 (10.213.K.0/24, K unique per
    /// lab in this process), loopback up in each. `None`, with a printed
    /// reason, when this machine or user cannot make one.
    pub fn new(hosts: &[&str]) -> Option<Lab> {
        assert!(hosts.len() <= 200, "at most 200 hosts");
        for h in hosts {
            assert!(
                !h.is_empty() && h.len() <= 13 && h.chars().all(|c| c.is_ascii_alphanumeric()),
                "host name {h:?}: 1-13 letters or digits (it names an interface `p-{h}`)"
            );
        }
        remove_stale_labs();
        let pid = std::process::id();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{pid}-{n}");
        let subnet = (pid + n) % 250 + 1;
        let mut lab = Lab { bridge_ns: format!("{name}-br"), name, hosts: Vec::new(), made: Vec::new() };
        for (i, h) in hosts.iter().enumerate() {
            lab.hosts.push(Host {
                name: h.to_string(),
                ns: format!("{}-{h}", lab.name),
                ip: Ipv4Addr::new(10, 213, subnet as u8, 10 + i as u8),
                port: format!("p-{h}"),
            });
        }
        match lab.build() {
            Ok(()) => Some(lab),
            Err(why) => {
                drop(lab); // removes whatever was made
                let message = format!(
                    "skipped: this multi-host test needs CAP_NET_ADMIN (root) and iproute2 `ip netns` \
                     to make network namespaces: {why}"
                );
                if std::env::var_os("STAMPEDE_REQUIRE_NETNS").is_some_and(|v| v != "0" && !v.is_empty()) {
                    panic!("{message} (and STAMPEDE_REQUIRE_NETNS is set)");
                }
                // Straight to stderr: the test harness captures print!
                // output of passing tests, and a skip should be seen.
                let _ = writeln!(std::io::stderr(), "{message}");
                None
            }
        }
    }

    fn build(&mut self) -> Result<(), String> {
        let br = self.bridge_ns.clone();
        self.add_ns(&br)?;
        ip(&["-n", &br, "link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["-n", &br, "link", "set", BRIDGE, "up"])?;
        for h in self.hosts.clone() {
            self.add_ns(&h.ns)?;
            ip(&["-n", &h.ns, "link", "set", "lo", "up"])?;
            // Made in the bridge namespace, the other end moved straight
            // into the host's: neither end ever sits in the root namespace.
            ip(&[
                "-n", &br, "link", "add", &h.port, "type", "veth", "peer", "name", HOST_IF, "netns", &h.ns,
            ])?;
            ip(&["-n", &br, "link", "set", &h.port, "master", BRIDGE, "up"])?;
            ip(&["-n", &h.ns, "addr", "add", &format!("{}/24", h.ip), "dev", HOST_IF])?;
            ip(&["-n", &h.ns, "link", "set", HOST_IF, "up"])?;
        }
        Ok(())
    }

    fn add_ns(&mut self, ns: &str) -> Result<(), String> {
        ip(&["netns", "add", ns])?;
        self.made.push(ns.to_string());
        Ok(())
    }

    /// The host called `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts.iter().find(|h| h.name == name).unwrap_or_else(|| panic!("no host {name:?} in the lab"))
    }

    /// Its address.
    pub fn ip(&self, name: &str) -> Ipv4Addr {
        self.host(name).ip
    }

    /// Its namespace.
    pub fn ns(&self, name: &str) -> &str {
        &self.host(name).ns
    }

    /// `program` to be run in host `name`'s namespace (`ip netns exec NS
    /// program`, which execs it: the child's pid is the program's own).
    pub fn exec(&self, name: &str, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns(name)]).arg(program);
        cmd
    }

    /// Cuts host `name` off the network, both ways, as a pulled cable
    /// would: its bridge port goes down, so its own interface loses carrier
    /// but keeps its address and routes, and its sockets live on.
    pub fn link_down(&self, name: &str) {
        let h = self.host(name);
        ip(&["-n", &self.bridge_ns, "link", "set", &h.port, "down"]).expect("link down");
    }

    /// Plugs host `name` back in.
    pub fn link_up(&self, name: &str) {
        let h = self.host(name);
        ip(&["-n", &self.bridge_ns, "link", "set", &h.port, "up"]).expect("link up");
    }

    /// Runs `f` on a thread of this process that has entered host `name`'s
    /// network namespace (sockets it opens are that host's), and returns
    /// what it returns.
    pub fn within<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.ns(name));
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
                // SAFETY: setns on a valid descriptor; it changes the network
                // namespace of this thread only, which ends with the scope.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Pids of the processes in namespace `ns`.
    fn pids(ns: &str) -> Vec<i32> {
        let out = Command::new("ip").args(["netns", "pids", ns]).stderr(Stdio::null()).output();
        out.map(|o| {
            String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect()
        })
        .unwrap_or_default()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Whatever still runs in our namespaces was started by this test.
        let deadline = Instant::now() + Duration::from_secs(5);
        for ns in &self.made {
            loop {
                let pids = Lab::pids(ns);
                if pids.is_empty() || Instant::now() >= deadline {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill only sends a signal.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Hosts first, the bridge namespace last; each deletion destroys the
        // veths with an end in it.
        for ns in self.made.iter().rev() {
            if let Err(why) = ip(&["netns", "del", ns]) {
                let _ = writeln!(std::io::stderr(), "cannot remove network namespace {ns}: {why}");
            }
        }
    }
}

/// Runs `ip ARGS`; the error holds what it said.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Namespaces left by a test process that was killed before its labs were
/// dropped (the pid in their name is gone) and that hold no process.
fn remove_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).stderr(Stdio::null()).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else { continue };
        // Exactly `stp<pid>-<n>-...`: nothing else is ours.
        let mut parts = ns.strip_prefix(PREFIX).unwrap_or_default().splitn(3, '-');
        let (Some(pid), Some(n), Some(_)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        if n.parse::<u32>().is_err() {
            continue;
        }
        if pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            && Lab::pids(ns).is_empty()
        {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
