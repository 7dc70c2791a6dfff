//! The native engine's message format. Every payload carries what it needs to
//! be matched when its echo comes back: connection id, sequence number and
//! the intended send time (microseconds on the worker's monotonic clock). It
//! is ASCII text, so it passes servers that accept only text frames:
//!
//! `17;42;1234567;xxxxxxxx...` (padded with `x` to the payload size)
//!
//! Bare decimal numbers keep the stamp within 32 bytes for any realistic run,
//! so 32-byte messages work; they are written by hand because this runs for
//! every message sent and every echo received.

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
pub const MIN_PAYLOAD: usize = stampede_model::limits::MIN_PAYLOAD_BYTES as usize;

/// Room for the widest stamp: three 20-digit numbers and their separators.
const STAMP_MAX: usize = 63;

impl Stamp {
    /// Writes the payload into `out` (cleared first), padded to `size` bytes.
    pub fn encode(&self, size: usize, out: &mut String) {
        let mut buf = [0u8; STAMP_MAX];
        let stamp = self.write(&mut buf);
        out.clear();
        out.reserve(size.max(stamp.len()));
        out.push_str(std::str::from_utf8(stamp).expect("digits and separators are ASCII"));
        out.extend(std::iter::repeat_n('x', size.saturating_sub(stamp.len())));
    }

    /// Whether `payload` is exactly what [`Stamp::encode`] makes of this
    /// stamp at `size` bytes: an echo that decodes but is truncated, padded
    /// or altered is not intact.
    pub fn is_encoded_in(&self, size: usize, payload: &[u8]) -> bool {
        let mut buf = [0u8; STAMP_MAX];
        let stamp = self.write(&mut buf);
        payload.len() == size.max(stamp.len())
            && payload.starts_with(stamp)
            && payload[stamp.len()..].iter().all(|&b| b == b'x')
    }

    /// Reads the fields back from an echo; `None` if it is not ours.
    pub fn decode(payload: &[u8]) -> Option<Stamp> {
        let mut fields = payload.splitn(4, |&b| b == b';');
        let conn = number(fields.next()?)?;
        let seq = number(fields.next()?)?;
        let intended_us = number(fields.next()?)?;
        // The fourth part is the padding; without it the stamp is cut short.
        fields.next()?;
        Some(Stamp { conn, seq, intended_us })
    }

    /// The stamp's bytes (`conn;seq;time;`), written into `buf`.
    fn write<'b>(&self, buf: &'b mut [u8; STAMP_MAX]) -> &'b [u8] {
        let mut len = 0;
        for n in [self.conn, self.seq, self.intended_us] {
            len += decimal(n, &mut buf[len..]);
            buf[len] = b';';
            len += 1;
        }
        &buf[..len]
    }
}

/// Writes `n` in decimal at the start of `out`; returns how many digits.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 20];
    let mut first = digits.len();
    loop {
        first -= 1;
        digits[first] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = digits.len() - first;
    out[..len].copy_from_slice(&digits[first..]);
    len
}

fn number(digits: &[u8]) -> Option<u64> {
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
        assert!(buf.starts_with("17;42;1234567;x"));
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
        let mut zero_padded = buf.replacen(";9;", ";09;", 1);
        zero_padded.pop();
        let decoded = Stamp::decode(zero_padded.as_bytes()).unwrap();
        assert!(!decoded.is_encoded_in(100, zero_padded.as_bytes()), "not how we write numbers");
    }

    #[test]
    fn foreign_frames_are_not_matched() {
        for junk in [
            &b""[..],
            b"hello",
            b"1;2",
            b"1;2;3",
            b"1;x;3;",
            b";1;2;",
            b"-1;1;2;",
            b"99999999999999999999999;1;1;",
            b"c=1;s=2;t=3;",
        ] {
            assert_eq!(Stamp::decode(junk), None, "{:?}", String::from_utf8_lossy(junk));
        }
    }
}
