//! `POST /v1/metrics` against a local issuer and an SQLite store: the
//! recorded Claude Code samples, exactly-once counting, UTC periods,
//! identity from the token only, partial success, and rejected bodies
//! that record nothing.

mod support;

use std::io::Write;

use chrono::{DateTime, Utc};
use flate2::Compression as Level;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data, number_data_point,
};
use prost::Message;
use serde_json::Value;
use tollgate_backend::ingest::IngestSettings;
use tollgate_backend::store::Store;

use support::{Backend, SigningKey, TestIssuer, claims};

const MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn sample_protobuf() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/support/claude/samples/metrics-http-protobuf.pb"
    ))
    .expect("the protobuf sample is readable")
}

fn sample_json() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/support/claude/samples/metrics-http-json.json"
    ))
    .expect("the JSON sample is readable")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Level::default());
    encoder.write_all(bytes).expect("gzip writes to memory");
    encoder.finish().expect("gzip finishes")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a valid test time")
        .with_timezone(&Utc)
}

fn nanos(text: &str) -> u64 {
    u64::try_from(
        at(text)
            .timestamp_nanos_opt()
            .expect("the test time fits in i64 nanoseconds"),
    )
    .expect("the test time is after 1970")
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Builds a data point of `claude_code.token.usage`.
fn point(token_type: &str, end: &str, value: number_data_point::Value) -> NumberDataPoint {
    NumberDataPoint {
        attributes: vec![
            string_attribute("type", token_type),
            string_attribute("model", MODEL),
            string_attribute("session.id", "session-a"),
        ],
        start_time_unix_nano: nanos(end) - 1_000_000_000,
        time_unix_nano: nanos(end),
        value: Some(value),
        ..Default::default()
    }
}

fn double(value: f64) -> number_data_point::Value {
    number_data_point::Value::AsDouble(value)
}

fn metric(name: &str, data: Data) -> Metric {
    Metric {
        name: name.to_owned(),
        data: Some(data),
        ..Default::default()
    }
}

fn delta_sum(points: Vec<NumberDataPoint>) -> Data {
    Data::Sum(Sum {
        data_points: points,
        aggregation_temporality: AggregationTemporality::Delta as i32,
        is_monotonic: true,
    })
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: None,
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn token_usage(points: Vec<NumberDataPoint>) -> Vec<u8> {
    request(vec![metric("claude_code.token.usage", delta_sum(points))]).encode_to_vec()
}

struct Fixture {
    key: SigningKey,
    issuer: TestIssuer,
    backend: Backend,
}

impl Fixture {
    async fn start() -> Self {
        let key = SigningKey::rsa("rsa-1");
        let issuer = TestIssuer::start(&[&key]).await;
        // The tests send points from fixed dates in the past, such as the
        // end of January 2025, so the window spans ten years.
        let mut ingest = IngestSettings::default();
        ingest.writer.dedup_window_days = 3650;
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

    /// Posts `body` to /v1/metrics and returns the status, the content
    /// type and the body.
    async fn post(
        &self,
        token: Option<&str>,
        content_type: &str,
        encoding: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, String, Vec<u8>) {
        let mut request = self
            .backend
            .http
            .post(format!("{}/v1/metrics", self.backend.url))
            .header("Content-Type", content_type)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(encoding) = encoding {
            request = request.header("Content-Encoding", encoding);
        }
        let response = request.send().await.expect("the export is answered");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.bytes().await.expect("the body reads").to_vec();
        (status, content_type, body)
    }

    async fn post_protobuf(&self, email: &str, body: Vec<u8>) -> ExportMetricsServiceResponse {
        let (status, content_type, body) = self
            .post(Some(&self.token(email)), PROTOBUF, None, body)
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(content_type, PROTOBUF);
        ExportMetricsServiceResponse::decode(body.as_slice()).expect("an OTLP response")
    }

    async fn daily(&self, email: &str, when: &str) -> tollgate_quota::TokenUsage {
        self.backend
            .store
            .usage(email, at(when))
            .await
            .expect("usage reads")
            .daily
    }
}

/// The day of the recorded samples' points.
const SAMPLE_DAY: &str = "2026-12-04T12:00:00Z";

#[tokio::test]
async fn sample_protobuf_counts_once_per_type_and_model() {
    let fixture = Fixture::start().await;
    let response = fixture
        .post_protobuf("ann@example.com", sample_protobuf())
        .await;
    assert_eq!(response.partial_success, None, "everything is accepted");

    let daily = fixture.daily("ann@example.com", SAMPLE_DAY).await;
    assert_eq!(daily.input, 37);
    assert_eq!(daily.output, 19);
    assert_eq!(daily.cache_read, 1234);
    assert_eq!(daily.cache_creation, 56);
    let models = fixture
        .backend
        .store
        .model_usage("ann@example.com", at(SAMPLE_DAY))
        .await
        .expect("model usage reads");
    let rows: Vec<(&str, &str, u64)> = models
        .iter()
        .map(|row| (row.model.as_str(), row.type_name.as_str(), row.tokens))
        .collect();
    assert_eq!(
        rows,
        [
            (MODEL, "cacheCreation", 56),
            (MODEL, "cacheRead", 1234),
            (MODEL, "input", 37),
            (MODEL, "output", 19),
        ]
    );

    // The same request again, and the same points as OTLP/JSON: nothing
    // more.
    fixture
        .post_protobuf("ann@example.com", sample_protobuf())
        .await;
    let decoded = ExportMetricsServiceRequest::decode(sample_protobuf().as_slice())
        .expect("the sample decodes");
    let as_json = serde_json::to_vec(&decoded).expect("the sample encodes as JSON");
    let (status, content_type, body) = fixture
        .post(Some(&fixture.token("ann@example.com")), JSON, None, as_json)
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(content_type, JSON);
    let again = fixture.daily("ann@example.com", SAMPLE_DAY).await;
    assert_eq!(again, daily, "a re-delivered export adds nothing");
}

#[tokio::test]
async fn sample_json_and_gzip_count_like_protobuf() {
    let fixture = Fixture::start().await;
    let token = fixture.token("bea@example.com");
    let (status, _, body) = fixture
        .post(Some(&token), JSON, Some("gzip"), gzip(&sample_json()))
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let response: Value = serde_json::from_slice(&body).expect("a JSON response");
    assert!(
        response.get("partialSuccess").is_none_or(Value::is_null),
        "{response}"
    );
    let daily = fixture.daily("bea@example.com", SAMPLE_DAY).await;
    assert_eq!(
        (
            daily.input,
            daily.output,
            daily.cache_read,
            daily.cache_creation
        ),
        (37, 19, 1234, 56)
    );
}

#[tokio::test]
async fn point_counts_in_end_time_day() {
    let fixture = Fixture::start().await;
    let body = token_usage(vec![
        point("output", "2025-01-31T23:59:59.999Z", double(100.0)),
        point("output", "2025-02-01T00:00:00Z", double(7.0)),
    ]);
    fixture.post_protobuf("cid@example.com", body).await;
    let store = &fixture.backend.store;
    let january = store
        .usage("cid@example.com", at("2025-01-31T00:00:00Z"))
        .await
        .expect("usage reads");
    assert_eq!(january.daily.output, 100, "January 31");
    assert_eq!(january.monthly.output, 100, "January");
    let february = store
        .usage("cid@example.com", at("2025-02-01T09:00:00Z"))
        .await
        .expect("usage reads");
    assert_eq!(february.daily.output, 7, "February 1");
    assert_eq!(february.monthly.output, 7, "February");
}

#[tokio::test]
async fn equal_points_at_different_times_both_count() {
    let fixture = Fixture::start().await;
    let body = token_usage(vec![
        point("input", "2026-11-02T10:00:00Z", double(50.0)),
        point("input", "2026-11-02T10:00:01Z", double(50.0)),
    ]);
    fixture.post_protobuf("dan@example.com", body).await;
    assert_eq!(
        fixture
            .daily("dan@example.com", "2026-11-02T00:00:00Z")
            .await
            .input,
        100
    );
}

#[tokio::test]
async fn payload_email_never_decides_the_user() {
    let fixture = Fixture::start().await;
    let mut spoofed = point("output", "2026-11-03T10:00:00Z", double(500.0));
    spoofed
        .attributes
        .push(string_attribute("user.email", "victim@example.com"));
    let mut body = request(vec![metric(
        "claude_code.token.usage",
        delta_sum(vec![spoofed]),
    )]);
    body.resource_metrics[0].resource = Some(opentelemetry_proto::tonic::resource::v1::Resource {
        attributes: vec![string_attribute("user.email", "victim@example.com")],
        ..Default::default()
    });
    fixture
        .post_protobuf("attacker@example.com", body.encode_to_vec())
        .await;
    assert_eq!(
        fixture
            .daily("attacker@example.com", "2026-11-03T00:00:00Z")
            .await
            .output,
        500
    );
    assert_eq!(
        fixture
            .daily("victim@example.com", "2026-11-03T00:00:00Z")
            .await
            .output,
        0
    );

    // The victim sending the very same points still counts them: point
    // identities are per user.
    fixture
        .post_protobuf("victim@example.com", body.encode_to_vec())
        .await;
    assert_eq!(
        fixture
            .daily("victim@example.com", "2026-11-03T00:00:00Z")
            .await
            .output,
        500
    );
}

#[tokio::test]
async fn invalid_token_records_nothing() {
    let fixture = Fixture::start().await;
    let other_key = SigningKey::rsa("rsa-1");
    let forged = other_key.sign(&claims(&fixture.issuer.url, "eve@example.com"));
    for token in [None, Some("not-a-jwt"), Some(forged.as_str())] {
        let calls = fixture.backend.store.calls();
        let (status, _, body) = fixture.post(token, PROTOBUF, None, sample_protobuf()).await;
        assert_eq!(status, 401, "{token:?}: {}", String::from_utf8_lossy(&body));
        let error: Value = serde_json::from_slice(&body).expect("a JSON error");
        assert!(error["error"].is_string(), "{error}");
        assert_eq!(
            fixture.backend.store.calls(),
            calls,
            "{token:?}: no store call"
        );
    }
    assert_eq!(
        fixture.daily("eve@example.com", SAMPLE_DAY).await,
        Default::default()
    );
}

#[tokio::test]
async fn unusable_bodies_get_4xx_and_record_nothing() {
    let fixture = Fixture::start().await;
    let token = fixture.token("fay@example.com");
    let valid = sample_protobuf();
    let mut bomb_source = valid.clone();
    bomb_source.resize(40 * 1024 * 1024, 0);
    let truncated = valid[..valid.len() - 7].to_vec();
    // Content type, case name, Content-Encoding, body, status, error code.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "text/plain",
            "wrong content type",
            None,
            valid.clone(),
            415,
            "unsupported_content_type",
        ),
        (
            PROTOBUF,
            "brotli",
            Some("br"),
            valid.clone(),
            415,
            "unsupported_content_encoding",
        ),
        (
            PROTOBUF,
            "garbage protobuf",
            None,
            b"\xff\xff\xff\xff garbage".to_vec(),
            400,
            "malformed_body",
        ),
        (
            PROTOBUF,
            "truncated protobuf",
            None,
            truncated,
            400,
            "malformed_body",
        ),
        (
            PROTOBUF,
            "gzip bomb",
            Some("gzip"),
            gzip(&bomb_source),
            413,
            "body_too_large",
        ),
        (
            PROTOBUF,
            "not gzip",
            Some("gzip"),
            valid.clone(),
            400,
            "invalid_gzip",
        ),
        (
            PROTOBUF,
            "over the limit",
            None,
            vec![0u8; 17 * 1024 * 1024],
            413,
            "body_too_large",
        ),
        (
            JSON,
            "invalid JSON",
            None,
            b"{\"resourceMetrics\": [".to_vec(),
            400,
            "malformed_body",
        ),
        (JSON, "empty JSON", None, Vec::new(), 400, "malformed_body"),
    ];
    for (content_type, name, encoding, body, status, code) in cases {
        let (answered, answered_type, answer) = fixture
            .post(Some(&token), content_type, encoding, body)
            .await;
        assert_eq!(
            answered,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&answer)
        );
        if answered_type == JSON {
            let error: Value = serde_json::from_slice(&answer).expect("a JSON error body");
            assert_eq!(error["error"], code, "{name}: {error}");
            assert!(
                error["message"]
                    .as_str()
                    .is_some_and(|text| text.len() > 20),
                "{name}: a clear message: {error}"
            );
        } else {
            assert_eq!(answered_type, PROTOBUF, "{name}");
            assert!(!answer.is_empty(), "{name}: a google.rpc.Status body");
        }
    }
    assert_eq!(
        fixture.daily("fay@example.com", SAMPLE_DAY).await,
        Default::default(),
        "nothing recorded"
    );
}

