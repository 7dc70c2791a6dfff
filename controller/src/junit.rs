//! `junit.xml`: the verdict in the JUnit XML format CI systems read (the
//! Ant JUnit task's format, which Jenkins, GitLab, GitHub Actions
//! reporters and Azure Pipelines take). Every check that decided the
//! verdict is one test case: each threshold of the run, each threshold of
//! a judged stage step (`[[stage]] kind = "steps"`), and the run itself,
//! which errs when it was aborted. A failed case carries the measured value
//! and the limit.

use std::fmt::Write;

use stampede_model::results::{Summary, ThresholdOutcome};

/// The document for `summary`; `hostname` is where the controller ran.
pub fn render(summary: &Summary, hostname: &str) -> String {
    let suite = classname(&summary.scenario);
    let mut cases = String::new();
    let (mut tests, mut failures, mut errors) = (0, 0, 0);
    let mut case = |class: &str, name: &str, outcome: Outcome| {
        tests += 1;
        let _ =
            write!(cases, "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"", attr(class), attr(name));
        match outcome {
            Outcome::Pass => cases.push_str("/>\n"),
            Outcome::Failure(message) => {
                failures += 1;
                let _ = write!(
                    cases,
                    ">\n      <failure message=\"{}\" type=\"threshold\">{}</failure>\n    </testcase>\n",
                    attr(&message),
                    text(&message)
                );
            }
            Outcome::Error(message) => {
                errors += 1;
                let _ = write!(
                    cases,
                    ">\n      <error message=\"{}\" type=\"aborted\">{}</error>\n    </testcase>\n",
                    attr(&message),
                    text(&message)
                );
            }
        }
    };
    case(&suite, "run", summary.aborted.as_ref().map_or(Outcome::Pass, |why| Outcome::Error(why.clone())));
    for t in &summary.thresholds {
        case(&format!("{suite}.thresholds"), &t.expression, threshold(t));
    }
    for phase in summary.phases.iter().filter(|p| p.verdict.is_some()) {
        for t in &phase.thresholds {
            case(&format!("{suite}.{}", classname(&phase.name)), &t.expression, threshold(t));
        }
    }
    let time = format!("{:.3}", summary.duration_s.max(0.0));
    // The format's timestamp has no zone: ours is UTC.
    let timestamp: String = summary.started_at.chars().take(19).collect();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"stampede\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\" time=\"{time}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" package=\"stampede\" id=\"0\" hostname=\"{}\" timestamp=\"{}\" tests=\"{tests}\" \
         failures=\"{failures}\" errors=\"{errors}\" skipped=\"0\" time=\"{time}\">",
        attr(&suite),
        attr(hostname),
        attr(&timestamp)
    );
    out.push_str("    <properties>\n");
    for (name, value) in [
        ("verdict", summary.verdict.as_str()),
        ("target", summary.target.as_str()),
        ("started_at", summary.started_at.as_str()),
    ] {
        let _ = writeln!(out, "      <property name=\"{name}\" value=\"{}\"/>", attr(value));
    }
    out.push_str("    </properties>\n");
    out.push_str(&cases);
    let _ = writeln!(
        out,
        "    <system-out>{}</system-out>\n    <system-err/>\n  </testsuite>\n</testsuites>",
        text(&format!("verdict {}", summary.verdict))
    );
    out
}

enum Outcome {
    Pass,
    Failure(String),
    Error(String),
}

fn threshold(t: &ThresholdOutcome) -> Outcome {
    if t.pass {
        return Outcome::Pass;
    }
    let measured = t.value.map_or("no sample".to_string(), |v| format!("{v}"));
    Outcome::Failure(format!("{}: measured {measured}, limit {} {}", t.expression, t.op, t.limit))
}

/// A class name from a scenario or phase name: dots separate levels in CI
/// reports, so other dots become `_`.
fn classname(name: &str) -> String {
    name.replace('.', "_")
}

/// Escaped for an attribute value.
fn attr(s: &str) -> String {
    text(s).replace('"', "&quot;")
}

/// Escaped for character data; characters XML 1.0 cannot carry at all are
/// dropped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use stampede_model::results::PhaseSummary;

    use super::*;

    fn outcome(expression: &str, value: Option<f64>, pass: bool) -> ThresholdOutcome {
        ThresholdOutcome {
            expression: expression.into(),
            metric: "latency_p95_ms".into(),
            op: "<".into(),
            limit: 250.0,
            value,
            pass,
        }
    }

    #[test]
    fn every_check_is_a_case_and_failures_carry_the_measured_value() {
        let mut s = Summary {
            scenario: "heavy.v2".into(),
            started_at: "2026-11-29T11:00:00.123Z".into(),
            duration_s: 12.5,
            verdict: "FAIL".into(),
            thresholds: vec![
                outcome("latency_p95_ms < 250", Some(312.5), false),
                outcome("error_rate < 0.01", Some(0.0), true),
            ],
            ..Default::default()
        };
        s.phases.push(PhaseSummary {
            name: "step-2".into(),
            verdict: Some("FAIL".into()),
            thresholds: vec![outcome("error_rate < 0.01", None, false)],
            ..Default::default()
        });
        let xml = render(&s, "host<1>");
        assert!(
            xml.contains(r#"<testsuites name="stampede" tests="4" failures="2" errors="0" time="12.500">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"timestamp="2026-11-29T11:00:00""#), "{xml}");
        assert!(xml.contains(r#"hostname="host&lt;1&gt;""#), "{xml}");
        assert!(xml.contains(r#"classname="heavy_v2.thresholds" name="latency_p95_ms &lt; 250""#), "{xml}");
        assert!(xml.contains("measured 312.5, limit &lt; 250"), "{xml}");
        assert!(
            xml.contains(r#"classname="heavy_v2.step-2""#) && xml.contains("measured no sample"),
            "{xml}"
        );
        s.aborted = Some("all workers lost\u{1}".into());
        let xml = render(&s, "h");
        assert!(
            xml.contains(r#"errors="1""#)
                && xml.contains(r#"<error message="all workers lost" type="aborted">"#),
            "{xml}"
        );
    }
}
