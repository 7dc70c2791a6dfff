//! The Kubernetes manifests of one scenario's fleet: the scenario in a
//! ConfigMap, the controller as a Job behind a Service, the workers as an
//! Indexed Job of exactly `[fleet] workers` pods, each sized by the
//! [`Estimate`](super::Estimate). Every object carries the labels that
//! select the run, so what was applied is what cleanup deletes; both Jobs
//! have a deadline (the schedule plus the stated grace) and delete
//! themselves an hour after they finish. Secrets (the fleet token, the
//! controller's certificate) are referred to by name, never rendered.

use std::net::IpAddr;

use stampede_proto::auth::TOKEN_FILE_ENV;
use stampede_proto::transport::{CA_ENV, CERT_ENV, KEY_ENV};

use super::yaml::{self, Node, list, map, noted, text};
use super::{Estimate, estimate};
use crate::plan::{Plan, TargetPlan};

/// The image `--image` defaults to (what README's `docker build` tags).
pub const DEFAULT_IMAGE: &str = "stampede:latest";
/// The label every object of a run carries, valued with the scenario name.
pub const RUN_LABEL: &str = "stampede.run/name";
/// How long the controller's pod stays up after the run, for `kubectl cp`
/// of the results (its Job's deadline adds this; the workers' does not).
pub const RESULTS_WINDOW_S: u64 = 600;
/// Finished Jobs (and their pods, with their logs) are deleted after this.
pub const TTL_AFTER_FINISHED_S: u64 = 3600;
/// The user and group the containers run as (deploy/Dockerfile's).
const UID: u64 = 10001;
/// Secret files: readable by owner and group (fsGroup), octal 0440.
const SECRET_MODE: u64 = 0o440;

const SCENARIO_DIR: &str = "/etc/stampede/scenario";
const TOKEN_DIR: &str = "/var/run/stampede/token";
const TLS_DIR: &str = "/var/run/stampede/tls";
const RESULTS_DIR: &str = "/results";

/// What `render_kubernetes` needs besides the plan.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Container image with the `controller` binary.
    pub image: String,
    /// Namespace of every object; `None`: kubectl's current one.
    pub namespace: Option<String>,
    /// The scenario file as written (goes into the ConfigMap as it is).
    pub scenario_text: String,
    /// The scenario file as the command line named it (for the header).
    pub scenario_path: String,
}

impl RenderOptions {
    /// Defaults for `scenario_text`: [`DEFAULT_IMAGE`], no namespace.
    pub fn new(scenario_text: impl Into<String>) -> RenderOptions {
        RenderOptions {
            image: DEFAULT_IMAGE.to_string(),
            namespace: None,
            scenario_text: scenario_text.into(),
            scenario_path: "scenario.toml".to_string(),
        }
    }
}

/// `--image`: a reference without spaces.
pub fn image(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{s:?} is not an image reference like registry.example/stampede:1.0"));
    }
    Ok(s.to_string())
}

/// `--namespace`: a DNS label (RFC 1123), as Kubernetes wants.
pub fn namespace(s: &str) -> Result<String, String> {
    let ok = (1..=63).contains(&s.len())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a namespace is 1-63 lowercase letters, digits or '-', not starting or ending with '-'"
        ))
    }
}

/// Why `plan` cannot run on Kubernetes as rendered, and what to change.
pub fn kubernetes_ready(plan: &Plan) -> Result<(), String> {
    if let TargetPlan::Bundled { .. } = plan.target {
        return Err(
            "the bundled relay runs inside the controller, on its loopback, where worker pods cannot \
                    reach it: give [target] url (deploy/kubernetes/relay.yaml runs the relay as a Service, \
                    url = \"ws://stampede-relay:8080/ws\")"
                .into(),
        );
    }
    if plan.fleet.local.is_some() {
        return Err(
            "the workers run in pods of their own and dial the controller: set [fleet] remote = true \
                    and workers = N"
                .into(),
        );
    }
    let listen = plan.fleet.listen;
    if listen.ip().is_loopback() || listen.port() == 0 {
        return Err(format!(
            "[fleet] listen = \"{listen}\" cannot be reached from other pods: listen on 0.0.0.0 and a fixed \
             port (the default, 0.0.0.0:7700)"
        ));
    }
    if let Some(why) = estimate(plan).shortfall() {
        return Err(why);
    }
    super::check_cost(plan)
}

