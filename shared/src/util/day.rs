use std::fmt;

use time::{Date, Duration, OffsetDateTime};

use super::InputError;

const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

/// A UTC calendar day, written `YYYY-MM-DD`: what usage is counted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Day(Date);

impl Day {
    /// `field` names the input in the error.
    pub fn parse(field: &str, value: &str) -> Result<Self, InputError> {
        Date::parse(value, FORMAT).map(Self).map_err(|_| {
            InputError::Invalid(format!("{field}: a date written YYYY-MM-DD, got `{value}`"))
        })
    }

    /// The UTC day of an epoch-seconds instant.
    pub fn of(secs: f64) -> Self {
        let at =
            OffsetDateTime::from_unix_timestamp(secs as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self(at.date())
    }

    pub fn today() -> Self {
        Self::of(super::now_secs())
    }

    /// `days` earlier; the earliest representable day at worst.
    pub fn minus_days(self, days: u32) -> Self {
        Self(self.0.saturating_sub(Duration::days(i64::from(days))))
    }

    /// Days from `self` to `later`, counting both.
    pub fn span_to(self, later: Self) -> i64 {
        (later.0 - self.0).whole_days() + 1
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.format(FORMAT).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_parse_print_and_count() {
        let day = Day::parse("from", "2026-12-04").unwrap();
        assert_eq!(day.to_string(), "2026-12-04");
        assert_eq!(Day::of(1_796_342_400.5).to_string(), "2026-12-04");
        assert_eq!(day.minus_days(4).to_string(), "2026-11-30");
        assert_eq!(day.minus_days(4).span_to(day), 5);
        let error = Day::parse("from", "2026-13-01").unwrap_err();
        assert!(error.to_string().starts_with("from: a date"), "{error}");
        assert!(Day::parse("to", "yesterday").is_err());
    }
}
