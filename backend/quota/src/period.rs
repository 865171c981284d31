//! Quota periods: the UTC calendar day and the UTC calendar month.
//!
//! A timestamp belongs to the day and month of its UTC date, so
//! 2025-01-31T23:59:59.999Z counts in January and 2025-02-01T00:00:00Z in
//! February. A period resets at the first instant of the next one: the next
//! UTC midnight, or 00:00 UTC on the first of the next month.

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

/// A quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Daily,
    Monthly,
}

impl Period {
    /// Both periods, daily first.
    pub const ALL: [Period; 2] = [Period::Daily, Period::Monthly];

    /// Returns the key of the period containing `at`: `2025-01-31` for a day,
    /// `2025-01` for a month. Keys of one period sort in time order.
    pub fn key(self, at: DateTime<Utc>) -> String {
        match self {
            Period::Daily => day_key(at),
            Period::Monthly => month_key(at),
        }
    }

    /// Returns the first instant of the period containing `at`.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Period::Daily => day_start(at),
            Period::Monthly => month_start(at),
        }
    }

    /// Returns the instant the period containing `at` ends and the next
    /// begins.
    pub fn reset_at(self, at: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Period::Daily => next_day_start(at),
            Period::Monthly => next_month_start(at),
        }
    }

    /// `daily` or `monthly`.
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Daily => "daily",
            Period::Monthly => "monthly",
        }
    }
}

/// Formats the UTC day key of `at`, such as `2025-01-31`. Written by hand
/// rather than with a `strftime` pattern, which chrono parses on every call,
/// because every check and every usage point computes keys.
pub fn day_key(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}-{:02}", at.year(), at.month(), at.day())
}

/// Formats the UTC month key of `at`, such as `2025-01`.
pub fn month_key(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// 00:00 UTC of the day containing `at`.
pub fn day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    midnight(at.date_naive())
}

/// 00:00 UTC on the first of the month containing `at`.
pub fn month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    midnight(first_of_month(at.date_naive()))
}

/// Returns the next UTC midnight after `at` (the daily reset).
pub fn next_day_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let tomorrow = at
        .date_naive()
        .checked_add_days(Days::new(1))
        .expect("a date before chrono's maximum year has a next day");
    midnight(tomorrow)
}

/// 00:00 UTC on the first of the month after `at` (the monthly reset).
pub fn next_month_start(at: DateTime<Utc>) -> DateTime<Utc> {
    let next = first_of_month(at.date_naive())
        .checked_add_months(Months::new(1))
        .expect("a date before chrono's maximum year has a next month");
    midnight(next)
}

fn first_of_month(date: NaiveDate) -> NaiveDate {
    date.with_day(1).expect("day 1 exists in every month")
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("test timestamps are RFC 3339")
            .with_timezone(&Utc)
    }

    #[test]
    fn keys_follow_utc_calendar() {
        let cases: &[(&str, &str, &str)] = &[
            ("2025-01-31T23:59:59.999Z", "2025-01-31", "2025-01"),
            ("2025-02-01T00:00:00Z", "2025-02-01", "2025-02"),
            ("2024-02-29T12:00:00Z", "2024-02-29", "2024-02"),
            ("2025-12-31T23:59:59.999999999Z", "2025-12-31", "2025-12"),
            ("2026-01-01T00:00:00Z", "2026-01-01", "2026-01"),
            // 23:30 in UTC-05:00 is already the next UTC day.
            ("2025-01-31T23:30:00-05:00", "2025-02-01", "2025-02"),
        ];
        for (timestamp, day, month) in cases {
            let instant = at(timestamp);
            assert_eq!(Period::Daily.key(instant), *day, "day of {timestamp}");
            assert_eq!(Period::Monthly.key(instant), *month, "month of {timestamp}");
        }
    }

    #[test]
    fn resets_are_next_period_starts() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "2025-01-31T23:59:59.999Z",
                "2025-02-01T00:00:00Z",
                "2025-02-01T00:00:00Z",
            ),
            (
                "2025-02-01T00:00:00Z",
                "2025-02-02T00:00:00Z",
                "2025-03-01T00:00:00Z",
            ),
            (
                "2024-02-28T10:00:00Z",
                "2024-02-29T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "2024-02-29T23:59:59Z",
                "2024-03-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "2025-02-28T23:59:59Z",
                "2025-03-01T00:00:00Z",
                "2025-03-01T00:00:00Z",
            ),
            (
                "2025-12-31T12:00:00Z",
                "2026-01-01T00:00:00Z",
                "2026-01-01T00:00:00Z",
            ),
            (
                "2025-06-15T00:00:00Z",
                "2025-06-16T00:00:00Z",
                "2025-07-01T00:00:00Z",
            ),
        ];
        for (timestamp, daily, monthly) in cases {
            let instant = at(timestamp);
            assert_eq!(
                Period::Daily.reset_at(instant),
                at(daily),
                "daily reset of {timestamp}"
            );
            assert_eq!(
                Period::Monthly.reset_at(instant),
                at(monthly),
                "monthly reset of {timestamp}"
            );
        }
    }

    #[test]
    fn starts_are_period_beginnings() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "2025-01-31T23:59:59.999Z",
                "2025-01-31T00:00:00Z",
                "2025-01-01T00:00:00Z",
            ),
            (
                "2025-02-01T00:00:00Z",
                "2025-02-01T00:00:00Z",
                "2025-02-01T00:00:00Z",
            ),
            (
                "2024-02-29T08:00:00Z",
                "2024-02-29T00:00:00Z",
                "2024-02-01T00:00:00Z",
            ),
        ];
        for (timestamp, daily, monthly) in cases {
            let instant = at(timestamp);
            assert_eq!(
                Period::Daily.start(instant),
                at(daily),
                "day start of {timestamp}"
            );
            assert_eq!(
                Period::Monthly.start(instant),
                at(monthly),
                "month start of {timestamp}"
            );
        }
    }

    proptest::proptest! {
        /// Keys stored before keys were written by hand used chrono's
        /// `%Y-%m-%d` and `%Y-%m`, so both forms must agree.
        #[test]
        fn keys_match_strftime(seconds in 0i64..253_402_300_799) {
            let at = DateTime::from_timestamp(seconds, 0).expect("in chrono's range");
            proptest::prop_assert_eq!(day_key(at), at.format("%Y-%m-%d").to_string());
            proptest::prop_assert_eq!(month_key(at), at.format("%Y-%m").to_string());
        }
    }

    #[test]
    fn february_length_depends_on_leap_year() {
        let leap = at("2024-02-01T00:00:00Z");
        let common = at("2025-02-01T00:00:00Z");
        assert_eq!((Period::Monthly.reset_at(leap) - leap).num_days(), 29);
        assert_eq!((Period::Monthly.reset_at(common) - common).num_days(), 28);
    }
}
