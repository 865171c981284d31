//! The quota decision behind `GET /v1/check`.
//!
//! [`decide`] resolves the user's policy, weights the usage of the current
//! UTC day and month, compares each against its limit, and builds the
//! [`CheckAnswer`]:
//!
//! - No enabled policy applies: `no_policy`, allowed.
//! - A limit whose enforcement is `block` is reached (usage ≥ limit):
//!   `monthly_limit_exceeded` or `daily_limit_exceeded`, refused, unless an
//!   unblock is active, which gives `unblocked`, allowed. The daily and
//!   monthly enforcement modes are honoured independently, so a daily
//!   `block` refuses even when the monthly mode is `alert`. When both
//!   limits block, the answer reports the monthly one because it resets
//!   later, so its reset time is when access actually returns.
//! - Otherwise a limit in `alert` mode is reached: `limit_alert`, allowed.
//! - Otherwise `within_limits`, allowed.
//!
//! An enforcement mode this build does not know is treated as `block`, so
//! an unknown mode fails closed.
//!
//! Usage is whatever the caller recorded for the periods containing `now`,
//! independent of when the policy was created: a policy created mid-month
//! counts the whole month's usage.

use chrono::{DateTime, Utc};
use tollgate_protocol::check::{CheckAnswer, Enforcement, PeriodUsage, Reason, Usage};

use crate::counting::{CountingConfig, TokenUsage};
use crate::identity::Identity;
use crate::period::Period;
use crate::policy::Policy;
use crate::resolve::{Explanation, resolve};
use crate::unblock::UnblockGrant;

/// Everything a decision needs. Nothing here reads a clock or a store.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    pub identity: &'a Identity,
    /// The user's groups from the token's group claims.
    pub groups: &'a [String],
    /// All stored policies; resolution picks the one that applies.
    pub policies: &'a [Policy],
    /// Tokens per type recorded in the UTC day containing `now`.
    pub daily_usage: TokenUsage,
    /// Tokens per type recorded in the UTC month containing `now`.
    pub monthly_usage: TokenUsage,
    pub counting: &'a CountingConfig,
    /// The user's latest unblock, active or not. [`decide`] checks its
    /// expiry and that it names `identity`.
    pub unblock: Option<&'a UnblockGrant>,
    pub now: DateTime<Utc>,
}

/// The decision: the wire answer plus what admin commands and the
/// alerting code need beyond it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub answer: CheckAnswer,
    /// The reason the applied policy applies.
    pub explanation: Explanation,
    /// The applied policy, absent under `no_policy`.
    pub policy: Option<Policy>,
    /// The periods whose limit is reached, daily first.
    pub exceeded: Vec<Period>,
    /// The period whose `block` limit refuses access (or would, without the
    /// active unblock): monthly when both do.
    pub blocking: Option<Period>,
}

impl Decision {
    /// Returns the reset of the blocking limit, or the monthly reset when
    /// nothing blocks. This is the instant an `until-reset` unblock lasts until
    /// (before its 7-day cap).
    pub fn blocking_reset_at(&self) -> DateTime<Utc> {
        match self.blocking {
            Some(Period::Daily) => self.answer.usage.daily.resets_at,
            _ => self.answer.usage.monthly.resets_at,
        }
    }
}

/// Decides whether the user may get credentials now (see the module docs).
pub fn decide(input: &CheckInput<'_>) -> Decision {
    let resolution = resolve(input.identity, input.groups, input.policies);
    let policy = resolution.policy.as_ref();
    let now = input.now;

    let daily_tokens = input.counting.count(&input.daily_usage);
    let monthly_tokens = input.counting.count(&input.monthly_usage);
    let usage = Usage {
        daily: period_usage(policy, Period::Daily, daily_tokens, now),
        monthly: period_usage(policy, Period::Monthly, monthly_tokens, now),
        counted_types: input.counting.counted_types(),
    };

    let exceeded: Vec<Period> = Period::ALL
        .into_iter()
        .filter(|period| {
            let period_usage = usage_of(&usage, *period);
            period_usage
                .limit
                .is_some_and(|limit| period_usage.tokens >= limit)
        })
        .collect();
    // Period::ALL is daily first, so the last blocking period is monthly
    // whenever both block.
    let blocking = policy.and_then(|policy| {
        exceeded
            .iter()
            .copied()
            .rfind(|period| blocks(policy.enforcement(*period)))
    });
    // A grant for another user never applies, whatever the caller passed.
    let unblock = input
        .unblock
        .filter(|grant| grant.identity == *input.identity && grant.is_active(now));

    let reason = match (policy, blocking, unblock) {
        (None, _, _) => Reason::NoPolicy,
        (Some(_), Some(_), Some(_)) => Reason::Unblocked,
        (Some(_), Some(Period::Daily), None) => Reason::DailyLimitExceeded,
        (Some(_), Some(Period::Monthly), None) => Reason::MonthlyLimitExceeded,
        (Some(_), None, _) if !exceeded.is_empty() => Reason::LimitAlert,
        (Some(_), None, _) => Reason::WithinLimits,
    };
    let allowed = !matches!(
        reason,
        Reason::DailyLimitExceeded | Reason::MonthlyLimitExceeded
    );

    let message = crate::message::compose(&crate::message::MessageInput {
        reason,
        usage: &usage,
        exceeded: &exceeded,
        blocking,
        unblock,
    });

    Decision {
        answer: CheckAnswer {
            allowed,
            reason,
            message,
            user: input.identity.to_string(),
            usage,
            policy: policy.map(Policy::policy_ref),
            unblock: unblock.map(UnblockGrant::to_wire),
            checked_at: now,
        },
        explanation: resolution.explanation,
        policy: resolution.policy.clone(),
        exceeded,
        blocking,
    }
}

/// Reports whether an enforcement mode refuses access at the limit. Unknown modes
/// fail closed.
pub(crate) fn blocks(enforcement: Enforcement) -> bool {
    enforcement != Enforcement::Alert
}

pub(crate) fn usage_of(usage: &Usage, period: Period) -> &PeriodUsage {
    match period {
        Period::Daily => &usage.daily,
        Period::Monthly => &usage.monthly,
    }
}

fn period_usage(
    policy: Option<&Policy>,
    period: Period,
    tokens: u64,
    now: DateTime<Utc>,
) -> PeriodUsage {
    let limit = policy.and_then(|policy| policy.limit(period));
    PeriodUsage {
        tokens,
        limit,
        percent: limit.map(|limit| percent_of(tokens, limit)),
        enforcement: limit.and(policy.map(|policy| policy.enforcement(period))),
        warning_threshold: limit.and_then(|limit| {
            policy.and_then(|policy| policy.warning_thresholds.reached(tokens, limit))
        }),
        resets_at: period.reset_at(now),
    }
}

/// `tokens / limit × 100`, truncated to two decimals so a value below the
/// limit never shows as 100. A limit of 0 is 100 % used.
pub fn percent_of(tokens: u64, limit: u64) -> f64 {
    if limit == 0 {
        return 100.0;
    }
    let hundredths = u128::from(tokens) * 10_000 / u128::from(limit);
    // Precision loss above 2^53 hundredths of a percent is irrelevant here.
    hundredths as f64 / 100.0
}
