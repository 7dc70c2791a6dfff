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

/// What an encoded histogram recorded: (value, count) for each bucket
/// whose count is not zero, in value order.
pub type Buckets = Vec<(u64, u64)>;

/// Reads encoded histograms (HdrHistogram V2, plain or deflate) as the
/// buckets they recorded, with buffers kept between calls. Adding a
/// worker's second to the run's histograms this way costs its few
/// recorded buckets, where decoding a histogram costs a fresh array of
/// ~24,000 counts (190 KB) and merging one walks all of them: at 1,000
/// workers that is gigabytes a second.
#[derive(Debug, Default)]
pub struct Decoder {
    inflated: Vec<u8>,
}

impl Decoder {
    /// A decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Decodes `bytes` into `out` (cleared first); empty bytes are an
    /// empty histogram. Every value is within the standard bounds, so
    /// [`add_buckets`] cannot fail; the work is bounded by the checked
    /// payload size (zero runs are skipped whole).
    pub fn decode(&mut self, bytes: &[u8], out: &mut Buckets) -> Result<(), String> {
        use std::io::Read;
        out.clear();
        if bytes.is_empty() {
            return Ok(());
        }
        check_encoded(bytes)?;
        let plain = match word(bytes, 0) {
            V2_COOKIE => bytes,
            _ => {
                self.inflated.clear();
                flate2::read::ZlibDecoder::new(&bytes[8..])
                    .take(40 + u64::from(MAX_PAYLOAD))
                    .read_to_end(&mut self.inflated)
                    .map_err(|e| format!("cannot inflate: {e}"))?;
                &self.inflated[..]
            }
        };
        if plain.len() < 40 {
            return Err("the inflated histogram is shorter than its header".into());
        }
        if word(plain, 8) != 0 {
            return Err("a normalizing index offset (not written by HdrHistogram V2 encoders we take)".into());
        }
        let layout =
            Layout::new(u64::from_be_bytes(plain[16..24].try_into().expect("8 bytes")), word(plain, 12));
        let payload = plain
            .get(40..40 + word(plain, 4) as usize)
            .ok_or("the counts are shorter than the header says")?;
        let (mut at, mut index) = (0, 0u64);
        while at < payload.len() {
            let count = zigzag(varint(payload, &mut at).ok_or("a count is cut short")?);
            if count < 0 {
                // A run of empty buckets.
                index = index.saturating_add(count.unsigned_abs());
                continue;
            }
            if count > 0 {
                match layout.value_at(index) {
                    Some(value) if value <= MAX_US => out.push((value, count as u64)),
                    _ => return Err(format!("a count at bucket {index}, beyond {MAX_US} us")),
                }
            }
            index = index.saturating_add(1);
        }
        Ok(())
    }
}

/// Adds what [`Decoder::decode`] read to `into` (a histogram of the
/// standard bounds).
pub fn add_buckets(into: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(value, count) in buckets {
        into.saturating_record_n(value, count);
    }
}

/// A histogram of the standard bounds holding `buckets`.
pub fn from_buckets(buckets: &[(u64, u64)]) -> Histogram<u64> {
    let mut h = new_histogram();
    add_buckets(&mut h, buckets);
    h
}

fn word(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Where an HdrHistogram keeps its counts: buckets of `half_count` (a
/// power of two) sub-buckets each twice as wide as the bucket before,
/// after a first bucket of twice as many (the published HdrHistogram
/// layout, which the encoding's index counts through).
struct Layout {
    unit_magnitude: u32,
    half_magnitude: u32,
}

impl Layout {
    /// The layout of a histogram whose lowest discernible value is
    /// `lowest` (>= 1) at `sigfig` digits (checked: 1 to 3).
    fn new(lowest: u64, sigfig: u32) -> Layout {
        let single_unit = 2 * 10u64.pow(sigfig);
        let count_magnitude = 64 - (single_unit - 1).leading_zeros();
        Layout { unit_magnitude: 63 - lowest.leading_zeros(), half_magnitude: count_magnitude - 1 }
    }

    /// The lowest value of the count at `index`; `None` beyond u64.
    fn value_at(&self, index: u64) -> Option<u64> {
        let half_count = 1u64 << self.half_magnitude;
        let bucket = (index >> self.half_magnitude).checked_sub(1);
        let sub = index & (half_count - 1);
        let (bucket, sub) = match bucket {
            Some(b) => (b, sub + half_count),
            None => (0, sub),
        };
        let shift = u32::try_from(bucket).ok()?.checked_add(self.unit_magnitude)?;
        let value = sub.checked_shl(shift)?;
        (value >> shift == sub).then_some(value)
    }
}

/// Reads one LEB128 number of at most 9 bytes (the ninth carries 8 bits),
/// as HdrHistogram's encoding writes them.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..9 {
        let b = *bytes.get(*at)?;
        *at += 1;
        if i == 8 {
            return Some(value | u64::from(b) << 56);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            break;
        }
    }
    Some(value)
}

