//! This process's own resource use, read from /proc, so every snapshot can
//! say what the worker itself cost (a load generator that runs out of CPU
//! measures itself, not the target).

/// Resident set size, bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * page_size()
}

/// User plus system CPU time used so far, microseconds.
pub fn cpu_time_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok())).sum();
    ticks * 1_000_000 / clock_ticks()
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 { v as u64 } else { 100 }
}

/// Turns the running CPU total into per-interval use.
#[derive(Debug)]
pub struct CpuMeter {
    last: u64,
}

impl CpuMeter {
    /// Starts counting from now.
    pub fn new() -> Self {
        CpuMeter { last: cpu_time_us() }
    }

    /// CPU microseconds used since the last call.
    pub fn delta_us(&mut self) -> u64 {
        let now = cpu_time_us();
        let d = now.saturating_sub(self.last);
        self.last = now;
        d
    }
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plausible_figures() {
        let rss = rss_bytes();
        assert!(rss > 1_000_000 && rss < 10_000_000_000, "rss {rss}");
        let mut meter = CpuMeter::new();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(meter.delta_us() > 0);
    }
}
