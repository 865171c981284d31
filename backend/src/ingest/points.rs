//! Reading `claude_code.token.usage` points out of a decoded export
//! request: which points count, their token counts, their identity, and
//! why a point is rejected.
//!
//! A point's identity is its end time followed by a SHA-256 digest of the
//! authenticated user, the metric name, the resource attributes, the
//! instrumentation scope, the point's attributes (sorted by key) and its
//! start and end time. The
//! attribute values are hashed in their protobuf encoding, so the same
//! point sent as protobuf or as JSON has the same identity. The user is
//! part of it, so nobody can claim another user's points in advance by
//! sending them first under their own token.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::digest::{Context, SHA256};
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, NumberDataPoint, metric::Data,
};
use prost::Message;
use tollgate_quota::TokenType;

use super::batch::{CumulativeValue, Digest, PointValue, UsagePoint};

/// The metric Claude Code reports token usage in.
pub const TOKEN_USAGE_METRIC: &str = "claude_code.token.usage";

/// The largest token count one point may carry: a trillion, far above any
/// real request, so that counters cannot overflow.
pub const MAX_POINT_TOKENS: u64 = 1_000_000_000_000;

/// The data point flag that marks a point without a recorded value.
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// How far in the future a point's end time may lie, for clock skew.
pub const MAX_FUTURE_SKEW: chrono::Duration = chrono::Duration::minutes(10);

/// Which `type` attribute values count, and as which token type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeMapping {
    /// Extra type names counted as one of the four token types, such as
    /// `cacheCreation1h` → `cacheCreation`.
    aliases: BTreeMap<String, TokenType>,
}

impl TypeMapping {
    /// Parses `NAME=TYPE` pairs separated by commas, such as
    /// `cacheCreation1h=cacheCreation`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut aliases = BTreeMap::new();
        for entry in text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let (name, target) = entry.split_once('=').ok_or_else(|| {
                format!("invalid entry {entry:?}; write NAME=TYPE, such as cacheCreation1h=cacheCreation")
            })?;
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("invalid entry {entry:?}: the type name is empty"));
            }
            let target: TokenType = target.parse().map_err(|error| format!("{error}"))?;
            if aliases.insert(name.to_owned(), target).is_some() {
                return Err(format!(
                    "the type name {name:?} is listed twice; list it once"
                ));
            }
        }
        Ok(Self { aliases })
    }

    /// Returns the token type a `type` value counts as, if any.
    pub fn counted_as(&self, type_name: &str) -> Option<TokenType> {
        type_name
            .parse()
            .ok()
            .or_else(|| self.aliases.get(type_name).copied())
    }
}

/// Why a `claude_code.token.usage` point was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rejection {
    NotASum,
    UnspecifiedTemporality,
    MissingType,
    MissingValue,
    NotFinite,
    Negative,
    Fractional,
    TooLarge,
    MissingEndTime,
    EndTimeOutOfRange,
    StartAfterEnd,
    InTheFuture,
    /// The point ended before the de-duplication window of this many days.
    OlderThanWindow {
        days: u32,
    },
    /// OTLP/JSON only: `asDouble` or `asInt` is present but not a number.
    InvalidValue,
    /// OTLP/JSON only: a time is not a decimal integer of nanoseconds.
    InvalidTime,
    /// OTLP/JSON only: an attribute is not a valid `KeyValue`.
    InvalidAttribute,
    /// OTLP/JSON only: the point is not a valid `NumberDataPoint` for
    /// another reason.
    InvalidPoint,
}

