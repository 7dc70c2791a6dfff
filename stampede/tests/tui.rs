//! The live view (`controller run --tui`) in a real pseudo-terminal: the
//! controller draws on it as on a user's terminal, a terminal emulator
//! (vt100) reads the screen, and a `q` typed into it stops the run with
//! every results file written. Without a terminal, the progress lines stay.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ONE_RUN_AT_A_TIME, Scratch, read_csv, read_json};

const QUICK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quick.toml");
const ROWS: u16 = 45;
const COLS: u16 = 130;

/// A pseudo-terminal of ROWS x COLS: (master, slave).
fn open_pty() -> (std::fs::File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors it opened; null name and termios are allowed.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone.
    unsafe { (std::fs::File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// The controller's screen as the terminal shows it, fed by a reader thread.
struct Screen {
    parser: Arc<Mutex<vt100::Parser>>,
    /// Every byte the controller wrote, for what scrolls off.
    transcript: Arc<Mutex<Vec<u8>>>,
}

impl Screen {
    fn follow(mut master: std::fs::File) -> Screen {
        let (rows, cols) = (ROWS.try_into().unwrap(), COLS.try_into().unwrap());
        let parser = Arc::new(Mutex::new(vt100::Parser::new(rows, cols, 0)));
        let transcript = Arc::new(Mutex::new(Vec::new()));
        let (p, t) = (parser.clone(), transcript.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            // Ends with EIO once the controller (the last holder of the slave) exits.
            while let Ok(n @ 1..) = master.read(&mut buf) {
                p.lock().unwrap().process(&buf[..n]);
                t.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Screen { parser, transcript }
    }

    fn text(&self) -> String {
        self.parser.lock().unwrap().screen().contents()
    }

    /// Waits until the screen satisfies `ok`; returns it.
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let text = self.text();
            if ok(&text) {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what} never appeared; the screen:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `N / M` in the header: seconds elapsed of the run.
fn elapsed(screen: &str) -> Option<u64> {
    let header = screen.lines().find(|l| l.contains("stampede"))?;
    let (before, _) = header.split_once(" / ")?;
    before.rsplit(' ').next()?.parse().ok()
}

/// Open connections in the connections gauge (`active / target`).
fn active(screen: &str) -> Option<u64> {
    let line = screen.lines().skip_while(|l| !l.contains("connections: active / target")).nth(1)?;
    let (before, _) = line.split_once(" / ")?;
    before.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn the_live_view_shows_the_run_and_q_stops_it_with_complete_results() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let out = scratch.results_parent();
    let (master, slave) = open_pty();
    let mut keys = master.try_clone().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_controller"));
    command
        .args(["run", QUICK, "--ramp-up", "2", "--duration", "120", "--tui", "--output"])
        .arg(&out)
        .env("TERM", "xterm-256color")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl are async-signal-safe; the pty becomes the
    // controller's terminal, as a shell would make it.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("controller starts");
    let screen = Screen::follow(master);

    // The parts of the view, as the run fills them.
    let first = screen.wait_for("the view with its phases, workers and connections", |s| {
        [
            "phases: now",
            "warmup 5 s",
            "ramp-up 2 s",
            "sustained 120 s",
            "cooldown 5 s",
            "workers: 1 (0 lost)",
            "local-1",
            "live",
        ]
        .iter()
        .all(|w| s.contains(w))
            && active(s).is_some_and(|n| n > 0)
    });
    assert!(
        screen.parser.lock().unwrap().screen().alternate_screen(),
        "the view draws on the alternate screen"
    );
    for part in
        ["received:", "latency p95 per second", "errors by cause", "thresholds (run so far)", "test.log"]
    {
        assert!(first.contains(part), "{part:?} missing:\n{first}");
    }
    assert!(
        first.contains("latency_p95_ms < 100") && first.contains("pass"),
        "thresholds judged live:\n{first}"
    );
    // It updates: time moves, connections climb to the ramp's 100.
    let t0 = elapsed(&first).expect("elapsed seconds in the header");
    let later = screen.wait_for("the run's later seconds, at 100 connections", |s| {
        elapsed(s).is_some_and(|t| t >= t0 + 3) && active(s) == Some(100)
    });
    assert!(later.contains("phase sustained started") || later.contains("sustained"), "{later}");

    keys.write_all(b"q").unwrap();
    screen.wait_for("the stopping notice", |s| s.contains("stopping") || !s.contains("phases: now"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "q did not end the run:\n{}", screen.text());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(130), "q ends the run as Ctrl-C does:\n{}", screen.text());
    // The terminal is given back: the main screen, the summary and the path printed on it.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!screen.parser.lock().unwrap().screen().alternate_screen(), "the alternate screen was left");
    let transcript = String::from_utf8_lossy(&screen.transcript.lock().unwrap()).into_owned();
    let dir = scratch.results();
    assert!(transcript.contains(&dir.display().to_string()), "the results path is printed:\n{transcript}");

    // Complete results: every file, and the summary's counters are the sum of metrics.csv's seconds.
    for file in ["summary.json", "metrics.csv", "metrics.json", "test.log", "latency.hlog", "junit.xml"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let summary = read_json(&dir.join("summary.json"));
    assert!(summary["aborted"].as_str().is_some_and(|a| a.contains("interrupted")), "{summary}");
    let (header, rows) = read_csv(&dir.join("metrics.csv"));
    let col = header.iter().position(|h| h == "messages_received").unwrap();
    let received: u64 = rows.iter().map(|r| r[col].parse::<u64>().unwrap()).sum();
    assert!(received > 0);
    assert_eq!(summary["counters"]["messages_received"].as_u64(), Some(received));
    assert!(rows.len() as u64 >= t0 + 3, "{} seconds written", rows.len());
}

#[test]
fn without_a_terminal_tui_falls_back_to_progress_lines() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let out = scratch.results_parent();
    let run = Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(["run", QUICK, "--ramp-up", "1", "--duration", "3", "--tui", "--output"])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("--tui needs a terminal on stdin and stdout: showing progress lines instead"),
        "{stderr}"
    );
    assert!(stderr.contains("msg/s, p50/p95/p99"), "the progress lines stay:\n{stderr}");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(stdout.trim(), scratch.results().display().to_string(), "stdout is the results path only");
}
