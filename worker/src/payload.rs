//! The native engine's message format. Every payload carries what it needs to
//! be matched when its echo comes back: connection id, sequence number and
//! the intended send time (microseconds on the worker's monotonic clock). It
//! is ASCII text, so it passes servers that accept only text frames:
//!
//! `c=17;s=42;t=1234567;xxxxxxxx...` (padded with `x` to the payload size)

use std::fmt::Write;

/// The fields of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Connection id, unique within the worker.
    pub conn: u64,
    /// Sequence number within the connection, from 0.
    pub seq: u64,
    /// Intended send time, microseconds since the worker's epoch.
    pub intended_us: u64,
}

/// The smallest payload size allowed: room for the stamp of any realistic
/// run (a wider stamp makes the payload longer, never truncated).
pub const MIN_PAYLOAD: usize = 64;

/// Room for the widest stamp: three 20-digit numbers and their labels.
const STAMP_MAX: usize = 72;

impl Stamp {
    /// Writes the payload into `out` (cleared first), padded to `size` bytes.
    pub fn encode(&self, size: usize, out: &mut String) {
        out.clear();
        write!(out, "c={};s={};t={};", self.conn, self.seq, self.intended_us)
            .expect("writing to a String cannot fail");
        let pad = size.saturating_sub(out.len());
        out.extend(std::iter::repeat_n('x', pad));
    }

    /// Whether `payload` is exactly what [`Stamp::encode`] makes of this
    /// stamp at `size` bytes: an echo that decodes but is truncated, padded
    /// or altered is not intact.
    pub fn is_encoded_in(&self, size: usize, payload: &[u8]) -> bool {
        // On the stack: this runs for every echo. The widest stamp (three
        // 20-digit numbers) takes 69 bytes.
        let mut buf = [0u8; STAMP_MAX];
        let mut rest = &mut buf[..];
        std::io::Write::write_fmt(
            &mut rest,
            format_args!("c={};s={};t={};", self.conn, self.seq, self.intended_us),
        )
        .expect("the widest stamp fits");
        let prefix_len = STAMP_MAX - rest.len();
        let prefix = &buf[..prefix_len];
        payload.len() == size.max(prefix.len())
            && payload.starts_with(prefix)
            && payload[prefix.len()..].iter().all(|&b| b == b'x')
    }

    /// Reads the fields back from an echo; `None` if it is not ours.
    pub fn decode(payload: &[u8]) -> Option<Stamp> {
        let mut fields = payload.split(|&b| b == b';');
        let conn = field(fields.next()?, b"c=")?;
        let seq = field(fields.next()?, b"s=")?;
        let intended_us = field(fields.next()?, b"t=")?;
        Some(Stamp { conn, seq, intended_us })
    }
}

fn field(part: &[u8], prefix: &[u8]) -> Option<u64> {
    let digits = part.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        d.is_ascii_digit().then(|| acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let stamp = Stamp { conn: 17, seq: 42, intended_us: 1_234_567 };
        let mut buf = String::new();
        stamp.encode(100, &mut buf);
        assert_eq!(buf.len(), 100);
        assert!(buf.starts_with("c=17;s=42;t=1234567;x"));
        assert_eq!(Stamp::decode(buf.as_bytes()), Some(stamp));
    }

    #[test]
    fn a_long_run_fits_the_minimum_and_wider_still_decodes() {
        // A million connections, a billion messages each, 100 days in.
        let long_run = Stamp { conn: 999_999, seq: 999_999_999, intended_us: 8_640_000_000_000 };
        let mut buf = String::new();
        long_run.encode(MIN_PAYLOAD, &mut buf);
        assert_eq!(buf.len(), MIN_PAYLOAD);
        assert_eq!(Stamp::decode(buf.as_bytes()), Some(long_run));
        let widest = Stamp { conn: u64::MAX, seq: u64::MAX, intended_us: u64::MAX };
        widest.encode(MIN_PAYLOAD, &mut buf);
        assert_eq!(Stamp::decode(buf.as_bytes()), Some(widest), "the payload grows rather than truncates");
    }

    #[test]
    fn only_the_exact_bytes_are_intact() {
        let stamp = Stamp { conn: 3, seq: 9, intended_us: 77 };
        let mut buf = String::new();
        stamp.encode(100, &mut buf);
        assert!(stamp.is_encoded_in(100, buf.as_bytes()));
        assert!(!stamp.is_encoded_in(100, &buf.as_bytes()[..50]), "truncated");
        let mut altered = buf.clone().into_bytes();
        altered[80] = b'y';
        assert!(!stamp.is_encoded_in(100, &altered), "altered padding");
        assert!(!stamp.is_encoded_in(100, format!("{buf}x").as_bytes()), "padded");
        let mut zero_padded = buf.replacen("s=9;", "s=09;", 1);
        zero_padded.pop();
        let decoded = Stamp::decode(zero_padded.as_bytes()).unwrap();
        assert!(!decoded.is_encoded_in(100, zero_padded.as_bytes()), "not how we write numbers");
    }

    #[test]
    fn foreign_frames_are_not_matched() {
        for junk in [
            &b""[..],
            b"hello",
            b"c=1;s=2",
            b"c=1;s=x;t=3;",
            b"c=;s=1;t=2;",
            b"c=99999999999999999999999;s=1;t=1;",
        ] {
            assert_eq!(Stamp::decode(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }
}