#[tokio::test]
async fn invalid_points_are_a_partial_success() {
    let fixture = Fixture::start().await;
    let when = "2026-11-05T10:00:00Z";
    let mut no_type = point("input", when, double(1.0));
    no_type
        .attributes
        .retain(|attribute| attribute.key != "type");
    let gauge_point = point("input", "2026-11-05T10:00:09Z", double(3.0));
    let body = request(vec![
        metric(
            "claude_code.token.usage",
            delta_sum(vec![
                point("input", when, double(40.0)),
                point("output", when, number_data_point::Value::AsInt(2)),
                point("cacheRead", when, double(-5.0)),
                point("cacheCreation", when, double(1.5)),
                point("input", "2026-11-05T10:00:01Z", double(f64::NAN)),
                no_type,
                point("input", "2099-01-01T00:00:00Z", double(8.0)),
            ]),
        ),
        metric(
            "claude_code.token.usage",
            Data::Gauge(Gauge {
                data_points: vec![gauge_point],
            }),
        ),
        metric(
            "claude_code.cost.usage",
            delta_sum(vec![point("input", when, double(0.5))]),
        ),
        metric(
            "claude_code.token.usage",
            delta_sum(vec![point(
                "cacheWrite1h",
                "2026-11-05T10:00:02Z",
                double(9.0),
            )]),
        ),
    ]);
    let response = fixture
        .post_protobuf("gus@example.com", body.encode_to_vec())
        .await;
    let partial = response.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_data_points, 6);
    for reason in [
        "negative",
        "whole number",
        "finite",
        "`type` attribute",
        "future",
        "not a sum",
    ] {
        assert!(
            partial.error_message.contains(reason),
            "{reason:?} missing from {}",
            partial.error_message
        );
    }
    let daily = fixture.daily("gus@example.com", when).await;
    assert_eq!(daily.input, 40, "the valid double counts");
    assert_eq!(daily.output, 2, "the valid integer counts");
    assert_eq!(daily.cache_read + daily.cache_creation, 0);
    let models = fixture
        .backend
        .store
        .model_usage("gus@example.com", at(when))
        .await
        .expect("model usage reads");
    assert!(
        models
            .iter()
            .any(|row| row.type_name == "cacheWrite1h" && row.tokens == 9),
        "an unknown type is kept: {models:?}"
    );
}

