//! The behaviour suite every [`Store`] implementation must pass.
//!
//! Call [`run_all`] from a test with a new, empty store. It panics, naming
//! the failed case, on the first deviation. Cases use distinct users, so
//! they share the store; the policy cases delete what they create.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;
use tollgate_protocol::check::{Enforcement, PolicyKind};
use tollgate_quota::{CountingConfig, Identity, Policy, TokenType, TokenUsage, UnblockGrant};

use super::{AuditEntry, PolicyChange, PolicyKey, Store, StoreError, UsageEvent};
use crate::alerts::AlertRule;
use crate::alerts::deliver::DeliveryOutcome;
use crate::ingest::batch::{CumulativeValue, PointValue, UsageBatch, UsagePoint};

/// Runs every case against `store`, which must start empty.
pub async fn run_all(store: Arc<dyn Store>) {
    empty_store_has_nothing(store.as_ref()).await;
    usage_saturates_at_i64_max(store.as_ref()).await;
    policies_round_trip(store.as_ref()).await;
    policies_list_in_kind_order(store.as_ref()).await;
    policies_lookup_by_keys(store.as_ref()).await;
    usage_sums_per_type_and_period(store.as_ref()).await;
    usage_splits_at_utc_boundaries(store.as_ref()).await;
    usage_is_per_user(store.as_ref()).await;
    usage_dedup_key_counts_once(store.as_ref()).await;
    concurrent_usage_adds_are_not_lost(Arc::clone(&store)).await;
    unblocks_round_trip(store.as_ref()).await;
    audit_log_reads_newest_first(store.as_ref()).await;
    policy_changes_apply_together(store.as_ref()).await;
    policy_preconditions_guard_batch(store.as_ref()).await;
    check_snapshot_matches_single_reads(store.as_ref()).await;
    usage_points_count_once(store.as_ref()).await;
    cumulative_points_add_increases(store.as_ref()).await;
    usage_point_alerts_raise_once(store.as_ref()).await;
    alert_outbox_claims_and_finishes(store.as_ref()).await;
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("the suite's timestamps are valid RFC 3339")
        .with_timezone(&Utc)
}

fn policy(kind: PolicyKind, identifier: &str, monthly: u64) -> Policy {
    let created = Utc
        .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("a valid date");
    Policy::new(kind, identifier, monthly, created).expect("the suite's policies are valid")
}

fn event(user: &str, when: &str, token_type: TokenType, tokens: u64) -> UsageEvent {
    UsageEvent {
        user: user.to_owned(),
        at: at(when),
        token_type,
        tokens,
        dedup_key: None,
    }
}

/// Checks that a new store responds and contains no policy, usage, unblock
/// or audit entry.
pub async fn empty_store_has_nothing(store: &dyn Store) {
    store.ping().await.expect("empty store: ping");
    assert_eq!(
        store.count_policies().await.expect("count"),
        0,
        "empty store: policy count"
    );
    assert!(
        store.list_policies().await.expect("list").is_empty(),
        "empty store: list"
    );
    let key = PolicyKey::new(PolicyKind::Default, "default");
    assert!(
        store.policy(&key).await.expect("get").is_none(),
        "empty store: default policy"
    );
    let usage = store
        .usage("nobody@example.com", Utc::now())
        .await
        .expect("usage");
    assert_eq!(
        usage.daily,
        TokenUsage::default(),
        "empty store: daily usage"
    );
    assert_eq!(
        usage.monthly,
        TokenUsage::default(),
        "empty store: monthly usage"
    );
    assert!(
        store
            .unblock("nobody@example.com")
            .await
            .expect("unblock")
            .is_none(),
        "empty store: unblock"
    );
    assert!(
        store.read_audit(10).await.expect("audit").is_empty(),
        "empty store: audit log"
    );
}

