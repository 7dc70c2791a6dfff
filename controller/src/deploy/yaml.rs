//! Just enough YAML to write Kubernetes manifests by hand: a tree of maps,
//! lists and scalars, emitted in block style in the order it was built (so
//! `apiVersion`, `kind`, `metadata` come first, as people read them).
//! Strings are written plain only when YAML cannot take them for anything
//! else, otherwise double-quoted with every character outside printable
//! ASCII escaped; text (a scenario file, a script) becomes a literal block
//! that gives back exactly the same bytes, or a quoted string when a block
//! could not.

use std::fmt::Write;

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// A string.
    Str(String),
    /// Multi-line text, written as a literal block where it can be.
    Text(String),
    /// An integer.
    Int(u64),
    /// A boolean.
    Bool(bool),
    /// Keys in the order given.
    Map(Vec<(String, Node)>),
    /// Items in order.
    List(Vec<Node>),
    /// A value with a comment line written above its key (in a map).
    Noted(String, Box<Node>),
}

impl From<&str> for Node {
    fn from(s: &str) -> Node {
        Node::Str(s.to_string())
    }
}

impl From<String> for Node {
    fn from(s: String) -> Node {
        Node::Str(s)
    }
}

impl From<&String> for Node {
    fn from(s: &String) -> Node {
        Node::Str(s.clone())
    }
}

impl From<u64> for Node {
    fn from(n: u64) -> Node {
        Node::Int(n)
    }
}

impl From<u32> for Node {
    fn from(n: u32) -> Node {
        Node::Int(n.into())
    }
}

impl From<u16> for Node {
    fn from(n: u16) -> Node {
        Node::Int(n.into())
    }
}

impl From<bool> for Node {
    fn from(b: bool) -> Node {
        Node::Bool(b)
    }
}

impl From<Vec<Node>> for Node {
    fn from(items: Vec<Node>) -> Node {
        Node::List(items)
    }
}

/// `map! { "key" => value, ... }`: a [`Node::Map`] in this order.
macro_rules! map {
    ($($key:expr => $value:expr),* $(,)?) => {
        $crate::deploy::yaml::Node::Map(vec![$(($key.to_string(), $crate::deploy::yaml::Node::from($value))),*])
    };
}
pub(crate) use map;

/// `list![a, b, ...]`: a [`Node::List`].
macro_rules! list {
    ($($item:expr),* $(,)?) => {
        $crate::deploy::yaml::Node::List(vec![$($crate::deploy::yaml::Node::from($item)),*])
    };
}
pub(crate) use list;

/// `value` with `comment` written above its key.
pub fn noted(comment: impl Into<String>, value: impl Into<Node>) -> Node {
    Node::Noted(comment.into(), Box::new(value.into()))
}

/// Multi-line text.
pub fn text(s: impl Into<String>) -> Node {
    Node::Text(s.into())
}

