//! The progress line on stderr: every few seconds, where the run is and how
//! it is going, so a long run is never silent. Each figure says its window:
//! the last [`EVERY_S`] seconds (message rate and latency percentiles from
//! their merged histograms) or the run so far (totals, the top error cause).
//! A run with a flow adds each step's runs since the previous line.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use hdrhistogram::Histogram;
use stampede_model::results::MetricsRow;

use crate::aggregate::Row;
use crate::plan::Plan;
use crate::totals::{StepTotals, Totals, step_names};

/// Seconds between two progress lines.
const EVERY_S: u64 = 5;

/// Prints progress unless quiet.
pub struct Progress {
    quiet: Cell<bool>,
    last_s: Cell<Option<u64>>,
    /// The run's step totals at the previous line.
    steps_before: RefCell<Vec<StepTotals>>,
    /// The last [`EVERY_S`] seconds: messages received and latency.
    window: RefCell<VecDeque<(u64, Histogram<u64>)>>,
}

/// What the run knows besides its rows: workers lost so far.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fleet {
    /// Workers lost (and not back).
    pub lost: usize,
}

impl Progress {
    /// A progress printer.
    pub fn new(quiet: bool) -> Self {
        Progress {
            quiet: Cell::new(quiet),
            last_s: Cell::new(None),
            steps_before: RefCell::new(Vec::new()),
            window: RefCell::new(VecDeque::new()),
        }
    }

    /// Silences (or lets speak) the lines from now on: the live view
    /// replaces them.
    pub fn set_quiet(&self, quiet: bool) {
        self.quiet.set(quiet);
    }

    /// Prints a free line.
    pub fn line(&self, text: String) {
        if !self.quiet.get() {
            eprintln!("{text}");
        }
    }

    /// Considers a new row; prints a line every few seconds.
    pub fn row(&self, row: &Row, plan: &Plan, elapsed_s: f64, run: &Totals, fleet: Fleet) {
        if self.quiet.get() {
            return;
        }
        let window = {
            let mut window = self.window.borrow_mut();
            window.push_back((row.metrics.counters.messages_received, row.latency.clone()));
            while window.len() > EVERY_S as usize {
                window.pop_front();
            }
            Window::of(&window)
        };
        if self.last_s.get().is_some_and(|s| row.metrics.elapsed_s < s + EVERY_S) {
            return;
        }
        self.last_s.set(Some(row.metrics.elapsed_s));
        let mut line = render(&row.metrics, plan, elapsed_s, run, &window, fleet);
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

/// The figures of the last few seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Seconds it covers.
    pub seconds: u64,
    /// Messages received per second over them.
    pub msg_per_s: f64,
    /// Latency percentiles over them, ms (`None`: no sample).
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

impl Window {
    /// The window of `seconds` (received, latency histogram), from their
    /// merged histogram.
    pub fn of(seconds: &VecDeque<(u64, Histogram<u64>)>) -> Window {
        let n = seconds.len().max(1) as u64;
        let received: u64 = seconds.iter().map(|(r, _)| r).sum();
        let mut merged = stampede_model::histogram::new_histogram();
        for (_, h) in seconds {
            let _ = merged.add(h);
        }
        let at = |q: f64| (!merged.is_empty()).then(|| merged.value_at_quantile(q) as f64 / 1000.0);
        Window {
            seconds: n,
            msg_per_s: received as f64 / n as f64,
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
        }
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

/// One progress line: where the run is, the last seconds' figures, then
/// the run's totals so far, each labelled with its window.
pub fn render(
    row: &MetricsRow,
    plan: &Plan,
    elapsed_s: f64,
    run: &Totals,
    w: &Window,
    fleet: Fleet,
) -> String {
    let total = plan.duration().as_secs_f64();
    let done = if total > 0.0 { (elapsed_s / total * 100.0).min(100.0) } else { 100.0 };
    let left = (total - elapsed_s).max(0.0) as u64;
    let c = &run.counters;
    let errors = run.errors_total();
    let rate = stampede_model::figures::error_rate(errors, c) * 100.0;
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let stalled = if row.generator_stalled > 0 { " GENERATOR STALLED" } else { "" };
    let top = run
        .errors
        .iter()
        .max_by_key(|(cause, n)| (**n, std::cmp::Reverse(*cause)))
        .map_or(String::new(), |(cause, n)| format!(", top: {cause} {n}"));
    let lost = if fleet.lost > 0 { format!(" | workers lost {}", fleet.lost) } else { String::new() };
    format!(
        "[{:<9} {:>3.0}%] {:02}:{:02} left | conns {}/{} | last {} s: {:.1} msg/s, p50/p95/p99 {}/{}/{} ms{stalled} \
         | run: sent {} recv {}, errors {errors} ({rate:.2}%){top}{lost}",
        row.phase,
        done,
        left / 60,
        left % 60,
        row.connections_active,
        row.connections_target,
        w.seconds,
        w.msg_per_s,
        ms(w.p50_ms),
        ms(w.p95_ms),
        ms(w.p99_ms),
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
    fn the_window_merges_its_seconds_histograms() {
        let second = |received: u64, us: u64| {
            let mut h = new_histogram();
            h.record_n(us, received).unwrap();
            (received, h)
        };
        // Four fast seconds and one slow one: the p99 of the window is the
        // slow second's, which no per-second p99 average would say.
        let seconds: VecDeque<_> = [
            second(100, 1_000),
            second(100, 1_000),
            second(100, 1_000),
            second(100, 1_000),
            second(10, 50_000),
        ]
        .into();
        let w = Window::of(&seconds);
        assert_eq!(w.seconds, 5);
        assert!((w.msg_per_s - 82.0).abs() < 1e-9);
        assert!((w.p50_ms.unwrap() - 1.0).abs() < 0.01);
        assert!((w.p99_ms.unwrap() - 50.0).abs() < 0.1, "{w:?}");
        let empty = Window::of(&VecDeque::new());
        assert_eq!((empty.msg_per_s, empty.p95_ms), (0.0, None));
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
