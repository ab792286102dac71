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
    let err = || TimestampError {
        value: value.to_owned(),
    };
    let trimmed = value.trim();
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
    ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
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
