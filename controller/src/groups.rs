//! Client groups (`[[group]]`): who makes up each phase's load. Every
//! phase's level (connections, or sessions for a browser group) is split
//! over the groups by weight, and each group runs on workers of its own,
//! all on the run's one timeline and in its one set of results.
//!
//! ```toml
//! [[group]]
//! name = "api"             # native WebSocket clients running the
//! weight = 3               # scenario's [messages] or [[flow]]
//!
//! [[group]]
//! name = "web"
//! engine = "browser"       # headless Chromium pages
//! weight = 1
//! sessions_per_browser = 25
//! contexts = "shared"      # or "isolated" (own storage; more memory)
//! flow = [
//!   { step = "goto", url = "/app" },
//!   { step = "wait_for", selector = "#status.open" },
//!   { step = "loop", duration = "30s", steps = [
//!     { step = "click", name = "send", selector = "#send", wait_for = "li#msg-{{seq}}" },
//!     { step = "sleep", duration = "1s" },
//!   ] },
//! ]
//! ```
//!
//! Without `[[group]]` the run is one native group. A scenario has at most
//! one native group (it runs the scenario's session); browser groups each
//! have their own flow. A worker runs one group: a browser group goes only
//! to workers that said they can run browsers.

use std::path::Path;

use serde::{Deserialize, Serialize};
use stampede_model::spec::{BrowserContexts, BrowserRenderers, BrowserSpec, SessionSpec};
use toml::Spanned;

use crate::flow::StepTable;
use crate::scenario::{Count, Scenario, ScenarioError};

/// Most groups in a scenario.
pub const MAX_GROUPS: usize = 16;
/// Longest group name (it starts default step names: `web_click`).
pub const MAX_GROUP_NAME: usize = 16;
/// Sessions per Chromium process unless a group says: in the default mode
/// a session then costs under ~10 MB PSS (README, "Browser sessions"), and
/// one renderer main thread runs the scripts of at most 25 pages.
pub const DEFAULT_SESSIONS_PER_BROWSER: u64 = 25;

/// One `[[group]]` as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    /// Its name in logs, results and default step names.
    pub name: Spanned<String>,
    /// `native` (default) or `browser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<Spanned<String>>,
    /// Its share of every phase's level, against the other groups' (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<Spanned<Count>>,
    /// browser: sessions per Chromium process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_per_browser: Option<Spanned<Count>>,
    /// browser: `shared` (default) or `isolated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contexts: Option<Spanned<String>>,
    /// browser: `per-site` (default: a site's pages share a renderer) or
    /// `per-page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renderers: Option<Spanned<String>>,
    /// browser: the Chromium executable on the workers (default: found on
    /// PATH).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chromium: Option<Spanned<String>>,
    /// browser: save a failed session's page (default true; local workers
    /// only, under the results' `screenshots/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screenshots: Option<Spanned<bool>>,
    /// browser: the steps of a session.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flow: Vec<Spanned<StepTable>>,
}

/// What runs a group's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Rust WebSocket clients.
    Native,
    /// Headless Chromium pages.
    Browser,
}

impl EngineKind {
    /// Its name in a worker's Hello.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Native => "native",
            EngineKind::Browser => "browser",
        }
    }
}

/// A group, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// Its name.
    pub name: String,
    /// What runs it.
    pub engine: EngineKind,
    /// Its share of every phase's level.
    pub weight: u64,
    /// What its workers run (a browser group: [`SessionSpec::Browser`]).
    pub session: SessionSpec,
    /// Save failure screenshots (browser groups, local workers).
    pub screenshots: bool,
}

