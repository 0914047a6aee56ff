//! Time as a value. The core never reads a clock: every instant it reasons about arrives as
//! a [`Timestamp`] inside an event or as a parameter.

use std::fmt;

/// Milliseconds since 1970-01-01T00:00:00Z (UTC, no leap seconds), as in the signed bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Timestamp(pub i64);

/// A span of time in milliseconds, as carried in configuration and findings.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Millis(pub i64);

impl Millis {
    pub const MINUTE: Millis = Millis(60_000);
    pub const HOUR: Millis = Millis(3_600_000);
}

impl Timestamp {
    pub fn plus(self, d: Millis) -> Timestamp {
        Timestamp(self.0.saturating_add(d.0))
    }

    pub fn minus(self, d: Millis) -> Timestamp {
        Timestamp(self.0.saturating_sub(d.0))
    }

    /// Builds a timestamp from a UTC calendar date and time of day.
    ///
    /// Returns `None` for an impossible date (month 13, February 30, hour 24, ...).
    pub fn from_utc(
        year: i64,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        millis: u32,
    ) -> Option<Timestamp> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        if hour > 23 || minute > 59 || second > 59 || millis > 999 {
            return None;
        }
        let days = days_from_civil(year, month, day);
        let secs =
            days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
        Some(Timestamp(secs * 1000 + i64::from(millis)))
    }

    /// A UTC day (`2026-03-01`, meaning its midnight) or [`Timestamp::parse_rfc3339`]'s
    /// form: how people type the ends of a period.
    pub fn parse_day_or_rfc3339(text: &str) -> Option<Timestamp> {
        if text.len() == 10 {
            Timestamp::parse_rfc3339(&format!("{text}T00:00:00Z"))
        } else {
            Timestamp::parse_rfc3339(text)
        }
    }

    /// Parses `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (UTC only: an offset would be a second way to
    /// write the same instant, and the ledger keeps one).
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        if b.len() < 20 || *b.last()? != b'Z' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let s = text.get(r)?;
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let millis = match b.len() {
            20 => 0,
            24 if b[19] == b'.' => num(20..23)?,
            _ => return None,
        };
        Timestamp::from_utc(
            i64::from(num(0..4)?),
            num(5..7)?,
            num(8..10)?,
            num(11..13)?,
            num(14..16)?,
            num(17..19)?,
            millis,
        )
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds only when they are not zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            (sod % 3600) / 60,
            sod % 60
        )?;
        if ms != 0 {
            write!(f, ".{ms:03}")?;
        }
        f.write_str("Z")
    }
}

impl fmt::Display for Millis {
    /// A human span: `4h 30m`, `12m`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_s = self.0.unsigned_abs() / 1000;
        let sign = if self.0 < 0 { "-" } else { "" };
        let (d, h, m, s) = (
            total_s / 86_400,
            (total_s % 86_400) / 3600,
            (total_s % 3600) / 60,
            total_s % 60,
        );
        if d > 0 {
            write!(f, "{sign}{d}d {h}h")
        } else if h > 0 {
            write!(f, "{sign}{h}h {m}m")
        } else if m > 0 {
            write!(f, "{sign}{m}m")
        } else {
            write!(f, "{sign}{s}s")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2026-02-28T23:59:59.001Z",
            "2024-02-29T12:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            let t = Timestamp::parse_rfc3339(text).unwrap();
            assert_eq!(t.to_string(), text);
        }
        assert_eq!(
            Timestamp::parse_rfc3339("1970-01-01T00:00:01Z"),
            Some(Timestamp(1000))
        );
    }

    #[test]
    fn rfc3339_rejects() {
        for text in [
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:00:00+01:00",
            "2026-01-01 00:00:00Z",
            "",
            "2026-01-01T00:00:00.1Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(text), None, "{text}");
        }
    }
}
