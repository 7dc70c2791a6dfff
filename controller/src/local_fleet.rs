//! The embedded local fleet: worker child processes on this machine, started
//! when the scenario configures no remote fleet. One process holds at most
//! ~20,000 sockets here, so the connection count decides how many. Children
//! die with the controller (PR_SET_PDEATHSIG, and kill-on-drop).

use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};

/// Makes the kernel kill the child when the controller dies, however it dies.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill
    // the child when its parent exits.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The running children.
pub struct LocalFleet {
    children: Vec<(String, Child)>,
}

impl LocalFleet {
    /// Starts `count` workers (`EXECUTABLE worker ...`) that join
    /// `controller_url`.
    pub fn spawn(executable: &Path, count: u32, controller_url: &str) -> std::io::Result<LocalFleet> {
        let mut children = Vec::new();
        for i in 1..=count {
            let id = format!("local-{i}");
            let mut cmd = Command::new(executable);
            cmd.arg("worker")
                .args(["--controller", controller_url, "--id", &id, "--once", "--join-timeout", "30"])
                .env("RUST_LOG", std::env::var("STAMPEDE_WORKER_LOG").unwrap_or_else(|_| "warn".into()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true);
            die_with_parent(&mut cmd);
            children.push((id, cmd.spawn()?));
        }
        Ok(LocalFleet { children })
    }

    /// A child that has exited, with how.
    pub fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|(id, child)| match child.try_wait() {
            Ok(Some(status)) => Some(format!("worker {id} exited ({status})")),
            _ => None,
        })
    }

    /// Waits for every child to exit, killing those still there after
    /// `grace`.
    pub async fn finish(mut self, grace: std::time::Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for (id, child) in &mut self.children {
            if tokio::time::timeout_at(deadline, child.wait()).await.is_err() {
                tracing::warn!("worker {id} did not exit in time; killing it");
                let _ = child.kill().await;
            }
        }
    }
}
