//! What this worker can hold, announced in its Hello so the controller can
//! split connections by capacity. The binding limit on these machines is
//! open files: one socket each.

use stampede_proto::fleet::Capacity;

/// Files kept back for the runtime, the controller link and logs.
const RESERVED_FILES: u64 = 64;

/// Raises the soft open-file limit to the hard one and measures capacity;
/// `cap` lowers `max_connections` further.
pub fn probe(cap: Option<u64>) -> Capacity {
    let open_files_limit = raise_open_files_limit();
    let by_files = open_files_limit.saturating_sub(RESERVED_FILES);
    Capacity {
        cores: std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1),
        memory_bytes: total_memory(),
        open_files_limit,
        max_connections: cap.map_or(by_files, |c| c.min(by_files)),
    }
}

/// Raises the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_open_files_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    lim.rlim_cur
}

fn total_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn capacity_follows_the_file_limit_and_the_cap() {
        let cap = super::probe(None);
        assert!(cap.open_files_limit >= 256);
        assert_eq!(cap.max_connections, cap.open_files_limit - super::RESERVED_FILES);
        assert!(cap.cores >= 1 && cap.memory_bytes > 0);
        assert_eq!(super::probe(Some(10)).max_connections, 10);
    }
}