/// The names of one run's objects.
struct Names {
    /// `stampede-<scenario name as a DNS label>`.
    base: String,
    /// The value of [`RUN_LABEL`].
    label: String,
}

impl Names {
    fn new(name: &str) -> Names {
        // Object names are DNS labels: lowercase, '-', at most 63 with the
        // longest suffix ("-controller").
        let mut slug = String::new();
        for c in name.chars().map(|c| c.to_ascii_lowercase()) {
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.is_empty() && !slug.ends_with('-') {
                slug.push('-');
            }
        }
        slug.truncate(63 - "stampede-".len() - "-controller".len());
        let slug = slug.trim_end_matches('-');
        let slug = if slug.is_empty() { "run" } else { slug };
        // A label value: the scenario name when it is one (at most 63,
        // alphanumeric at both ends), else the slug.
        let valid = name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name.ends_with(|c: char| c.is_ascii_alphanumeric());
        Names {
            base: format!("stampede-{slug}"),
            label: if valid { name.to_string() } else { slug.to_string() },
        }
    }

    fn of(&self, what: &str) -> String {
        format!("{}-{what}", self.base)
    }
}

/// Multi-document YAML for `plan`'s fleet: a header saying what to create
/// first and how to clean up, then the scenario's ConfigMap, the
/// controller's Service and Job, and the workers' Indexed Job. Check the
/// plan with [`kubernetes_ready`] first.
pub fn render_kubernetes(plan: &Plan, opts: &RenderOptions) -> String {
    let e = estimate(plan);
    let names = Names::new(&plan.name);
    let r = Render { plan, opts, e: &e, names: &names };
    let mut out = r.header();
    for doc in [r.config_map(), r.service(), r.controller_job(), r.workers_job()] {
        out.push_str(&yaml::document(&doc));
    }
    out
}

struct Render<'a> {
    plan: &'a Plan,
    opts: &'a RenderOptions,
    e: &'a Estimate,
    names: &'a Names,
}

