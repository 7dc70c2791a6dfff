//! JWT end to end: the bundled relay serving wss:// and requiring a token
//! signed with its secret; workers minting one per connection. The right
//! secret opens every connection, a wrong one none (every attempt
//! `http_401`), and no secret ever lands in the results folder.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{ONE_RUN_AT_A_TIME, Scratch, controller_with_env, num, read_json};

/// Every file of `dir` (recursively) that contains `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if std::fs::read(&path).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()) {
            found.push(path.display().to_string());
        }
    }
    found
}

#[test]
fn the_wss_jwt_example_passes_and_its_secret_stays_out_of_the_results() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let out = scratch.results_parent();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/wss-jwt.toml");
    let run = controller_with_env(
        &["run", example, "--output", out.to_str().unwrap()],
        &[],
        Duration::from_secs(90),
    );
    assert_eq!(run.code, 0, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(num(&summary, "connections.opened"), 100.0);
    assert!(summary["target"].as_str().unwrap().starts_with("wss://"), "{}", summary["target"]);
    assert!(num(&summary, "connect_tls_ms.count") >= 100.0, "{}", summary["connect_tls_ms"]);
    let secret =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/wss-jwt.secret")).unwrap();
    assert_eq!(files_containing(&dir, secret.trim()), Vec::<String>::new());
    assert!(!run.stderr.contains(secret.trim()));
}

#[test]
fn a_wrong_secret_fails_every_attempt_with_401_and_no_secret_is_written() {
    let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = Scratch::new();
    let path = scratch.file(
        "jwt.toml",
        "name = \"jwt-wrong\"\n\
         [target]\nbundled = true\nbundled_jwt = { secret_env = \"RELAY_SECRET\" }\n\
         headers = { Authorization-Extra = \"literal-hunter2\", X-Trace = \"t-{{conn}}\" }\n\
         [target.jwt]\nsecret_env = \"CLIENT_SECRET\"\nclaims = { sub = \"u{{conn}}\" }\n\
         [load]\nconnections = 20\nreconnect = false\n\
         [phases]\nwarmup_s = 0\nramp_up_s = 1\nsustained_s = 2\ncooldown_s = 0\n\
         [thresholds]\nconnect_success_rate = \">= 1\"\n",
    );
    let out = scratch.results_parent();
    let args = ["run", path.to_str().unwrap(), "--output", out.to_str().unwrap()];
    let env = [("RELAY_SECRET", "relay-side-s3cret"), ("CLIENT_SECRET", "client-side-wr0ng")];
    let run = controller_with_env(&args, &env, Duration::from_secs(60));
    assert_eq!(run.code, 99, "stderr:\n{}", run.stderr);
    let dir = scratch.results();
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(num(&summary, "connections.opened"), 0.0);
    assert_eq!(num(&summary, "connections.failed"), 20.0);
    assert_eq!(summary["errors"]["http_401"].as_f64(), Some(20.0), "{}", summary["errors"]);
    for secret in ["relay-side-s3cret", "client-side-wr0ng", "literal-hunter2"] {
        assert_eq!(files_containing(&dir, secret), Vec::<String>::new(), "{secret}");
        assert!(!run.stderr.contains(secret));
    }
    let copy = std::fs::read_to_string(dir.join("scenario.toml")).unwrap();
    assert!(copy.contains("secret_env = \"CLIENT_SECRET\"") && copy.contains("<redacted>"), "{copy}");

    // A secret that is not set is an error naming the variable, before any load.
    let unset = controller_with_env(&args, &[("RELAY_SECRET", "x")], Duration::from_secs(30));
    assert_eq!(unset.code, 2);
    assert!(unset.stderr.contains("CLIENT_SECRET is not set"), "{}", unset.stderr);
}
