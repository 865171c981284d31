//! The Tollgate quota domain: policies, resolution, periods, counting,
//! unblocks and the check decision. Pure: no I/O and no clock reads, so
//! every function that depends on time takes `now`.
//!
//! # Rules
//!
//! - **Policies** ([`Policy`]) are of kind user (identifier: the normalised
//!   identity, see [`Identity`]), group (the group name as the identity provider sends it) or
//!   default (`default`). Each has a monthly token limit, an optional daily
//!   limit, an enforcement mode per limit (`alert` or `block`, honoured
//!   independently), warning thresholds (default 80 % and 90 %), an enabled
//!   flag and timestamps.
//! - **Precedence** ([`resolve`]): the enabled user policy, else the most
//!   restrictive enabled policy among the user's groups, else the enabled
//!   default, else none. "Most restrictive" compares whole policies:
//!   blocking at the monthly limit first, then the lower monthly limit, then
//!   having a daily limit, blocking at it, the lower daily limit, and the
//!   group name. The [`Explanation`] names the rule that chose the policy.
//! - **Derived daily limit** ([`derive_daily_limit`]): `monthly / 30 × (1 +
//!   burst%)`, burst 5..=25 (default 10), rounded down to a whole token.
//! - **Periods** ([`Period`]): the UTC calendar day and month, with keys
//!   `2025-01-31` and `2025-01` and resets at the next UTC midnight and the
//!   first of the next month.
//! - **Exceeded** means usage ≥ limit. The warning threshold reached is the
//!   highest threshold ≤ the usage percentage.
//! - **Counting** ([`CountingConfig`]): token types and weights are a
//!   deployment setting. The default counts input, output, cacheRead and
//!   cacheCreation with weight 1. Every answer lists what was counted.
//! - **Unblocks** ([`UnblockGrant`]): `24h` (default), `Nh`, `Nd` or
//!   `until-reset`, at most 7 days, active while `now < expires_at`.
//! - **Token amounts** ([`parse_amount`], [`format_amount`]): `500M`,
//!   `1.5B`, `15K`, `15k` or plain integers, written back in the shortest
//!   exact form.
//! - **Decision** ([`decide`]): see the [`decide`](mod@decide) module for
//!   the order of reasons.
//!
//! `docs/quotas.md` describes the same rules for administrators, with an
//! example answer for each reason.

pub mod alerts;
pub mod amount;
pub mod counting;
pub mod decide;
pub mod identity;
mod message;
pub mod period;
pub mod policy;
pub mod resolve;
pub mod unblock;

pub use alerts::{Crossing, Mark, TotalsChange, newly_crossed};
pub use amount::{AmountError, TokenAmount, display_amount, format_amount, parse_amount};
pub use counting::{CountingConfig, CountingError, TokenType, TokenUsage, Weight};
pub use decide::{CheckInput, Decision, decide, percent_of};
pub use identity::{
    EMAIL_CLAIM, GroupClaim, GroupClaimError, Identity, IdentityError, IdentityFormat,
    clean_group_names, normalize_email, normalize_identity, normalize_identity_as,
    parse_group_claim,
};
pub use period::{Period, day_key, month_key, next_day_start, next_month_start};
pub use policy::{
    BurstPercent, DEFAULT_IDENTIFIER, GroupNameProblem, MAX_GROUP_NAME_BYTES, Policy, PolicyError,
    WarningThresholds, derive_daily_limit, parse_enforcement, parse_policy_kind,
    validate_group_name,
};
pub use resolve::{Candidate, Explanation, Resolution, Rule, resolve};
pub use unblock::{MAX_UNBLOCK_HOURS, UnblockDuration, UnblockError, UnblockGrant};

/// The wire types this crate produces, re-exported so callers need not
/// depend on `tollgate-protocol` for them.
pub use tollgate_protocol::check::{
    CheckAnswer, Enforcement, PeriodUsage, PolicyKind, PolicyRef, Reason, Usage,
};
