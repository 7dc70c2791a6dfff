//! Child processes that cannot outlive the process that started them: the
//! kernel kills them when their parent dies however it dies
//! (`PR_SET_PDEATHSIG`), dropping the handle kills them, a terminal's Ctrl-C
//! reaches only the parent, and stopping them means SIGTERM, a grace period,
//! then SIGKILL. The controller's local
//! workers and the bundled relay's processes are started this way, so no
//! load runs unsupervised.

use std::ffi::OsStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering::Relaxed};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// Exit code after Ctrl-C (SIGINT), by shell convention 128 + 2.
pub const EXIT_INTERRUPTED: i32 = 130;
/// Exit code after SIGTERM, 128 + 15.
pub const EXIT_TERMINATED: i32 = 143;

/// The other side of supervision: the first SIGINT or SIGTERM cancels
/// `shutdown` (this process stops gracefully: results written, connections
/// closed), a second one exits at once. The returned cell holds the exit
/// code the signal asks for (0 until one came). Call inside a runtime.
pub fn stop_on_signals(shutdown: CancellationToken) -> Arc<AtomicI32> {
    let code = Arc::new(AtomicI32::new(0));
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::warn!("cannot handle signals: Ctrl-C and SIGTERM will not stop gracefully");
        return code;
    };
    let cell = code.clone();
    tokio::spawn(async move {
        let first = tokio::select! {
            _ = int.recv() => EXIT_INTERRUPTED,
            _ = term.recv() => EXIT_TERMINATED,
        };
        cell.store(first, Relaxed);
        eprintln!("\nstopping gracefully (again to quit at once)");
        shutdown.cancel();
        tokio::select! {
            _ = int.recv() => std::process::exit(EXIT_INTERRUPTED),
            _ = term.recv() => std::process::exit(EXIT_TERMINATED),
        }
    });
    code
}

/// A command for `program` whose process dies with this one, in a process
/// group of its own: Ctrl-C in a terminal signals the whole foreground
/// group, and stopping a child is its parent's business (a worker that quit
/// on its own would take its last seconds of measurements with it).
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.kill_on_drop(true).process_group(0);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the
    // child when the thread that forked it exits (tokio's threads live as
    // long as the runtime, which lives as long as the process).
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// A named child process.
#[derive(Debug)]
pub struct Supervised {
    /// Name used in messages.
    pub name: String,
    /// The process.
    pub child: Child,
}

impl Supervised {
    /// Starts `cmd` (made with [`command`]) as `name`.
    pub fn spawn(name: impl Into<String>, cmd: &mut Command) -> std::io::Result<Supervised> {
        Ok(Supervised { name: name.into(), child: cmd.spawn()? })
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.name)),
            _ => None,
        }
    }

    /// Waits up to `grace` for it to exit on its own, then kills it.
    pub async fn wait_or_kill(mut self, grace: Duration) {
        if tokio::time::timeout(grace, self.child.wait()).await.is_err() {
            tracing::warn!("{} did not exit within {grace:?}; killing it", self.name);
            let _ = self.child.kill().await;
        }
    }

    /// Asks it to stop (SIGTERM), then kills it after `grace`.
    pub async fn stop(self, grace: Duration) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signals our own child, which has not been reaped (it
            // still has an id), so the pid cannot have been reused.
            unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        }
        self.wait_or_kill(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let mut cmd = command("sh");
        cmd.args(["-c", "trap '' TERM; sleep 30"]);
        let child = Supervised::spawn("stubborn", &mut cmd).unwrap();
        let started = std::time::Instant::now();
        child.stop(Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(5));

        let mut cmd = command("sh");
        cmd.args(["-c", "exit 3"]);
        let mut child = Supervised::spawn("quick", &mut cmd).unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(child.exited().as_deref(), Some("quick exited (exit status: 3)"));
    }
}
