use super::*;
use stampede_relay::config::{DropAt, Faults, SlowWindow};

/// The plan of scenario `text` (named `t.toml` in errors).
pub(crate) fn plan(text: &str) -> Result<Plan, ScenarioError> {
    let path = Path::new("t.toml");
    let sc = Scenario::parse(path, text)?;
    Plan::new(&sc, path, text)
}

#[test]
fn every_example_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let (sc, source) = Scenario::load(&path).unwrap();
            Plan::new(&sc, &path, &source).unwrap_or_else(|e| panic!("{e}"));
            checked += 1;
        }
    }
    assert!(checked >= 3, "examples/ holds the scenarios");
}

#[test]
fn schedule_is_derived_from_the_phases() {
    let p = plan(
        "name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 100\n\
         [phases]\nwarmup_s = 4\nramp_up_s = 10\nsustained_s = 20\ncooldown_s = 0\n",
    )
    .unwrap();
    let names: Vec<_> = p.phases.iter().map(PhasePlan::name).collect();
    assert_eq!(names, ["warmup", "ramp-up", "sustained"]);
    assert_eq!(p.duration(), Duration::from_secs(34));
    assert_eq!(p.level_at(Duration::from_secs(2)), 5, "half of the 10% warmup");
    assert_eq!(p.level_at(Duration::from_secs(9)), 55, "half way up from 10 to 100");
    assert_eq!(p.level_at(Duration::from_secs(20)), 100);
    assert_eq!(p.level_at(Duration::from_secs(34)), 0, "after the end");
    assert_eq!(p.phase_at(Duration::from_secs(14)), 2);
    assert_eq!(p.peak(), 100);
    assert_eq!(p.fleet.local, Some(1));
}

#[test]
fn local_fleet_grows_with_the_connection_count() {
    let p = plan("name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 40000\n").unwrap();
    assert_eq!(p.fleet.local, Some(3));
}

