//! A small UTC timestamp: whole seconds since the Unix epoch, written as RFC 3339
//! `YYYY-MM-DDTHH:MM:SSZ` (the `xs:dateTime` form that TS 24.109 Annex C uses for `lifetime` and
//! `currenttime`, facts-3gpp.md §2.3).
//!
//! The calendar arithmetic is the proleptic Gregorian calendar, written here from its definition
//! (a year is a leap year when divisible by 4, except centuries not divisible by 400). Leap seconds
//! are not represented, as in Unix time.

use std::fmt;
use std::str::FromStr;

/// Seconds in one day.
const DAY: u64 = 86_400;
/// First year that can be represented (the Unix epoch).
const MIN_YEAR: u64 = 1970;
/// Last year that can be represented (four digits in RFC 3339).
const MAX_YEAR: u64 = 9999;
/// Days before the first day of each month in a common year.
const DAYS_BEFORE_MONTH: [u64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];

/// Why a timestamp was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// The text is not of the form `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
    #[error("timestamp is not of the form YYYY-MM-DDTHH:MM:SSZ")]
    Syntax,
    /// A field is out of its range (month 13, 30 February, hour 24, second 60, …).
    #[error("timestamp names a date or time that does not exist")]
    InvalidDate,
    /// The instant lies before 1970-01-01T00:00:00Z or after 9999-12-31T23:59:59Z.
    #[error("timestamp lies outside 1970-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z")]
    OutOfRange,
}

/// An instant in UTC with one-second resolution, between 1970-01-01T00:00:00Z and
/// 9999-12-31T23:59:59Z inclusive.
///
/// ```
/// use keycast_provisioning::time::UtcTime;
///
/// let t: UtcTime = "2026-01-01T12:00:00Z".parse().unwrap();
/// assert_eq!(t.unix_seconds(), 1_767_268_800);
/// assert_eq!(t.to_string(), "2026-01-01T12:00:00Z");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UtcTime(u64);

impl UtcTime {
    /// 1970-01-01T00:00:00Z.
    pub const MIN: UtcTime = UtcTime(0);
    /// 9999-12-31T23:59:59Z.
    pub const MAX: UtcTime = UtcTime(253_402_300_799);

    /// The instant `secs` seconds after the Unix epoch.
    ///
    /// # Errors
    /// [`TimeError::OutOfRange`] after 9999-12-31T23:59:59Z.
    pub fn from_unix_seconds(secs: u64) -> Result<Self, TimeError> {
        if secs > Self::MAX.0 {
            return Err(TimeError::OutOfRange);
        }
        Ok(UtcTime(secs))
    }

    /// Seconds since the Unix epoch.
    #[must_use]
    pub fn unix_seconds(self) -> u64 {
        self.0
    }

    /// Builds an instant from calendar fields (UTC).
    ///
    /// # Errors
    /// [`TimeError::OutOfRange`] for years outside 1970..=9999, [`TimeError::InvalidDate`] for
    /// fields that do not name an existing date or time.
    pub fn from_fields(
        year: u64,
        month: u64,
        day: u64,
        hour: u64,
        minute: u64,
        second: u64,
    ) -> Result<Self, TimeError> {
        if !(MIN_YEAR..=MAX_YEAR).contains(&year) {
            return Err(TimeError::OutOfRange);
        }
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return Err(TimeError::InvalidDate);
        }
        if hour > 23 || minute > 59 || second > 59 {
            return Err(TimeError::InvalidDate);
        }
        let leap_day = u64::from(month > 2 && is_leap(year));
        // month is 1..=12 here, checked above.
        let days = days_before_year(year) + DAYS_BEFORE_MONTH[(month - 1) as usize] + leap_day + (day - 1);
        Ok(UtcTime(days * DAY + hour * 3600 + minute * 60 + second))
    }

    /// The calendar fields `(year, month, day, hour, minute, second)` of this instant.
    #[must_use]
    pub fn fields(self) -> (u64, u64, u64, u64, u64, u64) {
        let mut days = self.0 / DAY;
        let secs = self.0 % DAY;
        // days / 366 never overshoots the year; walk forward from there (a few steps at most).
        let mut year = MIN_YEAR + days / 366;
        while days_before_year(year + 1) <= days {
            year += 1;
        }
        days -= days_before_year(year);
        let mut month = 1;
        while month < 12 && days >= days_in_month(year, month) {
            days -= days_in_month(year, month);
            month += 1;
        }
        (year, month, days + 1, secs / 3600, secs % 3600 / 60, secs % 60)
    }

    /// Parses `YYYY-MM-DDTHH:MM:SSZ`. A fractional second (`.123`) is accepted and dropped, as
    /// `xs:dateTime` allows one; any offset other than `Z` is refused.
    ///
    /// # Errors
    /// See [`TimeError`].
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        let b = text.as_bytes();
        if b.len() < 20 || b.len() > 64 {
            return Err(TimeError::Syntax);
        }
        let num = |range: std::ops::Range<usize>| -> Result<u64, TimeError> {
            let digits = &b[range];
            if !digits.iter().all(u8::is_ascii_digit) {
                return Err(TimeError::Syntax);
            }
            Ok(digits.iter().fold(0, |acc, d| acc * 10 + u64::from(d - b'0')))
        };
        if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return Err(TimeError::Syntax);
        }
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let mut rest = &b[19..];
        if let Some(frac) = rest.strip_prefix(b".") {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return Err(TimeError::Syntax);
            }
            rest = &frac[n..];
        }
        if rest != b"Z" {
            return Err(TimeError::Syntax);
        }
        Self::from_fields(year, month, day, hour, minute, second)
    }
}