impl fmt::Display for Rejection {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::NotASum => "the metric is not a sum",
            Self::UnspecifiedTemporality => {
                "the sum's aggregation temporality is neither delta (1) nor cumulative (2)"
            }
            Self::MissingType => "the point has no string `type` attribute",
            Self::MissingValue => "the point has no asDouble or asInt value",
            Self::NotFinite => "the value is not a finite number",
            Self::Negative => "the value is negative",
            Self::Fractional => "the value is not a whole number of tokens",
            Self::TooLarge => "the value is over 1,000,000,000,000 tokens",
            Self::MissingEndTime => "the point has no timeUnixNano",
            Self::EndTimeOutOfRange => "timeUnixNano is after the year 2262",
            Self::StartAfterEnd => "startTimeUnixNano is after timeUnixNano",
            Self::InTheFuture => "timeUnixNano is more than 10 minutes in the future",
            Self::OlderThanWindow { days } => {
                return write!(
                    formatter,
                    "timeUnixNano is older than the {days}-day de-duplication window"
                );
            }
            Self::InvalidValue => "asDouble or asInt is not a number",
            Self::InvalidTime => {
                "timeUnixNano or startTimeUnixNano is not a decimal integer of nanoseconds"
            }
            Self::InvalidAttribute => "an attribute is not a valid OTLP/JSON KeyValue",
            Self::InvalidPoint => "the point is not a valid OTLP/JSON NumberDataPoint",
        };
        formatter.write_str(text)
    }
}

/// The counted points of one request and the rejected ones.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    pub points: Vec<UsagePoint>,
    /// Rejected points by reason.
    pub rejected: BTreeMap<Rejection, u64>,
    /// Points skipped because they carry the no-recorded-value flag.
    pub skipped: u64,
}

impl Extracted {
    /// Counts the rejected points.
    pub fn rejected_count(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Describes the rejections, such as `2 points: the value is negative`,
    /// or returns `None` when nothing was rejected.
    pub fn rejection_message(&self) -> Option<String> {
        if self.rejected.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .rejected
            .iter()
            .map(|(reason, count)| {
                let noun = if *count == 1 { "point" } else { "points" };
                format!("{count} {noun}: {reason}")
            })
            .collect();
        Some(format!(
            "rejected {} {TOKEN_USAGE_METRIC} points ({})",
            self.rejected_count(),
            parts.join("; ")
        ))
    }
}

/// A `claude_code.token.usage` metric whose data could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "the {TOKEN_USAGE_METRIC} metric has no data this server can read; OTLP/JSON \
     requires a `sum` with integer enum values (aggregationTemporality 1 for delta, \
     2 for cumulative) and valid data points"
)]
pub struct UnreadableMetric;

/// Reads the counted points of `request` for `user`. A point that ended
/// more than `dedup_window_days` before `now` is rejected, because its
/// identity may already have been deleted.
///
/// With `require_data`, a `claude_code.token.usage` metric without data
/// fails the request. The OTLP/JSON decoder drops a metric's data when any
/// of its fields is invalid, and [`super::json::recover`] restores the
/// points it can, so this turns the remaining silent loss into a 400.
pub fn extract(
    request: &ExportMetricsServiceRequest,
    user: &str,
    types: &TypeMapping,
    now: DateTime<Utc>,
    dedup_window_days: u32,
    require_data: bool,
) -> Result<Extracted, UnreadableMetric> {
    let mut extracted = Extracted::default();
    let mut buffer = Vec::new();
    let window = PointWindow {
        earliest_end: now - chrono::Duration::days(i64::from(dedup_window_days)),
        latest_end: now + MAX_FUTURE_SKEW,
        days: dedup_window_days,
    };
    let mut cumulative_start = None;

    for resource_metrics in &request.resource_metrics {
        let resource_attributes = resource_metrics
            .resource
            .as_ref()
            .map(|resource| resource.attributes.as_slice())
            .unwrap_or_default();
        for scope_metrics in &resource_metrics.scope_metrics {
            for metric in &scope_metrics.metrics {
                if metric.name != TOKEN_USAGE_METRIC {
                    continue;
                }
                let sum = match &metric.data {
                    Some(Data::Sum(sum)) => sum,
                    Some(other) => {
                        let count = data_point_count(other);
                        if count > 0 {
                            *extracted.rejected.entry(Rejection::NotASum).or_default() += count;
                        }
                        continue;
                    }
                    None if require_data => return Err(UnreadableMetric),
                    None => continue,
                };
                let temporality = AggregationTemporality::try_from(sum.aggregation_temporality)
                    .unwrap_or(AggregationTemporality::Unspecified);
                let series_prefix = series_prefix(
                    user,
                    &metric.name,
                    resource_attributes,
                    scope_metrics.scope.as_ref(),
                    &mut buffer,
                );
                for data_point in &sum.data_points {
                    if data_point.flags & FLAG_NO_RECORDED_VALUE != 0 {
                        extracted.skipped += 1;
                        continue;
                    }
                    match read_point(
                        data_point,
                        temporality,
                        &series_prefix,
                        types,
                        &window,
                        &mut buffer,
                    ) {
                        Ok(point) => {
                            if matches!(point.value, PointValue::Cumulative(_))
                                && cumulative_start.is_none()
                            {
                                cumulative_start = Some(extracted.points.len());
                            }
                            extracted.points.push(point);
                        }
                        Err(reason) => *extracted.rejected.entry(reason).or_default() += 1,
                    }
                }
            }
        }
    }
    if cumulative_start.is_some() {
        order_cumulative_points(&mut extracted.points);
    }
    Ok(extracted)
}

