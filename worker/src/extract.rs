//! Finding one value in a message without building the message: the value
//! at a dotted JSON path (a reply's `id`, a pushed message's timestamp) or
//! the first capture group of a regular expression. Both run on every frame
//! a server sends, hostile ones included, so neither allocates per message
//! (the JSON walk skips what it does not need with `IgnoredAny`; a regex
//! reuses its capture slots) and neither panics: text that is not JSON,
//! nested beyond serde_json's limit, or without the value is `None`.

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};

use regex::bytes::{CaptureLocations, Regex};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A dotted path into a JSON document: `id`, `result.ref`, `items.0.ts`
/// (a number indexes an array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<String>,
}

/// A JSON value that is not an object or array, as met in a document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    /// An integer.
    Int(i128),
    /// A number with a fraction or an exponent.
    Float(f64),
    /// A string, unescaped.
    Str(&'a str),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// What to make of the scalar at the path; called once, while the document
/// is being read (a string may live only that long).
pub trait Leaf {
    /// What it makes.
    type Out;
    /// Makes it, or `None` if the scalar does not fit.
    fn take(&self, scalar: Scalar<'_>) -> Option<Self::Out>;
}

/// A 64-bit key standing for a JSON scalar: two scalars equal as JSON
/// values (`17` and `17.0`, `"a"` and `"\u0061"`) get the same key; a
/// number and a string never do (`17` is not `"17"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u64);

/// [`Leaf`] making a [`Key`].
pub struct KeyLeaf;

impl Leaf for KeyLeaf {
    type Out = Key;

    fn take(&self, scalar: Scalar<'_>) -> Option<Key> {
        // SipHash with fixed keys: the same key on every connection and in
        // every process. Within one connection's window of at most 65,536
        // requests two different ids collide with odds near 10^-10.
        let mut h = DefaultHasher::new();
        match scalar {
            Scalar::Int(i) => (0u8, i).hash(&mut h),
            Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 1e38 => (0u8, f as i128).hash(&mut h),
            Scalar::Float(f) => (1u8, f.to_bits()).hash(&mut h),
            Scalar::Str(s) => (2u8, s).hash(&mut h),
            Scalar::Bool(b) => (3u8, b).hash(&mut h),
            Scalar::Null => 4u8.hash(&mut h),
        }
        Some(Key(h.finish()))
    }
}

/// A number read from a message: exact when it is an integer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Written without fraction or exponent.
    Int(i128),
    /// Anything else.
    Float(f64),
}

impl Number {
    /// Parses `text` (surrounding spaces allowed); `None` for anything but a
    /// finite number.
    pub fn parse(text: &str) -> Option<Number> {
        let t = text.trim();
        if let Ok(i) = t.parse::<i128>() {
            return Some(Number::Int(i));
        }
        t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Number::Float)
    }

    /// The number times `scale`, rounded down to a whole number; `None` when
    /// it does not fit an i64.
    pub fn scaled(self, scale: Scale) -> Option<i64> {
        match (self, scale) {
            (Number::Int(i), Scale::Mul(m)) => i.checked_mul(m)?.try_into().ok(),
            (Number::Int(i), Scale::Div(d)) => i.div_euclid(d).try_into().ok(),
            (Number::Float(f), s) => {
                let v = match s {
                    Scale::Mul(m) => f * m as f64,
                    Scale::Div(d) => f / d as f64,
                }
                .floor();
                (v.is_finite() && v.abs() < 9.2e18).then_some(v as i64)
            }
        }
    }
}

/// A conversion factor between units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Multiply by this.
    Mul(i128),
    /// Divide by this.
    Div(i128),
}

/// [`Leaf`] making a [`Number`]: a JSON number, or a string holding one
/// (some servers quote their timestamps).
pub struct NumberLeaf;

impl Leaf for NumberLeaf {
    type Out = Number;

    fn take(&self, scalar: Scalar<'_>) -> Option<Number> {
        match scalar {
            Scalar::Int(i) => Some(Number::Int(i)),
            Scalar::Float(f) => Some(Number::Float(f)),
            Scalar::Str(s) => Number::parse(s),
            Scalar::Bool(_) | Scalar::Null => None,
        }
    }
}

impl JsonPath {
    /// Parses `path`; the error says what is wrong with it.
    pub fn parse(path: &str) -> Result<JsonPath, String> {
        Ok(JsonPath { segments: stampede_model::jsonpath::parse(path)? })
    }

    /// The steps, in order.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// What `leaf` makes of the scalar at this path in `json`; `None` when
    /// `json` is not one valid JSON document, the path is not in it, or it
    /// leads to an object or array.
    pub fn find<L: Leaf>(&self, json: &[u8], leaf: &L) -> Option<L::Out> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let found = At { rest: &self.segments, leaf }.deserialize(&mut de).ok()?;
        // The whole frame must be JSON: `{"id":1} trailing` is not a reply.
        de.end().ok()?;
        found
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.segments.join("."))
    }
}

/// Reads the value at `rest` below the current one.
struct At<'a, L> {
    rest: &'a [String],
    leaf: &'a L,
}

impl<'de, L: Leaf> DeserializeSeed<'de> for At<'_, L> {
    type Value = Option<L::Out>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<L: Leaf> At<'_, L> {
    fn scalar<E>(&self, s: Scalar<'_>) -> Result<Option<L::Out>, E> {
        Ok(if self.rest.is_empty() { self.leaf.take(s) } else { None })
    }
}

