//! A stress stage watched while the run goes: the thresholds are evaluated
//! on each second as its row is written, and the first failure sustained
//! for the stage's window is the breaking point, which ends the stage's
//! steps ([`crate::stages`] turns the stage into its steps).

use stampede_model::results::{BreakingPoint, Figures};

use crate::stages::StressPlan;
use crate::threshold::{Condition, Metric, evaluate};

/// Follows a stress stage second by second while the run goes: a
/// threshold that fails in `window_s` seconds in a row during its steps is
/// a break. Each second is judged on its own figures with the thresholds'
/// one definition ([`evaluate`]); a second without a sample of the metric
/// (no echo, no connection attempt) neither fails nor counts, and ends a
/// streak, since it shows no failure.
#[derive(Debug)]
pub struct StressWatch {
    plan: StressPlan,
    conditions: Vec<(Metric, Condition)>,
    /// Per condition: the current failing streak (first second, step index,
    /// length).
    streaks: Vec<Option<(u64, usize, u64)>>,
    /// The highest step index seen.
    reached: Option<usize>,
    /// The break, once found.
    pub found: Option<BreakingPoint>,
}

impl StressWatch {
    /// Watches `plan` with the thresholds it names (all of them by default).
    pub fn new(plan: &StressPlan, thresholds: &[(Metric, Condition)]) -> StressWatch {
        let conditions: Vec<(Metric, Condition)> =
            thresholds.iter().filter(|(m, _)| plan.until.is_none_or(|u| u == *m)).copied().collect();
        StressWatch {
            plan: plan.clone(),
            streaks: vec![None; conditions.len()],
            conditions,
            reached: None,
            found: None,
        }
    }

    /// Takes second `s`, which belongs to phase `phase`, with its figures;
    /// returns the break when this second completes a failing window (once).
    pub fn second(&mut self, s: u64, phase: &str, figures: &Figures) -> Option<BreakingPoint> {
        if self.found.is_some() {
            return None;
        }
        let Some(step) = self.plan.steps.iter().position(|(n, _)| n == phase) else {
            self.streaks.iter_mut().for_each(|k| *k = None);
            return None;
        };
        self.reached = Some(self.reached.map_or(step, |r| r.max(step)));
        for (i, (metric, cond)) in self.conditions.iter().enumerate() {
            let outcome = evaluate(*metric, *cond, figures);
            let failing = outcome.value.is_some() && !outcome.pass;
            let streak = &mut self.streaks[i];
            // Rows come in order, one per second; a gap ends a streak.
            *streak = match (*streak, failing) {
                (_, false) => None,
                (Some((first, at, n)), true) if first + n == s => Some((first, at, n + 1)),
                (_, true) => Some((s, step, 1)),
            };
            if let Some((first, at, n)) = *streak
                && n >= self.plan.window_s
            {
                let bp = BreakingPoint {
                    connections: at.checked_sub(1).map_or(0, |i| self.plan.steps[i].1),
                    broke_at_connections: self.plan.steps[at].1,
                    failing_metric: metric.name().to_string(),
                    expression: outcome.expression,
                    failing_value: outcome.value,
                    at_s: first as f64,
                };
                self.found = Some(bp.clone());
                return Some(bp);
            }
        }
        None
    }

    /// Why the breaking point is what it is, in words, at the run's end.
    pub fn reason(&self, aborted: bool) -> String {
        let window = self.plan.window_s;
        if let Some(bp) = &self.found {
            let value = bp.failing_value.map_or("no data".into(), |v| format!("{v:.4}"));
            return format!(
                "{} failed in {window} s in a row from second {} at the {}-connection step (last value {value}): \
                 {} connections is the highest level that held",
                bp.expression, bp.at_s, bp.broke_at_connections, bp.connections
            );
        }
        let top = self.plan.steps.last().map_or(0, |s| s.1);
        match self.reached.map(|i| self.plan.steps[i].1) {
            Some(level) if level == top && !aborted => format!(
                "no threshold failed for {window} s at any level up to {top} connections (the stage's top): \
                 the target held them all"
            ),
            Some(level) => format!(
                "the run ended at the {level}-connection step, before the stage's top ({top}), with no break"
            ),
            None => "the run ended before the stress stage began".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(error_rate: f64, p99: Option<f64>) -> Figures {
        let mut f = Figures { error_rate, ..Default::default() };
        if let Some(v) = p99 {
            f.latency_ms.count = 10;
            f.latency_ms.p99 = v;
        }
        f
    }

    fn watch(window_s: u64, until: Option<Metric>) -> StressWatch {
        let plan = StressPlan {
            steps: vec![("stress-50".into(), 50), ("stress-100".into(), 100), ("stress-150".into(), 150)],
            cooldown: "stress-cooldown".into(),
            until,
            window_s,
        };
        let thresholds =
            [(Metric::ErrorRate, "< 0.01".parse().unwrap()), (Metric::LatencyP99, "< 50".parse().unwrap())];
        StressWatch::new(&plan, &thresholds)
    }

    #[test]
    fn a_break_is_a_failure_sustained_for_the_window() {
        let mut w = watch(2, None);
        let ok = figures(0.0, Some(1.0));
        let bad = figures(0.5, Some(1.0));
        assert!(w.second(0, "stress-50", &ok).is_none());
        assert!(w.second(1, "stress-100", &bad).is_none(), "one failing second is not a break");
        assert!(w.second(2, "stress-100", &ok).is_none(), "it held again");
        assert!(w.second(3, "stress-100", &bad).is_none());
        let bp = w.second(4, "stress-150", &bad).expect("two failing seconds in a row");
        assert_eq!(
            (bp.connections, bp.broke_at_connections, bp.at_s),
            (50, 100, 3.0),
            "the level where it began"
        );
        assert_eq!((bp.failing_metric.as_str(), bp.failing_value), ("error_rate", Some(0.5)));
        assert!(w.second(5, "stress-150", &bad).is_none(), "found once");
        assert!(
            w.reason(false).contains("50 connections is the highest level that held"),
            "{}",
            w.reason(false)
        );
    }

    #[test]
    fn seconds_without_samples_gaps_and_other_phases_end_a_streak() {
        let mut w = watch(2, Some(Metric::LatencyP99));
        let slow = figures(0.5, Some(90.0));
        let silent = figures(0.5, None);
        assert!(w.second(0, "stress-50", &slow).is_none());
        assert!(w.second(1, "stress-50", &silent).is_none(), "no echo: no evidence of a break");
        assert!(w.second(2, "stress-50", &slow).is_none());
        assert!(w.second(4, "stress-50", &slow).is_none(), "second 3 is missing: not in a row");
        assert!(w.second(5, "ramp", &slow).is_none(), "outside the steps");
        assert!(w.second(6, "stress-100", &figures(0.9, Some(1.0))).is_none(), "error_rate is not watched");
        assert!(w.second(7, "stress-150", &slow).is_none());
        assert!(w.reason(false).contains("up to 150 connections"), "{}", w.reason(false));
        let bp = w.second(8, "stress-150", &slow).unwrap();
        assert_eq!(bp.connections, 100);
        assert_eq!(bp.expression, "latency_p99_ms < 50");
        let mut first = watch(1, None);
        assert_eq!(first.second(0, "stress-50", &slow).unwrap().connections, 0, "the first level broke");
        let mut aborted = watch(1, None);
        aborted.second(0, "stress-50", &figures(0.0, None));
        assert!(aborted.reason(true).contains("before the stage's top (150)"), "{}", aborted.reason(true));
    }
}
