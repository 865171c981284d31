//! Temporary unblocks: an administrator lets one user past a `block` limit
//! for a while, recording who granted it, when and why.
//!
//! An unblock is active while `now < expires_at` and expires by itself.
//! Durations are `Nh` (hours), `Nd` (days) or `until-reset`, at most 7
//! days, with `24h` the default. `until-reset` lasts until the reset of the
//! limit that blocks (see [`crate::Decision::blocking_reset_at`]) but never
//! more than 7 days.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use tollgate_protocol::check;

use crate::identity::Identity;

/// The maximum unblock duration, in hours (7 days).
pub const MAX_UNBLOCK_HOURS: u32 = 7 * 24;

/// How long an unblock lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum UnblockDuration {
    /// A number of hours, 1..=168.
    Hours(u32),
    /// A number of days, 1..=7.
    Days(u32),
    /// Until the blocking limit's period resets, at most 7 days.
    UntilReset,
}

impl Default for UnblockDuration {
    fn default() -> Self {
        UnblockDuration::Hours(24)
    }
}

/// An invalid unblock duration or grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnblockError {
    #[error(
        "invalid unblock duration {0:?}; use hours such as 24h, days such as 3d, or until-reset, at most 7 days (168h)"
    )]
    InvalidDuration(String),
    #[error("unblock duration {0:?} is longer than the maximum of 7 days (168h); use 7d or less")]
    TooLong(String),
    #[error("an unblock needs a reason; say why the user may continue")]
    MissingReason,
    #[error("an unblock needs the name of who grants it")]
    MissingGrantor,
    #[error(
        "the reset at {reset_at} is not after now ({now}); nothing is left to unblock until-reset"
    )]
    ResetNotInFuture {
        reset_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
}

impl UnblockDuration {
    /// Computes the instant an unblock granted at `now` expires. `reset_at` is the
    /// reset of the blocking limit, used only by `until-reset`, which is
    /// capped at 7 days.
    pub fn expires_at(
        self,
        now: DateTime<Utc>,
        reset_at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, UnblockError> {
        let cap = now + TimeDelta::hours(i64::from(MAX_UNBLOCK_HOURS));
        match self {
            UnblockDuration::Hours(hours) => Ok(now + TimeDelta::hours(i64::from(hours))),
            UnblockDuration::Days(days) => Ok(now + TimeDelta::days(i64::from(days))),
            UnblockDuration::UntilReset if reset_at <= now => {
                Err(UnblockError::ResetNotInFuture { reset_at, now })
            }
            UnblockDuration::UntilReset => Ok(reset_at.min(cap)),
        }
    }
}

impl FromStr for UnblockDuration {
    type Err = UnblockError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim().to_ascii_lowercase();
        if trimmed == "until-reset" {
            return Ok(UnblockDuration::UntilReset);
        }
        let invalid = || UnblockError::InvalidDuration(text.to_owned());
        let (number, hours_per_unit): (&str, u32) = if let Some(number) = trimmed.strip_suffix('h')
        {
            (number, 1)
        } else if let Some(number) = trimmed.strip_suffix('d') {
            (number, 24)
        } else {
            return Err(invalid());
        };
        if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid());
        }
        let count: u32 = number
            .parse()
            .map_err(|_| UnblockError::TooLong(text.to_owned()))?;
        if count == 0 {
            return Err(invalid());
        }
        if count.saturating_mul(hours_per_unit) > MAX_UNBLOCK_HOURS {
            return Err(UnblockError::TooLong(text.to_owned()));
        }
        Ok(if hours_per_unit == 1 {
            UnblockDuration::Hours(count)
        } else {
            UnblockDuration::Days(count)
        })
    }
}

impl fmt::Display for UnblockDuration {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnblockDuration::Hours(hours) => write!(formatter, "{hours}h"),
            UnblockDuration::Days(days) => write!(formatter, "{days}d"),
            UnblockDuration::UntilReset => formatter.write_str("until-reset"),
        }
    }
}

impl TryFrom<String> for UnblockDuration {
    type Error = UnblockError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<UnblockDuration> for String {
    fn from(duration: UnblockDuration) -> Self {
        duration.to_string()
    }
}

/// A granted unblock for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnblockGrant {
    pub identity: Identity,
    /// The grantor: a local user name or an admin identity.
    pub granted_by: String,
    pub granted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub reason: String,
}

