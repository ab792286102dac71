//! Timestamps as the platform writes them, all read as UTC.
//!
//! One table holds several formats at once: the backend writes `…T…ffffffZ`, the scheduler
//! wrote naive `…T…ffffff` (UTC without a zone), SQLite's own functions produce
//! `YYYY-MM-DD HH:MM:SS`. Comparing them as strings silently matched nothing on the
//! platform, so janitor parses every value into a [`Timestamp`] and compares instants.
//! A value that parses as none of them is a typed error: the row is reported, never guessed.

use chrono::{DateTime, NaiveDateTime, Utc};

/// An instant in UTC, with microsecond precision in everything janitor writes.
pub type Timestamp = DateTime<Utc>;

/// A timestamp that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unparseable timestamp {value:?}: expected ISO-8601 like 2026-05-01T15:30:00.000000Z, 2026-05-01T15:30:00 or 2026-05-01 15:30:00")]
pub struct TimestampError {
    pub value: String,
}

/// Parses every format found in the platform's tables.
///
/// Accepted: `YYYY-MM-DDTHH:MM:SS` with an optional fraction of 1–9 digits, followed by
/// nothing (naive, taken as UTC), `Z`, or a numeric offset such as `+00:00`; the `T` may be
/// a space (SQLite's `datetime()`).
pub fn parse_timestamp(value: &str) -> Result<Timestamp, TimestampError> {
    let trimmed = value.trim();
    match parse_common(trimmed.as_bytes()) {
        Some(ts) => Ok(ts),
        None => parse_general(value, trimmed),
    }
}

/// The shapes the platform writes, read without allocating (a sweep parses one per open
/// run): `YYYY-MM-DD[T ]HH:MM:SS`, an optional fraction (nanoseconds kept), then nothing, `Z`,
/// `±HH:MM` or `±HHMM`. `None` sends the value to [`parse_general`], which decides.
fn parse_common(b: &[u8]) -> Option<Timestamp> {
    fn digits(b: &[u8]) -> Option<u32> {
        b.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    }
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let date = chrono::NaiveDate::from_ymd_opt(
        i32::try_from(digits(&b[0..4])?).ok()?,
        digits(&b[5..7])?,
        digits(&b[8..10])?,
    )?;
    let (hour, minute, second) = (
        digits(&b[11..13])?,
        digits(&b[14..16])?,
        digits(&b[17..19])?,
    );
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix(b".") {
        // Like chrono: digits past the ninth are read and dropped.
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let kept = len.min(9);
        nanos = digits(&fraction[..kept])? * 10u32.pow(9 - kept as u32);
        rest = &fraction[len..];
    }
    let time = chrono::NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    let offset_secs = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let secs = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let utc = date.and_time(time).and_utc();
    utc.checked_sub_signed(chrono::TimeDelta::seconds(offset_secs))
}

/// Everything [`parse_common`] does not read, through chrono's format parser.
fn parse_general(value: &str, trimmed: &str) -> Result<Timestamp, TimestampError> {
    let err = || TimestampError {
        value: value.to_owned(),
    };
    // Normalise the date/time separator so one set of patterns covers both spellings.
    let mut text = String::with_capacity(trimmed.len() + 1);
    for (i, c) in trimmed.char_indices() {
        text.push(if i == 10 && (c == ' ' || c == 't') {
            'T'
        } else {
            c
        });
    }
    if text.len() < 19 || !text.is_char_boundary(19) {
        return Err(err());
    }
    let zone = &text[19..];
    let zone = zone.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    if zone.is_empty() {
        return NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|naive| naive.and_utc())
            .map_err(|_| err());
    }
    if zone.eq_ignore_ascii_case("z") {
        let base = &text[..text.len() - 1];
        return NaiveDateTime::parse_from_str(base, "%Y-%m-%dT%H:%M:%S%.f")
            .map(|naive| naive.and_utc())
            .map_err(|_| err());
    }
    DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%:z")
        .or_else(|_| DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|dt| dt.with_timezone(&Utc))
        .map_err(|_| err())
}

/// The one format janitor writes: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, like the platform's backend.
pub fn format_timestamp(ts: Timestamp) -> String {
    use chrono::{Datelike as _, Timelike as _};
    // Written digit by digit: chrono's `format` parses its pattern on every call, and a
    // worker formats several timestamps per job (about 4 % of its CPU in the catch-up).
    // Years outside 0–9999 and leap seconds take chrono's path, whose output this matches.
    let (year, nanos) = (ts.year(), ts.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
    }
    fn digits(out: &mut String, value: u32, width: u32) {
        for place in (0..width).rev() {
            out.push(char::from(b'0' + (value / 10u32.pow(place) % 10) as u8));
        }
    }
    let mut out = String::with_capacity(27);
    digits(&mut out, year.unsigned_abs(), 4);
    out.push('-');
    digits(&mut out, ts.month(), 2);
    out.push('-');
    digits(&mut out, ts.day(), 2);
    out.push('T');
    digits(&mut out, ts.hour(), 2);
    out.push(':');
    digits(&mut out, ts.minute(), 2);
    out.push(':');
    digits(&mut out, ts.second(), 2);
    out.push('.');
    digits(&mut out, nanos / 1_000, 6);
    out.push('Z');
    out
}