impl Render<'_> {
    fn header(&self) -> String {
        let n = self.names;
        let ns = self.opts.namespace.as_ref().map_or(String::new(), |ns| format!(" -n {ns}"));
        let w = n.of("fleet-tls").len();
        let mut lines = vec![
            format!(
                "stampede on Kubernetes: scenario {} ({}), {} workers.",
                yaml::quoted(&self.plan.name),
                self.opts.scenario_path,
                self.e.workers
            ),
            format!("Rendered by: controller deploy kubernetes {}", self.opts.scenario_path),
            "Kubernetes 1.29+. Create these Secrets first (README \"Kubernetes\"):".into(),
            format!("  {:w$}  key token: the fleet token", n.of("token")),
            format!(
                "  {:w$}  keys tls.crt, tls.key: the controller's certificate, valid for {};",
                n.of("fleet-tls"),
                n.of("controller")
            ),
            format!("  {:w$}  ca.crt: the CA that signed it (the workers get this key only)", ""),
            format!("Optional: {:w$}  the controller's environment (${{VAR}} in the scenario)", n.of("env")),
            format!("          {:w$}  files the scenario names, beside it", n.of("files")),
        ];
        lines.extend(self.e.lines());
        lines.push(format!(
            "Deadlines: workers {} s, controller {} s (+{RESULTS_WINDOW_S} s to copy the results);",
            self.deadline(),
            self.deadline() + RESULTS_WINDOW_S
        ));
        lines.push(format!("finished Jobs are deleted after {TTL_AFTER_FINISHED_S} s."));
        lines.push(format!("Cleanup: kubectl delete all,configmap,secret{ns} -l {RUN_LABEL}={}", n.label));
        let mut out = String::new();
        for line in lines {
            out.push_str("# ");
            out.push_str(&line);
            out.push('\n');
        }
        out
    }

    /// Seconds the workers may live: the schedule and the grace.
    fn deadline(&self) -> u64 {
        self.e.duration_s.ceil() as u64
    }

    fn labels(&self, component: &str) -> Node {
        map! {
            "app.kubernetes.io/name" => "stampede",
            "app.kubernetes.io/part-of" => "stampede",
            "app.kubernetes.io/component" => component,
            RUN_LABEL => &self.names.label,
        }
    }

    fn selector(&self, component: &str) -> Node {
        map! { RUN_LABEL => &self.names.label, "app.kubernetes.io/component" => component }
    }

    fn metadata(&self, name: String, component: &str) -> Node {
        let mut entries = vec![("name".to_string(), Node::from(name))];
        if let Some(ns) = &self.opts.namespace {
            entries.push(("namespace".into(), ns.into()));
        }
        entries.push(("labels".into(), self.labels(component)));
        Node::Map(entries)
    }

    fn config_map(&self) -> Node {
        map! {
            "apiVersion" => "v1",
            "kind" => "ConfigMap",
            "metadata" => self.metadata(self.names.of("scenario"), "scenario"),
            "data" => map! { "scenario.toml" => text(&self.opts.scenario_text) },
        }
    }

    fn port(&self) -> u16 {
        self.plan.fleet.listen.port()
    }

    fn service(&self) -> Node {
        map! {
            "apiVersion" => "v1",
            "kind" => "Service",
            "metadata" => self.metadata(self.names.of("controller"), "controller"),
            "spec" => map! {
                "selector" => self.selector("controller"),
                "ports" => list![map! {
                    "name" => "fleet",
                    "port" => self.port(),
                    "targetPort" => self.port(),
                    "protocol" => "TCP",
                }],
            },
        }
    }

    fn pod_security(&self) -> Node {
        map! {
            "runAsNonRoot" => true,
            "runAsUser" => UID,
            "runAsGroup" => UID,
            "fsGroup" => UID,
            "seccompProfile" => map! { "type" => "RuntimeDefault" },
        }
    }

    fn container_security(&self) -> Node {
        map! {
            "allowPrivilegeEscalation" => false,
            "readOnlyRootFilesystem" => true,
            "capabilities" => map! { "drop" => list!["ALL"] },
        }
    }

    fn secret_volume(&self, name: &str, secret: String, keys: &[&str]) -> Node {
        let items: Vec<Node> = keys.iter().map(|k| map! { "key" => *k, "path" => *k }).collect();
        map! {
            "name" => name,
            "secret" => map! {
                "secretName" => secret,
                "defaultMode" => noted("0440", SECRET_MODE),
                "items" => items,
            },
        }
    }

    fn mount(name: &str, path: &str, read_only: bool) -> Node {
        map! { "name" => name, "mountPath" => path, "readOnly" => read_only }
    }

    fn env(name: &str, value: impl Into<Node>) -> Node {
        map! { "name" => name, "value" => value.into() }
    }

    /// The controller's container command: the run in the background (a
    /// signal reaches it), then the pod stays up for `kubectl cp`; the
    /// container exits with the run's code.
    fn controller_script(&self) -> String {
        format!(
            "# The run; a signal to this shell reaches it. Then the results stay\n\
             # in {RESULTS_DIR} for kubectl cp; the exit code is the run's.\n\
             controller \"$@\" &\n\
             pid=$!\n\
             trap 'kill -TERM \"$pid\" 2>/dev/null' TERM INT\n\
             code=0\n\
             wait \"$pid\" || code=$?\n\
             while kill -0 \"$pid\" 2>/dev/null; do code=0; wait \"$pid\" || code=$?; done\n\
             echo \"stampede: run ended (exit $code); results in {RESULTS_DIR} for {RESULTS_WINDOW_S} s: \
             kubectl cp $HOSTNAME:{RESULTS_DIR} ./results\" >&2\n\
             trap 'exit \"$code\"' TERM INT\n\
             sleep {RESULTS_WINDOW_S} &\n\
             wait $!\n\
             exit \"$code\"\n"
        )
    }

    fn controller_job(&self) -> Node {
        let n = self.names;
        let container = map! {
            "name" => "controller",
            "image" => &self.opts.image,
            "imagePullPolicy" => "IfNotPresent",
            "command" => list!["/bin/sh", "-c", text(self.controller_script()), "stampede"],
            "args" => list!["run", format!("{SCENARIO_DIR}/scenario.toml"), "--output", RESULTS_DIR],
            "env" => list![
                Self::env(TOKEN_FILE_ENV, format!("{TOKEN_DIR}/token")),
                Self::env(CERT_ENV, format!("{TLS_DIR}/tls.crt")),
                Self::env(KEY_ENV, format!("{TLS_DIR}/tls.key")),
            ],
            "envFrom" => list![map! { "secretRef" => map! { "name" => n.of("env"), "optional" => true } }],
            "ports" => list![map! { "name" => "fleet", "containerPort" => self.port(), "protocol" => "TCP" }],
            "resources" => noted(
                "Not measured: the controller merges one snapshot per worker a second and streams results to disk.",
                map! {
                    "requests" => map! { "cpu" => "1", "memory" => "256Mi" },
                    "limits" => map! { "memory" => "1Gi" },
                },
            ),
            "securityContext" => self.container_security(),
            "volumeMounts" => list![
                Self::mount("scenario", SCENARIO_DIR, true),
                Self::mount("token", TOKEN_DIR, true),
                Self::mount("fleet-tls", TLS_DIR, true),
                Self::mount("results", RESULTS_DIR, false),
                Self::mount("tmp", "/tmp", false),
            ],
        };
        let scenario_volume = map! {
            "name" => "scenario",
            "projected" => map! {
                "sources" => list![
                    map! { "configMap" => map! { "name" => n.of("scenario") } },
                    map! { "secret" => map! { "name" => n.of("files"), "optional" => true } },
                ],
            },
        };
        map! {
            "apiVersion" => "batch/v1",
            "kind" => "Job",
            "metadata" => self.metadata(n.of("controller"), "controller"),
            "spec" => map! {
                "backoffLimit" => 0u64,
                "activeDeadlineSeconds" => noted(
                    format!(
                        "{:.0} s planned + {:.0} s grace + {RESULTS_WINDOW_S} s to copy the results",
                        self.e.planned_s, self.e.grace_s
                    ),
                    self.deadline() + RESULTS_WINDOW_S,
                ),
                "ttlSecondsAfterFinished" => TTL_AFTER_FINISHED_S,
                "template" => map! {
                    "metadata" => map! { "labels" => self.labels("controller") },
                    "spec" => map! {
                        "restartPolicy" => "Never",
                        "automountServiceAccountToken" => false,
                        "enableServiceLinks" => false,
                        "terminationGracePeriodSeconds" => 60u64,
                        "securityContext" => self.pod_security(),
                        "containers" => list![container],
                        "volumes" => list![
                            scenario_volume,
                            self.secret_volume("token", n.of("token"), &["token"]),
                            self.secret_volume("fleet-tls", n.of("fleet-tls"), &["tls.crt", "tls.key"]),
                            map! { "name" => "results", "emptyDir" => Node::Map(vec![]) },
                            map! { "name" => "tmp", "emptyDir" => Node::Map(vec![]) },
                        ],
                    },
                },
            },
        }
    }

    /// `--allow-target`: the target's host and port, as the worker's
    /// allowlist matches them.
    fn allowed_target(&self) -> Option<String> {
        let TargetPlan::Url(url) = &self.plan.target else { return None };
        let url = stampede_model::TargetUrl::parse(url).ok()?;
        Some(match url.host.parse::<IpAddr>() {
            Ok(ip) => std::net::SocketAddr::new(ip, url.port).to_string(),
            Err(_) => format!("{}:{}", url.host.to_ascii_lowercase(), url.port),
        })
    }

    fn workers_job(&self) -> Node {
        let n = self.names;
        let e = self.e;
        let memory = format!("{}Mi", e.memory_per_worker_mb);
        let mut args = vec![
            Node::from("worker"),
            "--once".into(),
            "--max-connections".into(),
            e.connections_per_worker.to_string().into(),
            "--join-timeout".into(),
            (e.grace_s.ceil() as u64).to_string().into(),
        ];
        if let Some(target) = self.allowed_target() {
            args.extend(["--allow-target".into(), target.into()]);
        }
        let container = map! {
            "name" => "worker",
            "image" => &self.opts.image,
            "imagePullPolicy" => "IfNotPresent",
            "args" => args,
            "env" => list![
                map! {
                    "name" => "STAMPEDE_WORKER_INDEX",
                    "valueFrom" => map! {
                        "fieldRef" => map! {
                            "fieldPath" => "metadata.annotations['batch.kubernetes.io/job-completion-index']",
                        },
                    },
                },
                Self::env("STAMPEDE_WORKER_ID", "w$(STAMPEDE_WORKER_INDEX)"),
                Self::env("STAMPEDE_CONTROLLER", format!("https://{}:{}", n.of("controller"), self.port())),
                Self::env(TOKEN_FILE_ENV, format!("{TOKEN_DIR}/token")),
                Self::env(CA_ENV, format!("{TLS_DIR}/ca.crt")),
            ],
            "resources" => noted(
                format!(
                    "{} connections at most ({} KB each with margin; deploy.rs explains): memory as the \
                     estimate says, no CPU limit (throttling would show as generator stalls).",
                    e.connections_per_worker,
                    (e.kb_per_connection * 10.0).round() / 10.0
                ),
                map! {
                    "requests" => map! { "cpu" => "1", "memory" => &memory },
                    "limits" => map! { "memory" => &memory },
                },
            ),
            "securityContext" => self.container_security(),
            "volumeMounts" => list![
                Self::mount("token", TOKEN_DIR, true),
                Self::mount("fleet-ca", TLS_DIR, true),
                Self::mount("tmp", "/tmp", false),
            ],
        };
        map! {
            "apiVersion" => "batch/v1",
            "kind" => "Job",
            "metadata" => self.metadata(n.of("workers"), "worker"),
            "spec" => map! {
                "completionMode" => "Indexed",
                "completions" => e.workers,
                "parallelism" => e.workers,
                "backoffLimitPerIndex" => noted(
                    "A lost worker stays lost (the controller applies on_worker_lost); the others go on.",
                    0u64,
                ),
                "activeDeadlineSeconds" => noted(
                    format!("{:.0} s planned + {:.0} s grace", e.planned_s, e.grace_s),
                    self.deadline(),
                ),
                "ttlSecondsAfterFinished" => TTL_AFTER_FINISHED_S,
                "template" => map! {
                    "metadata" => map! { "labels" => self.labels("worker") },
                    "spec" => map! {
                        "restartPolicy" => "Never",
                        "automountServiceAccountToken" => false,
                        "enableServiceLinks" => false,
                        "terminationGracePeriodSeconds" => 30u64,
                        "securityContext" => self.pod_security(),
                        "topologySpreadConstraints" => list![map! {
                            "maxSkew" => 1u64,
                            "topologyKey" => "kubernetes.io/hostname",
                            "whenUnsatisfiable" => "ScheduleAnyway",
                            "labelSelector" => map! { "matchLabels" => self.selector("worker") },
                        }],
                        "containers" => list![container],
                        "volumes" => list![
                            self.secret_volume("token", n.of("token"), &["token"]),
                            self.secret_volume("fleet-ca", n.of("fleet-tls"), &["ca.crt"]),
                            map! { "name" => "tmp", "emptyDir" => Node::Map(vec![]) },
                        ],
                    },
                },
            },
        }
    }
}

#[cfg(test)]
mod tests;
