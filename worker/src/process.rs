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
    cpu_time_us_of("self").unwrap_or(0)
}

/// User plus system CPU time process `pid` (a number, or `self`) has used,
/// all its threads, microseconds; `None` once it is gone.
pub fn cpu_time_us_of(pid: &str) -> Option<u64> {
    let stat = Stat::read(pid)?;
    // utime and stime are fields 14 and 15 of stat(5).
    Some((stat.field(14)? + stat.field(15)?) * 1_000_000 / clock_ticks())
}

/// The parent of process `pid`, `None` once it is gone.
pub fn parent_of(pid: &str) -> Option<u64> {
    Stat::read(pid)?.field(4)
}

/// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), bytes.
pub fn status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    Some(line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()? * 1024)
}

/// `/proc/<pid>/stat`.
struct Stat(String);

impl Stat {
    fn read(pid: &str) -> Option<Stat> {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().map(Stat)
    }

    /// Field `n` of stat(5), counted from 1, for the numeric fields after
    /// the command name (which is in parentheses and may hold spaces).
    fn field(&self, n: usize) -> Option<u64> {
        let after = self.0.rsplit_once(')')?.1;
        after.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
    }
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

    #[test]
    fn reads_other_processes_by_pid() {
        assert_eq!(parent_of("self"), Some(u64::from(std::os::unix::process::parent_id())));
        let me = std::process::id().to_string();
        assert!(cpu_time_us_of(&me).is_some());
        let rss = status_bytes(&me, "VmRSS").unwrap();
        assert!(status_bytes(&me, "VmHWM").unwrap() >= rss);
        // Past pid_max (4,194,304 at most): no such process.
        assert_eq!(cpu_time_us_of("99999999"), None);
        assert_eq!(status_bytes(&me, "NoSuchField"), None);
    }

    #[test]
    fn a_command_name_with_parentheses_and_spaces_does_not_shift_the_fields() {
        let stat = Stat("42 (a) b (c) S 7 42 42 0 -1 4194304 1 0 0 0 250 125 0 0 20 0 1 0".into());
        assert_eq!(stat.field(4), Some(7));
        assert_eq!((stat.field(14), stat.field(15)), (Some(250), Some(125)));
        assert_eq!(stat.field(2), None, "the name is not a number field");
        assert_eq!(stat.field(99), None);
        assert_eq!(Stat("truncated (no close".into()).field(4), None);
    }
}