#[tokio::test]
async fn json_int64_strings_and_unknown_fields_are_read() {
    let fixture = Fixture::start().await;
    let body = br#"{"resourceMetrics":[{"futureField":1,"scopeMetrics":[{"metrics":[
        {"name":"claude_code.token.usage","unit":"tokens","sum":{"aggregationTemporality":1,"isMonotonic":true,
         "dataPoints":[
           {"attributes":[{"key":"type","value":{"stringValue":"output"}},{"key":"model","value":{"stringValue":"m"}},{"key":"n","value":{"intValue":"7"}}],
            "startTimeUnixNano":"1793700000000000000","timeUnixNano":"1793700001000000000","asInt":"123","newField":{"x":1}},
           {"attributes":[{"key":"type","value":{"stringValue":"output"}}],
            "startTimeUnixNano":1793700000000000000,"timeUnixNano":1793700002000000000,"asInt":77}
         ]}},
        {"name":"some.histogram","histogram":{"aggregationTemporality":2,"dataPoints":[{"count":"3","sum":1.5}]}}
    ]}]}]}"#;
    let (status, _, answer) = fixture
        .post(
            Some(&fixture.token("hal@example.com")),
            JSON,
            None,
            body.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    // 1793700001 s is 2026-11-03T10:00:01Z.
    assert_eq!(
        fixture
            .daily("hal@example.com", "2026-11-03T00:00:00Z")
            .await
            .output,
        200
    );
}