/// Puts every cumulative series' points in end-time order after the delta
/// points, which keep their order, so each increase is computed against
/// the point before it.
fn order_cumulative_points(points: &mut [UsagePoint]) {
    points.sort_by_key(|point| match point.value {
        PointValue::Delta(_) => None,
        PointValue::Cumulative(value) => Some((value.series, value.end_unix_nano)),
    });
}

fn data_point_count(data: &Data) -> u64 {
    let count = match data {
        Data::Gauge(gauge) => gauge.data_points.len(),
        Data::Sum(sum) => sum.data_points.len(),
        Data::Histogram(histogram) => histogram.data_points.len(),
        Data::ExponentialHistogram(histogram) => histogram.data_points.len(),
        Data::Summary(summary) => summary.data_points.len(),
    };
    u64::try_from(count).unwrap_or(u64::MAX)
}

/// Starts the digest of every series of one metric: user, metric name,
/// resource attributes and scope, each length-prefixed.
fn series_prefix(
    user: &str,
    metric: &str,
    resource_attributes: &[KeyValue],
    scope: Option<&InstrumentationScope>,
    buffer: &mut Vec<u8>,
) -> Context {
    let mut context = Context::new(&SHA256);
    context.update(b"tollgate-usage-point-v1\0");
    update_field(&mut context, user.as_bytes());
    update_field(&mut context, metric.as_bytes());
    update_attributes(&mut context, resource_attributes, buffer);
    let (name, version) = scope
        .map(|scope| (scope.name.as_str(), scope.version.as_str()))
        .unwrap_or_default();
    update_field(&mut context, name.as_bytes());
    update_field(&mut context, version.as_bytes());
    context
}

fn update_field(context: &mut Context, bytes: &[u8]) {
    context.update(&(bytes.len() as u64).to_le_bytes());
    context.update(bytes);
}

/// Hashes attributes in key order, each in its protobuf encoding.
fn update_attributes(context: &mut Context, attributes: &[KeyValue], buffer: &mut Vec<u8>) {
    let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
    sorted.sort_by(|left, right| left.key.cmp(&right.key));
    context.update(&(sorted.len() as u64).to_le_bytes());
    for attribute in sorted {
        buffer.clear();
        attribute
            .encode_length_delimited(buffer)
            .expect("encoding into a Vec cannot run out of space");
        context.update(buffer);
    }
}

