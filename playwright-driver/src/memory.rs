//! Memory of a browser's whole process tree, read from /proc.
//!
//! Chromium is a browser process, a zygote, a GPU/utility process or two
//! and one renderer per site instance (per isolated context). Their RSS
//! counts shared pages (the binary, fonts, shared memory) once per process,
//! so summed RSS overstates a 10-tab browser about five-fold; PSS divides
//! each shared page among its sharers and sums to the real cost.
//! `/proc/<pid>/smaps_rollup` gives both per process in one read.
//!
//! The tree is found from each process's parent pid (`/proc/*/stat`), so
//! it includes renderers forked by the zygote. The same walk lets the
//! launcher kill every descendant, not only the browser process.

use std::collections::HashMap;
use std::io;

/// Memory of a process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeMemory {
    /// Processes counted (the root and its descendants).
    pub processes: usize,
    /// Sum of proportional set sizes, bytes: the tree's real memory cost.
    pub pss_bytes: u64,
    /// Sum of resident set sizes, bytes (for comparison; overcounts shared pages).
    pub rss_bytes: u64,
}

/// PSS and RSS of `root` and all its descendants. Processes that exit
/// while being read are skipped; a missing `root` is `NotFound`.
pub fn tree_memory(root: u32) -> io::Result<TreeMemory> {
    let (pss, rss) = rollup(root)?;
    let mut total = TreeMemory { processes: 1, pss_bytes: pss, rss_bytes: rss };
    for pid in descendants(root) {
        match rollup(pid) {
            Ok((pss, rss)) => {
                total.processes += 1;
                total.pss_bytes += pss;
                total.rss_bytes += rss;
            }
            // Exited meanwhile, or not readable: not part of the tree any more.
            Err(_) => continue,
        }
    }
    Ok(total)
}

/// Every live descendant of `root` (children, grandchildren, ...), found by
/// parent pid. Empty when /proc cannot be read.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some(ppid) = parent_of(&stat) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            next.push(child);
        }
    }
    found
}

/// The parent pid from a `/proc/<pid>/stat` line. The command name (field
/// 2) is in parentheses and may itself contain spaces and ')', so fields
/// are counted from the last ')': state, then ppid.
fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// (PSS, RSS) of one process in bytes.
fn rollup(pid: u32) -> io::Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok((field_kb(&text, "Pss:") * 1024, field_kb(&text, "Rss:") * 1024))
}

/// A "Name:   1234 kB" line's number (0 when absent).
fn field_kb(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_found_after_an_awkward_command_name() {
        assert_eq!(parent_of("4242 (Web Content) (x) S 17 4242 4242 0 -1"), Some(17));
        assert_eq!(parent_of("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn pss_lines_are_read_in_bytes() {
        let text =
            "55d0-7ff [rollup]\nRss:               10240 kB\nPss:                4096 kB\nPss_Anon: 1 kB\n";
        assert_eq!((field_kb(text, "Pss:"), field_kb(text, "Rss:")), (4096, 10240));
    }

    #[test]
    fn our_own_tree_includes_a_child_and_pss_is_at_most_rss() {
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id();
        assert!(descendants(me).contains(&child.id()));
        let tree = tree_memory(me).unwrap();
        assert!(tree.processes >= 2, "{tree:?}");
        assert!(tree.pss_bytes > 0 && tree.pss_bytes <= tree.rss_bytes, "{tree:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
