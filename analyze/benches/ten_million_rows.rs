//! Benchmark: analyze a synthetic 28-hour run of 100 workers: 10,080,000
//! per-worker rows in workers.csv, 100,800 rows in metrics.csv and as many
//! seconds of histograms in latency.hlog. Goal: under 10 s on 2 cores.
//!
//! `cargo bench -p stampede-analyze --bench ten_million_rows`
//! (set STAMPEDE_BENCH_DIR to keep the generated folder between runs).

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use clap::Parser;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use stampede_model::Counters;
use stampede_model::results::{
    Figures, MetricsRow, SUMMARY_SCHEMA_VERSION, Summary, WORKER_COLUMNS, csv_line, metrics_columns,
};

const WORKERS: usize = 100;
const SECONDS: usize = 28 * 3600;

fn phase(s: usize) -> &'static str {
    match s {
        s if s < 300 => "warmup",
        s if s < 1800 => "ramp-up",
        s if s < SECONDS - 600 => "sustained",
        _ => "cooldown",
    }
}

fn generate(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut m = BufWriter::new(std::fs::File::create(dir.join("metrics.csv"))?);
    m.write_all(csv_line(&metrics_columns()).as_bytes())?;
    let mut w = BufWriter::new(std::fs::File::create(dir.join("workers.csv"))?);
    writeln!(w, "{}", WORKER_COLUMNS.join(","))?;
    let start = UNIX_EPOCH + Duration::from_secs(1_795_406_400);
    let mut hbuf = BufWriter::new(std::fs::File::create(dir.join("latency.hlog"))?);
    let mut ser = V2DeflateSerializer::new();
    let mut log =
        IntervalLogWriterBuilder::new().with_start_time(start).begin_log_with(&mut hbuf, &mut ser)?;
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
    for s in 0..SECONDS {
        let p = phase(s);
        let conns = 1_000_000;
        // A one-hour slow leak in worker 7 and a latency spike at hour 20.
        let p95 = if (72_000..72_030).contains(&s) { 45.0 } else { 2.0 + (s % 7) as f64 * 0.05 };
        let row = MetricsRow {
            elapsed_s: s as u64,
            timestamp: "2026-11-23T00:00:00.000Z".into(),
            phase: p.into(),
            revision: 0,
            connections_target: conns,
            connections_active: conns,
            counters: Counters { messages_sent: conns, messages_received: conns, ..Default::default() },
            errors: 0,
            latency_p50_ms: 1.0,
            latency_p95_ms: p95,
            latency_p99_ms: 3.0,
            latency_max_ms: 9.0,
            connect_p95_ms: 1.0,
            connect_tcp_p95_ms: 0.2,
            connect_tls_p95_ms: f64::NAN,
            connect_upgrade_p95_ms: 0.8,
            generator_stalled: 0,
            worker_rss_mb: 100.0 * WORKERS as f64,
            worker_cpu_pct: 150.0,
            browser_pss_mb: f64::NAN,
            browser_sessions: 0,
            workers_reporting: WORKERS as u32,
            target_rss_mb: f64::NAN,
            target_cpu_pct: f64::NAN,
            target_connections: f64::NAN,
        };
        m.write_all(csv_line(&row.csv_cells()).as_bytes())?;
        for k in 0..WORKERS {
            let rss = 100.0 + if k == 7 && s > 50_000 { (s - 50_000) as f64 / 60.0 * 2.0 } else { 0.0 };
            writeln!(w, "{s},2026-11-23T00:00:00.000Z,w{k:03},10000,0,0,10000,10000,0,{rss:.1},1.5,1")?;
        }
        h.reset();
        h.record_n((p95 * 1000.0) as u64, 100).unwrap();
        h.record_n(1000, 900).unwrap();
        log.write_histogram(&h, Duration::from_secs(s as u64), Duration::from_secs(1), Tag::new("latency"))
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    drop(log);
    hbuf.flush()?;
    let summary = Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        verdict: "PASS".into(),
        aborted: None,
        scenario: "bench".into(),
        target: "ws://x/".into(),
        started_at: "2026-11-23T00:00:00.000Z".into(),
        duration_s: SECONDS as f64,
        workers: WORKERS as u32,
        worker_details: vec![],
        figures: Figures::default(),
        worker_rss_peak_mb: 0.0,
        phases: vec![],
        thresholds: vec![],
        breaking_point: None,
        breaking_point_reason: None,
        subprotocols: Default::default(),
        channels: Vec::new(),
        browser: None,
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string(&summary).map_err(std::io::Error::other)?,
    )?;
    m.flush()?;
    w.flush()?;
    Ok(())
}

fn main() {
    let keep = std::env::var_os("STAMPEDE_BENCH_DIR");
    let tmp = tempfile::tempdir().unwrap();
    let dir =
        keep.as_ref().map(|d| Path::new(d).to_path_buf()).unwrap_or_else(|| tmp.path().join("bench-28h"));
    if !dir.join("latency.hlog").is_file() {
        let t = Instant::now();
        generate(&dir).expect("generate the synthetic run");
        let size: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        println!(
            "generated {} worker rows ({:.0} MB) in {:.1} s",
            WORKERS * SECONDS,
            size as f64 / 1e6,
            t.elapsed().as_secs_f64()
        );
    }
    let out = tmp.path().join("analysis");
    let args = stampede_analyze::cli::Args::parse_from([
        "analyze",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let t = Instant::now();
    let code = stampede_analyze::cli::run(args, &mut std::io::sink());
    let took = t.elapsed().as_secs_f64();
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let findings = report["findings"].as_array().map_or(0, |f| f.len());
    println!(
        "analyze: {} worker rows + {} seconds in {took:.2} s ({:.1} M rows/s), exit {code}, {findings} findings; goal < 10 s: {}",
        WORKERS * SECONDS,
        SECONDS,
        (WORKERS * SECONDS) as f64 / took / 1e6,
        if took < 10.0 { "met" } else { "NOT met" }
    );
}
