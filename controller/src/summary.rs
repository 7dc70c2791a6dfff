//! Turns the aggregator's totals into the `summary.json` document, applies
//! the thresholds, and renders the human summary printed at the end and
//! saved in test.log.

use std::fmt::Write;

use stampede_model::results::{
    ConnectionFigures, Figures, MessageFigures, PhaseSummary, SUMMARY_SCHEMA_VERSION, StepFigures,
    StepsFigures, Summary, ThresholdOutcome, WorkerInfo,
};

use stampede_model::figures::{error_rate, throughput};

use crate::aggregate::{Aggregator, Row};
use crate::plan::Plan;
use crate::threshold::evaluate;
use crate::totals::{StepTotals, Totals, percentiles};

/// What the run was, besides its measurements.
pub struct RunFacts {
    /// Target URL.
    pub target: String,
    /// Run start, ISO 8601.
    pub started_at: String,
    /// Length of the run, s.
    pub duration_s: f64,
    /// The workers.
    pub workers: Vec<WorkerInfo>,
    /// Why the run ended early.
    pub aborted: Option<String>,
    /// Workers lost during the run.
    pub workers_lost: Vec<stampede_model::results::WorkerLost>,
    /// The load spread anew over the workers.
    pub rebalanced: Vec<stampede_model::results::Rebalance>,
}

fn connections(target: u64, peak: u64, t: &Totals) -> ConnectionFigures {
    let c = &t.counters;
    ConnectionFigures {
        target,
        peak,
        attempted: c.connections_attempted,
        opened: c.connections_opened,
        failed: c.connections_failed,
        closed_by_server: c.connections_closed_by_server + c.connections_dropped,
        closed_by_client: c.connections_closed_by_client,
    }
}

fn messages(t: &Totals) -> MessageFigures {
    let c = &t.counters;
    MessageFigures {
        sent: c.messages_sent,
        received: c.messages_received,
        lost: c.messages_lost,
        duplicated: c.messages_duplicated,
        corrupted: c.messages_corrupted,
        out_of_order: c.messages_out_of_order,
        unmatched: c.messages_unmatched,
        unsent: c.messages_unsent,
        late_sends: c.sends_late,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
    }
}

/// What figures are computed from besides the totals of their span of
/// seconds (a run, a phase or one second).
struct Span<'a> {
    /// Connections planned at most.
    target: u64,
    /// Connections open at most.
    peak: u64,
    /// Seconds (rows) in the span.
    seconds: u64,
    /// Errors of every cause (the sum of `errors`, when it is known by cause).
    errors_total: u64,
    /// Seconds in which the generator stalled.
    stalled: Vec<u64>,
    /// The flow's step names, as `Totals::steps`.
    step_names: &'a [String],
}

/// Each step's figures, in the flow's order; a step the totals do not hold
/// (none reported yet) has none.
fn steps(names: &[String], totals: &[StepTotals]) -> StepsFigures {
    StepsFigures(
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (name.clone(), totals.get(i).map_or_else(StepFigures::default, StepTotals::figures))
            })
            .collect(),
    )
}

/// The figures of a span from its totals: one definition for the run, each
/// phase, and each second that a stress stage judges while it runs.
fn figures_of(t: &Totals, span: Span) -> Figures {
    Figures {
        connections: connections(span.target, span.peak, t),
        messages: messages(t),
        latency_ms: percentiles(&t.latency),
        connect_ms: percentiles(&t.connect),
        connect_tcp_ms: percentiles(&t.connect_split.tcp),
        connect_tls_ms: percentiles(&t.connect_split.tls),
        connect_upgrade_ms: percentiles(&t.connect_split.upgrade),
        errors: t.errors.clone(),
        errors_total: span.errors_total,
        error_rate: error_rate(span.errors_total, &t.counters),
        throughput_msg_per_s: throughput(t.counters.messages_received, span.seconds),
        counters: t.counters,
        generator_stalled_seconds: span.stalled,
        workers_lost: Vec::new(),
        rebalanced: Vec::new(),
        steps: steps(span.step_names, &t.steps),
    }
}

/// The figures of phase `phase` (`None`: the whole run) from its totals.
fn figures(agg: &Aggregator, phase: Option<usize>, t: &Totals) -> Figures {
    let span = Span {
        target: agg.peak_target(phase),
        peak: agg.peak(phase),
        seconds: agg.row_count(phase),
        errors_total: t.errors_total(),
        stalled: agg.stalled_seconds(phase),
        step_names: agg.step_names(),
    };
    figures_of(t, span)
}