/// Checks that a policy reads back equal, a put with the same key replaces
/// it, and a delete removes it once.
pub async fn policies_round_trip(store: &dyn Store) {
    let mut user = policy(PolicyKind::User, "round.trip@example.com", 500_000_000);
    user.daily_limit = Some(20_000_000);
    user.daily_enforcement = Enforcement::Block;
    user.warning_thresholds = "50,75,95".parse().expect("valid thresholds");
    let key = PolicyKey::of(&user);

    store.put_policy(&user).await.expect("put policy");
    assert_eq!(
        store.policy(&key).await.expect("get").as_ref(),
        Some(&user),
        "policy round trip"
    );
    assert_eq!(
        store.count_policies().await.expect("count"),
        1,
        "count after put"
    );

    let mut changed = user.clone();
    changed.monthly_limit = 1_000;
    changed.daily_limit = Some(500);
    changed.enabled = false;
    changed.monthly_enforcement = Enforcement::Alert;
    store.put_policy(&changed).await.expect("replace policy");
    assert_eq!(
        store.policy(&key).await.expect("get").as_ref(),
        Some(&changed),
        "policy replaced"
    );
    assert_eq!(
        store.count_policies().await.expect("count"),
        1,
        "replace keeps one policy"
    );

    assert!(
        store.delete_policy(&key).await.expect("delete"),
        "delete reports an existing policy"
    );
    assert!(
        !store.delete_policy(&key).await.expect("delete"),
        "second delete finds nothing"
    );
    assert!(
        store.policy(&key).await.expect("get").is_none(),
        "policy gone after delete"
    );
}

/// Checks that the list is ordered user, group, default, then by identifier.
pub async fn policies_list_in_kind_order(store: &dyn Store) {
    let policies = [
        policy(PolicyKind::Default, "default", 225_000_000),
        policy(PolicyKind::Group, "zeta", 10),
        policy(PolicyKind::User, "bob@example.com", 20),
        policy(PolicyKind::Group, "alpha", 30),
        policy(PolicyKind::User, "ann@example.com", 40),
    ];
    for policy in &policies {
        store.put_policy(policy).await.expect("put policy");
    }
    let listed: Vec<String> = store
        .list_policies()
        .await
        .expect("list")
        .iter()
        .map(|policy| PolicyKey::of(policy).to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "user:ann@example.com",
            "user:bob@example.com",
            "group:alpha",
            "group:zeta",
            "default:default"
        ],
        "list order"
    );
    for policy in &policies {
        store
            .delete_policy(&PolicyKey::of(policy))
            .await
            .expect("delete");
    }
    assert_eq!(
        store.count_policies().await.expect("count"),
        0,
        "list case cleans up"
    );
}

/// Checks that `policies(keys)` returns exactly the stored policies among
/// the keys.
pub async fn policies_lookup_by_keys(store: &dyn Store) {
    let group = policy(PolicyKind::Group, "Developers", 100);
    let default = policy(PolicyKind::Default, "default", 200);
    let other = policy(PolicyKind::Group, "ops", 300);
    for policy in [&group, &default, &other] {
        store.put_policy(policy).await.expect("put policy");
    }
    let keys = [
        PolicyKey::new(PolicyKind::User, "lookup@example.com"),
        PolicyKey::new(PolicyKind::Group, "Developers"),
        // Group names are case-sensitive.
        PolicyKey::new(PolicyKind::Group, "developers"),
        PolicyKey::new(PolicyKind::Default, "default"),
    ];
    let mut found: Vec<String> = store
        .policies(&keys)
        .await
        .expect("lookup")
        .iter()
        .map(|policy| PolicyKey::of(policy).to_string())
        .collect();
    found.sort();
    assert_eq!(
        found,
        ["default:default", "group:Developers"],
        "lookup by keys"
    );
    assert!(
        store.policies(&[]).await.expect("empty lookup").is_empty(),
        "lookup of no keys"
    );
    for policy in [&group, &default, &other] {
        store
            .delete_policy(&PolicyKey::of(policy))
            .await
            .expect("delete");
    }
}

