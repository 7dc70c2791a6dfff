//! The scenario's TLS keys (`[target]` `ca_file`, `client_cert_file`,
//! `client_key_file`, `server_name`, `insecure_skip_verify`, `bundled_tls`)
//! turned into the [`TlsSpec`] every worker receives. Files are read here,
//! relative to the scenario's folder, and checked to hold PEM of the right
//! kind, so a wrong path or a wrong file is an error at its line and column
//! before anything starts, and a worker on another host needs none of them.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use stampede_model::spec::{Secret, TlsSpec};
use toml::Spanned;

use crate::scenario::{ScenarioError, TargetSection};

/// The warning written to test.log and stderr when certificates are not
/// verified.
pub const INSECURE_WARNING: &str = "WARNING: insecure_skip_verify = true: the target's TLS certificate is \
     not verified (any certificate is accepted, only the handshake signatures are checked)";

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Kind {
    Certificates,
    PrivateKey,
}

/// Fills `spec` from `t`; `path` and `source` (the scenario file and its
/// text) place errors and anchor relative file names.
pub(crate) fn fill(
    spec: &mut TlsSpec,
    t: &TargetSection,
    path: &Path,
    source: &str,
) -> Result<(), ScenarioError> {
    let err = |at: usize, message: String| ScenarioError::at(path, source, at, message);
    let wss = t.url.as_ref().is_some_and(|u| u.get_ref().starts_with("wss://"));
    let bundled_tls = t.bundled_tls.as_ref().is_some_and(|b| *b.get_ref());
    if let Some(b) = &t.bundled_tls
        && *b.get_ref()
        && !t.bundled
    {
        return Err(err(
            b.span().start,
            "bundled_tls makes the bundled relay serve wss://: it needs `bundled = true`".into(),
        ));
    }
    if !wss && !bundled_tls {
        let first = tls_keys(t).into_iter().min_by_key(|(_, at)| *at);
        if let Some((key, at)) = first {
            return Err(err(
                at,
                format!("{key} is a TLS setting: it needs a wss:// target url or `bundled_tls = true`"),
            ));
        }
        return Ok(());
    }
    let read = |file: &Spanned<PathBuf>, key: &str, kind: Kind| -> Result<String, ScenarioError> {
        let full = relative_to(path, file.get_ref());
        let at = file.span().start;
        let text = std::fs::read_to_string(&full)
            .map_err(|e| err(at, format!("{key}: cannot read {}: {e}", full.display())))?;
        check_pem(&text, kind).map_err(|why| err(at, format!("{key}: {}: {why}", full.display())))?;
        Ok(text)
    };
    if let Some(ca) = &t.ca_file {
        spec.ca_pem = Some(read(ca, "ca_file", Kind::Certificates)?);
    }
    match (&t.client_cert_file, &t.client_key_file) {
        (Some(cert), Some(key)) => {
            spec.client_cert_pem = Some(read(cert, "client_cert_file", Kind::Certificates)?);
            spec.client_key_pem = Some(Secret::new(read(key, "client_key_file", Kind::PrivateKey)?));
        }
        (Some(cert), None) => {
            return Err(err(
                cert.span().start,
                "client_cert_file needs client_key_file: the certificate's private key".into(),
            ));
        }
        (None, Some(key)) => {
            return Err(err(
                key.span().start,
                "client_key_file needs client_cert_file: its certificate".into(),
            ));
        }
        (None, None) => {}
    }
    if let Some(name) = &t.server_name {
        let n = name.get_ref();
        if rustls_pki_types::ServerName::try_from(n.as_str()).is_err() {
            return Err(err(
                name.span().start,
                format!("server_name {n:?} is neither a DNS name nor an IP address"),
            ));
        }
        spec.server_name = Some(n.clone());
    }
    spec.insecure_skip_verify = t.insecure_skip_verify.as_ref().is_some_and(|b| *b.get_ref());
    Ok(())
}

/// The TLS keys present in `[target]` with where their values start
/// (`bundled_tls` aside: it has its own rule).
fn tls_keys(t: &TargetSection) -> Vec<(&'static str, usize)> {
    let mut keys = Vec::new();
    for (key, file) in [
        ("ca_file", &t.ca_file),
        ("client_cert_file", &t.client_cert_file),
        ("client_key_file", &t.client_key_file),
    ] {
        if let Some(f) = file {
            keys.push((key, f.span().start));
        }
    }
    if let Some(n) = &t.server_name {
        keys.push(("server_name", n.span().start));
    }
    if let Some(b) = &t.insecure_skip_verify
        && *b.get_ref()
    {
        keys.push(("insecure_skip_verify", b.span().start));
    }
    keys
}

/// A file named in the scenario, relative to the scenario's folder.
fn relative_to(scenario: &Path, file: &Path) -> PathBuf {
    if file.is_absolute() {
        file.to_path_buf()
    } else {
        scenario.parent().unwrap_or(Path::new(".")).join(file)
    }
}

