//! Faults injected into the bundled relay show up in the results where and
//! when the scenario put them: the controller binary, real worker processes
//! and the bundled relay on loopback.

mod common;

use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, num, read_csv, read_json};

/// metrics.csv as (elapsed_s, cells by column name).
struct Csv {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Csv {
    fn read(dir: &std::path::Path) -> Csv {
        let (header, rows) = read_csv(&dir.join("metrics.csv"));
        Csv { header, rows }
    }

    fn col(&self, name: &str) -> usize {
        self.header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))
    }

    /// The value of `name` in the row of second `s`.
    fn at(&self, s: usize, name: &str) -> f64 {
        let cell = &self.rows[s][self.col(name)];
        cell.parse().unwrap_or_else(|_| panic!("second {s}: {name} = {cell:?}"))
    }

    /// `name` per second, for failure messages.
    fn series(&self, name: &str) -> Vec<String> {
        let c = self.col(name);
        self.rows.iter().map(|r| r[c].clone()).collect()
    }

    /// The first second after the ramp (once `peak` connections were
    /// active) whose connections_active is at most `level`.
    fn fell_to(&self, peak: f64, level: f64) -> Option<usize> {
        let active = |s: usize| self.at(s, "connections_active");
        let held = (0..self.rows.len()).find(|&s| active(s) >= peak)?;
        (held..self.rows.len()).find(|&s| active(s) <= level)
    }
}

#[test]
fn slow_window_and_drop_show_up_in_the_results_at_their_seconds() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    // 25 s: 2 s ramp, 21 s hold, 2 s cooldown. Fault times count from the
    // run's start, i.e. from elapsed_s 0 in metrics.csv.
    let path = scratch.file(
        "faults.toml",
        r#"
name = "faults"
[target]
bundled = true
bundled_fault_slow = { start_s = 5, length_s = 4, extra_ms = 50 }
bundled_fault_drop = { at_s = 14.5, fraction = 0.3 }
[load]
connections = 100
message_interval_s = 0.2
reconnect = false
[phases]
warmup_s = 0
ramp_up_s = 2
sustained_s = 21
cooldown_s = 2
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(90));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    let csv = Csv::read(&dir);

    // The drop: 30 of the 100 connections closed by the server with 1011.
    let closed = num(&summary, "connections.closed_by_server");
    assert!((28.0..=32.0).contains(&closed), "closed_by_server {closed}");
    let closed_1011 = num(&summary, "errors.closed_1011");
    assert!((28.0..=32.0).contains(&closed_1011), "closed_1011 {closed_1011}: {}", summary["errors"]);
    let active = csv.series("connections_active");
    let fell = csv.fell_to(100.0, 85.0).unwrap_or_else(|| panic!("never fell: {active:?}"));
    // Mid-second, so the closes cannot straddle two rows.
    assert!((13..=15).contains(&fell), "fell in second {fell}, not ~14: {active:?}");
    let (before, after) = (csv.at(fell - 1, "connections_active"), csv.at(fell + 1, "connections_active"));
    assert_eq!(before, 100.0, "{active:?}");
    assert!((68.0..=72.0).contains(&after), "not reconnected, ~70 left: {active:?}");

    // The slow window [5 s, 9 s): every second inside it has p99 >= 50 ms,
    // seconds well outside it do not.
    let p99 = csv.series("latency_p99_ms");
    for s in 5..=8 {
        assert!(csv.at(s, "latency_p99_ms") >= 50.0, "second {s} inside the window: {p99:?}");
    }
    for s in 6..=7 {
        assert!(csv.at(s, "latency_p50_ms") >= 50.0, "second {s}: every echo is slowed");
    }
    for s in [3, 4, 11, 12] {
        assert!(csv.at(s, "latency_p99_ms") < 50.0, "second {s} outside the window: {p99:?}");
    }
}

#[test]
fn relay_processes_take_the_run_start_as_their_fault_clock() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    // One relay child process: faults go as flags, the run start on stdin.
    let path = scratch.file(
        "faults-process.toml",
        r#"
name = "faults-process"
[target]
bundled = true
bundled_processes = 1
bundled_fault_drop = { at_s = 5.5, fraction = 0.5 }
[load]
connections = 20
message_interval_s = 0.5
reconnect = false
[phases]
warmup_s = 0
ramp_up_s = 1
sustained_s = 7
cooldown_s = 1
"#,
    );
    let run = scratch.run(&path, Duration::from_secs(60));
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(num(&summary, "connections.closed_by_server"), 10.0);
    assert_eq!(num(&summary, "errors.closed_1011"), 10.0);
    let csv = Csv::read(&dir);
    let active = csv.series("connections_active");
    let fell = csv.fell_to(20.0, 15.0).unwrap_or_else(|| panic!("never fell: {active:?}"));
    assert!((4..=6).contains(&fell), "fell in second {fell}, not ~5: {active:?}");
}