/// Checks that adds to the same user, day and type sum, that types are kept
/// apart, and that the month sums every day in it.
pub async fn usage_sums_per_type_and_period(store: &dyn Store) {
    let user = "sums@example.com";
    let adds = [
        ("2026-03-10T08:00:00Z", TokenType::Input, 100),
        ("2026-03-10T09:00:00Z", TokenType::Input, 50),
        ("2026-03-10T09:30:00Z", TokenType::Output, 7),
        ("2026-03-10T23:59:59Z", TokenType::CacheRead, 1_000),
        ("2026-03-11T00:00:00Z", TokenType::Input, 3),
        ("2026-03-02T12:00:00Z", TokenType::CacheCreation, 40),
    ];
    for (when, token_type, tokens) in adds {
        assert!(
            store
                .add_usage(&event(user, when, token_type, tokens))
                .await
                .expect("add usage"),
            "an event without a dedup key is always recorded"
        );
    }

    let totals = store
        .usage(user, at("2026-03-10T12:00:00Z"))
        .await
        .expect("usage");
    let expected_day = TokenUsage {
        input: 150,
        output: 7,
        cache_read: 1_000,
        cache_creation: 0,
    };
    let expected_month = TokenUsage {
        input: 153,
        output: 7,
        cache_read: 1_000,
        cache_creation: 40,
    };
    assert_eq!(totals.daily, expected_day, "daily totals on 2026-03-10");
    assert_eq!(totals.monthly, expected_month, "monthly totals for 2026-03");

    let next_day = store
        .usage(user, at("2026-03-11T18:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(next_day.daily.input, 3, "daily input on 2026-03-11");
    assert_eq!(
        next_day.monthly, expected_month,
        "the month is the same on 2026-03-11"
    );

    let next_month = store
        .usage(user, at("2026-04-01T00:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(
        next_month.monthly,
        TokenUsage::default(),
        "April starts empty"
    );
}

/// Checks that a timestamp counts in its own UTC day and month: the last millisecond of
/// January and the first instant of February land apart, and an offset
/// timestamp is converted to UTC first.
pub async fn usage_splits_at_utc_boundaries(store: &dyn Store) {
    let user = "boundary@example.com";
    store
        .add_usage(&event(
            user,
            "2026-01-31T23:59:59.999Z",
            TokenType::Input,
            1,
        ))
        .await
        .expect("add");
    store
        .add_usage(&event(user, "2026-02-01T00:00:00Z", TokenType::Input, 10))
        .await
        .expect("add");
    // 2026-02-01T01:00:00+02:00 is 2026-01-31T23:00:00Z.
    store
        .add_usage(&event(
            user,
            "2026-02-01T01:00:00+02:00",
            TokenType::Input,
            100,
        ))
        .await
        .expect("add");

    let january = store
        .usage(user, at("2026-01-31T12:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(january.daily.input, 101, "January 31st daily");
    assert_eq!(january.monthly.input, 101, "January monthly");
    let february = store
        .usage(user, at("2026-02-01T00:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(february.daily.input, 10, "February 1st daily");
    assert_eq!(february.monthly.input, 10, "February monthly");
}

/// Checks that one user's usage is absent from another's totals.
pub async fn usage_is_per_user(store: &dyn Store) {
    store
        .add_usage(&event(
            "first@example.com",
            "2026-05-05T05:05:05Z",
            TokenType::Output,
            500,
        ))
        .await
        .expect("add");
    let other = store
        .usage("second@example.com", at("2026-05-05T06:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(
        other.daily,
        TokenUsage::default(),
        "another user's daily usage"
    );
    assert_eq!(
        other.monthly,
        TokenUsage::default(),
        "another user's monthly usage"
    );
}

/// Checks that an event whose dedup key was recorded before changes nothing.
pub async fn usage_dedup_key_counts_once(store: &dyn Store) {
    let user = "dedup@example.com";
    let mut first = event(user, "2026-06-01T10:00:00Z", TokenType::Input, 42);
    first.dedup_key = Some("batch-1/point-1".to_owned());
    assert!(
        store.add_usage(&first).await.expect("add"),
        "first delivery is recorded"
    );
    assert!(
        !store.add_usage(&first).await.expect("add"),
        "second delivery is a duplicate"
    );

    let mut second = first.clone();
    second.dedup_key = Some("batch-1/point-2".to_owned());
    assert!(
        store.add_usage(&second).await.expect("add"),
        "a new key is recorded"
    );

    let totals = store
        .usage(user, at("2026-06-01T11:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(totals.daily.input, 84, "two distinct events, one duplicate");
    assert_eq!(totals.monthly.input, 84, "monthly matches daily");
}

/// Checks that usage past i64::MAX stays at i64::MAX, the largest count
/// SQLite stores as an integer, and that reads keep working.
pub async fn usage_saturates_at_i64_max(store: &dyn Store) {
    let user = "saturated@example.com";
    let max = i64::MAX.unsigned_abs();
    for _ in 0..2 {
        store
            .add_usage(&event(user, "2026-07-01T10:00:00Z", TokenType::Input, max))
            .await
            .expect("an add past i64::MAX is accepted");
    }
    store
        .add_usage(&event(user, "2026-07-01T11:00:00Z", TokenType::Input, 1))
        .await
        .expect("an add to a saturated counter is accepted");
    store
        .add_usage(&event(user, "2026-07-01T11:00:00Z", TokenType::Output, 3))
        .await
        .expect("another token type is counted apart");

    let totals = store
        .usage(user, at("2026-07-01T12:00:00Z"))
        .await
        .expect("usage of a saturated counter reads");
    assert_eq!(totals.daily.input, max, "daily input saturates");
    assert_eq!(totals.monthly.input, max, "monthly input saturates");
    assert_eq!(totals.daily.output, 3, "daily output is exact");
    assert_eq!(totals.monthly.output, 3, "monthly output is exact");
}

/// Checks that concurrent adds from many tasks are all counted.
pub async fn concurrent_usage_adds_are_not_lost(store: Arc<dyn Store>) {
    let user = "concurrent@example.com";
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for index in 0..10 {
                    let mut added = event(user, "2026-07-07T07:00:00Z", TokenType::Output, 3);
                    added.dedup_key = Some(format!("concurrent-{task}-{index}"));
                    store.add_usage(&added).await.expect("add");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("an adding task panicked");
    }
    let totals = store
        .usage(user, at("2026-07-07T08:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(totals.daily.output, 16 * 10 * 3, "concurrent daily adds");
    assert_eq!(
        totals.monthly.output,
        16 * 10 * 3,
        "concurrent monthly adds"
    );
}

/// Checks that an unblock reads back equal even after it expires, a new one replaces
/// it, and a delete removes it once.
pub async fn unblocks_round_trip(store: &dyn Store) {
    let identity = Identity::parse("unblocked@example.com").expect("a valid identity");
    let granted_at = at("2026-08-01T10:00:00.123456Z");
    let grant = UnblockGrant {
        identity: identity.clone(),
        granted_by: "admin".to_owned(),
        granted_at,
        expires_at: granted_at + Duration::hours(24),
        reason: "release week".to_owned(),
    };
    store.put_unblock(&grant).await.expect("put unblock");
    assert_eq!(
        store
            .unblock(identity.as_str())
            .await
            .expect("read")
            .as_ref(),
        Some(&grant),
        "unblock round trip"
    );

    let replacement = UnblockGrant {
        expires_at: granted_at + Duration::hours(2),
        reason: "shorter".to_owned(),
        ..grant.clone()
    };
    store
        .put_unblock(&replacement)
        .await
        .expect("replace unblock");
    assert_eq!(
        store
            .unblock(identity.as_str())
            .await
            .expect("read")
            .as_ref(),
        Some(&replacement),
        "unblock replaced, expired or not"
    );
    assert!(
        store
            .unblock("other@example.com")
            .await
            .expect("read")
            .is_none(),
        "other user"
    );

    assert!(
        store
            .delete_unblock(identity.as_str())
            .await
            .expect("delete"),
        "delete finds it"
    );
    assert!(
        !store
            .delete_unblock(identity.as_str())
            .await
            .expect("delete"),
        "then nothing"
    );
    assert!(
        store
            .unblock(identity.as_str())
            .await
            .expect("read")
            .is_none(),
        "unblock gone"
    );
}

/// Checks that audit entries read back newest first, limited, with their
/// detail.
pub async fn audit_log_reads_newest_first(store: &dyn Store) {
    for index in 0..3 {
        store
            .append_audit(&AuditEntry {
                at: at("2026-09-09T09:00:00Z") + Duration::minutes(index),
                actor: "admin".to_owned(),
                action: "policy.put".to_owned(),
                target: format!("user:n{index}@example.com"),
                detail: json!({ "index": index }),
            })
            .await
            .expect("append audit");
    }
    let entries = store.read_audit(2).await.expect("read audit");
    assert_eq!(entries.len(), 2, "audit limit");
    assert_eq!(entries[0].target, "user:n2@example.com", "newest first");
    assert_eq!(
        entries[1].target, "user:n1@example.com",
        "then the one before"
    );
    assert_eq!(
        entries[0].detail,
        json!({ "index": 2 }),
        "audit detail round trip"
    );
    assert_eq!(
        entries[0].at,
        at("2026-09-09T09:02:00Z"),
        "audit time round trip"
    );
}

fn usage_point(id: u8, when: &str, type_name: &str, model: &str, value: PointValue) -> UsagePoint {
    UsagePoint {
        id: [id; 32],
        end: at(when),
        type_name: type_name.to_owned(),
        counted_as: type_name.parse().ok(),
        model: model.to_owned(),
        value,
    }
}

fn usage_batch(user: &str, points: Vec<UsagePoint>) -> UsageBatch {
    UsageBatch {
        user: user.to_owned(),
        points,
        alerting: None,
    }
}

/// Checks that usage points add to the day and month of their end time and
/// to the per-model totals, that a point seen before adds nothing, that two
/// points with equal values both count, and that an unknown type is kept
/// per model without counting.
pub async fn usage_points_count_once(store: &dyn Store) {
    let user = "points@example.com";
    let model = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
    let batch = usage_batch(
        user,
        vec![
            usage_point(
                1,
                "2025-01-31T23:59:59.999Z",
                "input",
                model,
                PointValue::Delta(37),
            ),
            usage_point(
                2,
                "2025-01-31T23:59:59.999Z",
                "output",
                model,
                PointValue::Delta(19),
            ),
            usage_point(
                3,
                "2025-01-31T12:00:00Z",
                "output",
                model,
                PointValue::Delta(19),
            ),
            usage_point(
                4,
                "2025-02-01T00:00:00Z",
                "cacheRead",
                model,
                PointValue::Delta(1234),
            ),
            usage_point(
                5,
                "2025-01-31T10:00:00Z",
                "futureType",
                model,
                PointValue::Delta(5),
            ),
        ],
    );
    let outcome = store
        .record_usage_points(&batch)
        .await
        .expect("record points");
    assert_eq!(outcome.recorded, 5, "points: recorded");
    assert_eq!(outcome.duplicates, 0, "points: duplicates");

    let again = store
        .record_usage_points(&batch)
        .await
        .expect("record again");
    assert_eq!(again.recorded, 0, "points: re-delivery records nothing");
    assert_eq!(again.duplicates, 5, "points: re-delivery is all duplicates");

    let january = store
        .usage(user, at("2025-01-15T00:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(january.monthly.input, 37, "points: January input");
    assert_eq!(
        january.monthly.output, 38,
        "points: equal values both count"
    );
    assert_eq!(
        january.monthly.cache_read, 0,
        "points: February point not in January"
    );
    let last_day = store
        .usage(user, at("2025-01-31T01:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(last_day.daily.output, 38, "points: daily output");
    let february = store
        .usage(user, at("2025-02-01T05:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(
        february.daily.cache_read, 1234,
        "points: February cache read"
    );
    assert_eq!(
        february.monthly.input, 0,
        "points: January point not in February"
    );

    let models = store
        .model_usage(user, at("2025-01-31T08:00:00Z"))
        .await
        .expect("model usage");
    let rows: Vec<(&str, &str, u64)> = models
        .iter()
        .map(|row| (row.model.as_str(), row.type_name.as_str(), row.tokens))
        .collect();
    assert_eq!(
        rows,
        [
            (model, "futureType", 5),
            (model, "input", 37),
            (model, "output", 38),
        ],
        "points: per-model totals keep unknown types"
    );
}

/// Checks that cumulative points add their increase, a drop restarts the
/// series, and an older point adds nothing.
pub async fn cumulative_points_add_increases(store: &dyn Store) {
    let user = "cumulative@example.com";
    let series = [9u8; 32];
    let point = |id: u8, minute: u64, total: u64| {
        let start = 1_767_225_600_000_000_000u64; // 2026-01-01T00:00:00Z
        let end = start + minute * 60_000_000_000;
        let when = DateTime::from_timestamp_nanos(i64::try_from(end).expect("fits")).to_rfc3339();
        usage_point(
            id,
            &when,
            "output",
            "m",
            PointValue::Cumulative(CumulativeValue {
                series,
                start_unix_nano: start,
                end_unix_nano: end,
                total,
            }),
        )
    };
    let batches = [
        vec![point(11, 1, 100), point(12, 2, 150)],
        // Re-sent, then older than the last recorded point.
        vec![point(12, 2, 150), point(13, 1, 120)],
        // A drop: the series restarted.
        vec![point(14, 3, 30)],
        vec![point(15, 4, 45)],
    ];
    for batch in batches {
        store
            .record_usage_points(&usage_batch(user, batch))
            .await
            .expect("record cumulative points");
    }
    let usage = store
        .usage(user, at("2026-01-01T12:00:00Z"))
        .await
        .expect("usage");
    assert_eq!(usage.daily.output, 150 + 30 + 15, "cumulative: increases");
}

/// Checks that a batch crossing a threshold raises its alert once, queued
/// for the webhook, and that later batches do not raise it again.
pub async fn usage_point_alerts_raise_once(store: &dyn Store) {
    let user = "alerted@example.com";
    let now = Utc::now();
    let when = now.to_rfc3339();
    let mut policy = policy(PolicyKind::User, user, 1_000_000);
    policy.daily_limit = Some(1000);
    policy.daily_enforcement = Enforcement::Block;
    let rule = AlertRule {
        policy,
        counting: CountingConfig::default(),
        now,
        queue_webhook: true,
    };
    let mut raised = Vec::new();
    for (id, tokens) in [(21u8, 500u64), (22, 350), (23, 10), (24, 300)] {
        let mut batch = usage_batch(
            user,
            vec![usage_point(
                id,
                &when,
                "input",
                "m",
                PointValue::Delta(tokens),
            )],
        );
        batch.alerting = Some(rule.clone());
        let outcome = store.record_usage_points(&batch).await.expect("record");
        raised.extend(outcome.alerts.into_iter().map(|alert| alert.dedup_key));
    }
    let day = now.format("%Y-%m-%d");
    assert_eq!(
        raised,
        [
            format!("{user}/daily/{day}/threshold-80"),
            format!("{user}/daily/{day}/threshold-90"),
            format!("{user}/daily/{day}/limit"),
        ],
        "alerts: each crossing raised once"
    );
    let stored = store.alerts(Some(user)).await.expect("alerts");
    assert_eq!(stored.len(), 3, "alerts: stored once each");
    let limit = stored
        .iter()
        .find(|alert| alert.threshold_percent.is_none())
        .expect("alerts: the limit alert is stored");
    assert_eq!(limit.tokens, 1160, "alerts: usage after the crossing batch");
    assert!(
        store
            .alerts(Some("nobody@example.com"))
            .await
            .expect("alerts")
            .is_empty(),
        "alerts: per user"
    );

    // The limit is raised to 2,000, so 1,160 tokens are 58 %. Crossing 80 %
    // of the new limit has the same key as before, so it raises nothing.
    let mut raised_limit = rule.clone();
    raised_limit.policy.daily_limit = Some(2000);
    let mut batch = usage_batch(
        user,
        vec![usage_point(25, &when, "input", "m", PointValue::Delta(500))],
    );
    batch.alerting = Some(raised_limit);
    let outcome = store.record_usage_points(&batch).await.expect("record");
    assert!(
        outcome.alerts.is_empty(),
        "alerts: a known key is not raised again: {:?}",
        outcome.alerts
    );
}

/// Checks the webhook outbox: claimed alerts are leased, a retry comes
/// back when due, and a delivered alert is not claimed again.
pub async fn alert_outbox_claims_and_finishes(store: &dyn Store) {
    let now = Utc::now() + Duration::seconds(1);
    let claimed = store
        .claim_alert_deliveries(now, now + Duration::seconds(60), 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 3, "outbox: the queued alerts are due");
    let leased = store
        .claim_alert_deliveries(now, now + Duration::seconds(60), 10)
        .await
        .expect("claim again");
    assert!(
        leased.is_empty(),
        "outbox: leased alerts are not claimed twice"
    );

    let retry_at = now + Duration::seconds(5);
    store
        .finish_alert_delivery(
            claimed[0].id,
            &DeliveryOutcome::Retry {
                error: "HTTP 500".to_owned(),
                at: retry_at,
            },
        )
        .await
        .expect("finish retry");
    for delivery in &claimed[1..] {
        store
            .finish_alert_delivery(delivery.id, &DeliveryOutcome::Delivered)
            .await
            .expect("finish delivered");
    }
    let later = now + Duration::seconds(120);
    let due = store
        .claim_alert_deliveries(later, later + Duration::seconds(60), 10)
        .await
        .expect("claim later");
    assert_eq!(due.len(), 1, "outbox: only the retried alert comes back");
    assert_eq!(due[0].id, claimed[0].id, "outbox: the retried alert");
    assert_eq!(due[0].attempts, 1, "outbox: the failure is counted");
    store
        .finish_alert_delivery(due[0].id, &DeliveryOutcome::Delivered)
        .await
        .expect("finish");
    let much_later = later + Duration::hours(2);
    assert!(
        store
            .claim_alert_deliveries(much_later, much_later, 10)
            .await
            .expect("claim")
            .is_empty(),
        "outbox: delivered alerts are done"
    );
}

/// Checks that a batch whose [`PolicyChange::Expect`] preconditions hold
/// applies, and that one whose precondition fails applies nothing, appends
/// no audit entry and names exactly the keys that differ.
pub async fn policy_preconditions_guard_batch(store: &dyn Store) {
    let stored = policy(PolicyKind::Group, "expect-stored", 1_000);
    let absent = policy(PolicyKind::Group, "expect-absent", 2_000);
    let audit = |target: &str| AuditEntry {
        at: at("2026-10-11T10:00:00Z"),
        actor: "importer".to_owned(),
        action: "policy.import".to_owned(),
        target: target.to_owned(),
        detail: json!({}),
    };
    store.put_policy(&stored).await.expect("put");

    let mut updated = stored.clone();
    updated.monthly_limit = 1_500;
    store
        .apply_policy_changes(
            &[
                PolicyChange::Expect {
                    key: PolicyKey::of(&stored),
                    current: Some(stored.clone()),
                },
                PolicyChange::Expect {
                    key: PolicyKey::of(&absent),
                    current: None,
                },
                PolicyChange::Put(updated.clone()),
                PolicyChange::Put(absent.clone()),
            ],
            &[audit("group:expect-stored")],
        )
        .await
        .expect("a batch whose preconditions hold applies");
    assert_eq!(
        store.policy(&PolicyKey::of(&stored)).await.expect("get"),
        Some(updated.clone()),
        "expect: update applied"
    );
    assert_eq!(
        store.policy(&PolicyKey::of(&absent)).await.expect("get"),
        Some(absent.clone()),
        "expect: create applied"
    );

    // Both expectations are stale now: one policy was updated and the
    // other created by the batch above. A third one still holds.
    let untouched = PolicyKey::new(PolicyKind::Group, "expect-never-stored");
    let mut replacement = stored.clone();
    replacement.monthly_limit = 9_000;
    let result = store
        .apply_policy_changes(
            &[
                PolicyChange::Expect {
                    key: PolicyKey::of(&stored),
                    current: Some(stored.clone()),
                },
                PolicyChange::Expect {
                    key: PolicyKey::of(&absent),
                    current: None,
                },
                PolicyChange::Expect {
                    key: untouched.clone(),
                    current: None,
                },
                PolicyChange::Put(replacement),
                PolicyChange::Delete(PolicyKey::of(&absent)),
            ],
            &[audit("group:expect-conflict")],
        )
        .await;
    match result {
        Err(StoreError::Conflict { changed }) => assert_eq!(
            changed,
            [PolicyKey::of(&stored), PolicyKey::of(&absent)],
            "expect: the conflict names each key that differs, and only those"
        ),
        other => panic!("expect: a stale precondition must fail with a conflict, got {other:?}"),
    }
    assert_eq!(
        store.policy(&PolicyKey::of(&stored)).await.expect("get"),
        Some(updated),
        "expect: a failed precondition replaces nothing"
    );
    assert_eq!(
        store.policy(&PolicyKey::of(&absent)).await.expect("get"),
        Some(absent.clone()),
        "expect: a failed precondition deletes nothing"
    );
    assert_eq!(
        store.read_audit(1).await.expect("read audit")[0].target,
        "group:expect-stored",
        "expect: a failed precondition appends no audit entry"
    );

    for key in [PolicyKey::of(&stored), PolicyKey::of(&absent)] {
        store.delete_policy(&key).await.expect("delete");
    }
}

/// Checks that a batch of policy changes applies puts and deletes in order
/// with its audit entries, and that a batch with an invalid policy stores
/// nothing at all.
pub async fn policy_changes_apply_together(store: &dyn Store) {
    let first = policy(PolicyKind::Group, "batch-one", 1_000);
    let second = policy(PolicyKind::Group, "batch-two", 2_000);
    let audit = |target: &str| AuditEntry {
        at: at("2026-10-10T10:00:00Z"),
        actor: "importer".to_owned(),
        action: "policy.import".to_owned(),
        target: target.to_owned(),
        detail: json!({}),
    };
    store
        .apply_policy_changes(
            &[
                PolicyChange::Put(first.clone()),
                PolicyChange::Put(second.clone()),
                PolicyChange::Delete(PolicyKey::of(&first)),
            ],
            &[audit("group:batch-one"), audit("group:batch-two")],
        )
        .await
        .expect("apply a batch");
    assert!(
        store
            .policy(&PolicyKey::of(&first))
            .await
            .expect("get")
            .is_none(),
        "batch: a later delete removes an earlier put"
    );
    assert_eq!(
        store.policy(&PolicyKey::of(&second)).await.expect("get"),
        Some(second.clone()),
        "batch: put stored"
    );
    let entries = store.read_audit(2).await.expect("read audit");
    let targets: Vec<&str> = entries.iter().map(|entry| entry.target.as_str()).collect();
    assert_eq!(
        targets,
        ["group:batch-two", "group:batch-one"],
        "batch: audit entries appended in order"
    );

    let mut invalid = policy(PolicyKind::Group, "batch-three", 10);
    invalid.daily_limit = Some(11);
    let result = store
        .apply_policy_changes(
            &[
                PolicyChange::Delete(PolicyKey::of(&second)),
                PolicyChange::Put(invalid.clone()),
            ],
            &[audit("group:batch-three")],
        )
        .await;
    assert!(result.is_err(), "batch: an invalid policy fails the batch");
    assert_eq!(
        store.policy(&PolicyKey::of(&second)).await.expect("get"),
        Some(second.clone()),
        "batch: a failed batch deletes nothing"
    );
    assert!(
        store
            .policy(&PolicyKey::of(&invalid))
            .await
            .expect("get")
            .is_none(),
        "batch: a failed batch stores nothing"
    );
    assert_eq!(
        store.read_audit(1).await.expect("read audit")[0].target,
        "group:batch-two",
        "batch: a failed batch appends no audit entry"
    );

    let grant = UnblockGrant {
        identity: Identity::parse("batch-unblock@example.com").expect("a valid identity"),
        granted_by: "admin".to_owned(),
        granted_at: at("2026-10-10T10:00:00Z"),
        expires_at: at("2026-10-11T10:00:00Z"),
        reason: "batch".to_owned(),
    };
    store
        .apply_policy_changes(
            &[
                PolicyChange::Delete(PolicyKey::of(&second)),
                PolicyChange::PutUnblock(grant.clone()),
            ],
            &[audit("user:batch-unblock@example.com")],
        )
        .await
        .expect("apply a batch with an unblock");
    assert_eq!(
        store
            .unblock("batch-unblock@example.com")
            .await
            .expect("read"),
        Some(grant),
        "batch: unblock stored"
    );
    store
        .apply_policy_changes(
            &[PolicyChange::DeleteUnblock(
                "batch-unblock@example.com".to_owned(),
            )],
            &[],
        )
        .await
        .expect("delete the unblock in a batch");
    assert!(
        store
            .unblock("batch-unblock@example.com")
            .await
            .expect("read")
            .is_none(),
        "batch: unblock deleted"
    );
}

/// Checks that a check snapshot returns what the single reads return: the
/// existing policies among the keys, the day's and month's usage and the
/// unblock, and nothing for an unknown user.
pub async fn check_snapshot_matches_single_reads(store: &dyn Store) {
    let user = "snapshot@example.com";
    let own = policy(PolicyKind::User, user, 9_000);
    let team = policy(PolicyKind::Group, "snapshot-team", 8_000);
    for policy in [&own, &team] {
        store.put_policy(policy).await.expect("put policy");
    }
    store
        .add_usage(&event(user, "2026-11-30T23:00:00Z", TokenType::Input, 5))
        .await
        .expect("add usage");
    store
        .add_usage(&event(user, "2026-11-29T10:00:00Z", TokenType::Output, 7))
        .await
        .expect("add usage");
    let granted_at = at("2026-11-30T20:00:00Z");
    let grant = UnblockGrant {
        identity: Identity::parse(user).expect("a valid identity"),
        granted_by: "admin".to_owned(),
        granted_at,
        expires_at: granted_at + Duration::hours(1),
        reason: "snapshot".to_owned(),
    };
    store.put_unblock(&grant).await.expect("put unblock");

    let keys = [
        PolicyKey::of(&own),
        PolicyKey::new(PolicyKind::Group, "snapshot-team"),
        PolicyKey::new(PolicyKind::Group, "snapshot-absent"),
    ];
    let when = at("2026-11-30T23:30:00Z");
    let snapshot = store
        .check_snapshot(&keys, user, when)
        .await
        .expect("read a snapshot");
    let mut policies = snapshot.policies.clone();
    policies.sort_by(|a, b| a.identifier.cmp(&b.identifier));
    assert_eq!(
        policies,
        vec![team.clone(), own.clone()],
        "snapshot: policies"
    );
    assert_eq!(
        snapshot.usage,
        store.usage(user, when).await.expect("usage"),
        "snapshot: usage"
    );
    assert_eq!(snapshot.usage.daily.input, 5, "snapshot: today's input");
    assert_eq!(snapshot.usage.daily.output, 0, "snapshot: an earlier day");
    assert_eq!(snapshot.usage.monthly.output, 7, "snapshot: the month");
    assert_eq!(snapshot.unblock, Some(grant), "snapshot: unblock");

    let nobody = store
        .check_snapshot(&keys[1..], "nobody-snapshot@example.com", when)
        .await
        .expect("read a snapshot");
    assert_eq!(
        nobody.policies,
        vec![team.clone()],
        "snapshot: unknown user's policies"
    );
    assert_eq!(
        nobody.usage,
        super::UsageTotals::default(),
        "snapshot: no usage"
    );
    assert_eq!(nobody.unblock, None, "snapshot: no unblock");

    for policy in [&own, &team] {
        store
            .delete_policy(&PolicyKey::of(policy))
            .await
            .expect("clean up");
    }
    store.delete_unblock(user).await.expect("clean up");
}
