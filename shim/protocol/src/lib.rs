//! Wire types that cross a process boundary in Tollgate.
//!
//! - [`agent`]: the newline-delimited JSON protocol between the
//!   `tollgate-credential-process` shim (and other local clients) and the
//!   per-user `tollgate-agent`.
//! - [`check`]: the JSON answer of the backend's `GET /v1/check`, which the
//!   agent reads and forwards to the shim when it refuses credentials.
//! - [`secret`]: the wrapper that keeps tokens and keys out of `Debug` output.
//! - [`paths`]: where the agent's socket lives, so the shim and the agent
//!   agree without talking first.
//!
//! Every enum that crosses the wire has an `Unknown` catch-all so an older
//! shim and a newer agent (or the reverse) still understand each other.

pub mod agent;
pub mod check;
pub mod paths;
pub mod secret;

pub use secret::Secret;
