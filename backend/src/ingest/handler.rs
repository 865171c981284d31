//! `POST /v1/metrics`: the OTLP/HTTP metrics endpoint.
//!
//! The [`Authenticated`] extractor validates the bearer token before the
//! body is read, so a request without a valid token gets its 401 and
//! changes nothing. The answer follows OTLP/HTTP: `200` with an
//! `ExportMetricsServiceResponse` in the request's encoding, carrying a
//! `partial_success` that counts and explains rejected points; a `4xx`
//! with a `google.rpc.Status` (protobuf) or a JSON object with `code`,
//! `message` and `error` for a body that cannot be used, in which case
//! nothing is recorded; `503` with `Retry-After` when the store is
//! unavailable or the writer's queue is full, which OTLP exporters retry.
//!
//! Token validation and decoding run on the request's task. The points go
//! to the [`super::writer`], which resolves the alert policies of many
//! requests with one store read, records their batches in one transaction
//! and sends each request its outcome after the commit.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use prost::Message;

use super::IngestSettings;
use super::batch::UsageBatch;
use super::decode::{Compression, DecodeError, Encoding, decode_body};
use super::points::{Extracted, UnreadableMetric, extract};
use super::writer::{AlertCaller, WriteError};
use crate::auth::{Authenticated, Caller};
use crate::server::{AppState, error_chain};

/// Bodies up to this size are decoded on the request's task; larger ones
/// on the blocking pool, so one large export does not stall other requests.
const INLINE_DECODE_BYTES: usize = 64 * 1024;

/// `google.rpc.Status`, the body of OTLP/HTTP error responses in protobuf.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// The `Retry-After` of a 503: the writer's queue drains in milliseconds,
/// so one second is enough for most retries.
const RETRY_AFTER_SECONDS: &str = "1";

/// gRPC status codes used in error bodies.
const RPC_INVALID_ARGUMENT: i32 = 3;
const RPC_UNAVAILABLE: i32 = 14;

/// A request that cannot be used, answered with a status and a message.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    encoding: Encoding,
}

impl Failure {
    fn decode(error: &DecodeError, encoding: Encoding) -> Self {
        Self {
            status: StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST),
            code: error.code(),
            message: error.to_string(),
            encoding,
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let rpc_code = if self.status.is_server_error() {
            RPC_UNAVAILABLE
        } else {
            RPC_INVALID_ARGUMENT
        };
        let body = match self.encoding {
            Encoding::Protobuf => RpcStatus {
                code: rpc_code,
                message: self.message,
            }
            .encode_to_vec(),
            Encoding::Json => serde_json::json!({
                "code": rpc_code,
                "message": self.message,
                "error": self.code,
            })
            .to_string()
            .into_bytes(),
        };
        let mut response = encoded(self.status, self.encoding, body);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

fn encoded(status: StatusCode, encoding: Encoding, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(encoding.content_type()),
    );
    response
}

fn header_text(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// Handles `POST /v1/metrics`; see the module docs.
pub async fn export_metrics(
    Authenticated(caller): Authenticated,
    State(state): State<AppState>,
    Extension(settings): Extension<Arc<IngestSettings>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match ingest(&caller, &state, &settings, &headers, body).await {
        Ok(response) => response,
        Err(failure) => {
            tracing::debug!(
                user = %caller.identity,
                status = failure.status.as_u16(),
                error = failure.code,
                "rejected a metrics export: {}",
                failure.message
            );
            failure.into_response()
        }
    }
}

async fn ingest(
    caller: &Caller,
    state: &AppState,
    settings: &IngestSettings,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Failure> {
    let content_type = header_text(headers, CONTENT_TYPE).unwrap_or_default();
    let encoding = Encoding::from_content_type(content_type)
        .map_err(|error| Failure::decode(&error, Encoding::Json))?;
    let compression = Compression::from_content_encoding(header_text(headers, CONTENT_ENCODING))
        .map_err(|error| Failure::decode(&error, encoding))?;
    let limit = settings.max_body_bytes;
    let too_large = DecodeError::TooLarge { limit };
    let declared = header_text(headers, CONTENT_LENGTH).and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Failure::decode(&too_large, encoding));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|error| {
        if is_length_limit(&error) {
            Failure::decode(&too_large, encoding)
        } else {
            Failure {
                status: StatusCode::BAD_REQUEST,
                code: "body_read_failed",
                message: format!(
                    "cannot read the request body ({}); send the whole body with a correct \
                     Content-Length",
                    error_chain(&error)
                ),
                encoding,
            }
        }
    })?;

    let user = caller.identity.to_string();
    let now = Utc::now();
    let decode_and_extract = {
        let types = settings.types.clone();
        let user = user.clone();
        let dedup_window_days = settings.writer.dedup_window_days;
        move || -> Result<Extracted, Failure> {
            let decoded = decode_body(&bytes, encoding, compression, limit)
                .map_err(|error| Failure::decode(&error, encoding))?;
            let mut extracted = extract(
                &decoded.request,
                &user,
                &types,
                now,
                dedup_window_days,
                encoding == Encoding::Json,
            )
            .map_err(|error: UnreadableMetric| Failure {
                status: StatusCode::BAD_REQUEST,
                code: "unreadable_metric",
                message: error.to_string(),
                encoding,
            })?;
            for (reason, count) in decoded.rejected {
                *extracted.rejected.entry(reason).or_default() += count;
            }
            Ok(extracted)
        }
    };
    let extracted = if bytes_len_hint(headers, limit) > INLINE_DECODE_BYTES {
        tokio::task::spawn_blocking(decode_and_extract)
            .await
            .map_err(|error| Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                code: "decode_failed",
                message: format!("decoding the body failed unexpectedly: {error}"),
                encoding,
            })??
    } else {
        decode_and_extract()?
    };