/// The figures of one second as its row was first written, with
/// `open_before` connections open at its start. Errors are known by their
/// total only (a row keeps no causes), which is all a threshold reads.
pub fn second_figures(row: &Row, open_before: u64) -> Figures {
    let m = &row.metrics;
    let t = Totals {
        counters: m.counters,
        latency: row.latency.clone(),
        connect: row.connect.clone(),
        connect_split: row.connect_split.clone(),
        steps: row.steps.clone(),
        ..Totals::default()
    };
    let span = Span {
        target: m.connections_target,
        peak: stampede_model::figures::peak(open_before, [m.connections_active]),
        seconds: 1,
        errors_total: m.errors,
        stalled: if m.generator_stalled > 0 { vec![m.elapsed_s] } else { Vec::new() },
        step_names: &row.step_names,
    };
    figures_of(&t, span)
}

/// The plan's thresholds judged on `figures`.
fn judge(plan: &Plan, figures: &Figures) -> Vec<ThresholdOutcome> {
    plan.thresholds.iter().map(|(m, cond)| evaluate(*m, *cond, figures)).collect()
}

/// The thresholds over the run so far, judged as [`build`] judges the
/// whole run at its end (for the live view and the status API).
pub fn thresholds_so_far(plan: &Plan, agg: &Aggregator) -> Vec<ThresholdOutcome> {
    judge(plan, &figures(agg, None, &agg.run))
}

/// Builds the summary and decides the verdict: the thresholds over the
/// whole run, and over each step of a `steps` stage (a step that fails
/// fails the run; a stress stage's steps get verdicts too, but breaking is
/// what a stress stage is for, so theirs only inform).
pub fn build(plan: &Plan, agg: &Aggregator, facts: RunFacts) -> Summary {
    let phases: Vec<PhaseSummary> = plan
        .phases
        .iter()
        .zip(&agg.phases)
        .enumerate()
        .map(|(i, (p, t))| {
            let figures = figures(agg, Some(i), t);
            let thresholds = if p.judged { judge(plan, &figures) } else { Vec::new() };
            PhaseSummary {
                name: p.name().to_string(),
                start_s: p.start.as_secs_f64(),
                duration_s: p.duration.as_secs_f64(),
                figures,
                kind: p.kind.map_or(String::new(), |k| k.name().to_string()),
                verdict: p.judged.then(|| verdict(thresholds.iter().all(|t| t.pass))),
                thresholds,
            }
        })
        .collect();
    let steps_pass = plan
        .phases
        .iter()
        .zip(&phases)
        .filter(|(p, _)| p.judged && p.kind == Some(stampede_model::StageKind::Steps))
        .all(|(_, s)| s.verdict.as_deref() == Some("PASS"));
    let mut summary = Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        verdict: String::new(),
        aborted: facts.aborted,
        scenario: plan.name.clone(),
        target: facts.target,
        started_at: facts.started_at,
        duration_s: facts.duration_s,
        workers: facts.workers.len() as u32,
        worker_details: facts.workers,
        figures: figures(agg, None, &agg.run),
        worker_rss_peak_mb: agg.peak_rss_mb(),
        phases,
        thresholds: Vec::new(),
        breaking_point: None,
        breaking_point_reason: None,
        subprotocols: agg.subprotocols.clone(),
        channels: agg.channels.values().copied().collect(),
        browser: plan.has_browsers().then(|| agg.browser_figures()),
    };
    summary.figures.workers_lost = facts.workers_lost;
    summary.figures.rebalanced = facts.rebalanced;
    summary.thresholds = judge(plan, &summary.figures);
    let pass = summary.aborted.is_none() && summary.thresholds.iter().all(|t| t.pass) && steps_pass;
    summary.verdict = verdict(pass);
    summary
}

fn verdict(pass: bool) -> String {
    if pass { "PASS" } else { "FAIL" }.to_string()
}

/// Consecutive seconds as ranges: `12-21, 40`.
fn spans(seconds: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < seconds.len() {
        let mut j = i;
        while j + 1 < seconds.len() && seconds[j + 1] == seconds[j] + 1 {
            j += 1;
        }
        out.push(if i == j { seconds[i].to_string() } else { format!("{}-{}", seconds[i], seconds[j]) });
        i = j + 1;
    }
    out.join(", ")
}

