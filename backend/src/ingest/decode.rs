//! Decoding an OTLP/HTTP metrics export request body: the content type,
//! optional gzip, the size limit and the protobuf or JSON encoding.
//!
//! The messages are the ones `opentelemetry-proto` generates from the
//! official OTLP definitions: prost decodes the protobuf encoding and the
//! crate's serde derives decode the OTLP/JSON encoding (64-bit integers as
//! decimal strings or numbers, enum values as integers).

use std::collections::BTreeMap;
use std::io::Read;

use flate2::read::MultiGzDecoder;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message;

use super::points::Rejection;

/// The encoding of a request body, taken from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`
    Protobuf,
    /// `application/json`
    Json,
}

impl Encoding {
    /// Reads the encoding from a `Content-Type` value, ignoring parameters
    /// such as `charset` and the case of the media type.
    pub fn from_content_type(content_type: &str) -> Result<Self, DecodeError> {
        let media_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match media_type.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(DecodeError::UnsupportedContentType(content_type.to_owned())),
        }
    }

    /// The `Content-Type` of bodies in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// The compression of a request body, taken from its `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    /// Reads the compression from an optional `Content-Encoding` value.
    pub fn from_content_encoding(value: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = value else {
            return Ok(Self::None);
        };
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "identity" => Ok(Self::None),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            _ => Err(DecodeError::UnsupportedEncoding(value.to_owned())),
        }
    }
}

/// Why a request body could not be decoded. Each is the client's fault, so
/// the request gets a 4xx status and changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "unsupported Content-Type {0:?}; send OTLP metrics as application/x-protobuf or \
         application/json (OTEL_EXPORTER_OTLP_PROTOCOL http/protobuf or http/json)"
    )]
    UnsupportedContentType(String),
    #[error("unsupported Content-Encoding {0:?}; send the body uncompressed or with gzip")]
    UnsupportedEncoding(String),
    #[error(
        "the request body is larger than the limit of {limit} bytes; export smaller \
         batches or raise --max-metrics-bytes"
    )]
    TooLarge { limit: usize },
    #[error(
        "the gzip body expands to more than the limit of {limit} bytes; export smaller \
         batches or raise --max-metrics-bytes"
    )]
    InflatedTooLarge { limit: usize },
    #[error("the gzip body is invalid or truncated: {0}")]
    Gzip(String),
    #[error("the body is not a valid OTLP protobuf ExportMetricsServiceRequest: {0}")]
    Protobuf(String),
    #[error("the body is not a valid OTLP/JSON ExportMetricsServiceRequest: {0}")]
    Json(String),
    #[error("the body is empty; send an OTLP ExportMetricsServiceRequest")]
    Empty,
}

impl DecodeError {
    /// Returns the machine-readable code sent as the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedContentType(_) => "unsupported_content_type",
            Self::UnsupportedEncoding(_) => "unsupported_content_encoding",
            Self::TooLarge { .. } | Self::InflatedTooLarge { .. } => "body_too_large",
            Self::Gzip(_) => "invalid_gzip",
            Self::Protobuf(_) | Self::Json(_) | Self::Empty => "malformed_body",
        }
    }

    /// Returns the HTTP status: 415 for an unsupported type or encoding,
    /// 413 for a body over the limit, 400 otherwise.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnsupportedContentType(_) | Self::UnsupportedEncoding(_) => 415,
            Self::TooLarge { .. } | Self::InflatedTooLarge { .. } => 413,
            _ => 400,
        }
    }
}

/// Decompresses `body` when needed, keeping at most `limit` bytes.
pub fn inflate(
    body: &[u8],
    compression: Compression,
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    if body.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    match compression {
        Compression::None => Ok(body.to_vec()),
        Compression::Gzip => {
            let mut inflated = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
            // Reading one byte past the limit tells a body of exactly `limit`
            // bytes from a larger one without inflating the rest.
            let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
            MultiGzDecoder::new(body)
                .take(cap)
                .read_to_end(&mut inflated)
                .map_err(|error| DecodeError::Gzip(error.to_string()))?;
            if inflated.len() > limit {
                return Err(DecodeError::InflatedTooLarge { limit });
            }
            Ok(inflated)
        }
    }
}