    let rejected = extracted.rejected_count();
    let rejection_message = extracted.rejection_message();
    let points = extracted.points;
    let point_count = points.len();
    if point_count > 0 {
        let batch = UsageBatch {
            user: user.clone(),
            points,
            alerting: None,
        };
        let alert_caller = AlertCaller {
            identity: caller.identity.clone(),
            groups: caller.groups.clone(),
            now,
        };
        let outcome = settings
            .writer(&state.store, &state.counting)
            .record(batch, Some(alert_caller))
            .await
            .map_err(|error| write_failure(&error, encoding))?;
        for alert in &outcome.alerts {
            alert.log();
        }
        if !outcome.alerts.is_empty()
            && let Some(wake) = &settings.alert_wake
        {
            wake.notify_one();
        }
        tracing::debug!(
            user,
            recorded = outcome.recorded,
            duplicates = outcome.duplicates,
            rejected,
            alerts = outcome.alerts.len(),
            "ingested a metrics export"
        );
    } else {
        tracing::debug!(
            user,
            rejected,
            "a metrics export carried no token usage to record"
        );
    }
    if let Some(message) = &rejection_message {
        tracing::info!(
            user,
            rejected,
            "accepted part of a metrics export: {message}"
        );
    }

    let response = ExportMetricsServiceResponse {
        partial_success: rejection_message.map(|error_message| ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message,
        }),
    };
    let body = match encoding {
        Encoding::Protobuf => response.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&response).map_err(|error| Failure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "encode_failed",
            message: format!("encoding the response failed: {error}"),
            encoding,
        })?,
    };
    Ok(encoded(StatusCode::OK, encoding, body))
}

/// Returns the body size to plan for: the declared length, else the limit.
fn bytes_len_hint(headers: &HeaderMap, limit: usize) -> usize {
    header_text(headers, CONTENT_LENGTH)
        .and_then(|value| value.parse::<usize>().ok())
        .unwrap_or(limit)
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if cause.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Maps a failure of the ingest writer to a 503, which OTLP exporters
/// retry after the `Retry-After` delay.
fn write_failure(error: &WriteError, encoding: Encoding) -> Failure {
    let code = match error {
        WriteError::QueueFull { .. } => {
            tracing::warn!("rejected a metrics export: {error}");
            "ingest_queue_full"
        }
        WriteError::Stopped => "shutting_down",
        WriteError::Store(message) => {
            tracing::error!("store failure while ingesting usage: {message}");
            "store_unavailable"
        }
    };
    let message = match error {
        WriteError::Store(message) => {
            format!("the quota store is unavailable ({message}); the export is retried")
        }
        other => other.to_string(),
    };
    Failure {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code,
        message,
        encoding,
    }
}
