//! Tests of the ingest writer and the de-duplication window.
//!
//! A group commit returns each request its own result. A full queue rejects
//! at once with a 503 and `Retry-After`. Points older than the window are
//! rejected, and pruning deletes only expired identities. Token counts that
//! would overflow are rejected or saturate.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point::Value as PointValueProto,
};
use prost::Message;
use tollgate_backend::ingest::batch::{PointValue, UsageBatch, UsageGroup, UsagePoint};
use tollgate_backend::ingest::writer::WriteError;
use tollgate_backend::ingest::{AlertSettings, IngestSettings, UsageWriter, WriterSettings};
use tollgate_backend::store::Store;
use tollgate_backend::store::sqlite::SqliteStore;

use support::{Backend, SigningKey, TestIssuer, claims};

const PROTOBUF: &str = "application/x-protobuf";

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

fn nanos(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp_nanos_opt().expect("the time fits in i64")).expect("after 1970")
}

fn point(token_type: &str, end: DateTime<Utc>, value: PointValueProto) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![
            string_attribute("type", token_type),
            string_attribute("model", "m"),
        ],
        start_time_unix_nano: nanos(end) - 1_000_000_000,
        time_unix_nano: nanos(end),
        value: Some(value),
        ..Default::default()
    }
}

fn token_usage(points: Vec<NumberDataPoint>) -> Vec<u8> {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.token.usage".to_owned(),
                    data: Some(Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

struct Fixture {
    key: SigningKey,
    issuer: TestIssuer,
    backend: Backend,
}

impl Fixture {
    async fn start(ingest: IngestSettings) -> Self {
        let key = SigningKey::rsa("rsa-1");
        let issuer = TestIssuer::start(&[&key]).await;
        let backend = Backend::start_with_ingest(&issuer.url, ingest).await;
        Self {
            key,
            issuer,
            backend,
        }
    }

    fn token(&self, email: &str) -> String {
        self.key.sign(&claims(&self.issuer.url, email))
    }

    /// Posts a protobuf body and returns the status, the `Retry-After`
    /// header and the body.
    async fn post(&self, email: &str, body: Vec<u8>) -> (u16, Option<String>, Vec<u8>) {
        self.post_with_token(&self.token(email), body).await
    }

    async fn post_with_token(&self, token: &str, body: Vec<u8>) -> (u16, Option<String>, Vec<u8>) {
        let response = self
            .backend
            .http
            .post(format!("{}/v1/metrics", self.backend.url))
            .bearer_auth(token)
            .header("Content-Type", PROTOBUF)
            .body(body)
            .send()
            .await
            .expect("the export is answered");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response.bytes().await.expect("the body reads").to_vec();
        (status, retry_after, body)
    }

    async fn post_ok(&self, email: &str, body: Vec<u8>) -> ExportMetricsServiceResponse {
        let (status, _, answer) = self.post(email, body).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        ExportMetricsServiceResponse::decode(answer.as_slice()).expect("an OTLP response")
    }

    async fn daily(&self, email: &str, at: DateTime<Utc>) -> tollgate_quota::TokenUsage {
        self.backend
            .store
            .usage(email, at)
            .await
            .expect("usage reads")
            .daily
    }
}

/// Counts the stored point identities, read through a separate connection.
fn identity_count(path: &std::path::Path) -> i64 {
    let connection = rusqlite::Connection::open(path).expect("the store file opens");
    connection
        .query_row("SELECT COUNT(*) FROM usage_points", [], |row| row.get(0))
        .expect("the identities are counted")
}

/// Builds a stored point as ingest does: the identity starts with the end
/// time in big-endian nanoseconds.
fn usage_point(serial: u64, end: DateTime<Utc>, tokens: u64) -> UsagePoint {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&nanos(end).to_be_bytes());
    id[8..16].copy_from_slice(&serial.to_le_bytes());
    UsagePoint {
        id,
        end,
        type_name: "input".to_owned(),
        counted_as: Some(tollgate_quota::TokenType::Input),
        model: "m".to_owned(),
        value: PointValue::Delta(tokens),
    }
}

fn batch(user: &str, points: Vec<UsagePoint>) -> UsageBatch {
    UsageBatch {
        user: user.to_owned(),
        points,
        alerting: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_their_own_answers() {
    let fixture = Arc::new(Fixture::start(IngestSettings::default()).await);
    let base = Utc::now() - chrono::Duration::hours(1);
    let users = ["ann", "bob", "cat", "dan"];
    let mut requests = Vec::new();
    for index in 0..60u32 {
        let user = format!("{}@example.com", users[index as usize % users.len()]);
        let end = base + chrono::Duration::milliseconds(i64::from(index));
        let mut points = vec![
            point("input", end, PointValueProto::AsDouble(10.0)),
            point("output", end, PointValueProto::AsDouble(1.0)),
        ];
        // Every third request carries one invalid point of its own.
        let invalid = index % 3 == 0;
        if invalid {
            points.push(point("cacheRead", end, PointValueProto::AsDouble(-1.0)));
        }
        let body = token_usage(points);
        // Each request is sent twice at once; the second adds nothing.
        for _ in 0..2 {
            let fixture = Arc::clone(&fixture);
            let user = user.clone();
            let body = body.clone();
            requests.push(tokio::spawn(async move {
                (invalid, fixture.post_ok(&user, body).await)
            }));
        }
    }
    for request in requests {
        let (invalid, response) = request.await.expect("the request task finishes");
        match response.partial_success {
            Some(partial) => {
                assert!(invalid, "a valid request got {partial:?}");
                assert_eq!(partial.rejected_data_points, 1);
                assert!(partial.error_message.contains("negative"), "{partial:?}");
            }
            None => assert!(!invalid, "an invalid point was not reported"),
        }
    }
    for user in users {
        let daily = fixture.daily(&format!("{user}@example.com"), base).await;
        assert_eq!(daily.input, 150, "{user}: 15 requests of 10 input tokens");
        assert_eq!(daily.output, 15, "{user}: 15 requests of 1 output token");
        assert_eq!(
            daily.cache_read, 0,
            "{user}: the negative points count nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after() {
    let mut ingest = IngestSettings::default();
    ingest.writer.queue_requests = 1;
    let fixture = Arc::new(Fixture::start(ingest).await);
    let path = fixture.backend.store.path().to_owned();
    let end = Utc::now() - chrono::Duration::minutes(5);
    let token = fixture.token("queue@example.com");
    // Holding the write lock from another connection stalls the writer in
    // its first transaction, so the queue behind it fills up. The lock is
    // released within the store's 5 s busy timeout.
    let blocker = rusqlite::Connection::open(&path).expect("the store file opens");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock is taken");
    let locked_at = Instant::now();
    let mut requests = Vec::new();
    for index in 0..20 {
        let fixture = Arc::clone(&fixture);
        let token = token.clone();
        let body = token_usage(vec![point(
            "input",
            end + chrono::Duration::seconds(index),
            PointValueProto::AsDouble(3.0),
        )]);
        requests.push(tokio::spawn(async move {
            fixture.post_with_token(&token, body).await
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Only a rejected request finishes while the writer is stalled.
        if requests.iter().any(|request| request.is_finished())
            || locked_at.elapsed() > Duration::from_secs(3)
        {
            break;
        }
    }
    blocker
        .execute_batch("ROLLBACK")
        .expect("the lock is released");

    let mut accepted = 0;
    let mut unavailable = 0;
    for request in requests {
        let (status, retry_after, body) = request.await.expect("the request task finishes");
        match status {
            200 => accepted += 1,
            503 => {
                unavailable += 1;
                assert_eq!(
                    retry_after.as_deref(),
                    Some("1"),
                    "a 503 says when to retry"
                );
                let text = String::from_utf8_lossy(&body);
                assert!(text.contains("queue is full"), "{text}");
            }
            other => panic!(
                "unexpected status {other}: {}",
                String::from_utf8_lossy(&body)
            ),
        }
    }
    assert!(accepted >= 1, "the queued requests are recorded");
    assert!(unavailable >= 1, "a request beyond the queue gets a 503");
    assert_eq!(
        fixture.daily("queue@example.com", end).await.input,
        3 * accepted,
        "exactly the accepted requests count"
    );
}

#[tokio::test]
async fn full_point_budget_rejects_at_once() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("store.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).expect("the store opens"));
    let settings = WriterSettings {
        queue_points: 10,
        ..WriterSettings::default()
    };
    let writer = UsageWriter::start(store, settings, AlertSettings::default());

    // Another connection holds the write lock, so the writer stalls.
    let blocker = rusqlite::Connection::open(&path).expect("the store file opens");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("the write lock is taken");

    let now = Utc::now();
    let spawn_record = |first_serial: u64| {
        let writer = writer.clone();
        let points = (first_serial..first_serial + 8)
            .map(|serial| usage_point(serial, now, 1))
            .collect();
        tokio::spawn(async move {
            writer
                .record(batch("budget@example.com", points), None)
                .await
        })
    };

    // The stalled writer is in its first transaction, which contains the
    // first batch or only a prune. In both cases one batch of 8 points waits.
    let first = spawn_record(0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = spawn_record(8);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let points = (16..24).map(|serial| usage_point(serial, now, 1)).collect();
    let started = Instant::now();
    let third = writer
        .record(batch("budget@example.com", points), None)
        .await;
    assert!(
        matches!(third, Err(WriteError::QueueFull { .. })),
        "8 waiting points and 8 more exceed a budget of 10: {third:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a full queue answers at once"
    );

    blocker
        .execute_batch("ROLLBACK")
        .expect("the lock is released");
    let outcome = first
        .await
        .expect("the request task finishes")
        .expect("the first batch is recorded");
    assert_eq!(outcome.recorded, 8);
    let second = second.await.expect("the request task finishes");
    assert!(
        matches!(second, Ok(_) | Err(WriteError::QueueFull { .. })),
        "the second batch is recorded or rejected as a whole: {second:?}"
    );
}

#[tokio::test]
async fn point_older_than_window_is_rejected() {
    let fixture = Fixture::start(IngestSettings::default()).await;
    let user = "old@example.com";
    let old = Utc::now() - chrono::Duration::days(36);
    let recent = Utc::now() - chrono::Duration::hours(1);
    let response = fixture
        .post_ok(
            user,
            token_usage(vec![
                point("input", old, PointValueProto::AsDouble(500.0)),
                point("input", recent, PointValueProto::AsDouble(7.0)),
            ]),
        )
        .await;
    let partial = response.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 1);
    assert!(
        partial
            .error_message
            .contains("older than the 35-day de-duplication window"),
        "{}",
        partial.error_message
    );
    assert_eq!(
        fixture.daily(user, old).await.input,
        0,
        "the old point adds nothing"
    );
    assert_eq!(
        fixture.daily(user, recent).await.input,
        7,
        "the recent point counts"
    );
    assert_eq!(
        identity_count(fixture.backend.store.path()),
        1,
        "only the recent point's identity is stored"
    );
}

#[tokio::test]
async fn window_days_come_from_settings() {
    let mut ingest = IngestSettings::default();
    ingest.writer.dedup_window_days = 2;
    let fixture = Fixture::start(ingest).await;
    let three_days_ago = Utc::now() - chrono::Duration::days(3);
    let response = fixture
        .post_ok(
            "short@example.com",
            token_usage(vec![point(
                "input",
                three_days_ago,
                PointValueProto::AsDouble(5.0),
            )]),
        )
        .await;
    let partial = response.partial_success.expect("a partial success");
    assert!(
        partial
            .error_message
            .contains("2-day de-duplication window"),
        "{}",
        partial.error_message
    );
}

#[tokio::test]
async fn pruning_keeps_exactly_once_inside_window() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("store.db");
    let sqlite = SqliteStore::open(&path).expect("the store opens");
    let store: Arc<dyn Store> = Arc::new(sqlite);
    let user = "prune@example.com";
    let now = Utc::now();
    let expired = now - chrono::Duration::days(40);
    let inside = now - chrono::Duration::days(2);
    // 2,500 expired identities take three prunes of 1,000.
    let mut points: Vec<UsagePoint> = (0..2500)
        .map(|serial| usage_point(serial, expired, 1))
        .collect();
    points.push(usage_point(9_999, inside, 40));
    let outcome = store
        .record_usage_group(UsageGroup {
            batches: vec![batch(user, points)],
            prune: None,
        })
        .await
        .expect("the group is recorded");
    assert_eq!(
        outcome.batches[0].as_ref().expect("the batch").recorded,
        2501
    );
    assert_eq!(identity_count(&path), 2501);

    let settings = WriterSettings {
        prune_interval: Duration::from_millis(50),
        ..WriterSettings::default()
    };
    let writer = UsageWriter::start(Arc::clone(&store), settings, AlertSettings::default());
    let deadline = Instant::now() + Duration::from_secs(20);
    while identity_count(&path) > 1 {
        assert!(
            Instant::now() < deadline,
            "the expired identities are pruned within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        identity_count(&path),
        1,
        "the identity inside the window stays"
    );

    let again = writer
        .record(batch(user, vec![usage_point(9_999, inside, 40)]), None)
        .await
        .expect("the re-delivery is recorded");
    assert_eq!(
        again.recorded, 0,
        "the point inside the window is a duplicate"
    );
    assert_eq!(again.duplicates, 1);
    let fresh = writer
        .record(batch(user, vec![usage_point(10_000, inside, 2)]), None)
        .await
        .expect("the new point is recorded");
    assert_eq!(fresh.recorded, 1);
    let usage = store.usage(user, inside).await.expect("usage reads");
    assert_eq!(usage.daily.input, 42, "pruning leaves the counters alone");
    let expired_usage = store.usage(user, expired).await.expect("usage reads");
    assert_eq!(expired_usage.daily.input, 2500, "old counters are kept");
}

#[tokio::test]
async fn overflowing_values_are_rejected() {
    let mut ingest = IngestSettings::default();
    ingest.writer.dedup_window_days = 35;
    let fixture = Fixture::start(ingest).await;
    let user = "big@example.com";
    let base = Utc::now() - chrono::Duration::hours(2);
    let at = |second: i64| base + chrono::Duration::seconds(second);
    let body = token_usage(vec![
        point("input", at(0), PointValueProto::AsInt(i64::MAX)),
        point("input", at(1), PointValueProto::AsInt(1_000_000_000_001)),
        point("input", at(2), PointValueProto::AsDouble(1.8e19)),
        point("input", at(3), PointValueProto::AsDouble(f64::MAX)),
        point("input", at(4), PointValueProto::AsDouble(f64::INFINITY)),
        point("input", at(5), PointValueProto::AsDouble(f64::NEG_INFINITY)),
        point("input", at(6), PointValueProto::AsDouble(f64::NAN)),
        point("input", at(7), PointValueProto::AsDouble(-1.0)),
        point("input", at(8), PointValueProto::AsInt(i64::MIN)),
        point("input", at(9), PointValueProto::AsInt(1_000_000_000_000)),
        point("input", at(10), PointValueProto::AsDouble(-0.0)),
    ]);
    let response = fixture.post_ok(user, body).await;
    let partial = response.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 9, "{}", partial.error_message);
    for reason in [
        "4 points: the value is over 1,000,000,000,000 tokens",
        "3 points: the value is not a finite number",
        "2 points: the value is negative",
    ] {
        assert!(
            partial.error_message.contains(reason),
            "{reason:?} missing from {}",
            partial.error_message
        );
    }
    assert_eq!(
        fixture.daily(user, base).await.input,
        1_000_000_000_000,
        "the largest allowed point counts in full"
    );
}

#[tokio::test]
async fn counter_sums_saturate_at_i64_max() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(&folder.path().join("store.db")).expect("the store opens");
    let user = "sum@example.com";
    let now = Utc::now();
    // The store accepts what ingest never sends: points above the per-point
    // limit, whose sum overflows both i64 and u64.
    let huge = vec![
        usage_point(1, now, u64::MAX),
        usage_point(2, now, u64::MAX),
        usage_point(3, now, i64::MAX as u64),
    ];
    let outcome = store
        .record_usage_group(UsageGroup {
            batches: vec![batch(user, huge)],
            prune: None,
        })
        .await
        .expect("the group is recorded");
    assert_eq!(outcome.batches[0].as_ref().expect("the batch").recorded, 3);
    assert_eq!(
        store
            .usage(user, now)
            .await
            .expect("usage reads")
            .daily
            .input,
        i64::MAX as u64
    );
    store
        .record_usage_points(&batch(user, vec![usage_point(4, now, 5)]))
        .await
        .expect("the batch is recorded");
    let usage = store.usage(user, now).await.expect("usage reads");
    assert_eq!(
        usage.daily.input,
        i64::MAX as u64,
        "the daily counter stays at the maximum"
    );
    assert_eq!(
        usage.monthly.input,
        i64::MAX as u64,
        "the monthly counter too"
    );
}

#[tokio::test]
async fn failing_batch_is_rolled_back_alone() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("store.db");
    let store = SqliteStore::open(&path).expect("the store opens");
    // A trigger makes every write of the model "poison" fail, so the
    // second batch fails after its point identity is inserted.
    rusqlite::Connection::open(&path)
        .expect("the store file opens")
        .execute_batch(
            "CREATE TRIGGER poison BEFORE INSERT ON usage_models WHEN NEW.model = 'poison'
             BEGIN SELECT RAISE(ABORT, 'poisoned model'); END;",
        )
        .expect("the trigger is created");
    let now = Utc::now();
    let mut poisoned = usage_point(2, now, 20);
    poisoned.model = "poison".to_owned();
    let outcome = store
        .record_usage_group(UsageGroup {
            batches: vec![
                batch("first@example.com", vec![usage_point(1, now, 10)]),
                batch("poisoned@example.com", vec![poisoned]),
                batch("third@example.com", vec![usage_point(3, now, 30)]),
            ],
            prune: None,
        })
        .await
        .expect("the group is recorded");

    assert_eq!(outcome.batches.len(), 3);
    assert_eq!(
        outcome.batches[0].as_ref().expect("first batch").recorded,
        1
    );
    let error = outcome.batches[1]
        .as_ref()
        .expect_err("the poisoned batch fails");
    let mut messages = vec![error.to_string()];
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        messages.push(cause.to_string());
        source = cause.source();
    }
    assert!(
        messages
            .iter()
            .any(|message| message.contains("poisoned model")),
        "{messages:?}"
    );
    assert_eq!(
        outcome.batches[2].as_ref().expect("third batch").recorded,
        1
    );
    let daily = |user: &'static str| {
        let store = &store;
        async move {
            store
                .usage(user, now)
                .await
                .expect("usage reads")
                .daily
                .input
        }
    };
    assert_eq!(daily("first@example.com").await, 10);
    assert_eq!(daily("poisoned@example.com").await, 0);
    assert_eq!(daily("third@example.com").await, 30);
    assert_eq!(
        identity_count(&path),
        2,
        "the poisoned batch's identity is rolled back"
    );
}