#[tokio::test]
async fn cumulative_series_count_their_increases() {
    let fixture = Fixture::start().await;
    let cumulative = |points: Vec<NumberDataPoint>| {
        request(vec![metric(
            "claude_code.token.usage",
            Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        )])
        .encode_to_vec()
    };
    let start = "2026-11-06T09:00:00Z";
    let at_time = |end: &str, total: f64| {
        let mut point = point("input", end, double(total));
        point.start_time_unix_nano = nanos(start);
        point
    };
    let user = "ida@example.com";
    // Out of order within one request: sorted by end time before counting.
    fixture
        .post_protobuf(
            user,
            cumulative(vec![
                at_time("2026-11-06T09:02:00Z", 250.0),
                at_time("2026-11-06T09:01:00Z", 100.0),
            ]),
        )
        .await;
    fixture
        .post_protobuf(
            user,
            cumulative(vec![at_time("2026-11-06T09:03:00Z", 300.0)]),
        )
        .await;
    // A drop: the exporter restarted.
    fixture
        .post_protobuf(
            user,
            cumulative(vec![at_time("2026-11-06T09:04:00Z", 20.0)]),
        )
        .await;
    assert_eq!(
        fixture.daily(user, "2026-11-06T00:00:00Z").await.input,
        300 + 20
    );
}

