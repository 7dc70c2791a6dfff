//! The timestamp format of every results file: ISO 8601 UTC with
//! milliseconds (`2026-11-23T04:24:23.013Z`), converted with the era-based
//! civil-date method described by Howard Hinnant ("chrono-Compatible
//! Low-Level Date Algorithms"), so no calendar crate is needed.

/// Seconds since the Unix epoch as ISO 8601 UTC with milliseconds.
pub fn iso8601(unix_s: f64) -> String {
    let ms_total = (unix_s * 1000.0).round() as i64;
    let (secs, ms) = (ms_total.div_euclid(1000), ms_total.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z", sod / 3600, sod % 3600 / 60, sod % 60)
}

/// An ISO 8601 UTC timestamp as CSV files carry it: without its `Z`
/// (`2026-11-23T04:24:23.013`, UTC as the README says). LibreOffice reads
/// that as a date-time with its default CSV import (measured: 7.4), while
/// with the `Z` it reads text, and so does it the space-separated form
/// unless "detect special numbers" is on. Any other text is returned as it
/// is.
pub fn spreadsheet_time(iso: &str) -> String {
    match iso.strip_suffix('Z') {
        Some(local) if local.contains('T') => local.to_string(),
        _ => iso.to_string(),
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS(.fff)Z` back into seconds since the epoch;
/// without the `Z` (as CSV files carry it, [`spreadsheet_time`]) it is
/// UTC all the same.
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut t = time.split(':').map(|p| p.parse::<f64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_utc_timestamps() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(spreadsheet_time("2026-11-23T04:24:23.013Z"), "2026-11-23T04:24:23.013");
        assert_eq!(spreadsheet_time("not a time"), "not a time");
        let csv = spreadsheet_time("2026-11-23T04:24:23.013Z");
        assert_eq!(parse_iso8601(&csv), parse_iso8601("2026-11-23T04:24:23.013Z"), "CSV times read back");
        assert_eq!(iso8601(951_782_400.5), "2000-02-29T00:00:00.500Z");
        assert_eq!(iso8601(1_795_406_400.0), "2026-11-23T04:00:00.000Z");
        for s in ["2026-11-23T04:24:23.013Z", "2000-02-29T23:59:59.999Z", "1969-12-31T23:59:59.000Z"] {
            assert_eq!(iso8601(parse_iso8601(s).unwrap()), s);
        }
        assert_eq!(parse_iso8601("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_iso8601("yesterday"), None);
    }
}

/// Parses a duration as people write it: seconds as a plain number (`20`,
/// `0.5`) or with a unit (`250ms`, `20s`, `5m`, `2h`). The error says, in
/// words, what was expected.
pub fn parse_duration(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let split = t.find(char::is_alphabetic).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    // Sub-second units divide, so "50us" is exactly what 0.00005 parses to.
    let (times, per) = match unit.trim() {
        "" | "s" | "sec" => (1.0, 1.0),
        "ms" => (1.0, 1e3),
        "us" | "µs" => (1.0, 1e6),
        "m" | "min" => (60.0, 1.0),
        "h" => (3600.0, 1.0),
        _ => {
            return Err(format!(
                "{text:?} is not a duration: write seconds (20) or a duration like \"50us\", \"250ms\", \"20s\", \"5m\", \"2h\""
            ));
        }
    };
    match number.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v * times / per),
        _ => Err(format!(
            "{text:?} is not a duration: write seconds (20) or a duration like \"50us\", \"250ms\", \"20s\", \"5m\", \"2h\""
        )),
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_duration;

    #[test]
    fn durations_with_and_without_units() {
        assert_eq!(parse_duration("20"), Ok(20.0));
        assert_eq!(parse_duration("0.5"), Ok(0.5));
        assert_eq!(parse_duration("250ms"), Ok(0.25));
        assert_eq!(parse_duration("50us"), Ok(0.000_05));
        assert_eq!(parse_duration("50µs"), Ok(0.000_05));
        assert_eq!(parse_duration("20s"), Ok(20.0));
        assert_eq!(parse_duration("5m"), Ok(300.0));
        assert_eq!(parse_duration("2h"), Ok(7200.0));
        for bad in ["", "5 parsecs", "s", "NaN", "inf", "1e999"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }
}