fn zigzag(n: u64) -> i64 {
    (n >> 1) as i64 ^ -((n & 1) as i64)
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

    #[test]
    fn a_deflate_bomb_inflates_no_further_than_the_largest_payload() {
        use std::io::Write;
        // A valid header claiming the largest payload, then 64 MiB of
        // zeros that deflate to ~64 KB: what a hostile worker could send.
        let mut plain = encoded(&new_histogram(), false)[..40].to_vec();
        plain[4..8].copy_from_slice(&MAX_PAYLOAD.to_be_bytes());
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        zlib.write_all(&plain).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            zlib.write_all(&zeros).unwrap();
        }
        let deflated = zlib.finish().unwrap();
        let mut bomb = V2_DEFLATE_COOKIE.to_be_bytes().to_vec();
        bomb.extend_from_slice(&(deflated.len() as u32).to_be_bytes());
        bomb.extend_from_slice(&deflated);
        assert!(bomb.len() < 100_000, "{} bytes on the wire", bomb.len());
        let mut decoder = Decoder::new();
        let mut buckets = Buckets::new();
        // Zero counts record nothing: an empty histogram, read from the
        // first 1 MiB only.
        decoder.decode(&bomb, &mut buckets).unwrap();
        assert!(buckets.is_empty());
        assert_eq!(decoder.inflated.len(), 40 + MAX_PAYLOAD as usize, "inflation stopped at the bound");
    }

    fn decoded(bytes: &[u8]) -> Result<Histogram<u64>, String> {
        let mut buckets = Buckets::new();
        Decoder::new().decode(bytes, &mut buckets)?;
        Ok(from_buckets(&buckets))
    }

    #[test]
    fn buckets_add_up_to_the_histogram_encoded() {
        // Values spread over every magnitude the bounds hold, with
        // repeats, plain and deflated.
        let mut h = new_histogram();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let value = (x % MAX_US) >> (x % 32);
            h.record_n(value, x % 5 + 1).unwrap();
        }
        h.record(MAX_US).unwrap();
        h.record(0).unwrap();
        for deflate in [false, true] {
            let back = decoded(&encoded(&h, deflate)).unwrap();
            assert_eq!(back, h, "deflate {deflate}");
            assert_eq!(back.len(), h.len());
        }
        assert_eq!(decoded(&encoded(&new_histogram(), true)).unwrap().len(), 0);
        assert_eq!(decoded(&[]).unwrap().len(), 0);
    }

    #[test]
    fn coarser_histograms_add_as_hdrhistogram_adds_them() {
        for (lowest, sigfig) in [(1, 1), (1, 2), (8, 3), (1000, 2)] {
            let mut coarse = Histogram::<u64>::new_with_bounds(lowest, MAX_US, sigfig).unwrap();
            for v in [lowest, 1500, 77_777, 3_000_000, 1_234_567_890] {
                coarse.record_n(v, 3).unwrap();
            }
            let mut expected = new_histogram();
            expected.add(&coarse).unwrap();
            assert_eq!(decoded(&encoded(&coarse, true)).unwrap(), expected, "{lowest} {sigfig}");
        }
    }

    #[test]
    fn damaged_counts_are_errors() {
        let mut h = new_histogram();
        h.record(5).unwrap();
        let plain = encoded(&h, false);
        // Counts cut short: the header says more than there is.
        let mut cut = plain.clone();
        cut.truncate(plain.len() - 1);
        assert!(decoded(&cut).unwrap_err().contains("shorter"), "{:?}", decoded(&cut));
        // A count far past the last bucket: a zero run of 2^40 then 1.
        let mut far = plain[..40].to_vec();
        let mut payload = Vec::new();
        let mut n = ((1u64 << 40) << 1) - 1; // zigzag(-(2^40))
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            payload.push(if n == 0 { b } else { b | 0x80 });
            if n == 0 {
                break;
            }
        }
        payload.push(2); // zigzag(1)
        far[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
        far.extend(&payload);
        assert!(decoded(&far).unwrap_err().contains("beyond"));
        // A varint running off the end.
        let mut open = plain[..40].to_vec();
        open[4..8].copy_from_slice(&2u32.to_be_bytes());
        open.extend([0x80, 0x80]);
        assert!(decoded(&open).unwrap_err().contains("cut short"));
    }
}
