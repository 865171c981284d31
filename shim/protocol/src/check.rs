//! The answer of the backend's `GET /v1/check`.
//!
//! The backend builds it from the quota decision; the agent reads it to
//! decide whether to hand out credentials and forwards it to the shim inside
//! a refusal so the user sees the limit, the usage and the reset time.
//! Field names are snake_case JSON. The meaning of each [`Reason`] is part of
//! the public contract and is documented in `docs/check-api.md`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The whole answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckAnswer {
    /// Whether the user may get credentials now.
    pub allowed: bool,
    /// A stable machine-readable reason.
    pub reason: Reason,
    /// One or two sentences for the user.
    pub message: String,
    /// The normalised identity the answer is about.
    pub user: String,
    pub usage: Usage,
    /// The policy that applied, absent when no policy exists at all.
    #[serde(default)]
    pub policy: Option<PolicyRef>,
    /// An active temporary unblock, if any.
    #[serde(default)]
    pub unblock: Option<Unblock>,
    /// When the backend made the decision.
    pub checked_at: DateTime<Utc>,
}

/// The reason for a check's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Reason {
    /// Usage is below every limit.
    WithinLimits,
    /// No enabled policy applies to the user, so nothing limits them.
    NoPolicy,
    /// A limit in `alert` mode is reached; access continues.
    LimitAlert,
    /// The daily limit is reached and its enforcement is `block`.
    DailyLimitExceeded,
    /// The monthly limit is reached and its enforcement is `block`.
    MonthlyLimitExceeded,
    /// A limit in `block` mode is reached but an unblock is active.
    Unblocked,
    /// A reason this build does not know.
    #[serde(other)]
    Unknown,
}

/// Usage in both periods and what was counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub monthly: PeriodUsage,
    pub daily: PeriodUsage,
    /// The token types that count toward the limits, with their weights.
    pub counted_types: Vec<CountedType>,
}

/// A token type that counts, and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountedType {
    /// `input`, `output`, `cacheRead` or `cacheCreation`.
    #[serde(rename = "type")]
    pub token_type: String,
    pub weight: f64,
}

/// Usage against one period's limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodUsage {
    /// Counted tokens in the current period.
    pub tokens: u64,
    /// The limit, absent when the policy sets none for this period.
    #[serde(default)]
    pub limit: Option<u64>,
    /// `tokens / limit * 100`, absent without a limit.
    #[serde(default)]
    pub percent: Option<f64>,
    /// The limit's enforcement mode, absent without a limit.
    #[serde(default)]
    pub enforcement: Option<Enforcement>,
    /// The highest warning threshold (percent) reached, if any.
    #[serde(default)]
    pub warning_threshold: Option<u8>,
    /// When the period ends (UTC midnight of the next day or month).
    pub resets_at: DateTime<Utc>,
}

/// The action taken when a limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Enforcement {
    /// Notify, keep access.
    Alert,
    /// Refuse credentials until the period resets or an unblock.
    Block,
    #[serde(other)]
    Unknown,
}

/// The policy that applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    pub kind: PolicyKind,
    /// The user's identity, the group name, or `default`.
    pub id: String,
}

/// The three kinds of policy, in order of precedence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PolicyKind {
    User,
    Group,
    Default,
    #[serde(other)]
    Unknown,
}

/// A temporary unblock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unblock {
    pub expires_at: DateTime<Utc>,
    /// The grantor: a local user name or an admin identity.
    pub granted_by: String,
    pub granted_at: DateTime<Utc>,
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_reason_decodes() {
        let reason: Reason = serde_json::from_str("\"solar_flare\"").unwrap();
        assert_eq!(reason, Reason::Unknown);
        let reason: Reason = serde_json::from_str("\"monthly_limit_exceeded\"").unwrap();
        assert_eq!(reason, Reason::MonthlyLimitExceeded);
    }
}
