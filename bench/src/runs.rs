//! Runs of the real `controller` and what they wrote.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// What every measurement needs: the binaries and a scratch folder.
pub struct Context {
    pub controller: PathBuf,
    pub node: PathBuf,
    scratch: PathBuf,
}

impl Context {
    pub fn new(controller: &Path, node: &Path) -> Result<Context> {
        if !controller.is_file() {
            bail!("{}: no controller binary (bench/run builds it)", controller.display());
        }
        let scratch = std::env::temp_dir().join(format!("stampede-bench-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)?;
        Ok(Context { controller: controller.to_path_buf(), node: node.to_path_buf(), scratch })
    }

    /// Runs `controller run` on `scenario` (TOML text) and reads its results.
    pub fn run(&self, name: &str, scenario: &str) -> Result<RunResult> {
        let child = self.spawn(name, scenario, &[])?;
        self.results(name, child)
    }

    /// Starts `controller run` on `scenario` with `extra` flags; what it
    /// prints goes to scratch files (a pipe nobody reads until the end
    /// could fill and stall it).
    pub fn spawn(&self, name: &str, scenario: &str, extra: &[&OsStr]) -> Result<Child> {
        let file = self.write(&format!("{name}.toml"), scenario)?;
        Command::new(&self.controller)
            .arg("run")
            .arg(&file)
            .args(["--quiet", "--output"])
            .arg(self.scratch.join("results"))
            .args(extra)
            .stdout(std::fs::File::create(self.scratch.join(format!("{name}.out")))?)
            .stderr(std::fs::File::create(self.scratch.join(format!("{name}.err")))?)
            .spawn()
            .with_context(|| format!("running {}", self.controller.display()))
    }

    /// Waits for a run [`Context::spawn`] started and reads its results.
    pub fn results(&self, name: &str, mut child: Child) -> Result<RunResult> {
        let status = child.wait()?;
        let printed = |ext: &str| {
            std::fs::read_to_string(self.scratch.join(format!("{name}.{ext}"))).unwrap_or_default()
        };
        let stdout = printed("out");
        let Some(dir) = stdout.lines().last().map(PathBuf::from).filter(|d| d.is_dir()) else {
            bail!("{name}: no results folder (exit {:?}): {}", status.code(), printed("err"));
        };
        let summary: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json"))?)?;
        let rows = read_rows(&dir.join("metrics.csv"))?;
        Ok(RunResult { dir, summary, rows })
    }

    /// Writes `text` to the scratch file `name`; returns its path.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let file = self.scratch.join(name);
        std::fs::write(&file, text)?;
        Ok(file)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// A finished run.
pub struct RunResult {
    pub dir: PathBuf,
    pub summary: Value,
    /// metrics.csv, one map of column -> cell per second.
    pub rows: Vec<HashMap<String, String>>,
}

impl RunResult {
    /// A number of the sustained phase's figures in summary.json, by path
    /// (`latency_ms.p99`).
    pub fn sustained(&self, path: &str) -> Result<f64> {
        let phase = self.summary["phases"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "sustained"))
            .context("no sustained phase in summary.json")?;
        let v = path.split('.').fold(phase, |v, k| &v[k]);
        v.as_f64().with_context(|| format!("sustained {path}: {v}"))
    }

    /// Column `column` of the sustained phase's seconds, without the first
    /// `skip` (the level settling).
    pub fn sustained_column(&self, column: &str, skip: usize) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|r| r.get("phase").map(String::as_str) == Some("sustained"))
            .skip(skip)
            .filter_map(|r| r.get(column)?.parse().ok())
            .collect()
    }

    /// When each second of the sustained phase began, s since the Unix
    /// epoch (metrics.csv `timestamp`, UTC).
    pub fn sustained_times(&self) -> Vec<f64> {
        self.rows
            .iter()
            .filter(|r| r.get("phase").map(String::as_str) == Some("sustained"))
            .filter_map(|r| stampede_model::time::parse_iso8601(r.get("timestamp")?))
            .collect()
    }

    /// Column `column` of every second (empty cells left out, as NaN).
    pub fn column(&self, column: &str) -> Vec<f64> {
        self.rows.iter().map(|r| r.get(column).and_then(|c| c.parse().ok()).unwrap_or(f64::NAN)).collect()
    }
}

fn read_rows(path: &Path) -> Result<Vec<HashMap<String, String>>> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty metrics.csv")?.split(',').collect();
    Ok(lines
        .map(|l| header.iter().zip(l.split(',')).map(|(h, c)| (h.to_string(), c.to_string())).collect())
        .collect())
}

/// The mean of `values`.
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}
