//! The channel protocol's wire format: client operations parsed from a text
//! frame, and the frames the relay sends, as JSON text.
//!
//! Pure (text in, value out) so every refusal is unit-tested without a
//! socket. `data` is kept as the client wrote it ([`RawValue`]): the relay
//! never re-serialises a payload, so numbers, key order and whitespace
//! inside it reach subscribers byte for byte.

use std::collections::HashMap;

use serde_json::value::RawValue;

/// Longest channel name, bytes.
pub(crate) const MAX_CHANNEL: usize = 128;

/// What a client asked for.
#[derive(Debug)]
pub(crate) enum Op<'a> {
    Subscribe { channel: String, since: Option<u64> },
    Unsubscribe { channel: String },
    Publish { channel: String, data: &'a RawValue, ack: bool },
}

/// Parses one text frame. The error is the `reason` of the `error` reply.
pub(crate) fn parse(text: &str) -> Result<Op<'_>, String> {
    let fields: HashMap<String, &RawValue> =
        serde_json::from_str(text).map_err(|_| "not a JSON object".to_string())?;
    let text_field = |name| field(&fields, name, |s| serde_json::from_str::<String>(s), "a string");
    let op = text_field("op")?.ok_or("missing op")?;
    let channel = || -> Result<String, String> {
        let channel = text_field("channel")?.ok_or("missing channel")?;
        check_channel(&channel)?;
        Ok(channel)
    };
    match op.as_str() {
        "subscribe" => {
            let since =
                field(&fields, "since", |s| serde_json::from_str::<u64>(s), "a non-negative integer")?;
            Ok(Op::Subscribe { channel: channel()?, since })
        }
        "unsubscribe" => Ok(Op::Unsubscribe { channel: channel()? }),
        "publish" => {
            let channel = channel()?;
            let data = fields.get("data").copied().ok_or("publish needs data")?;
            let ack =
                field(&fields, "ack", |s| serde_json::from_str::<bool>(s), "true or false")?.unwrap_or(false);
            Ok(Op::Publish { channel, data, ack })
        }
        other => Err(format!("unknown op {}", string(&other.chars().take(64).collect::<String>()))),
    }
}

/// Field `name` read by `read`, `None` when absent; the error says the
/// field must be `want`.
fn field<T>(
    fields: &HashMap<String, &RawValue>,
    name: &str,
    read: fn(&str) -> serde_json::Result<T>,
    want: &str,
) -> Result<Option<T>, String> {
    let Some(raw) = fields.get(name) else { return Ok(None) };
    read(raw.get()).map(Some).map_err(|_| format!("{name} must be {want}"))
}

/// Whether `channel` may name a channel: 1 to [`MAX_CHANNEL`] bytes, no
/// control characters.
pub(crate) fn check_channel(channel: &str) -> Result<(), &'static str> {
    if channel.is_empty() {
        Err("channel name is empty")
    } else if channel.len() > MAX_CHANNEL {
        Err("channel name is longer than 128 bytes")
    } else if channel.chars().any(char::is_control) {
        Err("channel name contains a control character")
    } else {
        Ok(())
    }
}

