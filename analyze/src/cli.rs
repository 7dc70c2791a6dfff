//! `analyze`: the command line, and the run over every folder it is given.
//! A bad folder is reported in one line and the others are still analyzed;
//! the exit code then says 2.

use std::path::{Path, PathBuf};

use clap::{Parser, ValueEnum};

use crate::compare::{Comparison, compare};
use crate::detect::{self, DetectorParams};
use crate::hlog::distribution;
use crate::load::{Run, load};
use crate::model::{Distribution, Finding, Severity};
use crate::report::{self, RunReport};
use crate::{plots, stats, workers};

/// Post-mortem analysis of stampede result folders: statistics, anomaly
/// detection, comparison of runs, plots.
#[derive(Debug, Parser)]
#[command(name = "analyze", version)]
pub struct Args {
    /// Result folders, or globs such as 'results/heavy-*/'.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// Draw charts (PNG and SVG).
    #[arg(long)]
    pub plots: bool,
    /// Where to write (default: <run>/analysis/; with several runs, one
    /// subfolder per run plus the comparison).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Compare every run against this one.
    #[arg(long, value_name = "PATH")]
    pub baseline: Option<PathBuf>,
    /// What to print on stdout; `html` also writes report.html with the charts.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Only this phase (e.g. sustained); an unknown name is an error that
    /// lists the run's phases.
    #[arg(long, value_name = "NAME")]
    pub phase: Option<String>,
    /// Count the warmup phase in the run's figures and detectors (excluded
    /// by default, and every output says so next to the figures).
    #[arg(long)]
    pub include_warmup: bool,
    /// Comparison: relative worsening that counts as a regression.
    #[arg(long, default_value_t = 0.10, value_name = "FRACTION")]
    pub tolerance: f64,
    /// Exit 3 when a compared run regressed against the baseline (for CI).
    #[arg(long)]
    pub fail_on_regression: bool,
    /// Exit 4 when a run has a finding of this severity or worse (for CI).
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<FailOn>,
    /// Detector thresholds.
    #[command(flatten)]
    pub detectors: DetectorParams,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable summary.
    Text,
    /// report.json content.
    Json,
    /// report.md content.
    Markdown,
    /// A self-contained report.html (charts embedded).
    Html,
}

/// The least severe finding `--fail-on` fails for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Any finding.
    Info,
    /// Warnings and critical findings.
    Warning,
    /// Critical findings only.
    Critical,
}

impl FailOn {
    fn severity(self) -> Severity {
        match self {
            FailOn::Info => Severity::Info,
            FailOn::Warning => Severity::Warning,
            FailOn::Critical => Severity::Critical,
        }
    }
}

/// Exit code when every input was analyzed (and nothing failed a `--fail-*`).
pub const EXIT_OK: i32 = 0;
/// Exit code when some input could not be analyzed (wins over the others:
/// what was not read cannot be judged).
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit code of `--fail-on-regression` when a run regressed.
pub const EXIT_REGRESSION: i32 = 3;
/// Exit code of `--fail-on SEVERITY` when a finding is that severe.
pub const EXIT_FINDINGS: i32 = 4;

fn expand(paths: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        if p.contains(['*', '?', '[']) {
            let matches: Vec<PathBuf> = match glob::glob(p) {
                Ok(m) => m.filter_map(Result::ok).filter(|p| p.is_dir()).collect(),
                Err(e) => {
                    errors.push(format!("{p}: bad pattern: {e}"));
                    continue;
                }
            };
            if matches.is_empty() {
                errors.push(format!("{p}: no results folder matches"));
            }
            found.extend(matches);
        } else {
            found.push(PathBuf::from(p));
        }
    }
    found.sort();
    found.dedup();
    (found, errors)
}

