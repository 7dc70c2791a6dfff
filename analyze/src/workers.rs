//! Per-worker memory trends straight from workers.csv with polars: one
//! least-squares line per worker over the steady window, computed as
//! grouped sums, so a fleet of hundreds of workers over a day (millions of
//! rows) takes one pass.

use polars::prelude::*;

use crate::detect::DetectorParams;
use crate::model::{Finding, FindingKind, Severity};

/// Workers whose resident memory grows linearly between `start_s` and
/// `end_s` beyond the thresholds.
pub fn memory_growth(
    workers: &DataFrame,
    run: &str,
    phase: &str,
    start_s: f64,
    end_s: f64,
    p: &DetectorParams,
) -> PolarsResult<Vec<Finding>> {
    let x = col("elapsed_s").cast(DataType::Float64);
    let y = col("rss_mb").cast(DataType::Float64);
    let df = workers
        .clone()
        .lazy()
        .filter(x.clone().gt_eq(lit(start_s)).and(x.clone().lt_eq(lit(end_s))).and(y.clone().is_not_null()))
        .group_by([col("worker").cast(DataType::String)])
        .agg([
            len().alias("n"),
            x.clone().sum().alias("sx"),
            y.clone().sum().alias("sy"),
            (x.clone() * x.clone()).sum().alias("sxx"),
            (x.clone() * y.clone()).sum().alias("sxy"),
            (y.clone() * y.clone()).sum().alias("syy"),
            x.clone().min().alias("x0"),
            x.max().alias("x1"),
        ])
        .sort(["worker"], Default::default())
        .collect()?;
    let get = |name: &str| -> PolarsResult<Vec<f64>> {
        Ok(df.column(name)?.cast(&DataType::Float64)?.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let names: Vec<String> =
        df.column("worker")?.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect();
    let (n, sx, sy, sxx, sxy, syy, x0, x1) =
        (get("n")?, get("sx")?, get("sy")?, get("sxx")?, get("sxy")?, get("syy")?, get("x0")?, get("x1")?);
    let mut out = Vec::new();
    for i in 0..names.len() {
        let k = n[i];
        if k < p.leak_min_duration_s.max(3) as f64 {
            continue;
        }
        let vxx = sxx[i] - sx[i] * sx[i] / k;
        let vxy = sxy[i] - sx[i] * sy[i] / k;
        let vyy = syy[i] - sy[i] * sy[i] / k;
        if vxx <= 0.0 {
            continue;
        }
        let slope = vxy / vxx;
        let r2 = if vyy <= 0.0 { 1.0 } else { vxy * vxy / (vxx * vyy) };
        let per_min = slope * 60.0;
        if per_min < p.leak_min_mb_per_min || r2 < p.leak_min_r2 {
            continue;
        }
        let per_hour = per_min * 60.0;
        out.push(Finding {
            run: run.to_string(),
            kind: FindingKind::MemoryGrowth,
            subject: format!("worker {}", names[i]),
            start_s: x0[i],
            end_s: x1[i],
            phase: phase.to_string(),
            magnitude: per_min,
            unit: "MB/min".into(),
            severity: if per_hour >= 500.0 {
                Severity::Critical
            } else if per_hour >= 100.0 {
                Severity::Warning
            } else {
                Severity::Info
            },
            description: format!(
                "worker {} grows {per_min:.2} MB/min (R^2 {r2:.2}): {per_hour:.0} MB per hour if it goes on; likely leak",
                names[i]
            ),
        });
    }
    Ok(out)
}
