//! Deployment files, checked offline: the Kubernetes manifests that
//! `controller deploy kubernetes` renders and those in deploy/kubernetes/
//! validate against the Kubernetes API schemas (the `kubernetes-validate`
//! package, which scripts/test installs: without it these tests fail,
//! saying so), the ConfigMap gives back the scenario byte for byte, the
//! static example is what the command renders, and the systemd unit and
//! the container recipe say what README says they do.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Kubernetes versions the manifests must validate against: the oldest
/// they need (Indexed Jobs with backoffLimitPerIndex) and the newest the
/// package knows (its default).
const VERSIONS: [Option<&str>; 2] = [Some("1.29.0"), None];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Runs `controller ARGS` in the repository root.
fn controller(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_controller"))
        .args(args)
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .expect("start controller")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs python3 with `args`; panics, naming the fix, if it cannot start.
fn python(args: &[&str]) -> Output {
    Command::new("python3").args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run python3 ({e}): the deployment tests validate manifests with Python's kubernetes-validate")
    })
}

/// `kubernetes-validate --strict [-k VERSION] FILES` for every version in
/// [`VERSIONS`]; returns whether all passed and what it said.
fn validate(files: &[&Path]) -> (bool, String) {
    let present = python(&["-c", "import kubernetes_validate"]);
    assert!(
        present.status.success(),
        "kubernetes-validate is missing: scripts/test installs it (python3 -m pip install --user \
         kubernetes-validate); without it the manifests cannot be checked.\n{}",
        text(&present.stderr)
    );
    let mut ok = true;
    let mut said = String::new();
    for version in VERSIONS {
        let mut args = vec!["-m", "kubernetes_validate", "--strict", "--no-warn"];
        if let Some(v) = version {
            args.extend(["-k", v]);
        }
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let out = python(&args);
        ok &= out.status.success();
        said.push_str(&text(&out.stdout));
        said.push_str(&text(&out.stderr));
    }
    (ok, said)
}

/// The manifests for `examples/kubernetes.toml` with `flags`.
fn render_example(flags: &[&str]) -> String {
    let mut args = vec!["deploy", "kubernetes", "examples/kubernetes.toml"];
    args.extend_from_slice(flags);
    let out = controller(&args);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn rendered_manifests_validate_offline() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, render_example(&[])).unwrap();
    let placed = dir.path().join("placed.yaml");
    let out = controller(&[
        "deploy",
        "kubernetes",
        "examples/kubernetes.toml",
        "--namespace",
        "load-tests",
        "--image",
        "registry.example.test/stampede:1.0",
        "--output",
        placed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "--output writes the file, not stdout");
    let placed_text = std::fs::read_to_string(&placed).unwrap();
    assert_eq!(placed_text.matches("namespace: load-tests\n").count(), 4, "{placed_text}");
    assert_eq!(placed_text.matches("image: \"registry.example.test/stampede:1.0\"\n").count(), 2);

    let (ok, said) = validate(&[&plain, &placed]);
    assert!(ok, "{said}");
    // Each of the four objects of both files, against both versions.
    assert_eq!(said.matches(" passed for resource ").count(), 16, "{said}");
}

#[test]
fn every_manifest_in_deploy_kubernetes_validates_offline() {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_string_lossy().into()).collect();
    assert!(
        names.iter().any(|n| n == "example.yaml") && names.iter().any(|n| n == "relay.yaml"),
        "{names:?}"
    );
    let (ok, said) = validate(&files.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    assert!(ok, "{said}");
    assert!(!said.contains("ERROR"), "{said}");
}

#[test]
fn the_validation_can_fail() {
    let dir = tempfile::tempdir().unwrap();
    // A Job without its pod template.
    let no_template = dir.path().join("no-template.yaml");
    std::fs::write(
        &no_template,
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: stampede-x-workers\nspec:\n  completions: 2\n",
    )
    .unwrap();
    let (ok, said) = validate(&[&no_template]);
    assert!(!ok, "{said}");
    assert!(said.contains("'template' is a required property"), "{said}");
    // The rendered manifests with one misspelt field: strict mode refuses it.
    let misspelt = dir.path().join("misspelt.yaml");
    let rendered = render_example(&[]);
    assert!(rendered.contains("backoffLimitPerIndex: 0\n"));
    std::fs::write(&misspelt, rendered.replace("backoffLimitPerIndex: 0\n", "backoffLimitPerIndx: 0\n"))
        .unwrap();
    let (ok, said) = validate(&[&misspelt]);
    assert!(!ok, "{said}");
    assert!(said.contains("'backoffLimitPerIndx' was unexpected"), "{said}");
}

