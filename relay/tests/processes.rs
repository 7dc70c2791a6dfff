//! Relay processes report a child that does not behave as a relay (prints
//! something else, or exits before listening) as an error, never a panic
//! or a hang.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use stampede_relay::RelayConfig;
use stampede_relay::RelayProcesses;

/// An executable shell script standing in for `EXE relay ...`.
fn script(dir: &tempfile::TempDir, body: &str) -> PathBuf {
    let path = dir.path().join("fake-relay");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test]
async fn a_child_that_is_not_a_relay_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (body, says) in [
        ("echo 'hello, I am a web server'", "unexpected first line"),
        ("exit 3", "exited before listening"),
        // Prints without end and no newline: read up to a bound, not forever.
        ("yes x | tr -d '\\n'", "unexpected first line"),
    ] {
        let exe = script(&dir, body);
        let started = tokio::time::Instant::now();
        let err = RelayProcesses::start(&exe, 2, &RelayConfig::default()).await.unwrap_err();
        assert!(err.to_string().contains(says), "{body}: {err}");
        assert!(started.elapsed() < Duration::from_secs(5), "{body}: no hang");
    }
}
