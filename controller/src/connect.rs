//! The scenario's handshake and authentication settings turned into the
//! [`ConnectSpec`] every worker receives: headers, `Origin`, subprotocols,
//! query parameters and the JWT. Templates are parsed here so that a typo
//! is an error with a line and column before anything starts; `${VAR}`
//! references are read from the controller's environment here, and secrets
//! only ever from a variable or a file named in the scenario, never from
//! its text.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, Serializer};
use stampede_model::Template;
use stampede_model::spec::{ClaimValue, ConnectSpec, JwtAlg, JwtPlacement, JwtSpec, Secret};
use stampede_model::template::Var;
use toml::Spanned;

use crate::scenario::{ScenarioError, Seconds, TargetSection};

/// `[target.jwt]`: a token minted for every connection attempt.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSection {
    /// `HS256` (default), `RS256` or `ES256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<Spanned<String>>,
    /// The environment variable holding the HS256 secret (or the RS256 /
    /// ES256 private key, PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<Spanned<String>>,
    /// The file holding it (`key_file` reads better for a PEM key).
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "key_file")]
    pub secret_file: Option<Spanned<PathBuf>>,
    /// Claims: strings are templates (`sub = "user-{{conn}}"`), other
    /// values are copied. `iat` and `exp` are added.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Spanned<toml::Value>>,
    /// Token lifetime (`exp` = now + this); default 1 hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<Seconds>,
    /// `"bearer"` (default), `"query:NAME"` or `"message"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_as: Option<Spanned<String>>,
    /// With `send_as = "message"`: the first message, `{{jwt}}` is the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Spanned<String>>,
}

/// Where a secret comes from: exactly one of an environment variable or a
/// file (relative to the scenario's folder).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the environment variable that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<Spanned<String>>,
    /// File that holds it (a trailing newline is not part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<Spanned<PathBuf>>,
}

/// Places in the scenario text for errors.
pub(crate) struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    fn err(&self, at: usize, message: impl Into<String>) -> ScenarioError {
        ScenarioError::at(self.path, self.text, at, message)
    }

    /// A file named in the scenario, relative to the scenario's folder.
    pub fn file(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.path.parent().unwrap_or(Path::new(".")).join(p) }
    }

    /// `${VAR}` references in `s` replaced by the controller's environment
    /// (`$${` writes a literal `${`).
    pub fn expand(&self, s: &Spanned<String>) -> Result<String, ScenarioError> {
        expand_env(s.get_ref(), |name| std::env::var(name).ok()).map_err(|e| self.err(s.span().start, e))
    }

    /// A template from a scenario string, `${VAR}` expanded first.
    pub fn template(&self, s: &Spanned<String>) -> Result<Template, ScenarioError> {
        let t = Template::parse(&self.expand(s)?).map_err(|e| self.err(s.span().start, e.to_string()))?;
        if t.pieces().iter().any(|p| matches!(p, stampede_model::template::Piece::Var(Var::Captured(_)))) {
            return Err(self.err(
                s.span().start,
                "{{var.NAME}} is a value a flow captured during a session; the handshake comes before any",
            ));
        }
        Ok(t)
    }

    /// The secret `r` points at; `what` names it in errors.
    pub fn secret(&self, r: &SecretRef, at: usize, what: &str) -> Result<Secret, ScenarioError> {
        let value = match (&r.secret_env, &r.secret_file) {
            (Some(name), None) => std::env::var(name.get_ref()).map_err(|_| {
                self.err(
                    name.span().start,
                    format!("{what}: environment variable {} is not set", name.get_ref()),
                )
            })?,
            (None, Some(file)) => {
                let path = self.file(file.get_ref());
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| self.err(file.span().start, format!("{what}: {}: {e}", path.display())))?;
                text.trim_end_matches(['\n', '\r']).to_string()
            }
            _ => {
                return Err(self.err(
                    at,
                    format!("{what}: give exactly one of `secret_env = \"NAME\"` or `secret_file = \"path\"` (never the secret itself)"),
                ));
            }
        };
        if value.is_empty() {
            return Err(self.err(at, format!("{what}: the secret is empty")));
        }
        Ok(Secret::new(value))
    }
}