#[test]
fn the_static_example_is_what_the_command_renders() {
    let file = root().join("deploy/kubernetes/example.yaml");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        stored,
        render_example(&[]),
        "{} is out of date: controller deploy kubernetes examples/kubernetes.toml --output {}",
        file.display(),
        "deploy/kubernetes/example.yaml"
    );
}

/// The rendered documents of `scenario` (a file in `dir`), read back with
/// PyYAML as JSON: one object per document.
fn read_back(dir: &Path, scenario: &str) -> Vec<serde_json::Value> {
    let path = dir.join("s.toml");
    std::fs::write(&path, scenario).unwrap();
    let out = controller(&["deploy", "kubernetes", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", text(&out.stderr));
    let yaml = dir.join("s.yaml");
    std::fs::write(&yaml, &out.stdout).unwrap();
    let script = "import json, sys, yaml\n\
                  print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')))))";
    let read = python(&["-c", script, yaml.to_str().unwrap()]);
    assert!(read.status.success(), "PyYAML cannot read it: {}\n{}", text(&read.stderr), text(&out.stdout));
    serde_json::from_slice(&read.stdout).unwrap()
}

#[test]
fn the_config_map_gives_back_the_scenario_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = "[fleet]\nremote = true\nworkers = 3\n";
    let target = "[target]\nurl = \"wss://echo.example.test/ws\"\n";
    for scenario in [
        std::fs::read_to_string(root().join("examples/kubernetes.toml")).unwrap(),
        // Indented lines, a tab, quotes, '#', '---', non-ASCII, blank lines.
        format!(
            "  name = \"tricky\"\ndescription = \"\\\"q\\\" # — ünïcode: 'x' --- \\t\"\n\n{target}\t\n[load]\n  \
             connections = 30\n{fleet}\n\n"
        ),
        // No line feed at the end.
        format!("name = \"no-end\"\n{target}{fleet}# last"),
        // Windows line ends: not a block, a quoted string.
        format!("name = \"crlf\"\r\n{target}{fleet}").replace('\n', "\r\n").replace("\r\r", "\r"),
    ] {
        let docs = read_back(dir.path(), &scenario);
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[0]["kind"], "ConfigMap");
        assert_eq!(docs[0]["data"]["scenario.toml"].as_str(), Some(scenario.as_str()), "{scenario:?}");
        for doc in &docs {
            let labels = &doc["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/part-of"], "stampede", "{doc}");
            assert!(labels["stampede.run/name"].is_string(), "{doc}");
        }
    }
}

