//! What this machine allows a local run: before a local fleet starts, the
//! connections it plans are held against the machine's memory and the
//! kernel's limits, and a run that cannot fit fails at once, naming the
//! limit and what to change, instead of running out of memory, ports or
//! connection-tracking slots halfway up its ramp. (The open-file limit is
//! met by processes: one worker per 15,000 connections; the ~28,000
//! ephemeral ports per source address by 127.0.x.y sources for loopback
//! targets.)

use crate::plan::{CONNECTIONS_PER_RELAY, Plan, TargetPlan};

/// A bundled relay process's memory per open connection, KB (README
/// "Measured here": 150,000 held, 8.5 KB each).
const RELAY_KB: f64 = 8.5;
/// Kernel memory per TCP socket, KB: the socket, its inode, file and
/// epoll entry (slab objects of about 2.3, 0.7, 0.3 and 0.2 KB), with room
/// for small queues. A loopback connection has two.
const KERNEL_KB_PER_SOCKET: f64 = 4.0;
/// Base memory of a process (worker or relay), MB.
const PROCESS_MB: f64 = 30.0;
/// The share of the machine's available memory a run may plan to use.
const MEMORY_SHARE: f64 = 0.9;
/// File handles a process holds besides its connections.
const FILES_PER_PROCESS: u64 = 64;

/// The machine's facts that bound a local run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Machine {
    /// /proc/meminfo MemAvailable, bytes.
    pub mem_available: u64,
    /// net.ipv4.ip_local_port_range, as a count of ports.
    pub ephemeral_ports: u64,
    /// net.netfilter.nf_conntrack_max and _count, when connections are
    /// being tracked (the table exists and holds entries).
    pub conntrack: Option<(u64, u64)>,
    /// fs.file-max minus the handles allocated now (fs.file-nr).
    pub files_free: Option<u64>,
}

impl Machine {
    /// This machine, read from /proc (a fact that cannot be read is left
    /// out of the checks, never guessed).
    pub fn read() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let numbers =
            |text: String| text.split_whitespace().filter_map(|n| n.parse::<u64>().ok()).collect::<Vec<_>>();
        let mem_available = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(u64::MAX, |kb| kb * 1024);
        let ephemeral_ports = match numbers(read("/proc/sys/net/ipv4/ip_local_port_range"))[..] {
            [low, high] if high >= low => high - low + 1,
            _ => u64::MAX,
        };
        let (tracked_max, tracked) = (
            numbers(read("/proc/sys/net/netfilter/nf_conntrack_max")),
            numbers(read("/proc/sys/net/netfilter/nf_conntrack_count")),
        );
        let conntrack = match (&tracked_max[..], &tracked[..]) {
            ([max], [count]) if *count > 0 => Some((*max, *count)),
            _ => None,
        };
        let (file_max, file_nr) =
            (numbers(read("/proc/sys/fs/file-max")), numbers(read("/proc/sys/fs/file-nr")));
        let files_free = match (&file_max[..], &file_nr[..]) {
            ([max], [allocated, ..]) => Some(max.saturating_sub(*allocated)),
            _ => None,
        };
        Machine { mem_available, ephemeral_ports, conntrack, files_free }
    }
}

/// What a local run needs of the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct Needs {
    /// Connections at the peak.
    pub connections: u64,
    /// Workers' memory, bytes.
    pub workers_bytes: f64,
    /// Bundled relays' memory, bytes.
    pub relays_bytes: f64,
    /// Kernel socket memory, bytes.
    pub kernel_bytes: f64,
    /// Sockets open on this machine.
    pub sockets: u64,
    /// Processes started.
    pub processes: u64,
}

impl Needs {
    /// What `plan` needs here; `None` for a remote fleet (its workers run
    /// elsewhere).
    pub fn of(plan: &Plan) -> Option<Needs> {
        let workers = u64::from(plan.fleet.local?);
        let connections = plan.peak();
        let kb = crate::deploy::estimate(plan).kb_per_connection;
        let relays = match &plan.target {
            TargetPlan::Bundled { processes, .. } => {
                (*processes).max(connections.div_ceil(CONNECTIONS_PER_RELAY)).max(1)
            }
            TargetPlan::Url(_) => 0,
        };
        // Both ends of a connection to a bundled relay are on this machine.
        let sockets = connections * if relays > 0 { 2 } else { 1 };
        Some(Needs {
            connections,
            workers_bytes: workers as f64 * PROCESS_MB * MB + connections as f64 * kb * KB,
            relays_bytes: match relays {
                0 => 0.0,
                n => n as f64 * PROCESS_MB * MB + connections as f64 * RELAY_KB * KB,
            },
            kernel_bytes: sockets as f64 * KERNEL_KB_PER_SOCKET * KB,
            sockets,
            processes: workers + relays,
        })
    }

    fn total_bytes(&self) -> f64 {
        self.workers_bytes + self.relays_bytes + self.kernel_bytes
    }
}