/// The groups of `sc`; `native` is the session native clients run (from
/// `[messages]` or `[[flow]]`).
pub fn groups(
    sc: &Scenario,
    path: &Path,
    source: &str,
    native: &SessionSpec,
) -> Result<Vec<GroupPlan>, ScenarioError> {
    let err = |at: usize, msg: String| ScenarioError::at(path, source, at, msg);
    if sc.groups.is_empty() {
        let session = native.clone();
        return Ok(vec![GroupPlan {
            name: "default".into(),
            engine: EngineKind::Native,
            weight: 1,
            session,
            screenshots: false,
        }]);
    }
    if sc.groups.len() > MAX_GROUPS {
        let at = sc.groups[MAX_GROUPS].name.span().start;
        return Err(err(at, format!("more than {MAX_GROUPS} groups: merge some")));
    }
    let mut out: Vec<GroupPlan> = Vec::new();
    for g in &sc.groups {
        let (name, at) = (g.name.get_ref(), g.name.span().start);
        let valid = !name.is_empty()
            && name.len() <= MAX_GROUP_NAME
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !valid {
            return Err(err(at, format!("group name {name:?}: use 1 to {MAX_GROUP_NAME} of a-z, 0-9 and _")));
        }
        if out.iter().any(|o| &o.name == name) {
            return Err(err(at, format!("two groups are named {name}: give each its own name")));
        }
        let engine = match g.engine.as_ref().map(|e| (e.get_ref().as_str(), e.span().start)) {
            None | Some(("native", _)) => EngineKind::Native,
            Some(("browser", _)) => EngineKind::Browser,
            Some((other, at)) => {
                return Err(err(at, format!("engine {other:?}: use \"native\" or \"browser\"")));
            }
        };
        let weight = match &g.weight {
            None => 1,
            Some(w) if (1..=1_000_000).contains(&w.get_ref().0) => w.get_ref().0,
            Some(w) => return Err(err(w.span().start, "weight: give 1 to 1000000".into())),
        };
        let session = match engine {
            EngineKind::Native => {
                let browser_keys = [
                    ("sessions_per_browser", g.sessions_per_browser.as_ref().map(|v| v.span().start)),
                    ("contexts", g.contexts.as_ref().map(|v| v.span().start)),
                    ("renderers", g.renderers.as_ref().map(|v| v.span().start)),
                    ("chromium", g.chromium.as_ref().map(|v| v.span().start)),
                    ("screenshots", g.screenshots.as_ref().map(|v| v.span().start)),
                    ("flow", g.flow.first().map(|v| v.span().start)),
                ];
                if let Some((key, at)) = browser_keys.iter().find_map(|(k, at)| at.map(|a| (k, a))) {
                    let hint = if *key == "flow" {
                        "; a native group runs the scenario's [messages] or [[flow]]"
                    } else {
                        ""
                    };
                    return Err(err(
                        at,
                        format!(
                            "`{key}` is for browser groups: add engine = \"browser\" to group {name}{hint}"
                        ),
                    ));
                }
                if let Some(first) = out.iter().find(|o| o.engine == EngineKind::Native) {
                    return Err(err(
                        at,
                        format!(
                            "groups {} and {name} are both native: they would run the same session, so make \
                             them one group (weights add up)",
                            first.name
                        ),
                    ));
                }
                native.clone()
            }
            EngineKind::Browser => {
                if g.flow.is_empty() {
                    return Err(err(
                        at,
                        format!(
                            "browser group {name} needs flow = [ {{ step = \"goto\", url = \"/\" }}, ... ]: the page \
                             actions of one session"
                        ),
                    ));
                }
                let sessions_per_browser = match &g.sessions_per_browser {
                    None => DEFAULT_SESSIONS_PER_BROWSER as u32,
                    Some(n) if (1..=1000).contains(&n.get_ref().0) => n.get_ref().0 as u32,
                    Some(n) => {
                        return Err(err(n.span().start, "sessions_per_browser: give 1 to 1000".into()));
                    }
                };
                let contexts = match g.contexts.as_ref().map(|c| (c.get_ref().as_str(), c.span().start)) {
                    None | Some(("shared", _)) => BrowserContexts::Shared,
                    Some(("isolated", _)) => BrowserContexts::Isolated,
                    Some((other, at)) => {
                        return Err(err(at, format!("contexts {other:?}: use \"shared\" or \"isolated\"")));
                    }
                };
                let renderers = match g.renderers.as_ref().map(|c| (c.get_ref().as_str(), c.span().start)) {
                    None | Some(("per-site", _)) => BrowserRenderers::PerSite,
                    Some(("per-page", _)) => BrowserRenderers::PerPage,
                    Some((other, at)) => {
                        return Err(err(
                            at,
                            format!("renderers {other:?}: use \"per-site\" or \"per-page\""),
                        ));
                    }
                };
                let flow = crate::flow::browser_flow(&g.flow, name, path, source)?;
                SessionSpec::Browser(BrowserSpec {
                    flow,
                    sessions_per_browser,
                    contexts,
                    renderers,
                    chromium: g.chromium.as_ref().map(|c| c.get_ref().clone()),
                    screenshot_dir: None,
                })
            }
        };
        out.push(GroupPlan {
            name: name.clone(),
            engine,
            weight,
            session,
            screenshots: engine == EngineKind::Browser && g.screenshots.as_ref().is_none_or(|s| *s.get_ref()),
        });
    }
    // One namespace of step metrics for the whole run.
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for g in &out {
        for step in step_names(&g.session) {
            if let Some((_, other)) = seen.iter().find(|(s, _)| s == step) {
                let at =
                    sc.groups.iter().find(|s| s.name.get_ref() == &g.name).map_or(0, |s| s.name.span().start);
                return Err(err(
                    at,
                    format!(
                        "step name `{step}` is used by group {other} and by group {}: step metrics are per run, \
                         give each step its own name",
                        g.name
                    ),
                ));
            }
            seen.push((step, &g.name));
        }
    }
    Ok(out)
}

