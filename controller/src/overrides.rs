//! Command-line values that replace the scenario's. They are written into
//! the scenario before the plan is derived, so the copy saved with the
//! results is what ran; the flags themselves are validated where they are
//! parsed ([`crate::cli`]), so their errors name the flag.

use std::path::PathBuf;

use crate::scenario::{Count, Scenario, Seconds};

/// Command-line values that replace the scenario's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--target URL`
    pub target: Option<String>,
    /// `--connections N`
    pub connections: Option<u64>,
    /// `--duration SECS` (the sustained phase)
    pub duration_s: Option<f64>,
    /// `--ramp-up SECS`
    pub ramp_up_s: Option<f64>,
    /// `--message-interval SECS`
    pub message_interval_s: Option<f64>,
    /// `--workers N`
    pub workers: Option<u64>,
    /// `--output DIR`
    pub output: Option<PathBuf>,
}

impl Overrides {
    /// Writes the overrides into the scenario, so the copy saved with the
    /// results is what actually ran.
    pub fn apply(&self, sc: &mut Scenario) {
        if let Some(url) = &self.target {
            sc.target.url = Some(toml::Spanned::new(0..0, url.clone()));
            sc.target.bundled = false;
        }
        if let Some(n) = self.connections {
            sc.load.connections = Count(n);
        }
        if let Some(s) = self.duration_s {
            sc.phases.sustained_s = Seconds(s);
        }
        if let Some(s) = self.ramp_up_s {
            sc.phases.ramp_up_s = Seconds(s);
        }
        if let Some(s) = self.message_interval_s {
            sc.load.message_interval_s = Seconds(s);
        }
        if let Some(n) = self.workers {
            sc.fleet.workers = Some(Count(n));
        }
        if let Some(dir) = &self.output {
            sc.output.dir = dir.clone();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::plan::{Plan, TargetPlan};

    #[test]
    fn overrides_replace_scenario_values() {
        let text = "name = \"s\"\n[target]\nbundled = true\n";
        let mut sc = Scenario::parse(Path::new("t.toml"), text).unwrap();
        Overrides {
            target: Some("ws://127.0.0.1:9/ws".into()),
            connections: Some(7),
            duration_s: Some(3.0),
            workers: Some(2),
            ..Default::default()
        }
        .apply(&mut sc);
        let p = Plan::new(&sc, Path::new("t.toml"), text).unwrap();
        assert_eq!(p.target, TargetPlan::Url("ws://127.0.0.1:9/ws".into()));
        assert_eq!(p.connections, 7);
        assert_eq!(p.phases[2].duration, Duration::from_secs(3));
        assert_eq!(p.fleet.local, Some(2));
    }
}