/// Decodes an uncompressed body in `encoding`.
pub fn decode_request(
    body: &[u8],
    encoding: Encoding,
) -> Result<ExportMetricsServiceRequest, DecodeError> {
    match encoding {
        // An empty protobuf message is a valid, empty request.
        Encoding::Protobuf => ExportMetricsServiceRequest::decode(body)
            .map_err(|error| DecodeError::Protobuf(error.to_string())),
        Encoding::Json => {
            if body.iter().all(u8::is_ascii_whitespace) {
                return Err(DecodeError::Empty);
            }
            serde_json::from_slice(body).map_err(|error| DecodeError::Json(error.to_string()))
        }
    }
}

/// A decoded request and the points the decoder had to drop.
#[derive(Debug, Default)]
pub struct Decoded {
    pub request: ExportMetricsServiceRequest,
    /// Token usage points removed as invalid while decoding, by reason;
    /// only OTLP/JSON bodies have any (see [`super::json`]).
    pub rejected: BTreeMap<Rejection, u64>,
}

/// Decompresses and decodes a request body.
pub fn decode_body(
    body: &[u8],
    encoding: Encoding,
    compression: Compression,
    limit: usize,
) -> Result<Decoded, DecodeError> {
    let inflated = inflate(body, compression, limit)?;
    let mut request = decode_request(&inflated, encoding)?;
    let rejected = if encoding == Encoding::Json && super::json::needs_recovery(&request) {
        super::json::recover(&inflated, &mut request)
    } else {
        BTreeMap::new()
    };
    Ok(Decoded { request, rejected })
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression as Level;
    use flate2::write::GzEncoder;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Level::default());
        encoder.write_all(bytes).expect("gzip writes to memory");
        encoder.finish().expect("gzip finishes")
    }

    #[test]
    fn content_types() {
        let cases = [
            ("application/x-protobuf", Some(Encoding::Protobuf)),
            ("Application/X-Protobuf", Some(Encoding::Protobuf)),
            ("application/json", Some(Encoding::Json)),
            ("application/json; charset=utf-8", Some(Encoding::Json)),
            ("text/plain", None),
            ("", None),
        ];
        for (value, expected) in cases {
            assert_eq!(Encoding::from_content_type(value).ok(), expected, "{value}");
        }
    }

    #[test]
    fn gzip_round_trip() {
        let body = b"hello metrics".repeat(10);
        let inflated = inflate(&gzip(&body), Compression::Gzip, 1000).expect("inflates");
        assert_eq!(inflated, body);
    }

    #[test]
    fn gzip_bomb_is_cut_at_the_limit() {
        let bomb = gzip(&vec![0u8; 50_000_000]);
        assert!(bomb.len() < 100_000, "the bomb is small: {}", bomb.len());
        let error = inflate(&bomb, Compression::Gzip, 1_000_000).expect_err("too large");
        assert_eq!(error.status(), 413);
        assert!(matches!(error, DecodeError::InflatedTooLarge { .. }));
    }

    #[test]
    fn inflated_size_equal_to_limit_is_accepted() {
        let body = vec![7u8; 4096];
        let inflated = inflate(&gzip(&body), Compression::Gzip, 4096).expect("at the limit");
        assert_eq!(inflated.len(), 4096);
    }

    #[test]
    fn truncated_gzip_is_rejected() {
        let compressed = gzip(&b"some metrics".repeat(100));
        let error = inflate(
            &compressed[..compressed.len() / 2],
            Compression::Gzip,
            10_000,
        )
        .expect_err("truncated");
        assert_eq!(error.status(), 400);
        assert_eq!(error.code(), "invalid_gzip");
    }

    #[test]
    fn compressed_body_over_limit_is_rejected() {
        let error = inflate(&[0u8; 11], Compression::None, 10).expect_err("over");
        assert_eq!(error.status(), 413);
    }

    #[test]
    fn empty_json_is_rejected_and_empty_protobuf_is_empty() {
        assert!(matches!(
            decode_request(b"  ", Encoding::Json),
            Err(DecodeError::Empty)
        ));
        let request = decode_request(b"", Encoding::Protobuf).expect("empty message");
        assert!(request.resource_metrics.is_empty());
    }
}
