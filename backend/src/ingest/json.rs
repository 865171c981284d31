//! Recovery of the `claude_code.token.usage` points that the OTLP/JSON
//! decoder drops without an error.
//!
//! The serde derives of `opentelemetry-proto` 0.33 flatten a metric's data
//! and a point's value into `Option` fields, and serde turns an error
//! inside a flattened `Option` into `None`. So one invalid point, such as
//! one with a time that is not an integer, loses the data of its whole
//! metric, and a value that is not a number loses the point's value. This
//! module reads those metrics and points again from the JSON document,
//! keeps the valid points and names a reason for each invalid one, so that
//! the response counts them as rejected like the protobuf path does.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{NumberDataPoint, Sum};
use serde_json::Value as Json;

use super::points::{Rejection, TOKEN_USAGE_METRIC};

/// The JSON keys of a metric's data, other than `sum`.
const OTHER_DATA_KEYS: [&str; 4] = ["gauge", "histogram", "exponentialHistogram", "summary"];

/// Reports whether a token usage metric of `request` lost its data or a
/// point's value, so that [`recover`] has work to do. Valid requests pass
/// this check without parsing the body again.
pub fn needs_recovery(request: &ExportMetricsServiceRequest) -> bool {
    token_usage_metrics(request).any(|metric| match &metric.data {
        None => true,
        Some(Data::Sum(sum)) => sum.data_points.iter().any(|point| point.value.is_none()),
        Some(_) => false,
    })
}

fn token_usage_metrics(
    request: &ExportMetricsServiceRequest,
) -> impl Iterator<Item = &opentelemetry_proto::tonic::metrics::v1::Metric> {
    request
        .resource_metrics
        .iter()
        .flat_map(|resource| &resource.scope_metrics)
        .flat_map(|scope| &scope.metrics)
        .filter(|metric| metric.name == TOKEN_USAGE_METRIC)
}

/// Restores the valid points of the token usage metrics in `request` from
/// the JSON `body` it was decoded from, removes the invalid ones, and
/// returns how many were removed for each reason.
///
/// A metric whose data cannot be read at all, such as a `sum` without a
/// `dataPoints` array, keeps no data, so the caller can fail the request.
pub fn recover(body: &[u8], request: &mut ExportMetricsServiceRequest) -> BTreeMap<Rejection, u64> {
    let mut rejected = BTreeMap::new();
    // The body decoded as a request, so it is valid JSON.
    let Ok(document) = serde_json::from_slice::<Json>(body) else {
        return rejected;
    };
    for (resource_index, resource) in request.resource_metrics.iter_mut().enumerate() {
        for (scope_index, scope) in resource.scope_metrics.iter_mut().enumerate() {
            for (metric_index, metric) in scope.metrics.iter_mut().enumerate() {
                if metric.name != TOKEN_USAGE_METRIC {
                    continue;
                }
                let pointer = format!(
                    "/resourceMetrics/{resource_index}/scopeMetrics/{scope_index}/metrics/{metric_index}"
                );
                let Some(json) = document.pointer(&pointer) else {
                    continue;
                };
                match &mut metric.data {
                    None => {
                        metric.data = recover_data(json, &mut rejected);
                    }
                    Some(Data::Sum(sum)) => {
                        let json_points = json
                            .pointer("/sum/dataPoints")
                            .and_then(Json::as_array)
                            .map(Vec::as_slice)
                            .unwrap_or_default();
                        sum.data_points = restore_values(
                            std::mem::take(&mut sum.data_points),
                            json_points,
                            &mut rejected,
                        );
                    }
                    Some(_) => {}
                }
            }
        }
    }
    rejected
}

/// Reads a metric's data whose typed decoding failed.
fn recover_data(metric: &Json, rejected: &mut BTreeMap<Rejection, u64>) -> Option<Data> {
    if let Some(sum) = metric.get("sum") {
        return recover_sum(sum, rejected).map(Data::Sum);
    }
    // Any other kind is not counted, so only its points are needed.
    for key in OTHER_DATA_KEYS {
        if let Some(points) = metric
            .get(key)
            .and_then(|data| data.get("dataPoints"))
            .and_then(Json::as_array)
        {
            add(rejected, Rejection::NotASum, points.len());
            return None;
        }
    }
    None
}

