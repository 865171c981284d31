//! Interactive OIDC login (authorization code with PKCE on a loopback
//! redirect) and silent renewal with the refresh token.

pub mod browser;
pub mod callback;
pub mod method;
pub mod oidc;

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cache::session::IdentityTokens;
use crate::config::Profile;
use crate::progress::Progress;

/// A failed login or token renewal. Each message states what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(
        "the login callback port 127.0.0.1:{port} is in use ({cause}); close the program that listens there (`ss -ltnp 'sport = :{port}'` shows it) or set redirect_port in `{config}` to a free port that the identity provider also allows as redirect URI"
    )]
    PortBusy {
        port: u16,
        cause: String,
        config: String,
    },
    #[error(
        "OIDC discovery at {url} failed: {cause}; check `issuer` in the config and that the identity provider is reachable"
    )]
    Discovery { url: String, cause: String },
    #[error("the login failed: {0}")]
    Failed(String),
    #[error(
        "no browser login finished within {seconds} seconds; run `tollgate-agent login` again and finish the login in the browser, or raise login_timeout_seconds"
    )]
    TimedOut { seconds: u64 },
    #[error(
        "the device code for profile `{profile}` expired after {seconds} seconds before the sign-in was confirmed at the identity provider; run `tollgate-agent login --profile {profile} --device-code` (or repeat the AWS command) and enter the new code within {seconds} seconds"
    )]
    DeviceCodeExpired { profile: String, seconds: u64 },
    #[error(
        "no device code sign-in for profile `{profile}` was confirmed within login_timeout_seconds ({seconds} seconds); run `tollgate-agent login --profile {profile} --device-code` again and confirm the code sooner, or raise login_timeout_seconds"
    )]
    DeviceLoginTimedOut { profile: String, seconds: u64 },
    #[error(
        "the sign-in for profile `{profile}` was refused at the identity provider (access_denied: {description}); run `tollgate-agent login --profile {profile}` again and approve the request, or ask the identity provider's administrator whether your account may use client `{client_id}`"
    )]
    AccessDenied {
        profile: String,
        client_id: String,
        description: String,
    },
    #[error("the agent is shutting down, so the login was cancelled")]
    Cancelled,
    #[error(
        "every client waiting for the login left, so the agent cancelled it; run `tollgate-agent login` again"
    )]
    Abandoned,
    #[error("the identity provider sent an ID token that failed validation: {0}")]
    InvalidToken(String),
}

/// A failed renewal with the refresh token.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The identity provider returned `invalid_grant`: the refresh token is
    /// expired or revoked and must be dropped.
    #[error("the identity provider rejected the refresh token (invalid_grant: {0})")]
    Rejected(String),
    /// Anything else (network, 5xx, a response without an ID token): the
    /// refresh token is kept for a later try.
    #[error("renewing the ID token failed: {0}")]
    Failed(String),
}

/// Runs a browser login for `profile`: binds the callback port first, then
/// sends the login URL as progress, opens it in the browser, waits for the
/// callback and exchanges the code.
pub async fn interactive_login(
    oidc: &oidc::Oidc,
    profile: &Profile,
    config_path: &Path,
    progress: &Progress,
    cancel: &CancellationToken,
) -> Result<IdentityTokens, LoginError> {
    let listener = callback::CallbackListener::bind(profile.redirect_port, config_path)?;
    let pending = oidc.begin(profile).await?;
    let url = pending.url().to_string();
    progress.send(
        format!(
            "Log in for Tollgate profile `{}` in your browser. If it did not open, open this URL: {url}",
            profile.name
        ),
        Some(url.clone()),
    );
    tracing::info!(profile = %profile.name, port = profile.redirect_port, "waiting for the browser login");
    browser::open_in_background(url, profile.name.clone(), progress.clone());
    let code = listener
        .wait(
            pending.state(),
            &profile.issuer,
            Duration::from_secs(profile.login_timeout_seconds),
            cancel,
        )
        .await?;
    oidc.finish(profile, pending, code).await
}
