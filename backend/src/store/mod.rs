//! The quota store: policies, usage counters, unblocks and the audit log.
//!
//! [`Store`] is the one interface the HTTP handlers and the admin CLI use.
//! [`sqlite::SqliteStore`] implements it for `tollgate serve`; a DynamoDB
//! implementation for the AWS deployment must pass the same
//! [`suite`] of behaviour tests.
//!
//! Usage is kept as counters per user, UTC day, UTC month and token type,
//! so reading one user's totals is a keyed lookup whatever the history size.

pub mod sqlite;
pub mod suite;

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_protocol::check::PolicyKind;
use tollgate_quota::policy::policy_kind_name;
use tollgate_quota::{Policy, TokenType, TokenUsage, UnblockGrant};

use crate::alerts::AlertRecord;
use crate::alerts::deliver::{AlertDelivery, DeliveryOutcome};
use crate::ingest::batch::{BatchOutcome, GroupOutcome, ModelUsage, UsageBatch, UsageGroup};

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage engine reported an error.
    #[error("{operation} failed in the {backend} store")]
    Backend {
        backend: &'static str,
        operation: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A stored value could not be decoded.
    #[error("the store contains an invalid {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// The caller passed a value the store cannot keep.
    #[error("{0}")]
    InvalidInput(String),
    /// A [`PolicyChange::Expect`] precondition of a batch did not hold, so
    /// nothing of the batch was applied.
    #[error("{}", conflict_message(.changed))]
    Conflict {
        /// The keys whose stored policy differs from the expected one.
        changed: Vec<PolicyKey>,
    },
}

/// Builds the message of [`StoreError::Conflict`].
fn conflict_message(changed: &[PolicyKey]) -> String {
    let listed: Vec<String> = changed.iter().map(ToString::to_string).collect();
    match listed.as_slice() {
        [one] => format!(
            "the policy {one} changed after it was read, so nothing was applied; read the \
             current policies and try again"
        ),
        _ => format!(
            "the policies {} changed after they were read, so nothing was applied; read the \
             current policies and try again",
            listed.join(", ")
        ),
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The key of a policy: its kind and normalised identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PolicyKey {
    pub kind: PolicyKind,
    pub identifier: String,
}

impl PolicyKey {
    pub fn new(kind: PolicyKind, identifier: impl Into<String>) -> Self {
        Self {
            kind,
            identifier: identifier.into(),
        }
    }

    /// Returns the key of `policy`.
    pub fn of(policy: &Policy) -> Self {
        Self::new(policy.kind, policy.identifier.clone())
    }

    /// `user`, `group` or `default`.
    pub fn kind_name(&self) -> &'static str {
        policy_kind_name(self.kind)
    }
}

impl fmt::Display for PolicyKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{}:{}", self.kind_name(), self.identifier)
    }
}

/// Tokens of one type counted at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageEvent {
    /// The normalised identity the tokens belong to.
    pub user: String,
    /// When the tokens were used; decides the UTC day and month they count in.
    pub at: DateTime<Utc>,
    pub token_type: TokenType,
    pub tokens: u64,
    /// A key that identifies this event across retries. An event whose key
    /// was already recorded is ignored, so a batch delivered twice counts
    /// once. `None` records unconditionally.
    pub dedup_key: Option<String>,
}

/// One user's recorded usage, by token type, in the UTC day and the UTC
/// month containing an instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageTotals {
    pub daily: TokenUsage,
    pub monthly: TokenUsage,
}

/// An audit log entry: who changed what, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// A local user name or an admin identity.
    pub actor: String,
    /// A dotted verb such as `policy.update` or `usage.record`.
    pub action: String,
    /// The object the action changed, such as `user:ann@example.com`.
    pub target: String,
    /// Action-specific detail, such as the new policy.
    pub detail: serde_json::Value,
}

/// One change of a batch applied by [`Store::apply_policy_changes`].
/// Unblocks are changed in the same batches, so that they are written
/// together with their audit entries.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicyChange {
    /// A precondition: the policy with `key` must be stored exactly as
    /// `current` (every field equal), or be absent when `current` is
    /// `None`. Every precondition of a batch is checked against the store
    /// as it was before the batch, inside the same transaction as the
    /// writes. If any fails, nothing is applied and the batch returns
    /// [`StoreError::Conflict`] naming each key that differs. A DynamoDB
    /// store maps it to a condition on the write of the same item, or to a
    /// `ConditionCheck` of a `TransactWriteItems` call.
    Expect {
        key: PolicyKey,
        current: Option<Policy>,
    },
    /// Insert or replace the policy with the same key.
    Put(Policy),
    /// Delete the policy with this key, if it exists.
    Delete(PolicyKey),
    /// Insert or replace the unblock of `grant.identity`.
    PutUnblock(UnblockGrant),
    /// Delete the unblock of this user, if one exists.
    DeleteUnblock(String),
}

/// Everything a quota check reads about one user, from
/// [`Store::check_snapshot`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckSnapshot {
    /// The policies that exist among the requested keys.
    pub policies: Vec<Policy>,
    pub usage: UsageTotals,
    /// The user's latest unblock, expired or not.
    pub unblock: Option<UnblockGrant>,
}