#[test]
fn cross_field_errors_point_at_the_line() {
    let err = plan("name = \"s\"\n[target]\nbundled = true\nurl = \"ws://x/\"\n").unwrap_err().to_string();
    assert!(err.starts_with("t.toml:4:7: give either"), "{err}");
    let err = plan("name = \"s\"\n[target]\n").unwrap_err().to_string();
    assert!(err.starts_with("t.toml:2:1: [target] needs"), "{err}");
    let err = plan(
        "name = \"s\"\n[target]\nbundled = true\n[load]\nconnections = 5\n[phases]\nwarmup_connections = 6\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("t.toml:7:22: warmup_connections must be"), "{err}");
    let err =
        plan("name = \"s\"\n[target]\nbundled = true\n[fleet]\nremote = true\n").unwrap_err().to_string();
    assert!(err.contains("remote fleet needs `workers = N`"), "{err}");
    let err = plan(
        "name = \"s\"\n[target]\nbundled = true\n[phases]\nwarmup_s = 0\nramp_up_s = 0\nsustained_s = 0\ncooldown_s = 0\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("every phase lasts 0 s"), "{err}");
}

#[test]
fn values_are_checked_where_they_are_written() {
    for (text, at, says) in [
        ("name = \"a b\"\n[target]\nbundled = true\n", "t.toml:1:8", "names the results folder"),
        ("name = \"s\"\n[target]\nbundled = true\n[phases]\nsustained_s = -1\n", "t.toml:5:15", "-1"),
        ("name = \"s\"\n[target]\nbundled = true\n[load]\npayload_bytes = 10\n", "t.toml:5:17", "between 32"),
        (
            "name = \"s\"\n[target]\nbundled = true\n[thresholds]\nerror_rate = \"< x\"\n",
            "t.toml:5:14",
            "not a number",
        ),
        ("name = \"s\"\n[target]\nbundled = true\n[surprise]\n", "t.toml:4:2", "unknown field `surprise`"),
    ] {
        let err = plan(text).unwrap_err().to_string();
        assert!(err.starts_with(at) && err.contains(says), "{text:?} gave {err}");
    }
}

#[test]
fn bundled_faults_reach_the_plan() {
    let p = plan(
        "name = \"s\"\n[target]\nbundled = true\n\
         bundled_fault_slow = { start_s = 30, length_s = 20, extra_ms = 50 }\n\
         bundled_fault_drop = { at_s = 60, fraction = 0.3 }\n\
         bundled_fault_leak_mb_per_min = 5.0\n",
    )
    .unwrap();
    let TargetPlan::Bundled { faults, .. } = p.target else { panic!("{:?}", p.target) };
    assert_eq!(
        faults,
        Faults {
            slow: Some(SlowWindow {
                start: Duration::from_secs(30),
                length: Duration::from_secs(20),
                extra: Duration::from_millis(50),
            }),
            drop: Some(DropAt { at: Duration::from_secs(60), fraction: 0.3 }),
            leak_mb_per_min: Some(5.0),
            external_clock: false,
        }
    );
    let p = plan("name = \"s\"\n[target]\nbundled = true\n").unwrap();
    assert!(matches!(p.target, TargetPlan::Bundled { faults, .. } if faults == Faults::default()));
}

#[test]
fn bad_fault_values_point_at_the_line() {
    let head = "name = \"s\"\n[target]\nbundled = true\n";
    for (line, at, says) in [
        ("bundled_fault_drop = { at_s = 60, fraction = 1.5 }", "t.toml:4:", "fraction 1.5"),
        ("bundled_fault_drop = { at_s = 60, fraction = 0 }", "t.toml:4:", "above 0 and at most 1"),
        ("bundled_fault_drop = { at_s = -1, fraction = 0.5 }", "t.toml:4:", "-1"),
        ("bundled_fault_drop = { at_s = 60 }", "t.toml:4:", "fraction"),
        ("bundled_fault_slow = { start_s = 1, length_s = 2, extra_ms = 0 }", "t.toml:4:", "extra_ms 0"),
        ("bundled_fault_slow = { start_s = 1, length_s = 0, extra_ms = 5 }", "t.toml:4:", "above 0"),
        ("bundled_fault_slow = { start_s = 1, length_s = 2, extra = 5 }", "t.toml:4:", "unknown field"),
        ("bundled_fault_leak_mb_per_min = -2", "t.toml:4:", "MB per minute"),
    ] {
        let err = plan(&format!("{head}{line}\n")).unwrap_err().to_string();
        assert!(err.starts_with(at) && err.contains(says), "{line:?} gave {err}");
    }
    let err = plan("name = \"s\"\n[target]\nurl = \"ws://x/\"\nbundled_fault_leak_mb_per_min = 1\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("t.toml:4:33: bundled_fault_leak_mb_per_min injects faults"), "{err}");
}

#[test]
fn the_bundled_relays_channels_come_from_the_target_table() {
    let p = plan(
        "name = \"s\"\n[target]\nbundled = true\nbundled_history_messages = 0\nbundled_history_age = \"1m\"\n\
         bundled_fault_duplicate = 0.25\nbundled_fault_reorder = 0.5\n",
    )
    .unwrap();
    let TargetPlan::Bundled { pubsub, .. } = p.target else { panic!("{:?}", p.target) };
    assert_eq!(pubsub.history_messages, 0);
    assert_eq!(pubsub.history_age, Duration::from_secs(60));
    assert_eq!((pubsub.fault_duplicate, pubsub.fault_reorder), (Some(0.25), Some(0.5)));
    let head = "name = \"s\"\n[target]\nbundled = true\n";
    let pairs = "[messages]\nmode = \"pairs\"\n";
    for (text, at, says) in [
        ("bundled_fault_duplicate = 1.5\n".to_string(), "t.toml:4:27", "share from 0 to 1"),
        ("bundled_fault_reorder = -0.1\n".to_string(), "t.toml:4:25", "share from 0 to 1"),
        ("bundled_history_messages = 2000000\n".to_string(), "t.toml:4:28", "0 to 1000000"),
        ("bundled_history_age = 0\n".to_string(), "t.toml:4:23", "above 0"),
        (format!("bundled_processes = 2\n{pairs}"), "t.toml:2:1", "channels live in one relay process"),
        (format!("[load]\nconnections = 40000\n{pairs}"), "t.toml:2:1", "point [target] url at a relay"),
    ] {
        let err = plan(&format!("{head}{text}")).unwrap_err().to_string();
        assert!(err.starts_with(at) && err.contains(says), "{text:?} gave {err}");
    }
    let err = plan("name = \"s\"\n[target]\nurl = \"ws://x/\"\nbundled_fault_reorder = 0.1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bundled_fault_reorder injects faults into the bundled relay"), "{err}");
}

#[test]
fn durations_take_units_and_errors_are_in_words() {
    let head = "name = \"s\"\n[target]\nbundled = true\n";
    let p = plan(&format!("{head}[phases]\nsustained_s = \"5m\"\nwarmup_s = \"1500ms\"\n")).unwrap();
    assert_eq!(p.phases[0].duration, Duration::from_millis(1500));
    assert_eq!(p.phases[2].duration, Duration::from_secs(300));
    for (text, at, says) in [
        ("[phases]\nsustained_s = \"20x\"", "t.toml:5:", "\"20x\" is not a duration"),
        ("[phases]\nsustained_s = true", "t.toml:5:", "true is not a duration"),
        ("[phases]\nsustained_s = \"8d\"", "t.toml:5:", "not a duration"),
        ("[phases]\nsustained_s = 700000", "t.toml:5:", "out of range"),
        ("[load]\nconnections = \"many\"", "t.toml:5:", "\"many\" is not a count"),
        ("[load]\nconnections = 0", "t.toml:5:", "at least 1"),
        ("[load]\nbuffer_bytes = 100", "t.toml:5:", "between 512 and 1048576"),
        ("[load]\nconnect_timeout_s = 0", "t.toml:5:", "above 0"),
        ("[load]\npayload_bytes = \"64\"", "t.toml:5:", "is not a number of bytes"),
        ("[load]\nmessage_interval_s = 0.0000001", "t.toml:5:", "at least 0.000001 s"),
    ] {
        let err = plan(&format!("{head}{text}\n")).unwrap_err().to_string();
        assert!(err.starts_with(at) && err.contains(says), "{text:?} gave {err}");
        assert!(!err.contains("invalid type"), "no serde internals: {err}");
    }
}
