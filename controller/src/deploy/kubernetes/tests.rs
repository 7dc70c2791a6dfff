use super::*;
use crate::plan::tests::plan;

const SCENARIO: &str = "name = \"Big_run.1\"\n[target]\nurl = \"wss://Echo.example.test:8443/ws\"\n\
    [load]\nconnections = 20000\npayload_bytes = 512\n\
    [phases]\nwarmup_s = 0\nramp_up_s = 60\nsustained_s = 600\ncooldown_s = 60\n\
    [fleet]\nremote = true\nworkers = 4\njoin_timeout_s = 60\nmax_connections_per_worker = 6000\n";

fn render(text: &str, namespace: Option<&str>) -> String {
    let p = plan(text).unwrap();
    kubernetes_ready(&p).unwrap();
    let opts = RenderOptions { namespace: namespace.map(String::from), ..RenderOptions::new(text) };
    render_kubernetes(&p, &opts)
}

#[test]
fn the_manifests_hold_exactly_the_scenarios_fleet() {
    let y = render(SCENARIO, Some("load"));
    for part in [
        // The fleet: 4 workers, each capped and sized by the estimate.
        "completionMode: Indexed\n  completions: 4\n  parallelism: 4\n",
        "- --max-connections\n        - \"6000\"\n",
        "- --allow-target\n        - \"echo.example.test:8443\"\n",
        // wss://: (7.1 + 1 KB in flight) x 1.5 = 12.15 KB; 30 + 6000 x 12.15 / 1024 = 101 -> 128 Mi.
        "requests:\n            cpu: \"1\"\n            memory: \"128Mi\"\n          limits:\n            memory: \"128Mi\"\n",
        // Worker id from the completion index; token and CA from Secrets.
        "fieldPath: \"metadata.annotations['batch.kubernetes.io/job-completion-index']\"",
        "value: \"w$(STAMPEDE_WORKER_INDEX)\"",
        "value: \"https://stampede-big-run-1-controller:7700\"",
        "- name: STAMPEDE_FLEET_TOKEN_FILE\n          value: /var/run/stampede/token/token\n",
        "secretName: stampede-big-run-1-token",
        "secretName: stampede-big-run-1-fleet-tls",
        // Timeout protection: 720 s planned + 60 s join + 120 s = 900 s.
        "activeDeadlineSeconds: 900\n",
        "activeDeadlineSeconds: 1500\n",
        "ttlSecondsAfterFinished: 3600\n",
        // Non-root, read-only.
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        // Every object in the namespace, with the run's labels.
        "namespace: load\n",
        "stampede.run/name: Big_run.1\n",
        "# Cleanup: kubectl delete all,configmap,secret -n load -l stampede.run/name=Big_run.1\n",
    ] {
        assert!(y.contains(part), "missing {part:?} in:\n{y}");
    }
    let docs = y.matches("\n---\n").count() + usize::from(y.starts_with("---\n"));
    assert_eq!(docs, 4, "ConfigMap, Service, two Jobs:\n{y}");
    assert_eq!(y.matches("kind: ").count(), 4);
    assert_eq!(y.matches("namespace: load\n").count(), 4);
    assert_eq!(y.matches("  labels:\n").count(), 6, "4 objects + 2 pod templates");
    assert_eq!(y.matches("app.kubernetes.io/part-of: stampede\n").count(), 6);
    // No secret value anywhere; the workers never mount the key.
    assert!(!y.contains("tls.key\n              path: tls.key\n            - key: ca.crt"));
    let workers = &y[y.find("name: stampede-big-run-1-workers").unwrap()..];
    assert!(!workers.contains("tls.key"), "{workers}");
}

#[test]
fn the_scenario_goes_into_the_config_map_as_it_is() {
    let text = format!("description = \"a \\\"quoted\\\" # not a comment\"\n{SCENARIO}");
    let y = render(&text, None);
    let block: String = text.lines().map(|l| format!("    {l}\n")).collect();
    assert!(y.contains(&format!("data:\n  scenario.toml: |\n{block}")), "{y}");
    assert!(!y.contains("namespace:"));
}

#[test]
fn names_are_dns_labels_and_the_label_is_the_scenario_name_when_it_can_be() {
    let n = Names::new("Big_run.1");
    assert_eq!((n.base.as_str(), n.label.as_str()), ("stampede-big-run-1", "Big_run.1"));
    let n = Names::new("_x_");
    assert_eq!((n.base.as_str(), n.label.as_str()), ("stampede-x", "x"));
    let n = Names::new(&"a".repeat(64));
    assert_eq!(n.of("controller").len(), 63);
    assert_eq!(n.label, "a".repeat(43));
    assert_eq!(Names::new("---").base, "stampede-run");
}

#[test]
fn what_kubernetes_cannot_run_is_refused_with_what_to_change() {
    let base = "name = \"k\"\n[target]\nurl = \"ws://t:80/\"\n[fleet]\n";
    for (text, says) in [
        (
            "name = \"k\"\n[target]\nbundled = true\n[fleet]\nremote = true\nworkers = 1\n",
            "give [target] url",
        ),
        (&format!("{base}workers = 2\n") as &str, "set [fleet] remote = true"),
        (&format!("{base}remote = true\nworkers = 1\nlisten = \"127.0.0.1:7700\"\n"), "listen on 0.0.0.0"),
        (&format!("{base}remote = true\nworkers = 1\nlisten = \"0.0.0.0:0\"\n"), "a fixed port"),
        (&format!("{base}remote = true\nworkers = 1\nworker_memory_mb = 20\n"), "holds no connection"),
        (
            &format!("{base}remote = true\nworkers = 100\ncost_per_worker_hour = 1\nmax_cost = 1\n"),
            "above max_cost 1",
        ),
    ] {
        let err = kubernetes_ready(&plan(text).unwrap()).unwrap_err();
        assert!(err.contains(says), "{text}: {err}");
    }
    assert_eq!(namespace("load-tests"), Ok("load-tests".into()));
    assert!(namespace("Load").is_err() && namespace("-x").is_err() && namespace("").is_err());
    assert!(image("stampede:1").is_ok() && image("a b").is_err());
}