/// Wraps OTLP/JSON data points in a delta `claude_code.token.usage` sum.
fn json_token_usage(temporality: &str, points: &[String]) -> Vec<u8> {
    format!(
        r#"{{"resourceMetrics":[{{"scopeMetrics":[{{"metrics":[{{"name":"claude_code.token.usage","unit":"tokens","sum":{{"aggregationTemporality":{temporality},"isMonotonic":true,"dataPoints":[{}]}}}}]}}]}}]}}"#,
        points.join(",")
    )
    .into_bytes()
}

/// Builds one OTLP/JSON data point; `fields` follows the attributes.
fn json_point(type_attribute: &str, fields: &str) -> String {
    format!(
        r#"{{"attributes":[{type_attribute}{{"key":"model","value":{{"stringValue":"m"}}}}],{fields}}}"#
    )
}

#[tokio::test]
async fn invalid_json_points_are_counted_as_rejected() {
    let fixture = Fixture::start().await;
    let input = r#"{"key":"type","value":{"stringValue":"input"}},"#;
    // 1793700001 s is 2026-11-03T10:00:01Z.
    let at = |second: u32| format!(r#""timeUnixNano":"17937000{second:02}000000000""#);
    // Case name, the data points, the reason each invalid point is
    // rejected for, the number rejected, and the input tokens counted.
    let cases: Vec<(&str, Vec<String>, &str, i64, u64)> = vec![
        (
            "non-numeric asDouble",
            vec![
                json_point(input, &format!(r#"{},"asDouble":"many""#, at(1))),
                json_point(input, &format!(r#"{},"asDouble":10"#, at(2))),
            ],
            "asDouble or asInt is not a number",
            1,
            10,
        ),
        (
            "boolean asInt",
            vec![
                json_point(input, &format!(r#"{},"asInt":true"#, at(3))),
                json_point(input, &format!(r#"{},"asInt":"11""#, at(4))),
            ],
            "asDouble or asInt is not a number",
            1,
            11,
        ),
        (
            "NaN as a string",
            vec![
                json_point(input, &format!(r#"{},"asDouble":"NaN""#, at(5))),
                json_point(input, &format!(r#"{},"asDouble":"12""#, at(6))),
            ],
            "not a finite number",
            1,
            12,
        ),
        (
            "asInt beyond int64",
            vec![
                json_point(
                    input,
                    &format!(r#"{},"asInt":"99999999999999999999""#, at(7)),
                ),
                json_point(input, &format!(r#"{},"asInt":13"#, at(8))),
            ],
            "over 1,000,000,000,000 tokens",
            1,
            13,
        ),
        (
            "missing type",
            vec![
                json_point("", &format!(r#"{},"asDouble":5"#, at(9))),
                json_point(input, &format!(r#"{},"asDouble":14"#, at(10))),
            ],
            "`type` attribute",
            1,
            14,
        ),
        (
            "time is not an integer",
            vec![
                json_point(input, r#""timeUnixNano":"yesterday","asDouble":5"#),
                json_point(input, &format!(r#"{},"asDouble":15"#, at(11))),
            ],
            "not a decimal integer",
            1,
            15,
        ),
        (
            "attribute value of the wrong kind",
            vec![
                json_point(
                    r#"{"key":"type","value":{"stringValue":7}},"#,
                    &format!(r#"{},"asDouble":5"#, at(12)),
                ),
                json_point(input, &format!(r#"{},"asDouble":16"#, at(13))),
            ],
            "not a valid OTLP/JSON KeyValue",
            1,
            16,
        ),
    ];
    for (index, (name, points, reason, rejected, counted)) in cases.into_iter().enumerate() {
        let user = format!("json{index}@example.com");
        let (status, _, answer) = fixture
            .post(
                Some(&fixture.token(&user)),
                JSON,
                None,
                json_token_usage("1", &points),
            )
            .await;
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&answer));
        let response: Value = serde_json::from_slice(&answer).expect("a JSON answer");
        let partial = &response["partialSuccess"];
        assert_eq!(
            partial["rejectedDataPoints"].as_i64(),
            Some(rejected),
            "{name}: {response}"
        );
        let message = partial["errorMessage"].as_str().unwrap_or_default();
        assert!(
            message.contains(reason),
            "{name}: {reason:?} missing from {message}"
        );
        assert_eq!(
            fixture.daily(&user, "2026-11-03T00:00:00Z").await.input,
            counted,
            "{name}: the valid point counts"
        );
    }
}

#[tokio::test]
async fn json_enum_name_temporality_rejects_its_points() {
    let fixture = Fixture::start().await;
    let user = "enum@example.com";
    let points = [
        json_point(
            r#"{"key":"type","value":{"stringValue":"input"}},"#,
            r#""timeUnixNano":"1793700001000000000","asDouble":5"#,
        ),
        json_point(
            r#"{"key":"type","value":{"stringValue":"output"}},"#,
            r#""timeUnixNano":"1793700001000000000","asDouble":6"#,
        ),
    ];
    let (status, _, answer) = fixture
        .post(
            Some(&fixture.token(user)),
            JSON,
            None,
            json_token_usage(r#""AGGREGATION_TEMPORALITY_DELTA""#, &points),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let response: Value = serde_json::from_slice(&answer).expect("a JSON answer");
    assert_eq!(
        response["partialSuccess"]["rejectedDataPoints"], 2,
        "{response}"
    );
    let message = response["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("neither delta (1) nor cumulative (2)"),
        "{message}"
    );
    assert_eq!(
        fixture.daily(user, "2026-11-03T00:00:00Z").await,
        Default::default(),
        "nothing counted"
    );
}