/// `text` as a JSON string literal.
pub(crate) fn string(text: &str) -> String {
    // Serialising a str cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

pub(crate) fn connection_established(id: &str) -> String {
    format!(r#"{{"op":"connection_established","id":{}}}"#, string(id))
}

pub(crate) fn subscribed(channel: &str, seq: u64) -> String {
    format!(r#"{{"op":"subscribed","channel":{},"seq":{seq}}}"#, string(channel))
}

pub(crate) fn unsubscribed(channel: &str) -> String {
    format!(r#"{{"op":"unsubscribed","channel":{}}}"#, string(channel))
}

pub(crate) fn published(channel: &str, seq: u64, delivered: usize) -> String {
    format!(r#"{{"op":"published","channel":{},"seq":{seq},"delivered":{delivered}}}"#, string(channel))
}

pub(crate) fn error(reason: &str) -> String {
    format!(r#"{{"op":"error","reason":{}}}"#, string(reason))
}

/// A `message` frame in two parts, the sequence number going between them,
/// so the data is copied once, before the hub's lock is taken.
pub(crate) struct MessageFrame {
    head: String,
    tail: String,
}

impl MessageFrame {
    pub(crate) fn new(channel: &str, data: &str) -> MessageFrame {
        MessageFrame {
            head: format!(r#"{{"op":"message","channel":{},"seq":"#, string(channel)),
            tail: format!(r#","data":{data}}}"#),
        }
    }

    /// The frame with `seq`.
    pub(crate) fn with_seq(&self, seq: u64) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(self.head.len() + 20 + self.tail.len());
        out.push_str(&self.head);
        // Writing into a String cannot fail.
        let _ = write!(out, "{seq}");
        out.push_str(&self.tail);
        out
    }
}

/// The body of a `200` answer to `POST /publish/<channel>`.
pub(crate) fn http_published(seq: u64, delivered: usize) -> String {
    format!(r#"{{"seq":{seq},"delivered":{delivered}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> &RawValue {
        serde_json::from_str(text).unwrap()
    }

    /// Data compares by its text.
    impl PartialEq for Op<'_> {
        fn eq(&self, other: &Self) -> bool {
            format!("{self:?}") == format!("{other:?}")
        }
    }

    #[test]
    fn operations_parse_with_their_fields() {
        assert_eq!(
            parse(r#"{"op":"subscribe","channel":"a/b"}"#),
            Ok(Op::Subscribe { channel: "a/b".into(), since: None })
        );
        assert_eq!(
            parse(r#"{"channel":"c","since":7,"op":"subscribe","extra":[1]}"#),
            Ok(Op::Subscribe { channel: "c".into(), since: Some(7) })
        );
        assert_eq!(
            parse(r#"{"op":"unsubscribe","channel":"c"}"#),
            Ok(Op::Unsubscribe { channel: "c".into() })
        );
        let data = r#"{"z": 1.50, "a": [true, null]}"#;
        assert_eq!(
            parse(&format!(r#"{{"op":"publish","channel":"c","data":{data},"ack":true}}"#)),
            Ok(Op::Publish { channel: "c".into(), data: raw(data), ack: true })
        );
        let text = format!(r#"{{"op":"publish","channel":"c","data":{data}}}"#);
        let Ok(Op::Publish { data: kept, ack: false, .. }) = parse(&text) else {
            panic!("publish without ack")
        };
        assert_eq!(kept.get(), data, "data kept byte for byte");
    }

    #[test]
    fn refusals_say_why() {
        let long = "x".repeat(129);
        for (text, reason) in [
            ("not json", "not a JSON object"),
            ("[1,2]", "not a JSON object"),
            (r#"{"channel":"c"}"#, "missing op"),
            (r#"{"op":5}"#, "op must be a string"),
            (r#"{"op":"dance"}"#, r#"unknown op "dance""#),
            (r#"{"op":"subscribe"}"#, "missing channel"),
            (r#"{"op":"subscribe","channel":1}"#, "channel must be a string"),
            (r#"{"op":"subscribe","channel":""}"#, "channel name is empty"),
            (&format!(r#"{{"op":"subscribe","channel":"{long}"}}"#), "channel name is longer than 128 bytes"),
            (r#"{"op":"subscribe","channel":"a\nb"}"#, "channel name contains a control character"),
            (r#"{"op":"subscribe","channel":"c","since":-1}"#, "since must be a non-negative integer"),
            (r#"{"op":"subscribe","channel":"c","since":"3"}"#, "since must be a non-negative integer"),
            (r#"{"op":"publish","channel":"c"}"#, "publish needs data"),
            (r#"{"op":"publish","channel":"c","data":1,"ack":1}"#, "ack must be true or false"),
        ] {
            assert_eq!(parse(text), Err(reason.to_string()), "{text}");
        }
        assert!(check_channel(&"é".repeat(64)).is_ok(), "128 bytes of UTF-8");
    }

    #[test]
    fn frames_are_json_with_escaped_names() {
        let name = "a\"b";
        for frame in [
            connection_established("1-ab"),
            subscribed(name, 3),
            unsubscribed(name),
            published(name, 3, 2),
            error("bad \"thing\""),
            MessageFrame::new(name, r#"{"k":[1,2]}"#).with_seq(42),
            http_published(1, 0),
        ] {
            let value: serde_json::Value = serde_json::from_str(&frame).expect(&frame);
            assert!(value.is_object(), "{frame}");
        }
        assert_eq!(
            MessageFrame::new("c", "[1, 2]").with_seq(9),
            r#"{"op":"message","channel":"c","seq":9,"data":[1, 2]}"#
        );
    }
}