/// One document: `---`, then `node` (a map).
pub fn document(node: &Node) -> String {
    let mut out = String::from("---\n");
    match node {
        Node::Map(entries) => write_map(&mut out, entries, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn comment_lines(out: &mut String, comment: &str, indent: usize) {
    for line in comment.lines() {
        pad(out, indent);
        // Comments are ours, but keep them on their lines whatever they say.
        let line: String = line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        let _ = writeln!(out, "# {line}");
    }
}

fn write_map(out: &mut String, entries: &[(String, Node)], indent: usize) {
    for (key, value) in entries {
        let mut value = value;
        while let Node::Noted(comment, inner) = value {
            comment_lines(out, comment, indent);
            value = inner;
        }
        pad(out, indent);
        out.push_str(&scalar(key));
        out.push(':');
        write_value(out, value, indent);
    }
}

/// Writes what follows `key:` or `- ` at `indent` (the key's column).
fn write_value(out: &mut String, value: &Node, indent: usize) {
    match value {
        Node::Map(entries) if !entries.is_empty() => {
            out.push('\n');
            write_map(out, entries, indent + 2);
        }
        Node::List(items) if !items.is_empty() => {
            out.push('\n');
            write_list(out, items, indent);
        }
        Node::Text(t) if block_ok(t) => write_block(out, t, indent),
        Node::Noted(_, inner) => write_value(out, inner, indent),
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn write_list(out: &mut String, items: &[Node], indent: usize) {
    for item in items {
        let mut item = item;
        while let Node::Noted(comment, inner) = item {
            comment_lines(out, comment, indent);
            item = inner;
        }
        pad(out, indent);
        out.push('-');
        match item {
            Node::Map(entries) if !entries.is_empty() => {
                // The first key on the dash's line, the others under it.
                let mut first = String::new();
                write_map(&mut first, entries, indent + 2);
                out.push(' ');
                out.push_str(&first[indent + 2..]);
            }
            Node::List(_) => {
                out.push(' ');
                out.push_str(&inline(item));
                out.push('\n');
            }
            // A block in a list keeps to the indentation its first line sets.
            Node::Text(t) if block_ok(t) && !needs_indentation(t) => write_block(out, t, indent),
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

/// A one-line rendering (flow style for the rare nested or empty collection).
fn inline(value: &Node) -> String {
    match value {
        Node::Str(s) | Node::Text(s) => scalar(s),
        Node::Int(n) => n.to_string(),
        Node::Bool(b) => b.to_string(),
        Node::Map(entries) => {
            let inner: Vec<String> =
                entries.iter().map(|(k, v)| format!("{}: {}", scalar(k), inline(v))).collect();
            format!("{{{}}}", inner.join(", "))
        }
        Node::List(items) => format!("[{}]", items.iter().map(inline).collect::<Vec<_>>().join(", ")),
        Node::Noted(_, inner) => inline(inner),
    }
}

/// A string as a YAML scalar: plain when nothing else could be read from
/// it, else double-quoted.
pub fn scalar(s: &str) -> String {
    if plain_ok(s) { s.to_string() } else { quoted(s) }
}

/// Plain only for a letter, `/` or `--` and a letter (a flag), followed by
/// letters, digits, `.`, `_`, `-`, `/`: never a number, a boolean or null
/// in YAML 1.1 or 1.2, never an indicator, never a key separator.
fn plain_ok(s: &str) -> bool {
    const WORDS: [&str; 11] = ["true", "false", "yes", "no", "on", "off", "null", "y", "n", "nan", "inf"];
    let rest = s.strip_prefix("--").filter(|r| r.starts_with(|c: char| c.is_ascii_alphabetic())).unwrap_or(s);
    let mut chars = rest.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '/')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && !WORDS.contains(&s.to_ascii_lowercase().as_str())
}

/// A double-quoted scalar holding `s` exactly, in printable ASCII.
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            ' '..='~' => out.push(c),
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
    out
}

/// Whether `t` can be a literal block that reads back as `t`: not empty,
/// and nothing but tabs, line feeds and characters YAML prints as they are
/// (no carriage return, no other control character, no byte-order mark,
/// none of the Unicode line separators YAML 1.1 readers break lines at).
fn block_ok(t: &str) -> bool {
    !t.is_empty()
        && t.chars().all(|c| match c {
            '\t' | '\n' | ' '..='~' => true,
            '\u{85}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}' => false,
            c => !c.is_control(),
        })
}

/// Whether a block of `t` needs its indentation given: its first line
/// with text starts with a space, so it would set the indentation wrongly.
fn needs_indentation(t: &str) -> bool {
    t.split('\n').find(|l| !l.is_empty()).is_some_and(|l| l.starts_with(' '))
}

/// `|` with the chomping that keeps `t`'s trailing line feeds as they are,
/// and the indentation given where [`needs_indentation`]; the lines at
/// `indent` + 2.
fn write_block(out: &mut String, t: &str, indent: usize) {
    let chomp = if !t.ends_with('\n') {
        "-"
    } else if t.ends_with("\n\n") {
        "+"
    } else {
        ""
    };
    let explicit = if needs_indentation(t) { "2" } else { "" };
    let _ = writeln!(out, " |{explicit}{chomp}");
    let body = t.strip_suffix('\n').unwrap_or(t);
    for line in body.split('\n') {
        if !line.is_empty() {
            pad(out, indent + 2);
            out.push_str(line);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_that_yaml_would_read_as_something_else_are_quoted() {
        for s in [
            "true", "No", "null", "7700", "1.5", "0x1f", "", "-x", "--", "--1", "a: b", "a #b", "~", ".inf",
            "*x",
        ] {
            assert!(scalar(s).starts_with('"'), "{s:?} -> {}", scalar(s));
        }
        for s in ["stampede", "stampede-run.1", "/etc/stampede", "batch/v1", "w_1", "--max-connections"] {
            assert_eq!(scalar(s), s);
        }
        assert_eq!(quoted("a\"b\\c\nd\u{7}é\u{1F600}"), "\"a\\\"b\\\\c\\nd\\x07\\xe9\\U0001f600\"");
    }

    #[test]
    fn maps_and_lists_are_written_in_block_style_in_order() {
        let node = map! {
            "kind" => "Job",
            "spec" => map! {
                "args" => list!["run", "--output", "/results"],
                "empty" => Node::List(vec![]),
                "ports" => list![map! { "name" => "fleet", "port" => 7700u16 }, map! { "x" => true }],
            },
            "note" => noted("why\nbecause", 3u64),
        };
        assert_eq!(
            document(&node),
            "---\nkind: Job\nspec:\n  args:\n  - run\n  - --output\n  - /results\n  empty: []\n  ports:\n  \
             - name: fleet\n    port: 7700\n  - x: true\n# why\n# because\nnote: 3\n"
        );
    }

    #[test]
    fn text_becomes_a_block_with_its_exact_line_ends() {
        let doc = |t: &str| document(&map! { "data" => map! { "f" => text(t) } });
        assert_eq!(doc("a = 1\nb = 2\n"), "---\ndata:\n  f: |\n    a = 1\n    b = 2\n");
        assert_eq!(doc("a\n"), "---\ndata:\n  f: |\n    a\n");
        assert_eq!(doc("a"), "---\ndata:\n  f: |-\n    a\n");
        assert_eq!(doc("a\n\n\n"), "---\ndata:\n  f: |+\n    a\n\n\n");
        assert_eq!(doc("  x\ny\n"), "---\ndata:\n  f: |2\n      x\n    y\n");
        assert_eq!(doc("a\n\nb\n"), "---\ndata:\n  f: |\n    a\n\n    b\n");
        // What a block cannot hold is quoted instead.
        assert_eq!(doc("a\r\nb"), "---\ndata:\n  f: \"a\\x0d\\nb\"\n");
        assert_eq!(doc(""), "---\ndata:\n  f: \"\"\n");
    }
}