/// Replaces `${NAME}` by `lookup(NAME)`; `$${` is a literal `${`.
pub fn expand_env(s: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail.find('}').ok_or_else(|| format!("`${{` without `}}` in {s:?}"))?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("${{{name}}} is not an environment variable name"));
            }
            let value = lookup(name).ok_or_else(|| {
                format!("${{{name}}}: environment variable {name} is not set (export it, or write $${{ for a literal ${{)")
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Header names whose literal values are kept out of the results' copy of
/// the scenario.
fn is_sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["authorization", "cookie", "token", "secret", "key", "password", "auth"].iter().any(|s| n.contains(s))
}

/// Serializes headers for the results' copy of the scenario: values of
/// sensitive headers are `<redacted>` unless they are only `${VAR}`
/// references (which name a secret without holding it).
pub fn redacted_headers<S: Serializer>(
    headers: &BTreeMap<String, Spanned<String>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = headers
        .iter()
        .map(|(k, v)| {
            let value = v.get_ref().as_str();
            let only_refs = expand_env(value, |_| Some(String::new()))
                .is_ok_and(|rest| rest.trim().is_empty() || rest.trim().eq_ignore_ascii_case("bearer"));
            (k.as_str(), if is_sensitive(k) && !only_refs { "<redacted>" } else { value })
        })
        .collect();
    shown.serialize(s)
}

/// Fills the handshake and JWT parts of `spec` from `[target]`.
pub(crate) fn fill(spec: &mut ConnectSpec, t: &TargetSection, src: &Source) -> Result<(), ScenarioError> {
    let hs = &mut spec.handshake;
    for (name, value) in &t.headers {
        hs.headers.push((name.clone(), src.template(value)?));
    }
    hs.origin = t.origin.as_ref().map(|o| src.template(o)).transpose()?;
    for p in &t.subprotocols {
        let ok = !p.get_ref().is_empty()
            && p.get_ref().bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !ok {
            return Err(
                src.err(p.span().start, format!("subprotocol {:?} is not a valid token", p.get_ref()))
            );
        }
        hs.subprotocols.push(p.get_ref().clone());
    }
    for (name, value) in &t.query {
        hs.query.push((name.clone(), src.template(value)?));
    }
    if let Some(j) = &t.jwt {
        spec.jwt = Some(jwt(j, src)?);
    }
    Ok(())
}

fn jwt(j: &JwtSection, src: &Source) -> Result<JwtSpec, ScenarioError> {
    let table = src.text.find("[target.jwt]").unwrap_or(0);
    let alg = match &j.alg {
        None => JwtAlg::HS256,
        Some(a) => match a.get_ref().as_str() {
            "HS256" => JwtAlg::HS256,
            "RS256" => JwtAlg::RS256,
            "ES256" => JwtAlg::ES256,
            other => {
                return Err(
                    src.err(a.span().start, format!("alg {other:?}: use \"HS256\", \"RS256\" or \"ES256\""))
                );
            }
        },
    };
    let key_ref = SecretRef { secret_env: j.secret_env.clone(), secret_file: j.secret_file.clone() };
    let key = src.secret(&key_ref, table, "[target.jwt]")?;
    let mut claims = Vec::new();
    for (name, value) in &j.claims {
        if name == "exp" || name == "iat" {
            return Err(src.err(value.span().start, format!("claim {name} is set for you (see expires_in)")));
        }
        let claim = match value.get_ref() {
            toml::Value::String(s) => ClaimValue::Text(src.template(&Spanned::new(value.span(), s.clone()))?),
            other => ClaimValue::Json(
                serde_json::to_string(other).map_err(|e| src.err(value.span().start, e.to_string()))?,
            ),
        };
        claims.push((name.clone(), claim));
    }
    let send_as = match j.send_as.as_ref().map(|s| (s.get_ref().as_str(), s.span().start)) {
        None | Some(("bearer", _)) => JwtPlacement::Bearer,
        Some(("message", _)) => {
            let t = match &j.message {
                Some(m) => src.template(m)?,
                None => Template::parse(r#"{"type":"auth","token":"{{jwt}}"}"#).expect("a valid template"),
            };
            JwtPlacement::FirstMessage(t)
        }
        Some((q, at)) => match q.strip_prefix("query:") {
            Some(name) if !name.is_empty() => JwtPlacement::Query(name.to_string()),
            _ => {
                return Err(
                    src.err(at, format!("send_as {q:?}: use \"bearer\", \"query:NAME\" or \"message\""))
                );
            }
        },
    };
    if j.message.is_some() && !matches!(send_as, JwtPlacement::FirstMessage(_)) {
        let at = j.message.as_ref().map_or(table, |m| m.span().start);
        return Err(src.err(at, "`message` is only used with send_as = \"message\""));
    }
    let expires_in_s = j.expires_in.map_or(3600, |s| s.0.round() as u64).max(1);
    Ok(JwtSpec { alg, key, claims, expires_in_s, send_as })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_references_expand_and_missing_ones_are_named() {
        let env = |n: &str| (n == "TOKEN").then(|| "abc".to_string());
        assert_eq!(expand_env("Bearer ${TOKEN}", env).unwrap(), "Bearer abc");
        assert_eq!(expand_env("cost $5, $${TOKEN}", env).unwrap(), "cost $5, ${TOKEN}");
        let e = expand_env("${NOPE}", env).unwrap_err();
        assert!(e.contains("NOPE is not set"), "{e}");
        assert!(expand_env("${A B}", env).is_err());
        assert!(expand_env("${OPEN", env).is_err());
    }

    fn plan(text: &str) -> Result<crate::plan::Plan, String> {
        crate::plan::tests::plan(text).map_err(|e| e.to_string())
    }

    #[test]
    fn handshake_and_jwt_mistakes_are_errors_at_their_line() {
        let head = "name = \"s\"\n[target]\nurl = \"ws://127.0.0.1:9/ws\"\n";
        for (extra, at, says) in [
            ("headers = { X-A = \"{{user}}\" }", "t.toml:4:", "unknown template variable {{user}}"),
            ("headers = { X-A = \"${STAMPEDE_NOT_SET_ANYWHERE}\" }", "t.toml:4:", "is not set"),
            ("subprotocols = [\"a b\"]", "t.toml:4:", "not a valid token"),
            ("origin = \"{{conn\"", "t.toml:4:", "not closed"),
            ("[target.jwt]\nclaims = { sub = \"x\" }", "t.toml:4:", "exactly one of `secret_env"),
            ("[target.jwt]\nsecret_env = \"A\"\nsecret_file = \"b\"", "t.toml:4:", "exactly one of"),
            ("[target.jwt]\nsecret_file = \"/nonexistent/key\"", "t.toml:5:", "/nonexistent/key"),
            (
                "[target.jwt]\nsecret_env = \"PATH\"\nalg = \"HS512\"",
                "t.toml:6:",
                "use \"HS256\", \"RS256\" or \"ES256\"",
            ),
            ("[target.jwt]\nsecret_env = \"PATH\"\nsend_as = \"cookie\"", "t.toml:6:", "\"query:NAME\""),
            (
                "[target.jwt]\nsecret_env = \"PATH\"\nmessage = \"{{jwt}}\"",
                "t.toml:6:",
                "only used with send_as",
            ),
            ("[target.jwt]\nsecret_env = \"PATH\"\nclaims = { exp = 1 }", "t.toml:6:", "set for you"),
            ("bundled_jwt = { secret_env = \"PATH\" }", "t.toml:2:", "needs `bundled = true`"),
        ] {
            let err = plan(&format!("{head}{extra}\n")).expect_err(extra);
            assert!(err.starts_with(at) && err.contains(says), "{extra}: {err}");
        }
        let ok = plan(&format!(
            "{head}headers = {{ X-A = \"${{PATH}}\" }}\n[target.jwt]\nsecret_env = \"PATH\"\nsend_as = \"query:t\"\n"
        ))
        .unwrap();
        assert_eq!(ok.connect.handshake.headers[0].1.source(), std::env::var("PATH").unwrap());
        assert!(matches!(ok.connect.jwt.unwrap().send_as, JwtPlacement::Query(ref q) if q == "t"));
    }

    #[test]
    fn request_mode_without_sends_is_an_error() {
        let text = "name = \"s\"\n[target]\nbundled = true\n[load]\nmessage_interval_s = 0\n\
                    [messages]\nmode = \"request\"\ntemplate = '{\"id\":{{seq}}}'\nmatch = \"json:id\"\n";
        let err = plan(text).unwrap_err();
        assert!(err.starts_with("t.toml:7:") && err.contains("give message_interval_s"), "{err}");
    }

    #[test]
    fn sensitive_literal_headers_are_redacted_in_the_copy() {
        let h: BTreeMap<String, Spanned<String>> =
            [("Authorization", "Bearer hunter2"), ("X-Api-Key", "${API_KEY}"), ("X-Trace", "t-{{conn}}")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), Spanned::new(0..0, v.to_string())))
                .collect();
        let json = redacted_headers(&h, serde_json::value::Serializer).unwrap().to_string();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(json.contains("${API_KEY}") && json.contains("t-{{conn}}"), "{json}");
    }
}
