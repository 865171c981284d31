//! Credential, ID token and login requests: the single-flight path that
//! renews tokens, checks the quota and calls STS as needed, and the shared
//! login that runs outside it.

use std::sync::Arc;

use chrono::{Duration, Utc};
use tollgate_protocol::agent::{Credentials, ErrorKind, Response};

use tokio_util::sync::CancellationToken;

use super::pending::PendingLogin;
use super::{Agent, AgentError, ProfileState};
use crate::cache::session::{IdentityTokens, StsCredentials};
use crate::config::{FailMode, Profile};
use crate::expiration::{credentials_usable, reported_expiration};
use crate::login::method::{Session as LoginSession, use_device_code};
use crate::login::{self, LoginError, RefreshError};
use crate::progress::Progress;
use crate::quota;
use crate::sts::{AssumeRoleRequest, session_name};

impl Agent {
    pub(super) async fn get_credentials(
        self: &Arc<Self>,
        name: &str,
        interactive: bool,
        progress: &Progress,
    ) -> Result<Response, AgentError> {
        let config = self.config.current()?;
        let profile = config.profile(name)?.clone();
        let state = self.profile_state(&profile).await;
        let flight = state.flight.lock().await;

        let now = Utc::now();
        let (cached, recheck_due) = {
            let session = state.session();
            let cached = session
                .stored
                .credentials
                .clone()
                .filter(|credentials| credentials_usable(credentials.expiration, now));
            let recheck_due = profile.quota_url.is_some()
                && session.last_quota_check.is_none_or(|checked| {
                    now - checked >= Duration::minutes(i64::from(profile.quota_recheck_minutes))
                });
            (cached, recheck_due)
        };
        if let Some(credentials) = &cached
            && !recheck_due
        {
            tracing::debug!(profile = name, "handing out cached credentials");
            return Ok(self.hand_out(&profile, &state, credentials));
        }

        let tokens = match self.ensure_tokens(&profile, &state).await {
            Ok(tokens) => tokens,
            Err(error) if interactive && error.kind == ErrorKind::LoginRequired => {
                // The login may take minutes, so it runs without the
                // profile's lock: other requests meanwhile get cached
                // credentials or join the login.
                drop(flight);
                let device_code = use_device_code(profile.login, false, LoginSession::current());
                self.join_login(&profile, &state, progress, device_code, true)
                    .await?;
                return Box::pin(self.get_credentials(name, false, progress)).await;
            }
            Err(error) => return Err(error),
        };
        if let Some(quota_url) = &profile.quota_url {
            self.check_quota(&profile, &state, quota_url, &tokens)
                .await?;
        }
        let credentials = match cached {
            Some(credentials) => credentials,
            None => self.assume_role(&profile, &state, &tokens).await?,
        };
        Ok(self.hand_out(&profile, &state, &credentials))
    }