impl<'de, L: Leaf> Visitor<'de> for At<'_, L> {
    type Value = Option<L::Out>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        self.scalar(Scalar::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        self.scalar(Scalar::Int(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        self.scalar(Scalar::Int(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        self.scalar(Scalar::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.scalar(Scalar::Str(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.scalar(Scalar::Null)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut seen = false;
        while let Some(wanted) = map.next_key_seed(KeyIs(self.rest.first().map(String::as_str)))? {
            // The first of duplicate keys wins.
            if wanted && !seen {
                seen = true;
                found = map.next_value_seed(At { rest: &self.rest[1..], leaf: self.leaf })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let index = self.rest.first().and_then(|s| s.parse::<usize>().ok());
        let mut found = None;
        let mut i = 0;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(At { rest: &self.rest[1..], leaf: self.leaf })? {
                    Some(v) => found = v,
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
}

/// Reads an object's key and says whether it is the one wanted, without
/// keeping it.
struct KeyIs<'a>(Option<&'a str>);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(self.0 == Some(v))
    }
}

/// The text of `re`'s first capture group in `hay`, with `locs` reused
/// between calls (from `re.capture_locations()`).
pub fn first_capture<'h>(re: &Regex, locs: &mut CaptureLocations, hay: &'h [u8]) -> Option<&'h [u8]> {
    re.captures_read(locs, hay)?;
    let (start, end) = locs.get(1)?;
    Some(&hay[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str, json: &str) -> Option<Key> {
        JsonPath::parse(path).unwrap().find(json.as_bytes(), &KeyLeaf)
    }

    #[test]
    fn keys_are_equal_when_the_json_values_are() {
        let k = key("id", r#"{"jsonrpc":"2.0","id":17,"method":"ping"}"#).unwrap();
        assert_eq!(key("id", r#" { "result" : "pong", "id" : 17 } "#), Some(k), "order and spacing");
        assert_eq!(key("id", r#"{"id":17.0}"#), Some(k), "17.0 is 17");
        assert_ne!(key("id", r#"{"id":"17"}"#), Some(k), "a string is not a number");
        assert_ne!(key("id", r#"{"id":18}"#), Some(k));
        let s = key("id", r#"{"id":"é-1"}"#).unwrap();
        assert_eq!(key("id", r#"{"id":"\u00e9-1"}"#), Some(s), "escapes are undone");
        assert_eq!(key("id", r#"{"id":1,"id":2}"#), key("id", r#"{"id":1}"#), "the first duplicate key wins");
    }

    #[test]
    fn paths_go_through_objects_and_arrays() {
        let doc = r#"{"result":{"ref":"abc","items":[{"ts":1},{"ts":2}]},"id":null}"#;
        assert_eq!(key("result.ref", doc), key("x", r#"{"x":"abc"}"#));
        let ts = JsonPath::parse("result.items.1.ts").unwrap();
        assert_eq!(ts.find(doc.as_bytes(), &NumberLeaf), Some(Number::Int(2)));
        assert_eq!(key("id", doc), key("y", r#"{"y":null}"#));
        assert_eq!(key("result", doc), None, "an object is not a key");
        assert_eq!(key("result.nope", doc), None);
        assert_eq!(key("result.ref.deeper", doc), None, "a string has no fields");
    }

    #[test]
    fn anything_but_one_json_document_has_no_key() {
        for bad in ["", "not json", "{\"id\":1", "{\"id\":1} x", "[1,2", "\u{0}", "{\"id\":01}"] {
            assert_eq!(key("id", bad), None, "{bad:?}");
        }
        // Far deeper than serde_json's recursion limit: an error, not a crash.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(key("0", &deep), None);
        assert!(JsonPath::parse("a..b").is_err());
    }

    #[test]
    fn numbers_scale_exactly_and_never_overflow() {
        assert_eq!(
            Number::parse(" 1700000000123 ").unwrap().scaled(Scale::Mul(1000)),
            Some(1_700_000_000_123_000)
        );
        assert_eq!(
            Number::parse("1700000000.5").unwrap().scaled(Scale::Mul(1_000_000)),
            Some(1_700_000_000_500_000)
        );
        assert_eq!(
            Number::parse("1700000000123456789").unwrap().scaled(Scale::Div(1000)),
            Some(1_700_000_000_123_456)
        );
        assert_eq!(Number::parse("99999999999999999999999").unwrap().scaled(Scale::Mul(1000)), None);
        assert_eq!(Number::parse("1e300").unwrap().scaled(Scale::Mul(1000)), None);
        assert_eq!(Number::parse("NaN"), None);
        assert_eq!(Number::parse("x1"), None);
        let json = JsonPath::parse("ts").unwrap();
        assert_eq!(json.find(br#"{"ts":"42"}"#, &NumberLeaf), Some(Number::Int(42)), "a quoted number");
        assert_eq!(json.find(br#"{"ts":true}"#, &NumberLeaf), None);
    }

    #[test]
    fn the_first_capture_group_is_found_with_reused_slots() {
        let re = Regex::new(r"seq=(\d+)").unwrap();
        let mut locs = re.capture_locations();
        assert_eq!(first_capture(&re, &mut locs, b"ack seq=42;"), Some(&b"42"[..]));
        assert_eq!(first_capture(&re, &mut locs, b"nothing"), None);
        let optional = Regex::new(r"a(\d+)?").unwrap();
        let mut locs = optional.capture_locations();
        assert_eq!(first_capture(&optional, &mut locs, b"a"), None, "a group that took part in no match");
    }
}