impl fmt::Display for UtcTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, mo, d, h, mi, s) = self.fields();
        write!(f, "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    }
}

impl FromStr for UtcTime {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(s)
    }
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Leap years in 1..=year-1 (year ≥ 1).
fn leaps_before(year: u64) -> u64 {
    let p = year - 1;
    p / 4 - p / 100 + p / 400
}

/// Days from 1970-01-01 to the first day of `year` (year ≥ 1970).
fn days_before_year(year: u64) -> u64 {
    365 * (year - MIN_YEAR) + leaps_before(year) - leaps_before(MIN_YEAR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn epoch_and_bounds() {
        assert_eq!(UtcTime::MIN.to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(UtcTime::MAX.to_string(), "9999-12-31T23:59:59Z");
        assert_eq!("9999-12-31T23:59:59Z".parse::<UtcTime>(), Ok(UtcTime::MAX));
        assert_eq!("1970-01-01T00:00:00Z".parse::<UtcTime>(), Ok(UtcTime::MIN));
        assert_eq!(UtcTime::from_unix_seconds(UtcTime::MAX.0 + 1), Err(TimeError::OutOfRange));
    }

    #[test]
    fn known_instants() {
        // Values checked with `date -u -d @N`.
        for (text, secs) in [
            ("2000-03-01T00:00:00Z", 951_868_800),
            ("2001-09-09T01:46:40Z", 1_000_000_000),
            ("2026-01-01T12:00:00Z", 1_767_268_800),
            ("2025-12-31T12:00:00Z", 1_767_182_400),
            ("2038-01-19T03:14:07Z", 2_147_483_647),
        ] {
            let t: UtcTime = text.parse().unwrap();
            assert_eq!(t.unix_seconds(), secs, "{text}");
            assert_eq!(t.to_string(), text);
        }
    }

    #[test]
    fn leap_years() {
        assert!("2000-02-29T00:00:00Z".parse::<UtcTime>().is_ok());
        assert!("2024-02-29T23:59:59Z".parse::<UtcTime>().is_ok());
        assert_eq!("1900-02-29T00:00:00Z".parse::<UtcTime>(), Err(TimeError::OutOfRange));
        assert_eq!("2100-02-29T00:00:00Z".parse::<UtcTime>(), Err(TimeError::InvalidDate));
        assert_eq!("2023-02-29T00:00:00Z".parse::<UtcTime>(), Err(TimeError::InvalidDate));
        let feb29: UtcTime = "2024-02-29T00:00:00Z".parse().unwrap();
        let mar1: UtcTime = "2024-03-01T00:00:00Z".parse().unwrap();
        assert_eq!(mar1.unix_seconds() - feb29.unix_seconds(), DAY);
        let d2100: UtcTime = "2100-03-01T00:00:00Z".parse().unwrap();
        let f2100: UtcTime = "2100-02-28T00:00:00Z".parse().unwrap();
        assert_eq!(d2100.unix_seconds() - f2100.unix_seconds(), DAY);
    }

    #[test]
    fn fractions_are_dropped() {
        let t: UtcTime = "2026-01-01T12:00:00.999Z".parse().unwrap();
        assert_eq!(t.to_string(), "2026-01-01T12:00:00Z");
    }

    #[test]
    fn rejects_bad_forms() {
        for bad in [
            "",
            "2026-01-01T12:00:00",
            "2026-01-01T12:00:00+00:00",
            "2026-01-01 12:00:00Z",
            "2026-01-01t12:00:00Z",
            "2026-1-01T12:00:00Z",
            "2026-01-01T12:00:00.Z",
            "2026-01-01T12:00:00ZZ",
            "+026-01-01T12:00:00Z",
            "2026-01-01T12:00:0٣Z",
        ] {
            assert_eq!(bad.parse::<UtcTime>(), Err(TimeError::Syntax), "{bad:?}");
        }
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01T00:60:00Z",
            "2016-12-31T23:59:60Z",
        ] {
            assert_eq!(bad.parse::<UtcTime>(), Err(TimeError::InvalidDate), "{bad:?}");
        }
        assert_eq!("1969-12-31T23:59:59Z".parse::<UtcTime>(), Err(TimeError::OutOfRange));
    }

    proptest! {
        #[test]
        fn seconds_round_trip(secs in 0..=UtcTime::MAX.0) {
            let t = UtcTime::from_unix_seconds(secs).unwrap();
            prop_assert_eq!(t.to_string().parse::<UtcTime>(), Ok(t));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<UtcTime>();
        }
    }
}