impl UnblockGrant {
    /// Grants an unblock at `now` for `duration`. `reset_at` is the reset of
    /// the blocking limit, used by `until-reset`. The grantor and reason are
    /// trimmed and must not be empty.
    pub fn new(
        identity: Identity,
        duration: UnblockDuration,
        granted_by: &str,
        reason: &str,
        now: DateTime<Utc>,
        reset_at: DateTime<Utc>,
    ) -> Result<Self, UnblockError> {
        let granted_by = granted_by.trim();
        if granted_by.is_empty() {
            return Err(UnblockError::MissingGrantor);
        }
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(UnblockError::MissingReason);
        }
        Ok(UnblockGrant {
            identity,
            granted_by: granted_by.to_owned(),
            granted_at: now,
            expires_at: duration.expires_at(now, reset_at)?,
            reason: reason.to_owned(),
        })
    }

    /// Reports whether the unblock applies at `now`: until just before it
    /// expires. An instant before `granted_at` counts as active too, so a
    /// grant written by a host whose clock runs ahead applies at once.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    /// Converts the grant to the unblock the check answer carries.
    pub fn to_wire(&self) -> check::Unblock {
        check::Unblock {
            expires_at: self.expires_at,
            granted_by: self.granted_by.clone(),
            granted_at: self.granted_at,
            reason: self.reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn alice() -> Identity {
        Identity::parse("alice@example.com").unwrap()
    }

    #[test]
    fn durations_parse() {
        let cases: &[(&str, UnblockDuration)] = &[
            ("24h", UnblockDuration::Hours(24)),
            ("1h", UnblockDuration::Hours(1)),
            ("168h", UnblockDuration::Hours(168)),
            ("7d", UnblockDuration::Days(7)),
            ("1d", UnblockDuration::Days(1)),
            (" 3D ", UnblockDuration::Days(3)),
            ("until-reset", UnblockDuration::UntilReset),
            ("Until-Reset", UnblockDuration::UntilReset),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<UnblockDuration>(), Ok(*expected), "{text:?}");
        }
        assert_eq!(UnblockDuration::default(), UnblockDuration::Hours(24));
    }

    #[test]
    fn invalid_durations_are_rejected() {
        let cases: &[(&str, bool)] = &[
            // (text, rejected as too long rather than malformed)
            ("", false),
            ("24", false),
            ("h", false),
            ("0h", false),
            ("0d", false),
            ("-1h", false),
            ("1.5h", false),
            ("2w", false),
            ("forever", false),
            ("until reset", false),
            ("169h", true),
            ("8d", true),
            ("99999999999h", true),
        ];
        for (text, too_long) in cases {
            let error = text.parse::<UnblockDuration>().expect_err(text);
            let expected = if *too_long {
                UnblockError::TooLong(text.to_string())
            } else {
                UnblockError::InvalidDuration(text.to_string())
            };
            assert_eq!(error, expected, "{text:?}");
            assert!(error.to_string().contains("7 days"), "{error}");
        }
    }

    #[test]
    fn durations_display_as_parsed() {
        for text in ["24h", "7d", "until-reset"] {
            let duration: UnblockDuration = text.parse().unwrap();
            assert_eq!(duration.to_string(), text);
        }
    }

    #[test]
    fn expiry_instants() {
        let now = at("2025-01-15T10:00:00Z");
        let cases: &[(UnblockDuration, &str, &str)] = &[
            (
                UnblockDuration::Hours(24),
                "2025-02-01T00:00:00Z",
                "2025-01-16T10:00:00Z",
            ),
            (
                UnblockDuration::Hours(2),
                "2025-02-01T00:00:00Z",
                "2025-01-15T12:00:00Z",
            ),
            (
                UnblockDuration::Days(7),
                "2025-02-01T00:00:00Z",
                "2025-01-22T10:00:00Z",
            ),
            // Daily reset, well within 7 days.
            (
                UnblockDuration::UntilReset,
                "2025-01-16T00:00:00Z",
                "2025-01-16T00:00:00Z",
            ),
            // Monthly reset 17 days away is capped at 7 days.
            (
                UnblockDuration::UntilReset,
                "2025-02-01T00:00:00Z",
                "2025-01-22T10:00:00Z",
            ),
        ];
        for (duration, reset_at, expected) in cases {
            let expires = duration.expires_at(now, at(reset_at)).unwrap();
            assert_eq!(expires, at(expected), "{duration} with reset {reset_at}");
        }
        assert!(matches!(
            UnblockDuration::UntilReset.expires_at(now, now),
            Err(UnblockError::ResetNotInFuture { .. })
        ));
    }

    #[test]
    fn grant_records_who_when_why() {
        let now = at("2025-01-15T10:00:00Z");
        let reset = at("2025-02-01T00:00:00Z");
        let grant = UnblockGrant::new(
            alice(),
            UnblockDuration::default(),
            " admin@example.com ",
            " release week ",
            now,
            reset,
        )
        .unwrap();
        assert_eq!(grant.granted_by, "admin@example.com");
        assert_eq!(grant.reason, "release week");
        assert_eq!(grant.granted_at, now);
        assert_eq!(grant.expires_at, at("2025-01-16T10:00:00Z"));
        let wire = grant.to_wire();
        assert_eq!(wire.expires_at, grant.expires_at);
        assert_eq!(wire.granted_by, "admin@example.com");

        let no_reason = UnblockGrant::new(
            alice(),
            UnblockDuration::default(),
            "admin",
            " ",
            now,
            reset,
        );
        assert_eq!(no_reason, Err(UnblockError::MissingReason));
        let no_grantor =
            UnblockGrant::new(alice(), UnblockDuration::default(), "", "why", now, reset);
        assert_eq!(no_grantor, Err(UnblockError::MissingGrantor));
    }

    #[test]
    fn grant_expires_by_itself() {
        let now = at("2025-01-15T10:00:00Z");
        let grant = UnblockGrant::new(
            alice(),
            UnblockDuration::Hours(1),
            "admin",
            "incident",
            now,
            at("2025-02-01T00:00:00Z"),
        )
        .unwrap();
        let cases: &[(&str, bool)] = &[
            ("2025-01-15T09:59:59Z", true),
            ("2025-01-15T10:00:00Z", true),
            ("2025-01-15T10:59:59.999Z", true),
            ("2025-01-15T11:00:00Z", false),
            ("2025-01-16T00:00:00Z", false),
        ];
        for (instant, active) in cases {
            assert_eq!(grant.is_active(at(instant)), *active, "at {instant}");
        }
    }
}
