//! Per-connection text templates: `user-{{conn}}`, `Bearer {{jwt}}`,
//! `{"jsonrpc":"2.0","id":{{seq}},"method":"ping"}`. Parsed (and so
//! checked) once when the scenario is read; rendered per connection or per
//! message by a loop over literal pieces and variables, with no parsing on
//! the hot path.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A variable a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// The connection's number on its worker (its slot).
    Conn,
    /// The worker's id.
    Worker,
    /// A fresh random UUID (version 4) each time it is rendered.
    Uuid,
    /// The message's number on its connection (messages only).
    Seq,
    /// The connection's JWT (first messages and headers only).
    Jwt,
    /// Wall-clock time of rendering, ms since the Unix epoch.
    NowMs,
    /// Wall-clock time of rendering, µs since the Unix epoch.
    NowUs,
    /// An environment variable of the worker's process.
    Env(String),
    /// A value a flow's `capture` stored earlier in the same session
    /// (`{{var.NAME}}`; flows only).
    Captured(String),
}

impl Var {
    /// The names a template can use, for error messages.
    pub const NAMES: &str = "{{conn}}, {{worker}}, {{uuid}}, {{seq}}, {{jwt}}, {{now_ms}}, {{now_us}}, {{env.NAME}}, {{var.NAME}}";

    fn parse(name: &str) -> Option<Var> {
        Some(match name {
            "conn" => Var::Conn,
            "worker" => Var::Worker,
            "uuid" => Var::Uuid,
            "seq" => Var::Seq,
            "jwt" => Var::Jwt,
            "now_ms" => Var::NowMs,
            "now_us" => Var::NowUs,
            _ => {
                let ident =
                    |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if let Some(env) = name.strip_prefix("env.") {
                    return ident(env).then(|| Var::Env(env.to_string()));
                }
                let var = name.strip_prefix("var.")?;
                return ident(var).then(|| Var::Captured(var.to_string()));
            }
        })
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as is.
    Literal(String),
    /// A value filled in when rendering.
    Var(Var),
}

/// A parsed template; it serializes as its source text.
#[derive(Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

/// Why a template cannot be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("`{{{{` at byte {0} is not closed with `}}}}`")]
    Unclosed(usize),
    /// An unknown variable name.
    #[error("unknown template variable {{{{{0}}}}}: use {names}", names = Var::NAMES)]
    Unknown(String),
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = source;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unclosed(offset + open))?;
            let name = after[..close].trim();
            pieces
                .push(Piece::Var(Var::parse(name).ok_or_else(|| TemplateError::Unknown(name.to_string()))?));
            let used = open + 2 + close + 2;
            offset += used;
            rest = &rest[used..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        Ok(Template { source: source.to_string(), pieces })
    }

    /// The text as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The pieces, in order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Whether it uses `var`.
    pub fn uses(&self, var: &Var) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Var(v) if v == var))
    }

    /// Whether it has no variables at all.
    pub fn is_literal(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Literal(_)))
    }

    /// Replaces `{{env.NAME}}` by the variable's value, once per process;
    /// the error names the first variable `lookup` does not know.
    pub fn resolve_env(&self, lookup: impl Fn(&str) -> Option<String>) -> Result<Template, String> {
        let mut pieces = Vec::with_capacity(self.pieces.len());
        for p in &self.pieces {
            match p {
                Piece::Var(Var::Env(name)) => match lookup(name) {
                    Some(v) => pieces.push(Piece::Literal(v)),
                    None => {
                        return Err(format!("{{{{env.{name}}}}} in {:?}: {name} is not set", self.source));
                    }
                },
                other => pieces.push(other.clone()),
            }
        }
        Ok(Template { source: self.source.clone(), pieces })
    }

    /// Appends the rendering to `out`; `value` writes each variable's value.
    pub fn render_into(&self, out: &mut String, mut value: impl FnMut(&Var, &mut String)) {
        for p in &self.pieces {
            match p {
                Piece::Literal(text) => out.push_str(text),
                Piece::Var(v) => value(v, out),
            }
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Template::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_variables_between_literals() {
        let t = Template::parse(r#"{"id":{{seq}},"who":"u-{{ conn }}-{{env.REGION}}"}"#).unwrap();
        let t = t.resolve_env(|n| (n == "REGION").then(|| "eu".to_string())).unwrap();
        let mut out = String::new();
        t.render_into(&mut out, |v, out| match v {
            Var::Seq => out.push_str("17"),
            Var::Conn => out.push_str("33"),
            _ => unreachable!(),
        });
        assert_eq!(out, r#"{"id":17,"who":"u-33-eu"}"#);
        assert!(t.uses(&Var::Seq) && !t.uses(&Var::Jwt));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        assert_eq!(Template::parse("a {{seq"), Err(TemplateError::Unclosed(2)));
        let e = Template::parse("{{user}}").unwrap_err();
        assert!(e.to_string().contains("{{user}}") && e.to_string().contains("{{conn}}"), "{e}");
        assert!(Template::parse("{{env.}}").is_err());
        let missing = Template::parse("{{env.NOPE}}").unwrap().resolve_env(|_| None).unwrap_err();
        assert!(missing.contains("NOPE is not set"), "{missing}");
        assert!(Template::parse("no braces } here {").unwrap().is_literal());
    }
}