const KB: f64 = 1024.0;
const MB: f64 = 1024.0 * 1024.0;
const GB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Refuses a local run that `machine` cannot hold; the error names the
/// limit and what to change.
pub fn check(plan: &Plan, machine: &Machine) -> Result<(), String> {
    let Some(needs) = Needs::of(plan) else { return Ok(()) };
    let n = needs.connections;
    let usable = machine.mem_available as f64 * MEMORY_SHARE;
    if needs.total_bytes() > usable {
        let fits = (n as f64 * usable / needs.total_bytes()) as u64;
        return Err(format!(
            "{n} connections need about {:.1} GB of memory here (workers {:.1} GB, bundled relays {:.1} GB, \
             kernel sockets {:.1} GB) and the machine has {:.1} GB available (MemAvailable): lower [load] \
             connections to about {fits}, or run the workers on other hosts ([fleet] remote = true)",
            needs.total_bytes() / GB,
            needs.workers_bytes / GB,
            needs.relays_bytes / GB,
            needs.kernel_bytes / GB,
            machine.mem_available as f64 / GB,
        ));
    }
    if let TargetPlan::Url(url) = &plan.target
        && !crate::local_fleet::is_loopback(url)
        && n > machine.ephemeral_ports
    {
        return Err(format!(
            "{n} connections to one target from this machine's one source address need more local ports than \
             net.ipv4.ip_local_port_range gives ({} ports): lower [load] connections, widen the range \
             (sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\", as root), or run remote workers with \
             several --source-address each",
            machine.ephemeral_ports
        ));
    }
    if let Some((max, count)) = machine.conntrack
        && n > max.saturating_sub(count)
    {
        return Err(format!(
            "{n} connections: the kernel tracks every connection and its table holds at most {max} \
             (net.netfilter.nf_conntrack_max; {count} in use), so connections past that would be dropped: \
             raise it (sysctl -w net.netfilter.nf_conntrack_max={}, as root) or lower [load] connections",
            (n + count) * 2
        ));
    }
    let files = needs.sockets + needs.processes * FILES_PER_PROCESS;
    if let Some(free) = machine.files_free
        && files > free
    {
        return Err(format!(
            "{n} connections open about {files} files on this machine and the kernel allows {free} more \
             (fs.file-max): raise it (sysctl -w fs.file-max={}, as root) or lower [load] connections",
            files * 2
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(target: &str, connections: u64) -> Plan {
        let text = format!(
            "name = \"m\"\n[target]\n{target}\n[load]\nconnections = {connections}\nmessage_interval_s = 0\n\
             [phases]\nwarmup_s = 0\nramp_up_s = 10\nsustained_s = 10\ncooldown_s = 0\n"
        );
        let path = std::path::Path::new("m.toml");
        let sc = crate::scenario::Scenario::parse(path, &text).unwrap();
        Plan::new(&sc, path, &text).unwrap()
    }

    fn roomy() -> Machine {
        Machine {
            mem_available: 24 << 30,
            ephemeral_ports: 28_232,
            conntrack: None,
            files_free: Some(2_000_000),
        }
    }

    #[test]
    fn three_hundred_thousand_loopback_connections_fit_this_machine() {
        let p = plan("bundled = true", 300_000);
        let needs = Needs::of(&p).unwrap();
        assert_eq!((needs.sockets, needs.processes), (600_000, 40), "20 workers and 20 relays");
        // Workers ~2.3 GB at 5.2 KB, relays ~3 GB, kernel ~2.3 GB.
        assert!((6.0..9.0).contains(&(needs.total_bytes() / GB)), "{needs:?}");
        assert_eq!(check(&p, &roomy()), Ok(()));
    }

    #[test]
    fn each_limit_is_named_with_what_to_change() {
        let p = plan("bundled = true", 2_000_000);
        let err = check(&p, &roomy()).unwrap_err();
        assert!(err.contains("MemAvailable") && err.contains("lower [load] connections to about"), "{err}");
        let fits: u64 = err.split("to about ").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert!((500_000..1_300_000).contains(&fits), "{fits}");

        let far = plan("url = \"ws://10.0.0.9:8080/\"", 40_000);
        let err = check(&far, &roomy()).unwrap_err();
        assert!(err.contains("net.ipv4.ip_local_port_range gives (28232 ports)"), "{err}");
        assert_eq!(
            check(&plan("url = \"ws://127.0.0.1:8080/\"", 40_000), &roomy()),
            Ok(()),
            "127.0.x.y sources"
        );

        let tracked = Machine { conntrack: Some((262_144, 100)), ..roomy() };
        let err = check(&plan("bundled = true", 300_000), &tracked).unwrap_err();
        assert!(err.contains("net.netfilter.nf_conntrack_max") && err.contains("262144"), "{err}");
        assert_eq!(check(&plan("bundled = true", 200_000), &tracked), Ok(()));

        let few_files = Machine { files_free: Some(100_000), ..roomy() };
        let err = check(&plan("bundled = true", 100_000), &few_files).unwrap_err();
        assert!(err.contains("fs.file-max"), "{err}");
    }

    #[test]
    fn a_remote_fleet_is_not_held_to_this_machine() {
        let text = "name = \"m\"\n[target]\nurl = \"ws://10.0.0.9/\"\n[load]\nconnections = 5000000\n\
                    message_interval_s = 0\n[fleet]\nremote = true\nworkers = 400\n";
        let path = std::path::Path::new("m.toml");
        let p = Plan::new(&crate::scenario::Scenario::parse(path, text).unwrap(), path, text).unwrap();
        assert_eq!(Needs::of(&p), None);
        assert_eq!(check(&p, &Machine { mem_available: 1 << 30, ..roomy() }), Ok(()));
    }

    #[test]
    fn this_machine_reads() {
        let m = Machine::read();
        assert!(m.mem_available > 0 && m.mem_available < u64::MAX, "MemAvailable: {m:?}");
        assert!(m.ephemeral_ports > 0 && m.ephemeral_ports < u64::MAX, "the port range: {m:?}");
    }
}
