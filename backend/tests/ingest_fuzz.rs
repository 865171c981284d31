//! Property tests of the ingest decode path. Arbitrary bytes and mutated
//! valid bodies, in protobuf, JSON and gzip, never panic: they decode to a
//! request or fail with a 4xx error. Point values near and beyond the
//! limits of u64, i64 and f64 are counted exactly or rejected, never
//! wrapped or dropped.

use std::io::Write;

use chrono::Utc;
use flate2::Compression as Level;
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric::Data,
};
use proptest::prelude::*;
use prost::Message;
use tollgate_backend::ingest::TypeMapping;
use tollgate_backend::ingest::batch::PointValue;
use tollgate_backend::ingest::decode::{Compression, Encoding, decode_body};
use tollgate_backend::ingest::points::{MAX_POINT_TOKENS, extract};

const LIMIT: usize = 1024 * 1024;

fn sample(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/../tests/support/claude/samples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("the sample is readable")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Level::fast());
    encoder.write_all(bytes).expect("gzip writes to memory");
    encoder.finish().expect("gzip finishes")
}

/// Runs the whole decode path; a failure must be a client error.
fn decode_and_extract(body: &[u8], encoding: Encoding, compression: Compression) {
    match decode_body(body, encoding, compression, LIMIT) {
        Ok(decoded) => {
            let types = TypeMapping::parse("cacheCreation1h=cacheCreation").expect("valid");
            let _ = extract(
                &decoded.request,
                "fuzz@example.com",
                &types,
                Utc::now(),
                35,
                encoding == Encoding::Json,
            );
        }
        Err(error) => {
            let status = error.status();
            assert!((400..500).contains(&status), "{error} has status {status}");
            assert!(!error.to_string().is_empty());
        }
    }
}

/// A mutation of a valid body: flip, overwrite, insert or cut bytes.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Remove(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, bits)| Mutation::Flip(at, bits)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set(at, byte)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 1..64usize).prop_map(|(at, length)| Mutation::Remove(at, length)),
    ]
}

fn mutate(body: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut body = body.to_vec();
    for mutation in mutations {
        if body.is_empty() {
            break;
        }
        let length = body.len();
        match mutation {
            Mutation::Flip(at, bits) => body[at % length] ^= bits,
            Mutation::Set(at, byte) => body[at % length] = *byte,
            Mutation::Insert(at, bytes) => {
                let at = at % (length + 1);
                body.splice(at..at, bytes.iter().copied());
            }
            Mutation::Truncate(at) => body.truncate(at % length),
            Mutation::Remove(at, count) => {
                let at = at % length;
                let end = (at + count).min(length);
                body.drain(at..end);
            }
        }
    }
    body
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_and_extract(&body, Encoding::Protobuf, Compression::None);
        decode_and_extract(&body, Encoding::Json, Compression::None);
        decode_and_extract(&body, Encoding::Protobuf, Compression::Gzip);
    }

    #[test]
    fn mutated_protobuf_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let body = mutate(&sample("metrics-http-protobuf.pb"), &mutations);
        decode_and_extract(&body, Encoding::Protobuf, Compression::None);
        decode_and_extract(&gzip(&body), Encoding::Protobuf, Compression::Gzip);
    }

    #[test]
    fn mutated_json_never_panics(mutations in prop::collection::vec(mutation(), 1..6)) {
        let body = mutate(&sample("metrics-http-json.json"), &mutations);
        decode_and_extract(&body, Encoding::Json, Compression::None);
    }

    #[test]
    fn point_values_are_exact_or_rejected(value in point_value(), json in any::<bool>()) {
        check_point_value(value, json);
    }

    #[test]
    fn json_value_text_is_counted_or_rejected(
        field in prop_oneof![Just("asDouble"), Just("asInt")],
        text in prop_oneof![
            "[-+]?[0-9]{1,25}(\\.[0-9]{0,3})?(e[-+]?[0-9]{1,3})?",
            Just("NaN".to_owned()),
            Just("Infinity".to_owned()),
            Just("-Infinity".to_owned()),
            ".{0,12}",
        ],
        quoted in any::<bool>(),
    ) {
        check_json_value_text(field, &text, quoted);
    }

    #[test]
    fn mutated_gzip_never_panics(mutations in prop::collection::vec(mutation(), 1..4)) {
        let body = mutate(&gzip(&sample("metrics-http-protobuf.pb")), &mutations);
        decode_and_extract(&body, Encoding::Protobuf, Compression::Gzip);
    }
}

