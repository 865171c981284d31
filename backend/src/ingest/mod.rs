//! Usage ingest: `POST /v1/metrics` receives Claude Code's OpenTelemetry
//! metrics over OTLP/HTTP and counts `claude_code.token.usage` exactly once
//! for the user the bearer token names.
//!
//! - [`decode`]: content type, gzip, the size limit, protobuf and JSON.
//! - [`json`]: the OTLP/JSON points the typed decoder drops, recovered
//!   with a rejection reason each.
//! - [`points`]: which points count, their tokens, identity and rejections.
//! - [`batch`]: the points as the store records them, and the conversion
//!   of cumulative series to deltas.
//! - [`sqlite`]: the one-transaction batch and group writes of the SQLite
//!   store, and the pruning of expired point identities.
//! - [`writer`]: the task that records the batches of many requests in one
//!   transaction (group commit).
//! - [`handler`]: the HTTP handler and its OTLP responses.
//!
//! The user is whoever the validated bearer token says, exactly as for
//! `GET /v1/check`; attributes in the payload such as `user.email` never
//! decide it. A point's identity includes that user, so a re-delivered
//! request, or a point seen before, adds nothing.

pub mod batch;
pub mod decode;
pub mod handler;
pub mod json;
pub mod points;
pub mod sqlite;
pub mod writer;

use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;

pub use points::TypeMapping;
pub use writer::{
    AlertCaller, AlertSettings, DEFAULT_DEDUP_WINDOW_DAYS, UsageWriter, WriterSettings,
};

use tollgate_quota::CountingConfig;

use crate::store::Store;

/// The default limit of a request body, compressed or inflated: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Settings of `POST /v1/metrics`.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// The largest body accepted, before and after gzip decompression.
    pub max_body_bytes: usize,
    /// Extra `type` values counted as one of the four token types.
    pub types: TypeMapping,
    /// Wakes the webhook sender after an alert is raised; `None` when no
    /// webhook is configured, so alerts go to the log only.
    pub alert_wake: Option<Arc<Notify>>,
    /// The queue, group size and de-duplication window of the writer.
    pub writer: WriterSettings,
    /// The writer, started by the first request that has points to record.
    started: OnceLock<UsageWriter>,
}

impl IngestSettings {
    /// Returns the writer, starting it on the current runtime on first use.
    pub fn writer(&self, store: &Arc<dyn Store>, counting: &CountingConfig) -> &UsageWriter {
        self.started.get_or_init(|| {
            let alerts = AlertSettings {
                counting: counting.clone(),
                queue_webhook: self.alert_wake.is_some(),
            };
            UsageWriter::start(Arc::clone(store), self.writer.clone(), alerts)
        })
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            types: TypeMapping::default(),
            alert_wake: None,
            writer: WriterSettings::default(),
            started: OnceLock::new(),
        }
    }
}
