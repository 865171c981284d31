//! The `Expiration` reported to AWS SDKs, and when cached STS credentials
//! are too close to expiry to hand out.
//!
//! botocore re-runs a credential_process on every call once fewer than 15
//! minutes remain (its advisory refresh window), and Claude Code at its
//! first request less than about 30 seconds before the reported expiry. So
//! the agent never hands out credentials with less than 16 minutes left,
//! and reports the next quota re-check plus 15 minutes: botocore then
//! returns at the re-check and Claude Code shortly before 15 minutes after
//! it. The reported time is computed from the last quota check, not from
//! the request time, so repeated calls inside botocore's window get the
//! same expiry instead of a nearer one each time.
//!
//! A failed run does not end an SDK's credentials at once. botocore keeps
//! them until 10 minutes before the expiry, 5 minutes after the re-check.
//! The JavaScript SDK keeps them until the expiry. `tests/tests/cadence.rs`
//! measures both. Claude Code fails the request whose run failed;
//! `tests/tests/claude_code.rs` measures its lead.

use chrono::{DateTime, Duration, Utc};

/// STS credentials with less than this left are renewed before hand-out.
pub const MIN_REMAINING: Duration = Duration::minutes(16);

/// The SDK refresh window added after the next quota re-check.
pub const SDK_REFRESH_WINDOW: Duration = Duration::minutes(15);

/// Whether credentials expiring at `sts_expiration` may still be handed out.
pub fn credentials_usable(sts_expiration: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    sts_expiration - now >= MIN_REMAINING
}

/// Returns the `Expiration` to report to SDKs.
///
/// It is `min(sts_expiration, next_recheck + 15 min)`, raised to at least
/// `now + 16 min` so botocore does not call again at once, but never later
/// than `sts_expiration`. `next_recheck` is `None` when the profile has no
/// quota check.
pub fn reported_expiration(
    sts_expiration: DateTime<Utc>,
    next_recheck: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    let wanted = match next_recheck {
        Some(recheck) => sts_expiration.min(recheck + SDK_REFRESH_WINDOW),
        None => sts_expiration,
    };
    wanted.max(now + MIN_REMAINING).min(sts_expiration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap() + Duration::minutes(minutes)
    }

    #[test]
    fn no_quota_check_reports_sts_expiry() {
        assert_eq!(reported_expiration(at(60), None, at(0)), at(60));
    }

    #[test]
    fn recheck_plus_window_when_sooner() {
        // Checked at 0 with a 30 minute re-check: SDKs come back at 30 + 15.
        assert_eq!(reported_expiration(at(60), Some(at(30)), at(0)), at(45));
    }

    #[test]
    fn sts_expiry_when_sooner_than_recheck() {
        assert_eq!(reported_expiration(at(40), Some(at(30)), at(0)), at(40));
    }

    #[test]
    fn stable_across_calls_in_window() {
        let first = reported_expiration(at(60), Some(at(30)), at(1));
        let later = reported_expiration(at(60), Some(at(30)), at(20));
        assert_eq!(first, later);
    }

    #[test]
    fn never_closer_than_sixteen_minutes() {
        // Re-check on every request (interval 0): the check was just made.
        assert_eq!(reported_expiration(at(60), Some(at(0)), at(0)), at(16));
        // An overdue re-check that failed open still reports 16 minutes.
        assert_eq!(reported_expiration(at(60), Some(at(-30)), at(10)), at(26));
    }

    #[test]
    fn floor_capped_by_sts_expiry() {
        assert_eq!(reported_expiration(at(10), Some(at(0)), at(0)), at(10));
        assert_eq!(reported_expiration(at(10), None, at(0)), at(10));
    }

    #[test]
    fn usable_threshold() {
        assert!(credentials_usable(at(16), at(0)));
        assert!(!credentials_usable(at(15), at(0)));
        assert!(!credentials_usable(at(-1), at(0)));
    }
}
