//! The progress line on stderr: every few seconds, where the run is and how
//! it is going, so a long run is never silent.

use std::cell::Cell;

use stampede_model::results::MetricsRow;

use crate::aggregate::Totals;
use crate::plan::Plan;

/// Seconds between two progress lines.
const EVERY_S: u64 = 5;

/// Prints progress unless quiet.
pub struct Progress {
    quiet: bool,
    last_s: Cell<Option<u64>>,
}

impl Progress {
    /// A progress printer.
    pub fn new(quiet: bool) -> Self {
        Progress { quiet, last_s: Cell::new(None) }
    }

    /// Prints a free line.
    pub fn line(&self, text: String) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }

    /// Considers a new row; prints a line every few seconds.
    pub fn row(&self, row: &MetricsRow, plan: &Plan, elapsed_s: f64, run: &Totals) {
        if self.quiet || self.last_s.get().is_some_and(|s| row.elapsed_s < s + EVERY_S) {
            return;
        }
        self.last_s.set(Some(row.elapsed_s));
        eprintln!("{}", render(row, plan, elapsed_s, run));
    }
}

/// One progress line: where the run is, the last second's figures, then the
/// run's totals so far, each labelled.
pub fn render(row: &MetricsRow, plan: &Plan, elapsed_s: f64, run: &Totals) -> String {
    let total = plan.duration().as_secs_f64();
    let done = if total > 0.0 { (elapsed_s / total * 100.0).min(100.0) } else { 100.0 };
    let left = (total - elapsed_s).max(0.0) as u64;
    let c = &run.counters;
    let errors = run.errors_total();
    let rate = stampede_model::figures::error_rate(errors, c) * 100.0;
    let p95 =
        if row.latency_p95_ms.is_nan() { "-".to_string() } else { format!("{:.2} ms", row.latency_p95_ms) };
    let stalled = if row.generator_stalled > 0 { " GENERATOR STALLED" } else { "" };
    format!(
        "[{:<9} {:>3.0}%] {:02}:{:02} left | conns {}/{} | second {}: {} msg/s, p95 {p95}{stalled} | run: sent {} recv {}, errors {errors} ({rate:.2}%)",
        row.phase,
        done,
        left / 60,
        left % 60,
        row.connections_active,
        row.connections_target,
        row.elapsed_s,
        row.counters.messages_received,
        c.messages_sent,
        c.messages_received,
    )
}