/// Persistent state of the quota backend.
///
/// Implementations must be safe to share between request handlers. Every
/// method is one round trip, and [`Store::usage`] must be a keyed lookup.
#[async_trait]
pub trait Store: Send + Sync {
    /// Checks that the store responds, for the health endpoint.
    async fn ping(&self) -> StoreResult<()>;

    /// Inserts or replaces the policy with the same key.
    async fn put_policy(&self, policy: &Policy) -> StoreResult<()>;

    /// Returns the policy with `key`, if any.
    async fn policy(&self, key: &PolicyKey) -> StoreResult<Option<Policy>>;

    /// Returns the policies that exist among `keys`, in no particular order.
    /// The check uses it to load a user's, their groups' and the default
    /// policy in one call.
    async fn policies(&self, keys: &[PolicyKey]) -> StoreResult<Vec<Policy>>;

    /// Returns every policy, ordered by kind (user, group, default) and id.
    async fn list_policies(&self) -> StoreResult<Vec<Policy>>;

    /// Counts the policies, enabled or not.
    async fn count_policies(&self) -> StoreResult<u64>;

    /// Deletes the policy with `key`; returns whether it existed.
    async fn delete_policy(&self, key: &PolicyKey) -> StoreResult<bool>;

    /// Adds `event.tokens` to the user's counters for the event's UTC day and
    /// month. Returns `false`, changing nothing, when `event.dedup_key` was
    /// already recorded.
    async fn add_usage(&self, event: &UsageEvent) -> StoreResult<bool>;

    /// Returns the user's totals for the UTC day and month containing `at`.
    async fn usage(&self, user: &str, at: DateTime<Utc>) -> StoreResult<UsageTotals>;

    /// Inserts or replaces the unblock of `grant.identity`.
    async fn put_unblock(&self, grant: &UnblockGrant) -> StoreResult<()>;

    /// Returns the user's latest unblock, expired or not; the quota decision
    /// checks expiry.
    async fn unblock(&self, user: &str) -> StoreResult<Option<UnblockGrant>>;

    /// Deletes the user's unblock; returns whether one existed.
    async fn delete_unblock(&self, user: &str) -> StoreResult<bool>;

    /// Appends an entry to the audit log.
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;

    /// Returns up to `limit` audit entries, newest first.
    async fn read_audit(&self, limit: usize) -> StoreResult<Vec<AuditEntry>>;

    /// Records the usage points of one OTLP export request in one
    /// transaction: each point whose identity is new adds its tokens to the
    /// counters of its end time's UTC day and month and to the per-model
    /// totals; a cumulative point adds its increase over the series' last
    /// recorded point. With `batch.alerting`, it inserts the alerts the
    /// batch newly crossed in the same transaction, each once per store.
    async fn record_usage_points(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome>;

    /// Records the batches of several export requests in one transaction,
    /// each as [`Store::record_usage_points`] would, in order, and deletes
    /// up to `group.prune.limit` identities of points that ended before
    /// `group.prune.before`. A batch that fails changes nothing and gets its
    /// own error; the outer error means nothing of the group was recorded.
    /// The ingest writer uses it to pay one commit for many requests.
    async fn record_usage_group(&self, group: UsageGroup) -> StoreResult<GroupOutcome>;

    /// Returns the user's per-model totals for the UTC day containing `at`,
    /// including token types that do not count, ordered by model and type.
    async fn model_usage(&self, user: &str, at: DateTime<Utc>) -> StoreResult<Vec<ModelUsage>>;

    /// Returns the raised alerts of `user`, or of everyone, oldest first.
    async fn alerts(&self, user: Option<&str>) -> StoreResult<Vec<AlertRecord>>;

    /// Claims up to `limit` queued webhook alerts due at `now`, reserving
    /// them until `lease_until`.
    async fn claim_alert_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<AlertDelivery>>;

    /// Records the outcome of a delivery attempt of a claimed alert.
    async fn finish_alert_delivery(&self, id: i64, outcome: &DeliveryOutcome) -> StoreResult<()>;

    /// Applies `changes` in order and appends `audit`, all in one
    /// transaction: either every change and entry is stored or none is.
    /// The admin CLI's import and delete use it so that a failure half-way
    /// leaves the policies as they were. A failed [`PolicyChange::Expect`]
    /// returns [`StoreError::Conflict`] and applies nothing.
    async fn apply_policy_changes(
        &self,
        changes: &[PolicyChange],
        audit: &[AuditEntry],
    ) -> StoreResult<()>;

    /// Reads what a quota check needs in one round trip: the policies that
    /// exist among `keys`, the user's totals for the UTC day and month
    /// containing `at`, and the user's latest unblock. The default makes
    /// the three separate calls; stores override it to read in one go.
    async fn check_snapshot(
        &self,
        keys: &[PolicyKey],
        user: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<CheckSnapshot> {
        Ok(CheckSnapshot {
            policies: self.policies(keys).await?,
            usage: self.usage(user, at).await?,
            unblock: self.unblock(user).await?,
        })
    }
}