/// The flow's steps as a table: runs, failures, and the durations of the
/// successful runs.
fn steps_table(steps: &StepsFigures) -> String {
    let mut out = String::new();
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let width = steps.iter().map(|(n, _)| n.len()).max().unwrap_or(0).max(4);
    let _ = writeln!(out, "\nFlow steps (durations of successful runs, ms):");
    let _ = writeln!(
        out,
        "  {:<width$}  {:>9} {:>9} {:>7}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "step", "ok", "failed", "fail%", "p50", "p90", "p95", "p99", "max", "mean"
    );
    for (name, f) in steps.iter() {
        let rate = f.failure_rate.map_or("-".to_string(), |r| format!("{:.2}", r * 100.0));
        let _ = writeln!(
            out,
            "  {name:<width$}  {:>9} {:>9} {rate:>7}  {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            f.ok,
            f.failed,
            ms(f.p50_ms),
            ms(f.p90_ms),
            ms(f.p95_ms),
            ms(f.p99_ms),
            ms(f.max_ms),
            ms(f.mean_ms)
        );
    }
    out
}

/// The human summary, in the spirit of a "TEST SUMMARY" block.
pub fn render(s: &Summary, dir: &std::path::Path) -> String {
    let mut out = String::new();
    let line = "=".repeat(72);
    let l = &s.figures.latency_ms;
    let c = &s.figures.connect_ms;
    let _ = writeln!(out, "{line}\nTEST SUMMARY: {} -> {}\n{line}", s.scenario, s.target);
    let _ = writeln!(out, "Started:             {}", s.started_at);
    let _ = writeln!(out, "Duration:            {:.1} s", s.duration_s);
    let _ = writeln!(out, "Workers:             {}", s.workers);
    for lost in &s.figures.workers_lost {
        let back = lost.back_at_s.map_or(String::new(), |b| format!(" (back at {b:.1} s)"));
        let _ =
            writeln!(out, "Worker lost:         {} at {:.1} s: {}{back}", lost.id, lost.at_s, lost.reason);
    }
    for r in &s.figures.rebalanced {
        let shares: Vec<String> = r.connections.iter().map(|(w, n)| format!("{w} {n}")).collect();
        let _ =
            writeln!(out, "Rebalanced:          at {:.1} s ({}): {}", r.at_s, r.reason, shares.join(", "));
    }
    if !s.subprotocols.is_empty() {
        let picked: Vec<String> =
            s.subprotocols.iter().map(|(p, n)| format!("{p} ({n} connections)")).collect();
        let _ = writeln!(out, "Subprotocol:         {}", picked.join(", "));
    }
    let k = &s.figures.connections;
    let _ = writeln!(
        out,
        "Connections:         target {}, peak {}, opened {} of {} attempted, failed {}, closed by server {}",
        k.target, k.peak, k.opened, k.attempted, k.failed, k.closed_by_server
    );
    let m = &s.figures.messages;
    let _ = writeln!(
        out,
        "Messages:            sent {}, received {}, lost {}, unsent {}, late sends {}",
        m.sent, m.received, m.lost, m.unsent, m.late_sends
    );
    let _ = writeln!(
        out,
        "Delivery:            duplicated {}, corrupted {}, out of order {}, unmatched {}",
        m.duplicated, m.corrupted, m.out_of_order, m.unmatched
    );
    let k = &s.figures.counters;
    if k.deliveries_expected > 0 {
        // Broadcast: received is deliveries, sent is messages published.
        let _ = writeln!(
            out,
            "Fan-out:             {} deliveries owed ({:.1} per message), received {}, lost {}",
            k.deliveries_expected,
            k.deliveries_expected as f64 / k.messages_sent.max(1) as f64,
            k.messages_received,
            k.messages_lost
        );
    }
    if k.messages_undecryptable > 0 || k.sessions_completed > 0 || k.sessions_failed > 0 {
        let _ = writeln!(
            out,
            "Sessions:            completed {}, failed {}; undecryptable messages {}",
            k.sessions_completed, k.sessions_failed, k.messages_undecryptable
        );
    }
    let _ = writeln!(
        out,
        "Throughput:          {:.1} msg/s (received, per second of the run)",
        s.figures.throughput_msg_per_s
    );
    if l.count > 0 {
        let _ = writeln!(
            out,
            "Latency (ms):        p50 {:.3}  p90 {:.3}  p95 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}  (n={})",
            l.p50, l.p90, l.p95, l.p99, l.p999, l.max, l.mean, l.count
        );
    } else {
        let _ = writeln!(out, "Latency (ms):        no samples");
    }
    if c.count > 0 {
        let _ = writeln!(
            out,
            "Connect time (ms):   p50 {:.3}  p95 {:.3}  p99 {:.3}  max {:.3}  (n={})",
            c.p50, c.p95, c.p99, c.max, c.count
        );
        let f = &s.figures;
        let mut parts = Vec::new();
        for (name, p) in
            [("tcp", &f.connect_tcp_ms), ("tls", &f.connect_tls_ms), ("upgrade", &f.connect_upgrade_ms)]
        {
            if p.count > 0 {
                parts.push(format!("{name} p50 {:.3} p99 {:.3}", p.p50, p.p99));
            }
        }
        if !parts.is_empty() {
            let _ = writeln!(out, "  by part (ms):      {}", parts.join("  |  "));
        }
    } else {
        let _ = writeln!(out, "Connect time (ms):   no connection opened");
    }
    let _ = writeln!(
        out,
        "Errors:              {} ({:.4}% of attempts and scheduled sends)",
        s.figures.errors_total,
        s.figures.error_rate * 100.0
    );
    if !s.figures.errors.is_empty() {
        let causes: Vec<String> = s.figures.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(out, "Errors by cause:     {}", causes.join(", "));
    }
    let _ = writeln!(out, "Worker RSS peak:     {:.1} MB", s.worker_rss_peak_mb);
    if let Some(b) = &s.browser {
        let c = &s.figures.counters;
        let _ = writeln!(
            out,
            "Browser sessions:    peak {}, Chromium PSS {:.1} MB then ({:.1} MB per session), peak PSS {:.1} MB; \
             largest page JS heap {:.1} MB",
            b.peak_sessions, b.pss_mb_at_peak, b.pss_mb_per_session, b.pss_mb_peak, b.js_heap_mb_max
        );
        let lost = if c.app_events_lost > 0 {
            format!(" ({} events lost: counts are short)", c.app_events_lost)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "App WebSockets:      {} opened, {} closed; frames {} sent, {} received{lost}",
            c.app_ws_opened, c.app_ws_closed, c.app_frames_sent, c.app_frames_received
        );
    }
    if !s.figures.generator_stalled_seconds.is_empty() {
        let _ = writeln!(
            out,
            "WARNING:             the load generator stalled in seconds {}: latency there measures stampede, not the target",
            spans(&s.figures.generator_stalled_seconds)
        );
    }
    if !s.figures.steps.is_empty() {
        let _ = write!(out, "{}", steps_table(&s.figures.steps));
    }
    let _ = writeln!(out, "\nPhases:");
    for p in &s.phases {
        let p95 = if p.figures.latency_ms.count > 0 {
            format!("{:.3}", p.figures.latency_ms.p95)
        } else {
            "-".into()
        };
        let _ = writeln!(
            out,
            "  {:<10} {:>6.1} s  peak {:>6} conns  sent {:>9}  recv {:>9}  p95 {:>9} ms  errors {}",
            p.name,
            p.duration_s,
            p.figures.connections.peak,
            p.figures.messages.sent,
            p.figures.messages.received,
            p95,
            p.figures.errors_total
        );
    }
    if !s.thresholds.is_empty() {
        let _ = writeln!(out, "\nThresholds:");
        for t in &s.thresholds {
            let value = t.value.map_or("no data".to_string(), |v| format!("{v:.4}"));
            let mark = if t.pass { "pass" } else { "FAIL" };
            let _ = writeln!(out, "  [{mark}] {:<32} measured {value}", t.expression);
        }
    }
    let judged: Vec<&PhaseSummary> = s.phases.iter().filter(|p| p.verdict.is_some()).collect();
    if !judged.is_empty() {
        let _ = writeln!(out, "\nStep verdicts (thresholds over each step's seconds):");
        for p in judged {
            let each: Vec<String> = p
                .thresholds
                .iter()
                .map(|t| {
                    let value = t.value.map_or("no data".to_string(), |v| format!("{v:.4}"));
                    let mark = if t.pass { "" } else { " FAIL" };
                    format!("{} ({value}{mark})", t.expression)
                })
                .collect();
            let verdict = p.verdict.as_deref().unwrap_or("-");
            let _ = writeln!(out, "  {:<16} {verdict:<4}  {}", p.name, each.join(", "));
        }
    }
    if let Some(bp) = &s.breaking_point {
        let reason = s.breaking_point_reason.as_deref().unwrap_or("");
        match bp {
            Some(bp) => {
                let _ = writeln!(out, "\nBreaking point:      {} connections: {reason}", bp.connections);
            }
            None => {
                let _ = writeln!(out, "\nBreaking point:      none: {reason}");
            }
        }
    }
    if let Some(why) = &s.aborted {
        let _ = writeln!(out, "\nAborted: {why}");
    }
    let _ = writeln!(out, "{line}\nResults: {}\nVerdict: {}\n{line}", dir.display(), s.verdict);
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
    use stampede_model::clock::RunClock;
    use stampede_model::histogram::new_histogram;
    use stampede_proto::fleet::{Snapshot, StepStats};

    use super::*;

    fn snapshot(seq: u64, second: u64, steps: &[(&str, &[u64], u64)]) -> Snapshot {
        let mut snap = Snapshot { seq, second, ..Default::default() };
        for (name, ok_us, failed) in steps {
            let mut h = new_histogram();
            ok_us.iter().for_each(|v| h.record(*v).unwrap());
            let mut histogram = Vec::new();
            V2DeflateSerializer::new().serialize(&h, &mut histogram).unwrap();
            snap.steps
                .insert(name.to_string(), StepStats { ok: ok_us.len() as u64, failed: *failed, histogram });
        }
        snap
    }

    #[test]
    fn a_flow_run_reports_each_step_for_the_run_and_each_phase() {
        let text = "name = \"t\"\n[target]\nbundled = true\n[phases]\nwarmup_s = 2\nramp_up_s = 2\nsustained_s = 2\n\
                    cooldown_s = 0\n[thresholds]\nstep_established_p95_ms = \"< 50\"\n\
                    step_established_failure_rate = \"< 0.001\"\n[[flow]]\nstep = \"connect\"\n[[flow]]\n\
                    step = \"expect\"\nname = \"established\"\n[[flow]]\nstep = \"send\"\nmessage = \"x\"\n";
        let sc = crate::scenario::Scenario::parse(Path::new("t"), text).unwrap();
        let plan = Plan::new(&sc, Path::new("t"), text).unwrap();
        let mut agg = Aggregator::new(&plan, &["w1".to_string()], RunClock::starting_in(Duration::ZERO));
        agg.add(0, &snapshot(1, 0, &[("connect", &[3_000], 0), ("established", &[10_000; 9], 1)])).unwrap();
        agg.add(0, &snapshot(2, 3, &[("established", &[20_000; 10], 0)])).unwrap();
        agg.ready_rows(10.0, true);
        let facts = RunFacts {
            target: "ws://x".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            duration_s: 6.0,
            workers: Vec::new(),
            aborted: None,
            workers_lost: Vec::new(),
            rebalanced: Vec::new(),
        };
        let s = build(&plan, &agg, facts);
        let names: Vec<&str> = s.figures.steps.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["connect", "established", "send"], "the flow's order");
        let est = s.figures.steps.get("established").unwrap();
        assert_eq!((est.ok, est.failed), (19, 1));
        assert!((est.p50_ms.unwrap() - 20.0).abs() < 0.05 && (est.max_ms.unwrap() - 20.0).abs() < 0.05);
        assert_eq!(
            s.figures.steps.get("send").unwrap(),
            &StepFigures::default(),
            "never ran: listed, no figure"
        );
        let warmup = s.phases[0].figures.steps.get("established").unwrap();
        assert_eq!((warmup.ok, warmup.failed, warmup.failure_rate), (9, 1, Some(0.1)));
        assert_eq!(s.phases[1].figures.steps.get("established").unwrap().ok, 10);
        let outcomes: Vec<(&str, bool)> = s.thresholds.iter().map(|t| (t.metric.as_str(), t.pass)).collect();
        assert_eq!(outcomes, [("step_established_failure_rate", false), ("step_established_p95_ms", true)]);
        assert_eq!(s.verdict, "FAIL");
        // summary.json: `steps` keyed by name, in the flow's order, read back the same.
        let json = serde_json::to_string_pretty(&s).unwrap();
        let (c, e) = (json.find("\"connect\": {").unwrap(), json.find("\"established\": {").unwrap());
        assert!(c < e, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["steps"]["established"]["ok"], 19);
        assert_eq!(v["steps"]["send"]["p95_ms"], serde_json::Value::Null);
        assert_eq!(v["phases"][1]["steps"]["established"]["failed"], 0);
        assert_eq!(serde_json::from_str::<Summary>(&json).unwrap(), s);
        let human = render(&s, Path::new("results/x"));
        assert!(human.contains("Flow steps") && human.contains("  established "), "{human}");
        // A run without a flow has no `steps` key.
        let mut plain = s.clone();
        plain.figures.steps = StepsFigures::default();
        plain.phases.iter_mut().for_each(|p| p.figures.steps = StepsFigures::default());
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("\"steps\""), "{json}");
        assert!(!render(&plain, Path::new("r")).contains("Flow steps"));
    }
}
