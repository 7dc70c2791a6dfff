//! Per-worker memory trends straight from workers.csv with polars: each
//! worker's lowest RSS per block of the steady window, computed as one
//! grouped pass (a fleet of hundreds of workers over a day is millions of
//! rows), then judged by the same rule as the summed series
//! ([`crate::detect::growth`]).

use polars::prelude::*;

use crate::detect::{DetectorParams, block_s, growth};
use crate::model::Finding;

/// Workers whose resident memory rises between `start_s` and `end_s`
/// beyond its noise.
pub fn memory_growth(
    workers: &DataFrame,
    run: &str,
    phase: &str,
    start_s: f64,
    end_s: f64,
    p: &DetectorParams,
) -> PolarsResult<Vec<Finding>> {
    let block = block_s(end_s - start_s, p);
    let x = col("elapsed_s").cast(DataType::Float64);
    let y = col("rss_mb").cast(DataType::Float64);
    let df = workers
        .clone()
        .lazy()
        .filter(x.clone().gt_eq(lit(start_s)).and(x.clone().lt_eq(lit(end_s))).and(y.clone().is_not_null()))
        .with_column(((x - lit(start_s)) / lit(block)).floor().alias("block"))
        .group_by([col("worker").cast(DataType::String), col("block")])
        .agg([y.min().alias("low")])
        .sort(["worker", "block"], Default::default())
        .collect()?;
    let names: Vec<String> =
        df.column("worker")?.str()?.iter().map(|v| v.unwrap_or("").to_string()).collect();
    let get = |name: &str| -> PolarsResult<Vec<f64>> {
        Ok(df.column(name)?.cast(&DataType::Float64)?.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    };
    let (blocks, lows) = (get("block")?, get("low")?);
    let mut out = Vec::new();
    let mut i = 0;
    while i < names.len() {
        let j = (i..names.len()).find(|&j| names[j] != names[i]).unwrap_or(names.len());
        let points: Vec<(f64, f64)> =
            (i..j).filter(|&k| lows[k].is_finite()).map(|k| (start_s + blocks[k] * block, lows[k])).collect();
        let subject = format!("worker {}", names[i]);
        out.extend(growth(run, &subject, phase, &points, (start_s, end_s), p));
        i = j;
    }
    Ok(out)
}
