//! Finding and starting Chromium, and making sure it and its profile are
//! gone afterwards.
//!
//! Chromium runs headless with the flags known to work on a closed network
//! (../shared/DEPENDENCIES.md), a fresh user-data dir in a temporary
//! directory, and `--remote-debugging-pipe`: no port is opened, nothing
//! else on the machine can connect to it, and its exit is an end of file
//! on our side of the pipe. It is started through `stampede_child::command`
//! (own process group, killed if this process dies).
//!
//! [`Process`] owns the child and the temporary directory. Dropping it
//! kills the whole tree (browser, zygote, renderers) and removes the
//! directory; that covers a failed launch, an error anywhere, a panic.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::unix::pipe;

use crate::error::{Error, Result};

/// Names looked up on `PATH`, in order, when no path is given.
pub const EXECUTABLE_NAMES: &[&str] = &["chromium", "chromium-browser", "google-chrome"];

/// Flags every browser gets (before [`LaunchOptions::args`]).
pub const DEFAULT_FLAGS: &[&str] = &[
    // Known to work on these machines (DEPENDENCIES.md, "browser"): no GPU,
    // no sandbox (we run as root in containers), and no traffic of its own
    // (updates, sync, safe-browsing lists) on a closed network.
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    // No initial about:blank tab: we open our own pages. Measured here
    // (Chromium 148, settled): 6 processes and ~225 MB PSS for an idle
    // browser instead of 9 and ~365 MB.
    "--no-startup-window",
    // Only one tab per window is "visible"; the others would get throttled
    // timers and no animation frames. Every session of a load test must run
    // at full speed, so nothing is backgrounded.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
];

/// How to start the browser.
#[derive(Debug, Clone)]
pub struct LaunchOptions {
    /// The executable; when `None`, `CHROME_PATH`, then [`EXECUTABLE_NAMES`] on `PATH`.
    pub executable: Option<PathBuf>,
    /// Extra flags after [`DEFAULT_FLAGS`] (e.g. `--renderer-process-limit=4`).
    pub args: Vec<String>,
    /// Deadline of each command unless a call says otherwise.
    pub command_timeout: Duration,
    /// How long Chromium may take to answer its first command.
    pub launch_timeout: Duration,
    /// Events buffered per page subscription before the oldest are dropped.
    pub event_capacity: usize,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            executable: None,
            args: Vec::new(),
            command_timeout: Duration::from_secs(30),
            launch_timeout: Duration::from_secs(30),
            event_capacity: 1024,
        }
    }
}

/// Finds the Chromium executable: `explicit` if given, else `CHROME_PATH`,
/// else the first of [`EXECUTABLE_NAMES`] on `PATH`. A path that is given
/// but missing is an error (not a fall-through to another browser), and
/// the error lists everything tried.
pub fn find_chromium(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return executable(path)
            .ok_or_else(|| Error::NotFound { tried: format!("{} (given explicitly)", path.display()) });
    }
    if let Some(path) = std::env::var_os("CHROME_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return executable(&path)
            .ok_or_else(|| Error::NotFound { tried: format!("CHROME_PATH={}", path.display()) });
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    for name in EXECUTABLE_NAMES {
        for dir in std::env::split_paths(&path_var) {
            if let Some(found) = executable(&dir.join(name)) {
                return Ok(found);
            }
        }
    }
    Err(Error::NotFound {
        tried: format!(
            "CHROME_PATH (unset), then {} on PATH={}",
            EXECUTABLE_NAMES.join(", "),
            path_var.to_string_lossy()
        ),
    })
}

/// `path` if it is an executable file.
fn executable(path: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.permissions().mode() & 0o111 != 0).then(|| path.to_path_buf())
}

/// A started Chromium: the process, our ends of its pipe.
pub(crate) struct Spawned {
    pub process: Process,
    /// Chromium's answers and events (its fd 4).
    pub reader: pipe::Receiver,
    /// Our commands (its fd 3).
    pub writer: pipe::Sender,
}