    fn hand_out(
        &self,
        profile: &Profile,
        state: &ProfileState,
        credentials: &StsCredentials,
    ) -> Response {
        // Without a successful check (the check failed open) the re-check
        // is due now.
        let next_recheck = profile.quota_url.as_ref().map(|_| {
            state
                .session()
                .last_quota_check
                .map(|checked| {
                    checked + Duration::minutes(i64::from(profile.quota_recheck_minutes))
                })
                .unwrap_or_else(Utc::now)
        });
        let expiration = reported_expiration(credentials.expiration, next_recheck, Utc::now());
        // One line per credential request: debug, so a busy client does not
        // fill the info log.
        tracing::debug!(profile = %profile.name, access_key_id = %credentials.access_key_id, sts_expiration = %credentials.expiration, reported_expiration = %expiration, "handed out credentials");
        Response::Credentials(Credentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
            session_token: credentials.session_token.clone(),
            expiration,
        })
    }

    async fn assume_role(
        &self,
        profile: &Profile,
        state: &ProfileState,
        tokens: &IdentityTokens,
    ) -> Result<StsCredentials, AgentError> {
        let request = AssumeRoleRequest {
            role_arn: profile.role_arn.clone(),
            session_name: session_name(&tokens.identity),
            web_identity_token: tokens.id_token.clone(),
            duration_seconds: i32::try_from(profile.session_duration_minutes * 60)
                .expect("session duration is at most 720 minutes"),
            region: profile.region.clone(),
            endpoint: profile.sts_endpoint.clone(),
        };
        let credentials = self.sts.assume_role(request).await.map_err(|error| {
            AgentError::new(
                ErrorKind::StsFailed,
                format!("{error}. Check that the role's trust policy allows this identity provider and audience, and that session_duration_minutes is within the role's maximum session duration."),
            )
        })?;
        tracing::info!(profile = %profile.name, access_key_id = %credentials.access_key_id, expiration = %credentials.expiration, assumed_role = credentials.assumed_role_arn.as_deref().unwrap_or("-"), "assumed the role");
        let stored = {
            let mut session = state.session();
            session.stored.credentials = Some(credentials.clone());
            session.stored.role_arn = Some(profile.role_arn.clone());
            session.stored.clone()
        };
        self.persist(&profile.name, stored).await;
        Ok(credentials)
    }

    /// Checks the quota. A refusal drops cached credentials; a failed check
    /// is decided by the profile's fail mode.
    async fn check_quota(
        &self,
        profile: &Profile,
        state: &ProfileState,
        quota_url: &str,
        tokens: &IdentityTokens,
    ) -> Result<(), AgentError> {
        let result = quota::check(self.oidc.http(), quota_url, &tokens.id_token).await;
        if let (Ok(answer), Some(notices)) = (&result, &self.notices) {
            notices.observe(profile, answer);
        }
        match result {
            Ok(answer) if answer.allowed => {
                let mut session = state.session();
                if session
                    .last_quota
                    .as_ref()
                    .is_some_and(|previous| !previous.allowed)
                {
                    tracing::info!(profile = %profile.name, reason = ?answer.reason, "the quota check allows access again");
                } else {
                    tracing::debug!(profile = %profile.name, reason = ?answer.reason, "the quota check allowed access");
                }
                session.last_quota = Some(answer);
                session.last_quota_check = Some(Utc::now());
                Ok(())
            }
            Ok(answer) => {
                let message = quota::blocked_message(
                    &profile.name,
                    profile.support_contact.as_deref(),
                    &answer,
                );
                let stored = {
                    let mut session = state.session();
                    let newly_blocked = session
                        .last_quota
                        .as_ref()
                        .is_none_or(|previous| previous.allowed);
                    // A blocked client may retry many times a minute, so
                    // only the change to blocked is logged at warn.
                    if newly_blocked {
                        tracing::warn!(profile = %profile.name, reason = ?answer.reason, "the quota check denied credentials");
                    } else {
                        tracing::debug!(profile = %profile.name, reason = ?answer.reason, "the quota check still denies credentials");
                    }
                    session.last_quota = Some(answer.clone());
                    let had_credentials = session.stored.credentials.is_some();
                    session.drop_credentials();
                    had_credentials.then(|| session.stored.clone())
                };
                if let Some(stored) = stored {
                    tracing::info!(profile = %profile.name, "dropped the cached credentials after the quota block");
                    self.persist(&profile.name, stored).await;
                }
                let mut error = AgentError::new(ErrorKind::QuotaBlocked, message);
                error.quota = Some(answer);
                Err(error)
            }
            Err(failed) => match profile.fail_mode {
                FailMode::Open => {
                    tracing::warn!(profile = %profile.name, error = %failed, "the quota check failed; handing out credentials because fail_mode is open");
                    Ok(())
                }
                FailMode::Closed => {
                    tracing::warn!(profile = %profile.name, error = %failed, "the quota check failed; refusing credentials because fail_mode is closed");
                    Err(AgentError::new(
                        ErrorKind::QuotaCheckFailed,
                        format!(
                            "{failed}. Profile `{}` fails closed, so no credentials were handed out. Check that the quota backend is reachable and retry, or ask your administrator whether fail_mode = \"open\" is acceptable in `{}`.",
                            profile.name,
                            self.config.path().display()
                        ),
                    ))
                }
            },
        }
    }

    /// Returns a valid ID token, renewing it with the refresh token when it
    /// nears expiry. Without a usable login it returns
    /// [`ErrorKind::LoginRequired`].
    async fn ensure_tokens(
        &self,
        profile: &Profile,
        state: &ProfileState,
    ) -> Result<IdentityTokens, AgentError> {
        let now = Utc::now();
        let current = state.session().stored.tokens.clone();
        let mut renewal_failure = None;
        if let Some(tokens) = &current {
            if !tokens.id_token_needs_renewal(now) {
                return Ok(tokens.clone());
            }
            match &tokens.refresh_token {
                Some(refresh_token) => match self.oidc.refresh(profile, refresh_token).await {
                    Ok(renewed) => {
                        self.store_tokens(profile, state, renewed.clone()).await;
                        return Ok(renewed);
                    }
                    Err(RefreshError::Rejected(description)) => {
                        tracing::warn!(profile = %profile.name, %description, "the refresh token was rejected; dropping it");
                        let stored = {
                            let mut session = state.session();
                            if let Some(tokens) = session.stored.tokens.as_mut() {
                                tokens.refresh_token = None;
                            }
                            session.stored.clone()
                        };
                        self.persist(&profile.name, stored).await;
                        renewal_failure = Some(RefreshError::Rejected(description).to_string());
                    }
                    Err(error) => {
                        tracing::warn!(profile = %profile.name, %error, "renewing the ID token failed; keeping the refresh token");
                        renewal_failure = Some(error.to_string());
                    }
                },
                None => {
                    tracing::debug!(profile = %profile.name, "the ID token nears expiry and there is no refresh token")
                }
            }
            if tokens.id_token_valid(now) {
                return Ok(tokens.clone());
            }
        }
        let mut error = AgentError::new(
            ErrorKind::LoginRequired,
            format!(
                "Tollgate profile `{}` has no valid login; run `tollgate-agent login --profile {}`",
                profile.name, profile.name
            ),
        );
        if let Some(cause) = renewal_failure {
            error = error.with_cause(cause);
        }
        Err(error)
    }

    /// Joins the profile's pending login, or starts one when none runs,
    /// and waits for its result. `progress` first gets the notes the login
    /// has sent so far. `outlives_clients` is set for credential requests,
    /// whose login goes on when every client has left.
    async fn join_login(
        self: &Arc<Self>,
        profile: &Profile,
        state: &Arc<ProfileState>,
        progress: &Progress,
        device_code: bool,
        outlives_clients: bool,
    ) -> Result<IdentityTokens, AgentError> {
        if self.shutdown.is_cancelled() {
            return Err(AgentError::from(LoginError::Cancelled));
        }
        loop {
            let waiter = {
                let mut slot = state.login();
                match slot.as_ref().filter(|pending| !pending.is_finished()) {
                    // A cancelled login keeps its callback port bound until
                    // its task ends, so wait for that and start afresh.
                    Some(pending) if pending.cancel.is_cancelled() => Err(pending.clone()),
                    Some(pending) => {
                        tracing::debug!(profile = %profile.name, "joining the pending login");
                        Ok(pending.join(progress, outlives_clients))
                    }
                    None => {
                        let pending = PendingLogin::new(&profile.name, self.shutdown.child_token());
                        *slot = Some(pending.clone());
                        let waiter = pending.join(progress, outlives_clients);
                        self.spawn_login(profile.clone(), state.clone(), pending, device_code);
                        Ok(waiter)
                    }
                }
            };
            match waiter {
                Ok(waiter) => return waiter.result().await,
                Err(cancelled) => {
                    tracing::debug!(profile = %profile.name, "waiting for the cancelled login to end");
                    cancelled.ended().await;
                    if self.shutdown.is_cancelled() {
                        return Err(AgentError::from(LoginError::Cancelled));
                    }
                }
            }
        }
    }

    /// Runs a login in its own task, so that no single client's request
    /// owns it, and sends the result to every client that joined.
    fn spawn_login(
        self: &Arc<Self>,
        profile: Profile,
        state: Arc<ProfileState>,
        pending: Arc<PendingLogin>,
        device_code: bool,
    ) {
        let agent = self.clone();
        tokio::spawn(async move {
            let sink = pending.progress_sink();
            let result = agent
                .run_login(&profile, &state, &sink, device_code, &pending.cancel)
                .await;
            drop(sink);
            let result = match result {
                Ok(tokens) => Ok(tokens),
                Err(LoginError::Cancelled) if !agent.shutdown.is_cancelled() => {
                    tracing::info!(profile = %profile.name, "cancelled the login because no client waits for it");
                    Err(AgentError::from(LoginError::Abandoned))
                }
                Err(error) => {
                    tracing::warn!(profile = %profile.name, %error, "the login failed");
                    Err(AgentError::from(error))
                }
            };
            let mut slot = state.login();
            if slot
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, &pending))
            {
                *slot = None;
            }
            drop(slot);
            pending.finish(result);
        });
    }

    async fn run_login(
        &self,
        profile: &Profile,
        state: &ProfileState,
        progress: &Progress,
        device_code: bool,
        cancel: &CancellationToken,
    ) -> Result<IdentityTokens, LoginError> {
        let tokens = if device_code {
            let progress = self.tee_to_notices(profile, progress);
            self.oidc.device_login(profile, &progress, cancel).await?
        } else {
            login::interactive_login(&self.oidc, profile, self.config.path(), progress, cancel)
                .await?
        };
        self.store_tokens(profile, state, tokens.clone()).await;
        Ok(tokens)
    }

    /// Returns a progress sink that also shows each note carrying a URL as
    /// a desktop notification, when notices are set up.
    fn tee_to_notices(&self, profile: &Profile, progress: &Progress) -> Progress {
        let Some(notices) = self.notices.clone() else {
            return progress.clone();
        };
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let original = progress.clone();
        let name = profile.name.clone();
        // The task ends when the login drops the returned sink.
        tokio::spawn(async move {
            while let Some(response) = receiver.recv().await {
                if let Response::Progress { message, url } = response {
                    if url.is_some() {
                        notices.show_login_prompt(&name, &message);
                    }
                    original.send(message, url);
                }
            }
        });
        Progress::new(sender)
    }

    /// Stores new tokens. When the identity differs from the previous one,
    /// the credentials and quota result of the old identity are dropped.
    async fn store_tokens(&self, profile: &Profile, state: &ProfileState, tokens: IdentityTokens) {
        let stored = {
            let mut session = state.session();
            let same_identity = session
                .stored
                .tokens
                .as_ref()
                .is_some_and(|previous| previous.identity == tokens.identity);
            if !same_identity {
                session.drop_credentials();
                session.last_quota = None;
            }
            session.stored.tokens = Some(tokens);
            session.stored.clone()
        };
        self.persist(&profile.name, stored).await;
    }

    pub(super) async fn get_id_token(&self, name: &str) -> Result<Response, AgentError> {
        let config = self.config.current()?;
        let profile = config.profile(name)?.clone();
        let state = self.profile_state(&profile).await;
        let _flight = state.flight.lock().await;
        let tokens = self.ensure_tokens(&profile, &state).await?;
        Ok(Response::IdToken {
            token: tokens.id_token,
            expiration: tokens.id_token_expiration,
        })
    }

    pub(super) async fn login(
        self: &Arc<Self>,
        name: &str,
        device_code: bool,
        progress: &Progress,
    ) -> Result<Response, AgentError> {
        let config = self.config.current()?;
        let profile = config.profile(name)?.clone();
        let state = self.profile_state(&profile).await;
        let device_code = use_device_code(profile.login, device_code, LoginSession::current());
        let tokens = self
            .join_login(&profile, &state, progress, device_code, false)
            .await?;
        Ok(Response::Done {
            message: format!(
                "Logged in to profile `{name}` as {}; the ID token expires at {}{}.",
                tokens.identity,
                tokens.id_token_expiration.format("%Y-%m-%d %H:%M:%S UTC"),
                if tokens.refresh_token.is_some() {
                    " and is renewed with the refresh token"
                } else {
                    ", and the provider sent no refresh token"
                }
            ),
        })
    }
}
