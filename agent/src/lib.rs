//! The per-user Tollgate agent.
//!
//! It serves the newline-delimited JSON protocol of
//! [`tollgate_protocol::agent`] on a Unix socket in a private runtime
//! folder, logs the user in with OIDC (authorization code with PKCE on a
//! loopback redirect), exchanges the ID token for role credentials with STS
//! `AssumeRoleWithWebIdentity`, checks the quota backend before handing
//! credentials out, and caches tokens and credentials in the OS keyring.
//!
//! NOTE: the socket server, the runtime folder checks and the signal
//! handling are Unix-only (built and tested on Linux). Windows needs a
//! named-pipe server, which is not written yet, so the crate does not build
//! there.

pub mod cache;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod expiration;
pub mod logging;
pub mod login;
pub mod notices;
pub mod progress;
pub mod quota;
pub mod quota_view;
pub mod runtime_dir;
pub mod server;
pub mod service;
pub mod store;
pub mod sts;