/// Analyzes one loaded run.
pub fn analyze(run: &Run, args: &Args) -> RunReport {
    let (overall, phases) = stats::run_stats(run, args.include_warmup, args.phase.as_deref());
    let t = &run.timeline;
    let p = &args.detectors;
    let mut findings: Vec<Finding> = Vec::new();
    findings.extend(detect::generator_stalls(t, args.include_warmup));
    findings.extend(detect::latency_spikes(t, "latency_p95_ms", &t.latency_p95_ms, p, args.include_warmup));
    findings.extend(detect::memory_growth(t, "worker_rss_mb", &t.worker_rss_mb, p));
    findings.extend(detect::memory_growth(t, "target_rss_mb", &t.target_rss_mb, p));
    if let (Some(lf), Some((first, last))) = (&run.workers, detect::steady_window(t)) {
        let several = run.summary.as_ref().is_none_or(|s| s.workers > 1);
        if several {
            let phase = t.phase[first].clone();
            match workers::memory_growth(lf, &run.label, &phase, t.elapsed_s[first], t.elapsed_s[last], p) {
                Ok(f) => findings.extend(f),
                Err(e) => eprintln!("warning: {}: workers.csv: {e}", run.dir.display()),
            }
        }
    }
    let causes = |phase: &str| {
        run.summary
            .as_ref()
            .and_then(|s| s.phases.iter().find(|p| p.name == phase))
            .map(|p| p.figures.errors.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    for mut f in detect::connection_drops(t, "", p, args.include_warmup) {
        let c = causes(&f.phase);
        if !c.is_empty() {
            f.description += &format!("; errors in the {} phase: {c}", f.phase);
        }
        findings.push(f);
    }
    if let Some(only) = &args.phase {
        findings.retain(|f| &f.phase == only);
    }
    let memory = [("worker_rss_mb", &t.worker_rss_mb), ("target_rss_mb", &t.target_rss_mb)]
        .into_iter()
        .filter_map(|(subject, series)| trend(t, subject, series))
        .collect();
    findings.sort_by(|a, b| a.start_s.total_cmp(&b.start_s).then(a.kind.cmp(&b.kind)));
    let mut notes = run.notes.clone();
    if overall.seconds == 0 {
        notes.push(format!(
            "no row in the phases counted ({}): the run's figures are empty",
            if overall.scope.is_empty() { "none" } else { &overall.scope }
        ));
    }
    for w in phases.iter().chain([&overall]) {
        for n in &w.notes {
            if !notes.contains(n) {
                notes.push(n.clone());
            }
        }
    }
    let s = run.summary.as_ref();
    RunReport {
        run: run.label.clone(),
        dir: run.dir.display().to_string(),
        verdict: s.map(|s| s.verdict.clone()),
        scenario: s.map(|s| s.scenario.clone()),
        target: s.map(|s| s.target.clone()),
        started_at: s.map(|s| s.started_at.clone()),
        overall,
        phases,
        memory,
        findings,
        notes,
        thresholds: s.map(|s| s.thresholds.clone()).unwrap_or_default(),
    }
}

/// The least-squares trend of `series` over the steady window.
fn trend(t: &crate::model::Timeline, subject: &str, series: &[f64]) -> Option<report::MemoryTrend> {
    let (first, last) = detect::steady_window(t)?;
    let points: Vec<(f64, f64)> =
        (first..=last).filter(|&i| !series[i].is_nan()).map(|i| (t.elapsed_s[i], series[i])).collect();
    let line = stats::fit_line(&points)?;
    Some(report::MemoryTrend {
        subject: subject.to_string(),
        start_s: points.first()?.0,
        end_s: points.last()?.0,
        mb_per_min: line.slope * 60.0,
        r2: line.r2,
        first_mb: points.first()?.1,
        last_mb: points.last()?.1,
    })
}

/// The latency distribution of the phases the headline figures cover.
fn latency_distribution(run: &Run, args: &Args) -> Option<Distribution> {
    let h = run.hlog.as_ref()?;
    let (names, _) = stats::counted_phases(run, args.include_warmup, args.phase.as_deref());
    let (latency, _) = h.merged(&names);
    (!latency.is_empty()).then(|| distribution(&run.label, &latency))
}

/// Loads a folder; an error too when `--phase` names no phase of the run.
fn load_checked(path: &Path, args: &Args) -> Result<Run, String> {
    let run = load(path).map_err(|e| e.to_string())?;
    match &args.phase {
        Some(only) if !run.timeline.phase_names().contains(&only.as_str()) => Err(format!(
            "{}: --phase {only}: no such phase in this run (phases: {})",
            run.dir.display(),
            run.timeline.phase_names().join(", ")
        )),
        _ => Ok(run),
    }
}

fn out_dir(args: &Args, run: &Run, several: bool) -> PathBuf {
    match (&args.out, several) {
        (Some(out), false) => out.clone(),
        (Some(out), true) => out.join(&run.label),
        (None, _) => run.dir.join("analysis"),
    }
}

fn text(r: &RunReport, out: &Path) -> String {
    let o = &r.overall;
    // Each figure carries what it covers (warmup excluded, approximate).
    let (scope, pct) = (o.scope_tag(), o.percentile_tag());
    let latency = match &o.latency_ms {
        Some(l) => format!("p50 {:.3} ms, p95 {:.3} ms, p99 {:.3} ms{pct}", l.p50, l.p95, l.p99),
        None => format!("latency percentiles {}{scope}", o.percentiles_from),
    };
    let mut s = format!(
        "{}: {}{}\n  throughput {:.1} msg/s{scope}, {latency}, peak {} connections{scope}, errors {} = {:.4} %{scope}\n",
        r.run,
        r.verdict.as_deref().unwrap_or("no verdict"),
        if o.phases.is_empty() { String::new() } else { format!(", phases {}", o.phases) },
        o.throughput_msg_per_s,
        o.connections_peak,
        o.errors,
        o.error_rate * 100.0
    );
    if r.findings.is_empty() {
        s += "  no findings\n";
    }
    for f in &r.findings {
        s += &format!(
            "  [{}] {:.0}-{:.0} s ({}): {}\n",
            f.severity.name(),
            f.start_s,
            f.end_s,
            f.phase,
            f.description
        );
    }
    for n in &r.notes {
        s += &format!("  note: {n}\n");
    }
    s += &format!("  written to {}\n", out.display());
    s
}

fn write_outputs(run: &Run, r: &RunReport, args: &Args, out: &Path) -> Result<(), String> {
    report::write_run(r, out).map_err(|e| format!("{}: {e}", out.display()))?;
    let dist = latency_distribution(run, args);
    if args.plots {
        plots::render_run(&run.timeline, &r.findings, dist.as_ref(), out).map_err(|e| e.to_string())?;
    }
    if args.format == Format::Html {
        let mut charts = Vec::new();
        for stem in plots::CHARTS {
            let svg =
                plots::svg(stem, &run.timeline, &r.findings, dist.as_ref()).map_err(|e| e.to_string())?;
            charts.push((stem.to_string(), svg));
        }
        let path = out.join("report.html");
        std::fs::write(&path, report::html(r, &charts)).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs `analyze`, printing to stdout; returns the exit code.
pub fn main(args: Args) -> i32 {
    run(args, &mut std::io::stdout().lock())
}

/// Runs `analyze`, printing reports to `stdout` (errors go to stderr);
/// returns the exit code.
pub fn run(args: Args, stdout: &mut dyn std::io::Write) -> i32 {
    let (paths, mut errors) = expand(&args.paths);
    for e in &errors {
        eprintln!("error: {e}");
    }
    let several = paths.len() > 1;
    let mut analyzed: Vec<(Run, RunReport)> = Vec::new();
    for path in &paths {
        let run = match load_checked(path, &args) {
            Ok(run) => run,
            Err(e) => {
                eprintln!("error: {e}");
                errors.push(e);
                continue;
            }
        };
        let r = analyze(&run, &args);
        let out = out_dir(&args, &run, several);
        if let Err(e) = write_outputs(&run, &r, &args, &out) {
            eprintln!("error: {e}");
            errors.push(e);
            continue;
        }
        let _ = match args.format {
            Format::Text => write!(stdout, "{}", text(&r, &out)),
            // One document for all the runs, printed at the end.
            Format::Json => Ok(()),
            Format::Markdown => write!(stdout, "{}", report::markdown(&r)),
            Format::Html => writeln!(stdout, "{}", out.join("report.html").display()),
        };
        analyzed.push((run, r));
    }
    if args.format == Format::Json {
        // One run: its report; several: an array of them, in order.
        let doc = match analyzed.as_slice() {
            [(_, only)] if !several => serde_json::to_string_pretty(only),
            all => serde_json::to_string_pretty(&all.iter().map(|(_, r)| r).collect::<Vec<_>>()),
        };
        let _ = writeln!(stdout, "{}", doc.expect("plain data"));
    }

    let baseline = match &args.baseline {
        Some(path) => match load_checked(path, &args) {
            Ok(run) => {
                let r = analyze(&run, &args);
                Some((run, r))
            }
            Err(e) => {
                eprintln!("error: {e}");
                errors.push(e);
                None
            }
        },
        None => None,
    };
    // The baseline: --baseline, else the oldest run (by its start, else the
    // first path).
    let oldest = (0..analyzed.len()).min_by_key(|&i| {
        let started = analyzed[i].1.started_at.clone();
        (started.is_none(), started, i)
    });
    let comparison: Option<Comparison> = match (&baseline, analyzed.len(), oldest) {
        (Some((_, base)), n, _) if n >= 1 => {
            let others: Vec<&RunReport> = analyzed.iter().map(|(_, r)| r).collect();
            Some(compared(base, &others, args.tolerance))
        }
        (None, n, Some(first)) if n >= 2 => {
            let others: Vec<&RunReport> =
                analyzed.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, (_, r))| r).collect();
            Some(compared(&analyzed[first].1, &others, args.tolerance))
        }
        _ => None,
    };
    if let Some(c) = &comparison {
        for w in &c.warnings {
            eprintln!("warning: {w}");
        }
    }
    if let Some(c) = &comparison {
        let dir = match (&args.out, analyzed.last()) {
            (Some(out), _) => out.clone(),
            (None, Some((run, _))) => run.dir.join("analysis"),
            (None, None) => PathBuf::from("."),
        };
        let md = report::comparison_markdown(c);
        let written = std::fs::create_dir_all(&dir)
            .and_then(|_| std::fs::write(dir.join("comparison.md"), &md))
            .and_then(|_| {
                std::fs::write(
                    dir.join("comparison.json"),
                    serde_json::to_string_pretty(c).expect("plain data") + "\n",
                )
            });
        if let Err(e) = written {
            eprintln!("error: {}: {e}", dir.display());
            errors.push(e.to_string());
        }
        if args.plots
            && let Err(e) = draw_comparison(baseline.as_ref().map(|(run, _)| run), &analyzed, &args, &dir)
        {
            eprintln!("error: {e}");
            errors.push(e);
        }
        if args.format == Format::Html {
            // The overlaid chart, drawn now if --plots did not.
            let svg_path = dir.join(format!("{}.svg", plots::COMPARE_CHART));
            if !args.plots
                && let Err(e) = draw_comparison(baseline.as_ref().map(|(run, _)| run), &analyzed, &args, &dir)
            {
                eprintln!("warning: the comparison chart: {e}");
            }
            let svg = std::fs::read_to_string(&svg_path).ok();
            let page = dir.join("comparison.html");
            match std::fs::write(&page, report::comparison_html(c, svg.as_deref())) {
                Ok(()) => {
                    let _ = writeln!(stdout, "{}", page.display());
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", page.display());
                    errors.push(e.to_string());
                }
            }
        }
        if args.format == Format::Text || args.format == Format::Markdown {
            let _ = writeln!(stdout, "\n{md}");
        }
    }
    let regressed = args.fail_on_regression && comparison.as_ref().is_some_and(Comparison::regressed);
    let severe = args.fail_on.is_some_and(|at| {
        analyzed.iter().flat_map(|(_, r)| &r.findings).any(|f| f.severity >= at.severity())
    });
    match () {
        _ if !errors.is_empty() => EXIT_BAD_INPUT,
        _ if regressed => {
            eprintln!("regression against the baseline (--fail-on-regression): exit {EXIT_REGRESSION}");
            EXIT_REGRESSION
        }
        _ if severe => {
            eprintln!("findings at or above --fail-on: exit {EXIT_FINDINGS}");
            EXIT_FINDINGS
        }
        _ => EXIT_OK,
    }
}

/// Draws the overlaid latency chart of the baseline (if given apart) and
/// the analyzed runs into `dir`.
fn draw_comparison(
    baseline: Option<&Run>,
    analyzed: &[(Run, RunReport)],
    args: &Args,
    dir: &Path,
) -> Result<(), String> {
    let runs: Vec<(&crate::model::Timeline, Option<Distribution>)> = baseline
        .into_iter()
        .chain(analyzed.iter().map(|(run, _)| run))
        .map(|run| (&run.timeline, latency_distribution(run, args)))
        .collect();
    let refs: Vec<(&crate::model::Timeline, Option<&Distribution>)> =
        runs.iter().map(|(t, d)| (*t, d.as_ref())).collect();
    plots::render_comparison(&refs, dir).map(|_| ()).map_err(|e| e.to_string())
}

/// The comparison of `others` against `base`, with a warning where the
/// runs differ in scenario or scale (their figures then differ for that
/// reason too).
fn compared(base: &RunReport, others: &[&RunReport], tolerance: f64) -> Comparison {
    let stats: Vec<&stats::WindowStats> = others.iter().map(|r| &r.overall).collect();
    let mut c = compare(&base.overall, &stats, tolerance);
    for o in others {
        if o.scenario != base.scenario {
            c.warnings.push(format!(
                "{} ran scenario {} and the baseline {} ran {}: a different test, not only a different result",
                o.run,
                o.scenario.as_deref().unwrap_or("?"),
                base.run,
                base.scenario.as_deref().unwrap_or("?")
            ));
        }
        let (a, b) = (o.overall.connections_peak, base.overall.connections_peak);
        // Scale: peak connections more than 10 % apart.
        if a.abs_diff(b) as f64 > 0.1 * a.max(b) as f64 {
            c.warnings.push(format!(
                "{} peaked at {a} connections and the baseline {} at {b}: runs at different scale",
                o.run, base.run
            ));
        }
    }
    c
}