/// Whether `text` holds what `kind` needs, or what is wrong in words.
fn check_pem(text: &str, kind: Kind) -> Result<(), String> {
    match kind {
        Kind::Certificates => {
            let certs = CertificateDer::pem_slice_iter(text.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("not a PEM file: {e}"))?;
            if certs.is_empty() {
                return Err(
                    "no certificate in it (a PEM file with -----BEGIN CERTIFICATE----- was expected)".into(),
                );
            }
        }
        Kind::PrivateKey => {
            PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| {
                "no private key in it (a PEM file with -----BEGIN PRIVATE KEY----- was expected)".to_string()
            })?;
        }
    }
    Ok(())
}

/// Adds `pem` (the bundled relay's CA) to the CAs `spec` trusts.
pub fn trust(spec: &mut TlsSpec, pem: &str) {
    spec.ca_pem = Some(match spec.ca_pem.take() {
        Some(mut mine) => {
            if !mine.ends_with('\n') {
                mine.push('\n');
            }
            mine + pem
        }
        None => pem.to_string(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::scenario::Scenario;

    /// A scenario file `name.toml` in `dir` with `target` as its [target]
    /// table; its plan or the error.
    fn plan(dir: &Path, target: &str) -> Result<Plan, String> {
        let text = format!("name = \"t\"\n[target]\n{target}\n");
        let path = dir.join("t.toml");
        std::fs::write(&path, &text).unwrap();
        let sc = Scenario::parse(&path, &text).map_err(|e| e.to_string())?;
        Plan::new(&sc, &path, &text).map_err(|e| e.to_string())
    }

    fn files(dir: &Path) -> String {
        let ca = stampede_relay::pki::Ca::new("t").unwrap();
        let client = ca.client("c").unwrap();
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("certs/ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("certs/client.pem"), &client.cert).unwrap();
        std::fs::write(dir.join("certs/client.key"), &client.key).unwrap();
        ca.cert_pem().to_string()
    }

    #[test]
    fn files_are_read_relative_to_the_scenario_into_the_spec() {
        let dir = tempfile::tempdir().unwrap();
        let ca = files(dir.path());
        let p = plan(
            dir.path(),
            "url = \"wss://127.0.0.1:9/ws\"\nca_file = \"certs/ca.pem\"\nclient_cert_file = \"certs/client.pem\"\n\
             client_key_file = \"certs/client.key\"\nserver_name = \"localhost\"",
        )
        .unwrap();
        let tls = &p.connect.tls;
        assert_eq!(tls.ca_pem.as_deref(), Some(ca.as_str()));
        assert!(tls.client_cert_pem.as_deref().is_some_and(|c| c.contains("BEGIN CERTIFICATE")));
        assert!(tls.client_key_pem.as_ref().is_some_and(|k| k.expose().contains("PRIVATE KEY")));
        assert_eq!(tls.server_name.as_deref(), Some("localhost"));
        assert!(!tls.insecure_skip_verify);
        assert!(!p.bundled_tls);
        let p = plan(dir.path(), "bundled = true\nbundled_tls = true\ninsecure_skip_verify = true").unwrap();
        assert!(p.bundled_tls && p.connect.tls.insecure_skip_verify);
    }

    #[test]
    fn bad_files_and_misplaced_keys_point_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        files(dir.path());
        std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
        let wss = "url = \"wss://127.0.0.1:9/ws\"\n";
        for (target, at, says) in [
            (format!("{wss}ca_file = \"missing.pem\""), "t.toml:4:11", "ca_file: cannot read"),
            (format!("{wss}ca_file = \"notes.txt\""), "t.toml:4:11", "no certificate in it"),
            (format!("{wss}ca_file = \"certs/client.key\""), "t.toml:4:11", "no certificate in it"),
            (
                format!("{wss}client_cert_file = \"certs/client.pem\"\nclient_key_file = \"certs/ca.pem\""),
                "t.toml:5:19",
                "no private key",
            ),
            (format!("{wss}client_cert_file = \"certs/client.pem\""), "t.toml:4:20", "needs client_key_file"),
            (format!("{wss}server_name = \"not a name\""), "t.toml:4:15", "neither a DNS name"),
            (
                "url = \"ws://127.0.0.1:9/ws\"\nca_file = \"certs/ca.pem\"".into(),
                "t.toml:4:11",
                "needs a wss://",
            ),
            (
                "url = \"ws://127.0.0.1:9/ws\"\ninsecure_skip_verify = true".into(),
                "t.toml:4:24",
                "TLS setting",
            ),
            (
                "url = \"ws://127.0.0.1:9/ws\"\nbundled_tls = true".into(),
                "t.toml:4:15",
                "needs `bundled = true`",
            ),
            (format!("{wss}ca_pem = \"x\""), "t.toml:4:1", "unknown field `ca_pem`"),
        ] {
            let err = plan(dir.path(), &target).unwrap_err();
            let err = err.strip_prefix(&format!("{}/", dir.path().display())).unwrap_or(&err).to_string();
            assert!(err.starts_with(at) && err.contains(says), "{target:?} gave {err}");
        }
    }

    #[test]
    fn the_bundled_ca_is_trusted_beside_the_scenarios() {
        let mut spec = TlsSpec::default();
        trust(&mut spec, "B\n");
        assert_eq!(spec.ca_pem.as_deref(), Some("B\n"));
        let mut spec = TlsSpec { ca_pem: Some("A".into()), ..Default::default() };
        trust(&mut spec, "B\n");
        assert_eq!(spec.ca_pem.as_deref(), Some("A\nB\n"));
    }
}
