//! What a run's processes hold, read from /proc while it goes: the RSS of
//! its worker processes and of its relay processes (by their subcommand),
//! and how much of the machine's memory is in use in all (kernel included).

use std::process::Child;
use std::time::Duration;

/// The bench's MB: 2^20 bytes (/proc's kB are 2^10).
pub const MB: f64 = 1024.0 * 1024.0;

/// The largest readings over a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Peaks {
    /// Summed RSS of `controller worker` processes, MB.
    pub workers_mb: f64,
    /// Summed RSS of `controller relay` processes, MB.
    pub relays_mb: f64,
    /// MemAvailable at the start minus its lowest value, MB: everything
    /// the run took, the kernel's sockets included.
    pub machine_mb: f64,
}

/// Samples once a second until `child` exits.
pub fn watch(child: &mut Child) -> Peaks {
    let start = mem_available_mb();
    let mut peaks = Peaks::default();
    while child.try_wait().ok().flatten().is_none() {
        let (workers, relays) = rss_by_role();
        peaks.workers_mb = peaks.workers_mb.max(workers);
        peaks.relays_mb = peaks.relays_mb.max(relays);
        peaks.machine_mb = peaks.machine_mb.max(start - mem_available_mb());
        std::thread::sleep(Duration::from_secs(1));
    }
    peaks
}

fn mem_available_mb() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Summed RSS, MB, of the processes whose first argument is `worker` and of
/// those whose first argument is `relay`.
fn rss_by_role() -> (f64, f64) {
    let (mut workers, mut relays) = (0.0, 0.0);
    let Ok(entries) = std::fs::read_dir("/proc") else { return (0.0, 0.0) };
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else { continue };
        let role = cmdline.split(|&b| b == 0).nth(1).map(<[u8]>::to_vec);
        let total = match role.as_deref() {
            Some(b"worker") => &mut workers,
            Some(b"relay") => &mut relays,
            _ => continue,
        };
        let pid = entry.file_name().to_string_lossy().into_owned();
        if let Some(rss) = stampede_worker::process::status_bytes(&pid, "VmRSS") {
            *total += rss as f64 / MB;
        }
    }
    (workers, relays)
}

/// CPU seconds used so far by process `pid` and every process descended
/// from it (a peer tool may run its load in child processes).
pub fn tree_cpu_s(pid: u32) -> f64 {
    use stampede_worker::process::{cpu_time_us_of, parent_of};
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0.0 };
    let pids: Vec<u64> = entries.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect();
    let descends = |mut p: u64| {
        // A chain of parents ends at 1 (or 0 for the kernel's own).
        for _ in 0..64 {
            if p == u64::from(pid) {
                return true;
            }
            match parent_of(&p.to_string()) {
                Some(parent) if parent > 1 => p = parent,
                _ => return false,
            }
        }
        false
    };
    let us: u64 =
        pids.into_iter().filter(|&p| descends(p)).filter_map(|p| cpu_time_us_of(&p.to_string())).sum();
    us as f64 / 1e6
}
