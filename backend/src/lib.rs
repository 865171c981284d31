//! The Tollgate backend: the quota API server, its token validation, the
//! quota stores and the `tollgate` admin command line.
//!
//! - [`auth`]: bearer ID token validation against the OIDC issuer's JWKS.
//! - [`store`]: the [`store::Store`] trait, its SQLite implementation and the
//!   behaviour suite every implementation must pass.
//! - [`server`]: the axum router (`/health`, `/v1/check`, `/v1/metrics`)
//!   and serve loop.
//! - [`ingest`]: OTLP/HTTP usage ingest from Claude Code's metrics.
//! - [`alerts`]: quota alerts, their store records and the webhook sender.
//! - [`cli`]: the `tollgate` command line.
//!
//! Quota rules themselves (policy resolution, periods, decisions) live in
//! the pure `tollgate-quota` crate.

pub mod alerts;
pub mod auth;
pub mod cli;
pub mod ingest;
pub mod server;
pub mod store;