/// The step names of a session (none for sessions without steps).
pub fn step_names(session: &SessionSpec) -> &[String] {
    match session {
        SessionSpec::Flow(f) => &f.names,
        SessionSpec::Browser(b) => &b.flow.names,
        _ => &[],
    }
}

/// Every step name of the run, group by group.
pub fn run_step_names(groups: &[GroupPlan]) -> Vec<String> {
    groups.iter().flat_map(|g| step_names(&g.session).iter().cloned()).collect()
}

/// `total` split by `weights`: each part its exact share rounded down,
/// then the rest one each to the largest remainders (earlier groups first
/// on ties), so the parts add up to `total`.
pub fn by_weight(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<u128> = weights.iter().map(|w| u128::from(total) * u128::from(*w)).collect();
    let mut parts: Vec<u64> = exact.iter().map(|e| (e / sum) as u64).collect();
    let mut left = total - parts.iter().sum::<u64>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(exact[i] % sum));
    for i in order {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    parts
}

/// Which group each worker runs: `engines[i]` are worker i's engines. Every
/// group gets a worker that can run it (browser groups first, as they need
/// browser-capable ones), then the rest go, one at a time, to the group
/// with the most weight per worker it can join. `None` when a group cannot
/// get a worker, with what is missing.
pub fn place(groups: &[GroupPlan], engines: &[Vec<String>]) -> Result<Vec<usize>, String> {
    let can = |w: usize, g: usize| engines[w].iter().any(|e| e == groups[g].engine.name());
    let mut placed: Vec<Option<usize>> = vec![None; engines.len()];
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&g| groups[g].engine != EngineKind::Browser);
    for g in order {
        // The free worker with the fewest other uses.
        let pick = (0..engines.len())
            .filter(|&w| placed[w].is_none() && can(w, g))
            .min_by_key(|&w| (0..groups.len()).filter(|&o| o != g && can(w, o)).count());
        match pick {
            Some(w) => placed[w] = Some(g),
            None => {
                let group = &groups[g];
                let capable = (0..engines.len()).filter(|&w| can(w, g)).count();
                return Err(if capable == 0 && group.engine == EngineKind::Browser {
                    format!(
                        "group {} runs browsers, and none of the {} workers found Chromium: install chromium \
                         on a worker (or set CHROME_PATH there)",
                        group.name,
                        engines.len()
                    )
                } else {
                    format!(
                        "{} groups need at least one worker each; {} workers joined ({} can run group {})",
                        groups.len(),
                        engines.len(),
                        capable,
                        group.name
                    )
                });
            }
        }
    }
    for w in 0..engines.len() {
        if placed[w].is_some() {
            continue;
        }
        let count = |g: usize| placed.iter().filter(|p| **p == Some(g)).count() as u64;
        placed[w] = (0..groups.len())
            .filter(|&g| can(w, g))
            .max_by(|&a, &b| {
                // weight / workers, compared without division.
                (u128::from(groups[a].weight) * u128::from(count(b)))
                    .cmp(&(u128::from(groups[b].weight) * u128::from(count(a))))
                    .then(b.cmp(&a))
            })
            .or(Some(0));
    }
    Ok(placed.into_iter().map(|p| p.unwrap_or(0)).collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::plan::tests::plan;

    const HEAD: &str = "name = \"g\"\n[target]\nbundled = true\n[load]\nconnections = 10\n";
    const WEB: &str =
        "[[group]]\nname = \"web\"\nengine = \"browser\"\nflow = [ { step = \"goto\", url = \"/app\" } ]\n";

    fn error(text: &str) -> String {
        plan(&format!("{HEAD}{text}")).unwrap_err().to_string()
    }

    #[test]
    fn groups_are_checked_where_they_are_written() {
        for (text, at, says) in [
            ("[[group]]\nname = \"Web\"\n", "t.toml:7:8", "use 1 to 16 of a-z"),
            (
                "[[group]]\nname = \"a\"\nengine = \"chrome\"\n",
                "t.toml:8:10",
                "use \"native\" or \"browser\"",
            ),
            ("[[group]]\nname = \"a\"\nweight = 0\n", "t.toml:8:10", "0 is not a count"),
            ("[[group]]\nname = \"a\"\nweight = 2000000\n", "t.toml:8:10", "weight: give 1 to 1000000"),
            (
                "[[group]]\nname = \"a\"\ncontexts = \"shared\"\n",
                "t.toml:8:12",
                "add engine = \"browser\" to group a",
            ),
            ("[[group]]\nname = \"a\"\n[[group]]\nname = \"b\"\n", "t.toml:9:8", "both native"),
            (
                "[[group]]\nname = \"a\"\n[[group]]\nname = \"a\"\nengine = \"browser\"\n",
                "t.toml:9:8",
                "two groups are named a",
            ),
            ("[[group]]\nname = \"web\"\nengine = \"browser\"\n", "t.toml:7:8", "needs flow = ["),
            (
                "[[group]]\nname = \"web\"\nengine = \"browser\"\ncontexts = \"private\"\nflow = [ { step = \"goto\", url = \"/\" } ]\n",
                "t.toml:9:12",
                "use \"shared\" or \"isolated\"",
            ),
            (
                "[[group]]\nname = \"web\"\nengine = \"browser\"\nrenderers = \"one\"\nflow = [ { step = \"goto\", url = \"/\" } ]\n",
                "t.toml:9:13",
                "use \"per-site\" or \"per-page\"",
            ),
            (
                "[[group]]\nname = \"web\"\nengine = \"browser\"\nsessions_per_browser = 1001\nflow = [ { step = \"goto\", url = \"/\" } ]\n",
                "t.toml:9:24",
                "give 1 to 1000",
            ),
            (
                "[[flow]]\nstep = \"connect\"\nname = \"go\"\n[[group]]\nname = \"api\"\n[[group]]\nname = \"web\"\nengine = \"browser\"\nflow = [ { step = \"goto\", name = \"go\", url = \"/\" } ]\n",
                "t.toml:12:8",
                "step name `go` is used by group api and by group web",
            ),
            (
                &format!("{WEB}[thresholds]\nstep_nope_p95_ms = \"< 1\"\n"),
                "t.toml:11:20",
                "the steps are: web_goto",
            ),
            (
                &format!("{WEB}[fleet]\nworkers = 1\n[[group]]\nname = \"api\"\n"),
                "t.toml:10:1",
                "the 2 groups need at least one worker each",
            ),
        ] {
            let err = error(text);
            assert!(err.starts_with(at) && err.contains(says), "{text}\n{err}");
        }
    }

    #[test]
    fn each_phase_is_split_over_the_groups_by_weight_and_over_each_groups_workers() {
        let text = format!(
            "{HEAD}[phases]\nwarmup_s = 0\nramp_up_s = 0\nsustained_s = 5\ncooldown_s = 0\n\
             [[group]]\nname = \"api\"\nweight = 3\n{WEB}"
        );
        let p = plan(&text).unwrap();
        assert_eq!(p.groups.len(), 2);
        assert_eq!(p.fleet.local, Some(2), "a local fleet has a worker per group at least");
        assert_eq!(run_step_names(&p.groups), ["web_goto"]);
        let sustained = p.phases.iter().position(|ph| ph.name() == "sustained").unwrap();
        // Workers 0 and 2 run api, 1 runs web; api's 8 of 10 split 4 + 4, web gets 2.
        let commands = p.commands(sustained, &[0, 1, 0], &[100, 100, 100], Duration::ZERO);
        let levels: Vec<u64> = commands.iter().map(|c| c.connections).collect();
        assert_eq!(levels, [4, 2, 4]);
        assert_eq!(p.group_peak(0) + p.group_peak(1), p.peak());
        // Rates follow the same fraction.
        let arrivals = p.phases[sustained].part(&[3, 1], 1);
        assert_eq!(arrivals.peak(), 2);
    }

    #[test]
    fn parts_add_up_and_follow_the_weights() {
        assert_eq!(by_weight(10, &[1]), vec![10]);
        assert_eq!(by_weight(10, &[3, 1]), vec![8, 2]);
        assert_eq!(by_weight(3, &[1, 1]), vec![2, 1]);
        assert_eq!(by_weight(0, &[5, 5]), vec![0, 0]);
        for total in [0, 1, 7, 99, 1_000_003, u64::MAX] {
            for weights in [vec![1, 2, 3], vec![1_000_000, 1], vec![7]] {
                let parts = by_weight(total, &weights);
                assert_eq!(parts.iter().map(|p| u128::from(*p)).sum::<u128>(), u128::from(total));
            }
        }
    }

    fn group(name: &str, engine: EngineKind, weight: u64) -> GroupPlan {
        GroupPlan { name: name.into(), engine, weight, session: SessionSpec::Echo, screenshots: false }
    }

    fn engines(list: &[&[&str]]) -> Vec<Vec<String>> {
        list.iter().map(|e| e.iter().map(|s| s.to_string()).collect()).collect()
    }

    #[test]
    fn browser_groups_get_browser_workers_and_the_rest_follow_weight() {
        let groups = [group("api", EngineKind::Native, 3), group("web", EngineKind::Browser, 1)];
        // The only browser-capable worker goes to the browser group even
        // though it comes first.
        let placed = place(&groups, &engines(&[&["native", "browser"], &["native"]])).unwrap();
        assert_eq!(placed, vec![1, 0]);
        // Spare workers go where the weight per worker is highest.
        let both: &[&str] = &["native", "browser"];
        let all = engines(&[both; 5]);
        let placed = place(&groups, &all).unwrap();
        assert_eq!(placed.iter().filter(|g| **g == 0).count(), 4, "{placed:?}");
        let err = place(&groups, &engines(&[&["native"], &["native"]])).unwrap_err();
        assert!(err.contains("none of the 2 workers found Chromium"), "{err}");
        let err = place(&groups, &engines(&[&["native", "browser"]])).unwrap_err();
        assert!(err.contains("at least one worker each"), "{err}");
    }
}
