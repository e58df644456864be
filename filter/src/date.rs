//! Calendar dates of Unix times, both ways: SigV4 writes them, token answers
//! (STS, Google's IAM credentials) give expiry as one.

/// Proleptic Gregorian date `(year, month, day)` of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, restricted to non-negative days).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of
/// [`civil_from_days`]); `None` before 1970 or for an impossible month or day.
pub fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// `2026-12-07T15:01:23Z` for Unix seconds.
pub fn format_rfc3339(unix_secs: u64) -> String {
    let (y, m, d) = civil_from_days(unix_secs / 86_400);
    let s = unix_secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// Unix seconds of an RFC 3339 UTC time, `2026-12-07T15:01:23Z` (fractional
/// seconds are accepted and dropped; other offsets are refused).
pub fn parse_rfc3339_utc(s: &str) -> Option<u64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<u64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let rest = &s[19..];
    let rest = match rest.strip_prefix('.') {
        Some(frac) => frac.trim_start_matches(|c: char| c.is_ascii_digit()),
        None => rest,
    };
    if !matches!(rest, "Z" | "z") || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some(days_from_civil(y, mo, d)? * 86_400 + h * 3600 + mi * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip() {
        for days in [0, 59, 60, 365, 10_957, 11_016, 20_794, 100_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), Some(days), "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(1969, 12, 31), None);
        assert_eq!(days_from_civil(2026, 13, 1), None);
    }

    #[test]
    fn rfc3339() {
        assert_eq!(
            parse_rfc3339_utc("2015-08-30T12:36:00Z"),
            Some(1_440_938_160)
        );
        assert_eq!(
            parse_rfc3339_utc("2015-08-30T12:36:00.123456Z"),
            Some(1_440_938_160)
        );
        for bad in [
            "",
            "2015-08-30 12:36:00",
            "2015-08-30T12:36:00+01:00",
            "2015-08-30T25:36:00Z",
            "2015-08-30T12:36:00.Zx",
            "x015-08-30T12:36:00Z",
        ] {
            assert_eq!(parse_rfc3339_utc(bad), None, "{bad}");
        }
    }
}