fn recover_sum(sum: &Json, rejected: &mut BTreeMap<Rejection, u64>) -> Option<Sum> {
    let points = sum.get("dataPoints")?.as_array()?;
    let temporality = match sum.get("aggregationTemporality") {
        None | Some(Json::Null) => 0,
        Some(value) => match value.as_i64().and_then(|value| i32::try_from(value).ok()) {
            Some(value) => value,
            // OTLP/JSON encodes enum values as integers, so a name such as
            // "AGGREGATION_TEMPORALITY_DELTA" is not read.
            None => {
                add(rejected, Rejection::UnspecifiedTemporality, points.len());
                return Some(Sum::default());
            }
        },
    };
    let mut valid = Vec::with_capacity(points.len());
    for point in points {
        match serde_json::from_value::<NumberDataPoint>(point.clone()) {
            Ok(decoded) => valid.push(decoded),
            Err(_) => add(rejected, diagnose(point), 1),
        }
    }
    Some(Sum {
        data_points: restore_values(valid, points, rejected),
        aggregation_temporality: temporality,
        is_monotonic: sum
            .get("isMonotonic")
            .and_then(Json::as_bool)
            .unwrap_or_default(),
    })
}

/// Names why a JSON data point does not decode as a `NumberDataPoint`.
fn diagnose(point: &Json) -> Rejection {
    for key in ["timeUnixNano", "startTimeUnixNano"] {
        if point.get(key).is_some_and(|time| !is_nanoseconds(time)) {
            return Rejection::InvalidTime;
        }
    }
    if let Some(attributes) = point.get("attributes")
        && serde_json::from_value::<Vec<KeyValue>>(attributes.clone()).is_err()
    {
        return Rejection::InvalidAttribute;
    }
    Rejection::InvalidPoint
}

/// Reports whether `time` is an OTLP/JSON fixed64: a non-negative integer,
/// as a number or a decimal string.
fn is_nanoseconds(time: &Json) -> bool {
    match time {
        Json::Null => true,
        Json::Number(number) => number.as_u64().is_some(),
        Json::String(text) => text.parse::<u64>().is_ok(),
        _ => false,
    }
}

/// Restores the value of each point that lost it, from `json_points`, or
/// removes the point with its reason. `points` contains a typed point only
/// for each entry of `json_points` that decoded, so the two lists are
/// matched after leaving out the entries that did not decode.
fn restore_values(
    points: Vec<NumberDataPoint>,
    json_points: &[Json],
    rejected: &mut BTreeMap<Rejection, u64>,
) -> Vec<NumberDataPoint> {
    if points.iter().all(|point| point.value.is_some()) {
        return points;
    }
    let decodable = json_points
        .iter()
        .filter(|point| serde_json::from_value::<NumberDataPoint>((*point).clone()).is_ok());
    let mut kept = Vec::with_capacity(points.len());
    for (mut point, json) in points.into_iter().zip(decodable) {
        if point.value.is_none() {
            match read_value(json) {
                // No value at all: the point is rejected as such later.
                None => {}
                Some(Ok(value)) => point.value = Some(value),
                Some(Err(reason)) => {
                    add(rejected, reason, 1);
                    continue;
                }
            }
        }
        kept.push(point);
    }
    kept
}

/// Reads a point's `asDouble` or `asInt` as the proto3 JSON mapping allows
/// it: a double as a number, a decimal string, or "NaN", "Infinity" or
/// "-Infinity"; an int64 as an integer number or a decimal string. Returns
/// `None` when the point has neither field.
fn read_value(point: &Json) -> Option<Result<Value, Rejection>> {
    if let Some(double) = point.get("asDouble") {
        let parsed = match double {
            Json::Number(number) => number.as_f64(),
            Json::String(text) => match text.as_str() {
                "NaN" => Some(f64::NAN),
                "Infinity" => Some(f64::INFINITY),
                "-Infinity" => Some(f64::NEG_INFINITY),
                text => text.trim().parse::<f64>().ok(),
            },
            _ => None,
        };
        return Some(parsed.map(Value::AsDouble).ok_or(Rejection::InvalidValue));
    }
    let integer = point.get("asInt")?;
    let parsed = match integer {
        Json::Number(number) => number
            .as_i64()
            .map(i128::from)
            .or_else(|| number.as_u64().map(i128::from)),
        Json::String(text) => text.trim().parse::<i128>().ok(),
        _ => None,
    };
    Some(match parsed {
        Some(value) => match i64::try_from(value) {
            Ok(value) => Ok(Value::AsInt(value)),
            Err(_) if value > 0 => Err(Rejection::TooLarge),
            Err(_) => Err(Rejection::Negative),
        },
        None => Err(Rejection::InvalidValue),
    })
}

fn add(rejected: &mut BTreeMap<Rejection, u64>, reason: Rejection, count: usize) {
    if count > 0 {
        *rejected.entry(reason).or_default() += u64::try_from(count).unwrap_or(u64::MAX);
    }
}