fn finish(context: Context) -> Digest {
    let digest = context.finish();
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// Builds a point identity: the end time in big-endian nanoseconds, then
/// the first 24 bytes of the point's digest. New points then sort near the
/// end of the store's key index, so recording them appends instead of
/// writing all over the index, and old identities can be pruned by range.
fn point_id(end_nanos: u64, context: Context) -> Digest {
    let mut id = finish(context);
    id.copy_within(0..24, 8);
    id[..8].copy_from_slice(&end_nanos.to_be_bytes());
    id
}

fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref())
        .and_then(|value| match &value.value {
            Some(AnyValue::StringValue(text)) => Some(text.as_str()),
            _ => None,
        })
}

/// The range of end times a point may have.
struct PointWindow {
    earliest_end: DateTime<Utc>,
    latest_end: DateTime<Utc>,
    days: u32,
}

fn read_point(
    data_point: &NumberDataPoint,
    temporality: AggregationTemporality,
    series_prefix: &Context,
    types: &TypeMapping,
    window: &PointWindow,
    buffer: &mut Vec<u8>,
) -> Result<UsagePoint, Rejection> {
    let cumulative = match temporality {
        AggregationTemporality::Delta => false,
        AggregationTemporality::Cumulative => true,
        AggregationTemporality::Unspecified => return Err(Rejection::UnspecifiedTemporality),
    };
    let type_name = string_attribute(&data_point.attributes, "type")
        .filter(|name| !name.is_empty())
        .ok_or(Rejection::MissingType)?;
    let tokens = tokens_of(data_point.value)?;
    let end_nanos = data_point.time_unix_nano;
    if end_nanos == 0 {
        return Err(Rejection::MissingEndTime);
    }
    let end = i64::try_from(end_nanos)
        .map(DateTime::from_timestamp_nanos)
        .map_err(|_| Rejection::EndTimeOutOfRange)?;
    if data_point.start_time_unix_nano > end_nanos {
        return Err(Rejection::StartAfterEnd);
    }
    if end > window.latest_end {
        return Err(Rejection::InTheFuture);
    }
    if end < window.earliest_end {
        return Err(Rejection::OlderThanWindow { days: window.days });
    }

    let mut series = series_prefix.clone();
    update_attributes(&mut series, &data_point.attributes, buffer);
    let mut point_digest = series.clone();
    point_digest.update(&data_point.start_time_unix_nano.to_le_bytes());
    point_digest.update(&end_nanos.to_le_bytes());
    let value = if cumulative {
        PointValue::Cumulative(CumulativeValue {
            series: finish(series),
            start_unix_nano: data_point.start_time_unix_nano,
            end_unix_nano: end_nanos,
            total: tokens,
        })
    } else {
        PointValue::Delta(tokens)
    };
    Ok(UsagePoint {
        id: point_id(end_nanos, point_digest),
        end,
        type_name: type_name.to_owned(),
        counted_as: types.counted_as(type_name),
        model: string_attribute(&data_point.attributes, "model")
            .unwrap_or_default()
            .to_owned(),
        value,
    })
}

/// Converts a point value to whole tokens. Claude Code sends doubles;
/// integers are accepted too.
fn tokens_of(value: Option<Value>) -> Result<u64, Rejection> {
    let tokens = match value.ok_or(Rejection::MissingValue)? {
        Value::AsDouble(double) => {
            if !double.is_finite() {
                return Err(Rejection::NotFinite);
            }
            if double < 0.0 {
                return Err(Rejection::Negative);
            }
            if double.fract() != 0.0 {
                return Err(Rejection::Fractional);
            }
            if double > MAX_POINT_TOKENS as f64 {
                return Err(Rejection::TooLarge);
            }
            // A whole number in 0..=MAX_POINT_TOKENS converts exactly.
            double as u64
        }
        Value::AsInt(integer) => u64::try_from(integer).map_err(|_| Rejection::Negative)?,
    };
    if tokens > MAX_POINT_TOKENS {
        return Err(Rejection::TooLarge);
    }
    Ok(tokens)
}