/// Point values near and beyond every limit, and arbitrary ones.
fn point_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f64>().prop_map(Value::AsDouble),
        any::<i64>().prop_map(Value::AsInt),
        (0..=2_000_000_000_000i64).prop_map(Value::AsInt),
        (0..=2_000_000_000_000u64).prop_map(|tokens| Value::AsDouble(tokens as f64)),
        prop::sample::select(vec![
            Value::AsInt(i64::MAX),
            Value::AsInt(i64::MIN),
            Value::AsInt(MAX_POINT_TOKENS as i64),
            Value::AsInt(MAX_POINT_TOKENS as i64 + 1),
            Value::AsDouble(u64::MAX as f64),
            Value::AsDouble(i64::MAX as f64),
            Value::AsDouble(MAX_POINT_TOKENS as f64),
            Value::AsDouble(f64::MAX),
            Value::AsDouble(f64::MIN_POSITIVE),
            Value::AsDouble(-0.0),
            Value::AsDouble(f64::NAN),
            Value::AsDouble(f64::INFINITY),
            Value::AsDouble(f64::NEG_INFINITY),
        ]),
    ]
}

/// Builds a request of one delta point that ended a minute ago.
fn one_point(value: Option<Value>) -> ExportMetricsServiceRequest {
    let end = u64::try_from(Utc::now().timestamp_nanos_opt().expect("now fits in i64"))
        .expect("now is after 1970")
        - 60_000_000_000;
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "claude_code.token.usage".to_owned(),
                    data: Some(Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![KeyValue {
                                key: "type".to_owned(),
                                value: Some(AnyValue {
                                    value: Some(any_value::Value::StringValue("input".to_owned())),
                                }),
                                ..Default::default()
                            }],
                            start_time_unix_nano: end - 1_000_000_000,
                            time_unix_nano: end,
                            value,
                            ..Default::default()
                        }],
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
}

/// Decodes and extracts `body`, which contains one point, and returns the
/// counted tokens, or `None` when the point was rejected.
fn counted_tokens(body: &[u8], encoding: Encoding) -> Option<u64> {
    let decoded = decode_body(body, encoding, Compression::None, LIMIT).expect("the body decodes");
    let mut extracted = extract(
        &decoded.request,
        "values@example.com",
        &TypeMapping::default(),
        Utc::now(),
        35,
        true,
    )
    .expect("the metric is readable");
    let rejected = extracted.rejected_count() + decoded.rejected.values().sum::<u64>();
    assert_eq!(
        extracted.points.len() as u64 + rejected,
        1,
        "the point is counted or rejected, never dropped"
    );
    extracted.points.pop().map(|point| match point.value {
        PointValue::Delta(tokens) => tokens,
        PointValue::Cumulative(value) => value.total,
    })
}

fn check_point_value(value: Value, json: bool) {
    let request = one_point(Some(value));
    let (body, encoding) = if json {
        (
            serde_json::to_vec(&request).expect("the request encodes as JSON"),
            Encoding::Json,
        )
    } else {
        (request.encode_to_vec(), Encoding::Protobuf)
    };
    let expected = match value {
        Value::AsDouble(double) => (double.is_finite()
            && double >= 0.0
            && double.fract() == 0.0
            && double <= MAX_POINT_TOKENS as f64)
            .then_some(double as u64),
        Value::AsInt(integer) => u64::try_from(integer)
            .ok()
            .filter(|tokens| *tokens <= MAX_POINT_TOKENS),
    };
    assert_eq!(
        counted_tokens(&body, encoding),
        expected,
        "{value:?}, JSON {json}"
    );
}

fn check_json_value_text(field: &str, text: &str, quoted: bool) {
    let request = one_point(None);
    let mut json: serde_json::Value =
        serde_json::to_value(&request).expect("the request encodes as JSON");
    let raw = if quoted {
        serde_json::Value::String(text.to_owned())
    } else {
        // Unquoted text that is not a JSON number stays a string.
        serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .filter(serde_json::Value::is_number)
            .unwrap_or_else(|| serde_json::Value::String(text.to_owned()))
    };
    json["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]["dataPoints"][0]
        .as_object_mut()
        .expect("the point is an object")
        .insert(field.to_owned(), raw);
    let body = serde_json::to_vec(&json).expect("the body encodes");
    if let Some(tokens) = counted_tokens(&body, Encoding::Json) {
        assert!(tokens <= MAX_POINT_TOKENS, "{field} {text:?}: {tokens}");
    }
}

#[test]
fn samples_decode_to_four_counted_points() {
    let types = TypeMapping::default();
    for (name, encoding) in [
        ("metrics-http-protobuf.pb", Encoding::Protobuf),
        ("metrics-http-json.json", Encoding::Json),
    ] {
        let decoded = decode_body(&sample(name), encoding, Compression::None, LIMIT)
            .expect("the sample decodes");
        // The samples were recorded on a fixed day, so the window is wide.
        let extracted = extract(
            &decoded.request,
            "ann@example.com",
            &types,
            Utc::now(),
            3650,
            true,
        )
        .expect("the token usage is readable");
        assert_eq!(extracted.points.len(), 4, "{name}");
        assert_eq!(extracted.rejected_count(), 0, "{name}");
    }
}
