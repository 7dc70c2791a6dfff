//! The progress line on stderr: every few seconds, where the run is and how
//! it is going, so a long run is never silent. A run with a flow adds each
//! step's runs since the previous line.

use std::cell::{Cell, RefCell};

use stampede_model::results::MetricsRow;

use crate::aggregate::{StepTotals, Totals, step_names};
use crate::plan::Plan;

/// Seconds between two progress lines.
const EVERY_S: u64 = 5;

/// Prints progress unless quiet.
pub struct Progress {
    quiet: bool,
    last_s: Cell<Option<u64>>,
    /// The run's step totals at the previous line.
    steps_before: RefCell<Vec<StepTotals>>,
}

impl Progress {
    /// A progress printer.
    pub fn new(quiet: bool) -> Self {
        Progress { quiet, last_s: Cell::new(None), steps_before: RefCell::new(Vec::new()) }
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
        let mut line = render(row, plan, elapsed_s, run);
        let names = step_names(plan);
        if !names.is_empty() {
            let mut before = self.steps_before.borrow_mut();
            line.push_str(" | ");
            line.push_str(&steps_since(&names, &run.steps, &before));
            before.clone_from(&run.steps);
        }
        eprintln!("{line}");
    }
}

/// `steps: established 10/0 3.1ms, tunnel_http 50/1 12.0ms`: each step's
/// successful/failed runs since `before` (the run's step totals at the
/// previous line) and the p95 of their durations (`-`: no successful run).
pub fn steps_since(names: &[String], now: &[StepTotals], before: &[StepTotals]) -> String {
    let each: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (now, before) = (now.get(i), before.get(i));
            let count = |f: fn(&StepTotals) -> u64| now.map_or(0, f).saturating_sub(before.map_or(0, f));
            // Totals only grow, so the earlier durations are contained in
            // the later ones.
            let durations = now.and_then(|n| n.durations.clone()).and_then(|mut h| {
                match before.and_then(|b| b.durations.as_ref()) {
                    Some(b) => h.subtract(b).ok().map(|()| h),
                    None => Some(h),
                }
            });
            let interval = StepTotals { ok: count(|s| s.ok), failed: count(|s| s.failed), durations };
            let p95 = interval.figures().p95_ms.map_or("-".to_string(), |v| format!("{v:.1}ms"));
            format!("{name} {}/{} {p95}", interval.ok, interval.failed)
        })
        .collect();
    format!("steps: {}", each.join(", "))
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

#[cfg(test)]
mod tests {
    use stampede_model::histogram::new_histogram;

    use super::*;

    fn totals(steps: &[(u64, u64, &[u64])]) -> Vec<StepTotals> {
        steps
            .iter()
            .map(|(ok, failed, us)| {
                let mut h = new_histogram();
                us.iter().for_each(|v| h.record(*v).unwrap());
                let mut t = StepTotals::default();
                t.add(*ok, *failed, Some(&h)).unwrap();
                t
            })
            .collect()
    }

    #[test]
    fn each_step_shows_its_runs_since_the_previous_line() {
        let names = ["established".to_string(), "tunnel_http".to_string()];
        let first = totals(&[(10, 0, &[3_100; 10]), (50, 1, &[12_000; 50])]);
        assert_eq!(
            steps_since(&names, &first, &[]),
            "steps: established 10/0 3.1ms, tunnel_http 50/1 12.0ms"
        );
        // Five seconds later: the slow runs of the first interval are gone
        // from the second one's p95.
        let mut later = first.clone();
        let more = totals(&[(0, 2, &[]), (20, 0, &[1_000; 20])]);
        later.iter_mut().zip(&more).for_each(|(t, m)| t.merge(m).unwrap());
        assert_eq!(steps_since(&names, &later, &first), "steps: established 0/2 -, tunnel_http 20/0 1.0ms");
    }
}
