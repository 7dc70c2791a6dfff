//! Child processes that cannot outlive the process that started them: the
//! kernel kills them when their parent dies however it dies
//! (`PR_SET_PDEATHSIG`), dropping the handle kills them, and stopping them
//! means SIGTERM, a grace period, then SIGKILL. The controller's local
//! workers and the bundled relay's processes are started this way, so no
//! load runs unsupervised.

use std::ffi::OsStr;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A command for `program` whose process dies with this one.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.kill_on_drop(true);
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