#[test]
fn the_workers_are_exactly_the_scenarios_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = std::fs::read_to_string(root().join("examples/kubernetes.toml")).unwrap();
    let docs = read_back(dir.path(), &scenario);
    let workers = docs.iter().find(|d| d["metadata"]["name"] == "stampede-kubernetes-workers").unwrap();
    let spec = &workers["spec"];
    assert_eq!((spec["completions"].as_u64(), spec["parallelism"].as_u64()), (Some(10), Some(10)));
    assert_eq!(spec["completionMode"], "Indexed");
    // 840 s planned + 120 s join timeout + 120 s: the workers never outlive it.
    assert_eq!(spec["activeDeadlineSeconds"].as_u64(), Some(1080));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(
        args,
        [
            "worker",
            "--once",
            "--max-connections",
            "4000",
            "--join-timeout",
            "240",
            "--allow-target",
            "stampede-relay:8080"
        ]
    );
    assert_eq!(container["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let controller = docs.iter().find(|d| d["kind"] == "Job" && d != &workers).unwrap();
    assert_eq!(controller["spec"]["activeDeadlineSeconds"].as_u64(), Some(1080 + 600));
}

#[test]
fn deploy_refuses_what_kubernetes_cannot_run_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bundled = dir.path().join("bundled.toml");
    std::fs::write(&bundled, "name = \"b\"\n[target]\nbundled = true\n[fleet]\nremote = true\nworkers = 2\n")
        .unwrap();
    let out = controller(&["deploy", "kubernetes", bundled.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("give [target] url"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "name = \"b\"\n[target]\nurl = 7\n").unwrap();
    let out = controller(&["deploy", "kubernetes", broken.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("broken.toml:3"), "{}", text(&out.stderr));

    let out = controller(&["deploy", "kubernetes", "examples/kubernetes.toml", "--namespace", "Not_A_Label"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn check_refuses_a_scenario_above_its_max_cost() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(root().join("examples/kubernetes.toml")).unwrap();
    // The Tonk seed's "stress" length, as the example's comment says.
    let long = example
        .replace("connections = 20000", "connections = 2000")
        .replace("ramp_up_s = \"2m\"", "ramp_up_s = \"15m\"")
        .replace("sustained_s = \"10m\"", "sustained_s = \"60m\"");
    let path = dir.path().join("long.toml");
    std::fs::write(&path, &long).unwrap();
    let out = controller(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "stdout:\n{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(err.contains("the estimated cost 1.35 is above max_cost 1"), "{err}");
    std::fs::write(&path, long.replace("max_cost = 1.0", "max_cost = 2")).unwrap();
    let out = controller(&["check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cost: at most 1.35 (0.1 per worker-hour), max_cost 2: ok"));
    // Rendering refuses it too: the cluster would run what the controller refuses.
    std::fs::write(&path, &long).unwrap();
    let out = controller(&["deploy", "kubernetes", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("above max_cost 1"), "{}", text(&out.stderr));
}

#[test]
fn the_systemd_unit_is_hardened_and_takes_its_secrets_as_credentials() {
    let path = root().join("deploy/systemd/stampede-worker.service");
    let unit = std::fs::read_to_string(&path).unwrap();
    for line in [
        "ExecStart=/usr/local/bin/controller worker $STAMPEDE_WORKER_ARGS",
        "EnvironmentFile=/etc/stampede/worker.env",
        "LoadCredential=fleet-token:/etc/stampede/fleet.token",
        "Environment=STAMPEDE_FLEET_TOKEN_FILE=%d/fleet-token",
        "Restart=on-failure",
        "LimitNOFILE=1048576",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "{} lacks {line:?}", path.display());
    }
    // systemd's own check, where systemd is installed (Debian machines): it
    // prints nothing for a clean unit. The binary it names must exist, so
    // the check runs on a copy naming the one built for these tests.
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze not found: the unit's syntax is not verified here");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("stampede-worker.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/controller", env!("CARGO_BIN_EXE_controller")))
        .unwrap();
    let out = Command::new("systemd-analyze").args(["verify", copy.to_str().unwrap()]).output().unwrap();
    let said: String = text(&out.stderr)
        .lines()
        .chain(text(&out.stdout).lines())
        .filter(|l| !l.contains("generator"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(out.status.success() && said.is_empty(), "systemd-analyze verify:\n{said}");
}

#[test]
fn the_container_recipe_is_multi_stage_non_root_and_readme_shows_its_build() {
    let recipe = std::fs::read_to_string(root().join("deploy/Dockerfile")).unwrap();
    let from: Vec<&str> = recipe.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    assert!(recipe.contains("cargo build --release -p stampede --locked"));
    assert!(recipe.contains("COPY --from=build /usr/local/bin/controller /usr/local/bin/controller"));
    assert!(recipe.lines().any(|l| l == "USER 10001:10001"), "non-root, numeric (runAsNonRoot checks it)");
    assert!(recipe.lines().any(|l| l == "ENTRYPOINT [\"controller\"]"));
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(
        readme.contains("docker build -f deploy/Dockerfile -t stampede:latest ."),
        "README shows the build"
    );
}
