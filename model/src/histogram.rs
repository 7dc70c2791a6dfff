//! The histograms every part agrees on: microseconds, 1 us .. 1 h, 3
//! significant digits (DESIGN.md), and how percentiles in milliseconds are
//! read off them.

use hdrhistogram::Histogram;

use crate::results::Percentiles;

/// Largest value, us (one hour).
pub const MAX_US: u64 = 3_600_000_000;
/// Significant digits.
pub const SIGFIG: u8 = 3;

/// Largest counts payload an encoded histogram of the standard bounds can
/// need (about 24,000 counts of at most 9 bytes), with room to spare.
const MAX_PAYLOAD: u32 = 1 << 20;

const V2_COOKIE: u32 = 0x1c84_9313;
const V2_DEFLATE_COOKIE: u32 = 0x1c84_9314;

/// Checks the header of an encoded histogram (HdrHistogram V2, plain or
/// deflate) before it is decoded: decoding allocates counts for whatever
/// bounds the header claims, so 37 bytes claiming a huge range would
/// allocate gigabytes. Accepted: the standard bounds or narrower, at most
/// [`SIGFIG`] digits, a payload of at most 1 MiB. Reads at most 40
/// inflated bytes.
pub fn check_encoded(bytes: &[u8]) -> Result<(), String> {
    use std::io::Read;
    let word = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    if bytes.len() < 8 {
        return Err(format!("{} bytes: too short for a histogram", bytes.len()));
    }
    let mut head = [0u8; 40];
    match word(bytes, 0) {
        V2_COOKIE if bytes.len() >= 40 => head.copy_from_slice(&bytes[..40]),
        V2_DEFLATE_COOKIE => {
            if word(bytes, 4) as usize != bytes.len() - 8 {
                return Err("compressed length does not match the bytes given".into());
            }
            flate2::read::ZlibDecoder::new(&bytes[8..])
                .take(40)
                .read_exact(&mut head)
                .map_err(|e| format!("cannot inflate the header: {e}"))?;
        }
        cookie => return Err(format!("not an HdrHistogram V2 encoding (cookie {cookie:#x})")),
    }
    if word(&head, 0) != V2_COOKIE {
        return Err("inner cookie is not V2".into());
    }
    let long = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let (payload, sigfig, lowest, highest) = (word(&head, 4), word(&head, 12), long(16), long(24));
    if payload > MAX_PAYLOAD {
        return Err(format!("claims a {payload}-byte payload (at most {MAX_PAYLOAD})"));
    }
    if sigfig == 0 || sigfig > u32::from(SIGFIG) {
        return Err(format!("claims {sigfig} significant digits (1 to {SIGFIG})"));
    }
    if lowest < 1 || highest > MAX_US || lowest > highest {
        return Err(format!("claims the range {lowest}..{highest} us (within 1..{MAX_US})"));
    }
    Ok(())
}

/// An empty histogram with the standard bounds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("static bounds are valid")
}

impl Percentiles {
    /// Percentiles in ms of a histogram of microseconds.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use hdrhistogram::serialization::{Serializer, V2DeflateSerializer, V2Serializer};

    use super::*;

    fn encoded(h: &Histogram<u64>, deflate: bool) -> Vec<u8> {
        let mut out = Vec::new();
        if deflate {
            V2DeflateSerializer::new().serialize(h, &mut out).unwrap();
        } else {
            V2Serializer::new().serialize(h, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn our_histograms_pass_and_claims_of_huge_ones_do_not() {
        let mut ours = new_histogram();
        ours.record(1234).unwrap();
        assert_eq!(check_encoded(&encoded(&ours, true)), Ok(()));
        assert_eq!(check_encoded(&encoded(&ours, false)), Ok(()));
        // What a hostile worker would send: a tiny message whose header
        // claims a range of 2^62 at 5 digits (gigabytes of counts).
        let huge = Histogram::<u64>::new_with_bounds(1, 1 << 62, 4).unwrap();
        let bytes = encoded(&huge, true);
        assert!(bytes.len() < 100, "{} bytes", bytes.len());
        assert!(check_encoded(&bytes).unwrap_err().contains("significant digits"));
        let wide = Histogram::<u64>::new_with_bounds(1, 1 << 62, 3).unwrap();
        assert!(check_encoded(&encoded(&wide, false)).unwrap_err().contains("range"));
        for junk in [&b""[..], b"short", b"\x1c\x84\x93\x14\x00\x00\x00\x05abcde", &[0u8; 64]] {
            assert!(check_encoded(junk).is_err(), "{junk:?}");
        }
        let mut claims_payload = encoded(&ours, false);
        claims_payload[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(check_encoded(&claims_payload).unwrap_err().contains("payload"));
    }
}