/// Reads a Redis score or `TIME` value (unix seconds, fractional) as an instant.
/// `None` for NaN, infinities and values outside chrono's range.
pub fn from_unix_seconds(secs: f64) -> Option<Timestamp> {
    if !secs.is_finite() {
        return None;
    }
    let micros = (secs * 1_000_000.0).round();
    if micros.abs() >= i64::MAX as f64 {
        return None;
    }
    DateTime::from_timestamp_micros(micros as i64)
}

/// Unix seconds with microsecond precision, as stored in slot scores.
pub fn to_unix_seconds(ts: Timestamp) -> f64 {
    ts.timestamp_micros() as f64 / 1_000_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32, s: u32, micros: u32) -> Timestamp {
        Utc.with_ymd_and_hms(2026, 5, 1, h, m, s).unwrap()
            + chrono::TimeDelta::microseconds(i64::from(micros))
    }

    #[test]
    fn parses_every_platform_format() {
        let cases = [
            ("2026-05-01T15:30:00.123456Z", at(15, 30, 0, 123_456)),
            ("2026-05-01T15:30:00.123456", at(15, 30, 0, 123_456)),
            ("2026-05-01T15:30:00", at(15, 30, 0, 0)),
            ("2026-05-01T15:30:00Z", at(15, 30, 0, 0)),
            ("2026-05-01T15:30:00+00:00", at(15, 30, 0, 0)),
            ("2026-05-01T15:30:00.5+00:00", at(15, 30, 0, 500_000)),
            ("2026-05-01T17:30:00+02:00", at(15, 30, 0, 0)),
            ("2026-05-01T15:30:00+0000", at(15, 30, 0, 0)),
            ("2026-05-01 15:30:00", at(15, 30, 0, 0)),
            ("2026-05-01 15:30:00.25", at(15, 30, 0, 250_000)),
            ("  2026-05-01T15:30:00Z ", at(15, 30, 0, 0)),
            ("2026-05-01t15:30:00z", at(15, 30, 0, 0)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_timestamp(text), Ok(want), "{text}");
        }
    }

    proptest::proptest! {
        /// The allocation-free reader and chrono's format parser agree on every value the
        /// fast one accepts, among odd fractions, offsets and impossible dates.
        #[test]
        fn fast_path_agrees_with_chrono(
            y in 1900u32..2200, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61,
            s in 0u32..61, frac in "(\\.[0-9]{1,10})?", sep in "[T t]",
            zone in "(|Z|z|[+-][0-2][0-9]:?[0-6][0-9])",
        ) {
            let text = format!("{y:04}-{mo:02}-{d:02}{sep}{h:02}:{mi:02}:{s:02}{frac}{zone}");
            // Where the fast reader declines (a leap second, say), the general one decides.
            if let Some(fast) = parse_common(text.as_bytes()) {
                proptest::prop_assert_eq!(Ok(fast), parse_general(&text, &text), "{}", text);
            }
        }

        /// The digit-by-digit writer prints what chrono's pattern prints, across the years
        /// it takes (and the ones it hands to chrono), with every sub-second value.
        #[test]
        fn format_agrees_with_chrono(micros in -70_000_000_000_000_000i64..300_000_000_000_000_000, nanos in 0u32..1000) {
            let ts = chrono::DateTime::from_timestamp_micros(micros).unwrap()
                + chrono::TimeDelta::nanoseconds(i64::from(nanos));
            let want = ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
            proptest::prop_assert_eq!(format_timestamp(ts), want);
        }
    }

    #[test]
    fn formats_the_edges_as_chrono_does() {
        let leap = chrono::NaiveDate::from_ymd_opt(2016, 12, 31)
            .unwrap()
            .and_hms_micro_opt(23, 59, 59, 1_500_000)
            .unwrap()
            .and_utc();
        for ts in [
            leap,
            Utc.with_ymd_and_hms(0, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            at(15, 30, 0, 123_456),
        ] {
            assert_eq!(
                format_timestamp(ts),
                ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
            );
        }
        assert_eq!(
            format_timestamp(at(15, 30, 0, 7)),
            "2026-05-01T15:30:00.000007Z"
        );
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for text in [
            "",
            "yesterday",
            "2026-05-01",
            "2026-13-01T00:00:00",
            "2026-05-01T25:00:00Z",
            "2026-05-01T15:30:00 PST",
            "1714577400",
            "2026-05-01T15:30:00éZ",
        ] {
            let err = parse_timestamp(text).unwrap_err();
            assert_eq!(err.value, text);
            assert!(err.to_string().contains("unparseable timestamp"));
        }
    }

    #[test]
    fn formats_like_the_backend_and_round_trips() {
        let ts = at(15, 30, 0, 42);
        let text = format_timestamp(ts);
        assert_eq!(text, "2026-05-01T15:30:00.000042Z");
        assert_eq!(parse_timestamp(&text), Ok(ts));
    }

    #[test]
    fn unix_seconds_round_trip() {
        let ts = at(15, 30, 0, 123_456);
        assert_eq!(from_unix_seconds(to_unix_seconds(ts)), Some(ts));
        assert_eq!(from_unix_seconds(f64::NAN), None);
        assert_eq!(from_unix_seconds(f64::INFINITY), None);
        assert_eq!(from_unix_seconds(1e300), None);
    }
}
