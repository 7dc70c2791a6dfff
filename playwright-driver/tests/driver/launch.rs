//! Launch failures: clear, fast, and without leftovers. No Chromium needed.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use playwright_driver::{Browser, Error, LaunchOptions};

/// A fake "browser": a shell script in a temporary directory.
fn script(dir: &tempfile::TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("fake-chromium");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_browser_that_exits_at_once_is_a_launch_error_quoting_its_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let options = LaunchOptions {
        executable: Some(script(&dir, "echo 'cannot open display' >&2; exit 1")),
        ..LaunchOptions::default()
    };
    let started = Instant::now();
    let err = Browser::launch(options).await.unwrap_err();
    assert!(matches!(&err, Error::Launch { reason, .. } if reason.is_connection_closed()), "{err}");
    assert!(err.to_string().contains("cannot open display"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_browser_that_never_answers_times_out_and_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let options = LaunchOptions {
        executable: Some(script(&dir, &format!("echo $$ > {}; exec sleep 60", pid_file.display()))),
        launch_timeout: Duration::from_millis(500),
        ..LaunchOptions::default()
    };
    let err = Browser::launch(options).await.unwrap_err();
    assert!(matches!(&err, Error::Launch { reason, .. } if reason.is_timeout()), "{err}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    // SAFETY: signal 0 only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "the silent browser was killed");
}
