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
    /// `--messages-per-side N` (pairs)
    pub messages_per_side: Option<u64>,
    /// `--away SECS` (pairs, async-delivery)
    pub away_s: Option<f64>,
}

/// The environment variables the 10K suite documents (../shared/seeds),
/// with the flag each stands for. As in that suite, a bare number of a
/// time is milliseconds (`RAMP_UP_TIME=30000`); `"30s"` works too.
/// (The suite's `WORKERS` is left out: too common a name to obey silently.)
pub const ENVIRONMENT: [(&str, &str); 5] = [
    ("WS_SERVER_URL", "--target"),
    ("TARGET_CONNECTIONS", "--connections"),
    ("RAMP_UP_TIME", "--ramp-up"),
    ("TEST_DURATION", "--duration"),
    ("MESSAGE_INTERVAL", "--message-interval"),
];

impl Overrides {
    /// Overrides from the environment ([`ENVIRONMENT`]); `lookup` reads a
    /// variable. An unusable value is an error naming the variable.
    pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Overrides, String> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let count = |name: &str| -> Result<Option<u64>, String> {
            get(name)
                .map(|v| match v.parse::<u64>() {
                    Ok(n) if n >= 1 => Ok(n),
                    _ => Err(format!("{name}={v:?}: give a whole number of at least 1")),
                })
                .transpose()
        };
        let millis = |name: &str| -> Result<Option<f64>, String> {
            get(name)
                .map(|v| {
                    let text = if v.bytes().all(|b| b.is_ascii_digit() || b == b'.') { format!("{v}ms") } else { v.clone() };
                    Seconds::parse(&text).map(|s| s.0).map_err(|e| {
                        format!("{name}={v:?}: {e} (a bare number is milliseconds, as in the 10K suite; or write \"30s\")")
                    })
                })
                .transpose()
        };
        let target = match get("WS_SERVER_URL") {
            Some(url) => {
                stampede_model::TargetUrl::parse(&url).map_err(|e| format!("WS_SERVER_URL: {e}"))?;
                Some(url)
            }
            None => None,
        };
        let message_interval_s = millis("MESSAGE_INTERVAL")?;
        if let Some(v) = message_interval_s
            && v > 0.0
            && v < crate::plan::MIN_INTERVAL_S
        {
            return Err(format!("MESSAGE_INTERVAL: {v} s: give 0 (connect only) or at least 0.001 (1 µs)"));
        }
        Ok(Overrides {
            target,
            connections: count("TARGET_CONNECTIONS")?,
            ramp_up_s: millis("RAMP_UP_TIME")?,
            duration_s: millis("TEST_DURATION")?,
            message_interval_s,
            ..Overrides::default()
        })
    }

    /// The variables of [`ENVIRONMENT`] that are set, as `NAME=value`, to
    /// say which ones a run obeyed.
    pub fn env_in_use(lookup: impl Fn(&str) -> Option<String>) -> Vec<String> {
        ENVIRONMENT
            .iter()
            .filter_map(|(name, _)| {
                lookup(name).filter(|v| !v.trim().is_empty()).map(|v| format!("{name}={v}"))
            })
            .collect()
    }

    /// These overrides, with `lower`'s filling what these leave unset.
    pub fn or(self, lower: Overrides) -> Overrides {
        Overrides {
            target: self.target.or(lower.target),
            connections: self.connections.or(lower.connections),
            duration_s: self.duration_s.or(lower.duration_s),
            ramp_up_s: self.ramp_up_s.or(lower.ramp_up_s),
            message_interval_s: self.message_interval_s.or(lower.message_interval_s),
            workers: self.workers.or(lower.workers),
            output: self.output.or(lower.output),
            messages_per_side: self.messages_per_side.or(lower.messages_per_side),
            away_s: self.away_s.or(lower.away_s),
        }
    }

    /// Writes the overrides into the scenario, so the copy saved with the
    /// results is what actually ran; a flag the scenario has no use for is
    /// an error naming it.
    pub fn apply(&self, sc: &mut Scenario) -> Result<(), String> {
        let pairs = crate::messages::mode_of(sc) == crate::messages::Mode::Pairs;
        if let Some(n) = self.messages_per_side {
            let m = sc
                .messages
                .as_mut()
                .filter(|_| pairs)
                .ok_or("--messages-per-side applies to [messages] mode = \"pairs\"")?;
            m.messages_per_side = Some(toml::Spanned::new(0..0, n));
        }
        if let Some(s) = self.away_s {
            let m = sc
                .messages
                .as_mut()
                .filter(|_| pairs)
                .ok_or("--away applies to [messages] mode = \"pairs\"")?;
            m.away = Some(toml::Spanned::new(0..0, crate::scenario::Length(s)));
            m.pairs_mode = Some(toml::Spanned::new(0..0, stampede_model::spec::PairsMode::AsyncDelivery));
        }
        if let Some(url) = &self.target {
            sc.target.url = Some(toml::Spanned::new(0..0, url.clone()));
            sc.target.bundled = false;
            sc.target.bundled_tls = None;
        }
        if let Some(n) = self.connections {
            sc.load.connections = Count(n);
        }
        // These two set the `[phases]` table; with a `[[stage]]` list the
        // plan refuses the pair, so a flag never silently does nothing.
        if let Some(s) = self.duration_s {
            sc.phases.get_or_insert_default().sustained_s = Seconds(s);
        }
        if let Some(s) = self.ramp_up_s {
            sc.phases.get_or_insert_default().ramp_up_s = Seconds(s);
        }
        if let Some(s) = self.message_interval_s {
            sc.load.message_interval_s = Seconds(s);
            sc.load.message_rate = None;
        }
        if let Some(n) = self.workers {
            sc.fleet.workers = Some(Count(n));
        }
        if let Some(dir) = &self.output {
            sc.output.dir = dir.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::plan::{Plan, TargetPlan};

    #[test]
    fn environment_fills_what_flags_leave_unset() {
        let env = |name: &str| {
            let value = match name {
                "WS_SERVER_URL" => "ws://127.0.0.1:9/ws",
                "TARGET_CONNECTIONS" => "10000",
                "RAMP_UP_TIME" => "30000",
                "TEST_DURATION" => "2m",
                "MESSAGE_INTERVAL" => "5000",
                _ => return None,
            };
            Some(value.to_string())
        };
        let from_env = Overrides::from_env(env).unwrap();
        assert_eq!(from_env.ramp_up_s, Some(30.0), "a bare number is ms");
        assert_eq!(from_env.duration_s, Some(120.0));
        assert_eq!(from_env.message_interval_s, Some(5.0));
        let flags = Overrides { connections: Some(5), ..Default::default() };
        let merged = flags.or(from_env);
        assert_eq!(merged.connections, Some(5), "the flag wins");
        assert_eq!(merged.target.as_deref(), Some("ws://127.0.0.1:9/ws"));

        let bad = |name: &'static str, value: &'static str| {
            Overrides::from_env(move |n: &str| (n == name).then(|| value.to_string())).unwrap_err()
        };
        assert!(bad("TARGET_CONNECTIONS", "lots").contains("TARGET_CONNECTIONS"));
        assert!(bad("TARGET_CONNECTIONS", "0").contains("at least 1"));
        assert!(bad("RAMP_UP_TIME", "-5").contains("RAMP_UP_TIME"));
        assert!(bad("WS_SERVER_URL", "http://x/").contains("WS_SERVER_URL"));
        assert!(bad("MESSAGE_INTERVAL", "0.0005").contains("at least 0.001 (1 µs)"));
    }

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
        .apply(&mut sc)
        .unwrap();
        let p = Plan::new(&sc, Path::new("t.toml"), text).unwrap();
        assert_eq!(p.target, TargetPlan::Url("ws://127.0.0.1:9/ws".into()));
        assert_eq!(p.connections, 7);
        assert_eq!(p.phases[2].duration, Duration::from_secs(3));
        assert_eq!(p.fleet.local, Some(2));
    }

    #[test]
    fn pair_flags_apply_to_pairs_only() {
        let text = "name = \"s\"\n[target]\nbundled = true\n[messages]\nmode = \"pairs\"\n";
        let mut sc = Scenario::parse(Path::new("t.toml"), text).unwrap();
        Overrides { messages_per_side: Some(7), away_s: Some(30.0), ..Default::default() }
            .apply(&mut sc)
            .unwrap();
        let p = Plan::new(&sc, Path::new("t.toml"), text).unwrap();
        let stampede_model::spec::SessionSpec::Pairs(pairs) = p.connect.session else { panic!() };
        assert_eq!((pairs.messages_per_side, pairs.away_us), (7, 30_000_000));
        assert_eq!(pairs.mode, stampede_model::spec::PairsMode::AsyncDelivery, "--away means async delivery");
        let echo = "name = \"s\"\n[target]\nbundled = true\n";
        let mut sc = Scenario::parse(Path::new("t.toml"), echo).unwrap();
        let err = Overrides { away_s: Some(3.0), ..Default::default() }.apply(&mut sc).unwrap_err();
        assert!(err.contains("--away applies to"), "{err}");
    }
}