/// Starts `exe` headless on a fresh profile with the pipe on fds 3 and 4.
/// Must be called on a thread that lives as long as the browser should
/// (a runtime worker, not `spawn_blocking`): the child's parent-death
/// signal is tied to the spawning thread.
pub(crate) fn spawn(exe: &Path, extra_args: &[String]) -> Result<Spawned> {
    let dir = tempfile::Builder::new().prefix("stampede-chromium-").tempdir()?;
    // stderr goes to a file: nobody has to drain it, and a failed launch
    // can quote its end.
    let log = std::fs::File::create(dir.path().join("chromium.log"))?;
    // std's pipes are close-on-exec: other children started meanwhile
    // (tests run in parallel) never inherit them, so Chromium's exit
    // closes the last writer and we see the end of file.
    let (commands_r, commands_w) = io::pipe()?;
    let (answers_r, answers_w) = io::pipe()?;
    let (child_read, child_write) = (commands_r.as_raw_fd(), answers_w.as_raw_fd());

    let mut cmd = stampede_child::command(exe);
    cmd.args(DEFAULT_FLAGS)
        .arg(format!("--user-data-dir={}", dir.path().join("profile").display()))
        .arg("--remote-debugging-pipe")
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and
    // exec, on descriptors that are open in the parent.
    unsafe {
        cmd.pre_exec(move || {
            // Move both out of the way first: either may itself be 3 or 4.
            // The copies are close-on-exec; dup2 clears that flag on 3 and 4.
            let read = libc::fcntl(child_read, libc::F_DUPFD_CLOEXEC, 10);
            let write = libc::fcntl(child_write, libc::F_DUPFD_CLOEXEC, 10);
            if read < 0 || write < 0 || libc::dup2(read, 3) < 0 || libc::dup2(write, 4) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| Error::Spawn { path: exe.to_path_buf(), source })?;
    // Only Chromium may hold its ends now, or its exit would go unnoticed.
    drop((commands_r, answers_w));
    let pid = child.id().unwrap_or_default();
    let process = Process { child, pid, dir: Some(dir) };
    Ok(Spawned {
        process,
        reader: pipe::Receiver::from_owned_fd(answers_r.into())?,
        writer: pipe::Sender::from_owned_fd(commands_w.into())?,
    })
}

/// A running Chromium and its temporary directory (profile and log).
pub(crate) struct Process {
    child: tokio::process::Child,
    pid: u32,
    dir: Option<TempDir>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The temporary directory (profile in `profile/`, stderr in `chromium.log`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// The last lines of Chromium's stderr, for launch errors ("" if none).
    pub fn stderr_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(12).collect();
        if lines.is_empty() {
            return String::new();
        }
        let tail: Vec<&str> = lines.into_iter().rev().collect();
        format!("\nchromium's stderr ends with:\n{}", tail.join("\n"))
    }

    /// Waits up to `grace` for Chromium to exit (after `Browser.close`),
    /// then kills whatever is left and removes the directory.
    pub async fn close(mut self, grace: Duration) -> io::Result<()> {
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            tracing::warn!(
                pid = self.pid,
                "chromium did not exit within {grace:?} of Browser.close; killing it"
            );
        }
        self.kill_tree();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
        match self.dir.take() {
            Some(dir) => tokio::task::spawn_blocking(move || remove(dir)).await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    /// SIGKILL to the browser, its process group and every descendant
    /// (collected first: once the browser is gone its children are
    /// reparented and no longer found under it).
    fn kill_tree(&mut self) {
        // Until we reap it (even as a zombie) its pid is ours, so the
        // children found under it are Chromium's.
        let unreaped = matches!(self.child.try_wait(), Ok(None));
        let descendants = if unreaped { crate::memory::descendants(self.pid) } else { Vec::new() };
        // SAFETY: kill(2) has no memory-safety preconditions. The group is
        // the one Chromium leads (process_group(0)): orphaned renderers of
        // a browser that already died are still in it, and while any
        // member lives the group id cannot be reused.
        unsafe {
            libc::kill(-(self.pid as i32), libc::SIGKILL);
            for pid in descendants {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
        if unreaped {
            // An error only means it exited meanwhile.
            let _ = self.child.start_kill();
        }
    }
}

impl Drop for Process {
    /// Kills the tree and removes the directory. This blocks for the few
    /// milliseconds a SIGKILLed process takes to exit, so the profile is
    /// not deleted under a live browser.
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        self.kill_tree();
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if let Err(e) = remove(dir) {
            tracing::warn!(error = %e, "cannot remove chromium's temporary directory");
        }
    }
}

/// Removes the directory, once more after a pause if a dying process was
/// still writing into it.
fn remove(dir: TempDir) -> io::Result<()> {
    let path = dir.path().to_path_buf();
    if dir.close().is_err() {
        std::thread::sleep(Duration::from_millis(20));
        match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_explicit_path_is_an_error_naming_it() {
        let err = find_chromium(Some(Path::new("/nonexistent/chromium"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/nonexistent/chromium") && text.contains("CHROME_PATH"), "{text}");
    }

    #[test]
    fn an_explicit_executable_is_taken_as_is() {
        assert_eq!(find_chromium(Some(Path::new("/bin/sh"))).unwrap(), PathBuf::from("/bin/sh"));
        let plain = tempfile::NamedTempFile::new().unwrap(); // mode 0600
        assert!(find_chromium(Some(plain.path())).is_err(), "not executable");
    }
}
