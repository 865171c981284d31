//! The agent's request handling: one [`Agent`] serves every connection and
//! keeps one [`ProfileState`] per configured profile.
//!
//! Work that renews tokens, checks the quota or calls STS for a profile runs
//! under that profile's async mutex (the single flight). So any number of
//! parallel requests for one profile share one STS call: the requests that
//! wait behind the first find its result in the session. A login runs
//! outside that mutex as a [`pending::PendingLogin`] that every request
//! needing it joins, so a pending login never delays valid cached
//! credentials.

mod credentials;
pub mod error;
mod pending;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tollgate_protocol::agent::{ErrorKind, PROTOCOL_VERSION, ProfileStatus, RequestBody, Response};

use crate::cache::session::{Session, StoredSession};
use crate::config::{ConfigSource, Profile};
use crate::login::oidc::Oidc;
use crate::notices::Notices;
use crate::progress::Progress;
use crate::store::SecretStore;
use crate::sts::StsApi;
pub use error::AgentError;

/// One profile's state: the single-flight lock, the pending login and the
/// session.
#[derive(Default)]
pub struct ProfileState {
    /// Held while a request renews tokens, checks the quota or calls STS for
    /// this profile.
    flight: tokio::sync::Mutex<()>,
    /// The login in progress, if any.
    login: Mutex<Option<Arc<pending::PendingLogin>>>,
    session: Mutex<Session>,
    /// The profile settings the session was built for.
    settings: Mutex<Option<Profile>>,
}

impl ProfileState {
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().expect("session lock is never poisoned")
    }

    fn login(&self) -> std::sync::MutexGuard<'_, Option<Arc<pending::PendingLogin>>> {
        self.login.lock().expect("login lock is never poisoned")
    }
}

/// The agent: configuration, clients, secret store and per-profile state.
pub struct Agent {
    config: ConfigSource,
    oidc: Oidc,
    sts: Arc<dyn StsApi>,
    store: Arc<dyn SecretStore>,
    profiles: tokio::sync::Mutex<HashMap<String, Arc<ProfileState>>>,
    /// Cancelled when the agent shuts down, so waiting logins end.
    shutdown: CancellationToken,
    /// Desktop notifications and the status page; absent in unit tests.
    notices: Option<Arc<Notices>>,
}

impl Agent {
    pub fn new(
        config: ConfigSource,
        oidc: Oidc,
        sts: Arc<dyn StsApi>,
        store: Arc<dyn SecretStore>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            config,
            oidc,
            sts,
            store,
            profiles: tokio::sync::Mutex::new(HashMap::new()),
            shutdown,
            notices: None,
        }
    }

    /// Adds desktop notifications and the status page.
    pub fn with_notices(mut self, notices: Arc<Notices>) -> Self {
        self.notices = Some(notices);
        self
    }

    /// Reads the secret store once for every configured profile. A missing
    /// or invalid config is logged; requests report it again.
    pub async fn load_sessions(&self) {
        match self.config.current() {
            Ok(config) => {
                for profile in config.profiles.values() {
                    self.profile_state(profile).await;
                }
            }
            Err(error) => tracing::warn!(%error, "could not read the config at start"),
        }
    }

    /// Handles one request.
    pub async fn handle(self: &Arc<Self>, body: RequestBody, progress: Progress) -> Response {
        let result = match body {
            RequestBody::Hello { client } => {
                tracing::debug!(%client, "hello");
                Ok(Response::Hello {
                    versions: vec![PROTOCOL_VERSION],
                    agent_version: env!("CARGO_PKG_VERSION").to_string(),
                })
            }
            RequestBody::GetCredentials {
                profile,
                interactive,
            } => self.get_credentials(&profile, interactive, &progress).await,
            RequestBody::GetIdToken { profile } => self.get_id_token(&profile).await,
            RequestBody::Login {
                profile,
                device_code,
            } => self.login(&profile, device_code, &progress).await,
            RequestBody::Logout { profile } => self.logout(&profile).await,
            RequestBody::Status { profile } => self.status(profile.as_deref()).await,
            _ => Err(AgentError::new(
                ErrorKind::UnknownRequest,
                "this agent does not handle that request type; update tollgate-agent",
            )),
        };
        result.unwrap_or_else(|error| {
            tracing::debug!(kind = ?error.kind, message = %error.message, "request failed");
            error.into_response()
        })
    }

    fn store_key(profile: &str) -> String {
        format!("profile:{profile}")
    }

    /// Returns the state for `profile`, creating it from the secret store on
    /// first use, and discards cached secrets that no longer fit the
    /// profile's settings.
    async fn profile_state(&self, profile: &Profile) -> Arc<ProfileState> {
        let mut profiles = self.profiles.lock().await;
        if let Some(state) = profiles.get(&profile.name) {
            let state = state.clone();
            drop(profiles);
            self.apply_settings(profile, &state).await;
            return state;
        }
        let stored = self.load_stored(&profile.name).await;
        let state = Arc::new(ProfileState::default());
        *state.session() = Session::from_stored(stored);
        profiles.insert(profile.name.clone(), state.clone());
        drop(profiles);
        self.apply_settings(profile, &state).await;
        state
    }

    async fn load_stored(&self, name: &str) -> StoredSession {
        let store = self.store.clone();
        let key = Self::store_key(name);
        let loaded = tokio::task::spawn_blocking(move || store.load(&key)).await;
        match loaded {
            Ok(Ok(Some(secret))) => match StoredSession::from_secret(&secret) {
                Ok(stored) => {
                    tracing::info!(
                        profile = name,
                        tokens = stored.tokens.is_some(),
                        credentials = stored.credentials.is_some(),
                        "read the cached session from the secret store"
                    );
                    stored
                }
                Err(error) => {
                    tracing::warn!(profile = name, %error, "the cached session in the secret store is not valid JSON; ignoring it");
                    StoredSession::default()
                }
            },
            Ok(Ok(None)) => StoredSession::default(),
            Ok(Err(error)) => {
                tracing::warn!(profile = name, %error, "could not read the cached session");
                StoredSession::default()
            }
            Err(error) => {
                tracing::warn!(profile = name, %error, "the secret store task failed");
                StoredSession::default()
            }
        }
    }

    /// Drops cached tokens issued for another issuer or client, and
    /// credentials issued for another role.
    async fn apply_settings(&self, profile: &Profile, state: &ProfileState) {
        let changed = {
            let mut settings = state
                .settings
                .lock()
                .expect("settings lock is never poisoned");
            if settings.as_ref() == Some(profile) {
                return;
            }
            let previous = settings.replace(profile.clone());
            let mut session = state.session();
            let mut changed = false;
            let tokens_fit = session.stored.tokens.as_ref().is_none_or(|tokens| {
                tokens.issuer == profile.issuer && tokens.client_id == profile.client_id
            });
            if !tokens_fit {
                tracing::info!(profile = %profile.name, "the issuer or client changed; dropping the cached login");
                session.clear();
                changed = true;
            }
            let role_changed = previous
                .as_ref()
                .is_some_and(|previous| !previous.same_role(profile));
            let credentials_fit = session
                .stored
                .role_arn
                .as_ref()
                .is_none_or(|role| *role == profile.role_arn);
            if session.stored.credentials.is_some() && (role_changed || !credentials_fit) {
                tracing::info!(profile = %profile.name, "the role settings changed; dropping the cached AWS credentials");
                session.drop_credentials();
                changed = true;
            }
            if previous.is_some_and(|previous| previous.quota_url != profile.quota_url) {
                session.last_quota = None;
                session.last_quota_check = None;
            }
            changed.then(|| session.stored.clone())
        };
        if let Some(stored) = changed {
            self.persist(&profile.name, stored).await;
        }
    }

    /// Writes the session to the secret store, or deletes the entry when
    /// the session is empty. A failure is logged; the session stays in
    /// memory.
    async fn persist(&self, name: &str, stored: StoredSession) {
        let store = self.store.clone();
        let key = Self::store_key(name);
        let result = tokio::task::spawn_blocking(move || {
            if stored.is_empty() {
                store.delete(&key)
            } else {
                store.save(&key, &stored.to_secret())
            }
        })
        .await;
        match result {
            Ok(Ok(())) => tracing::debug!(profile = name, "saved the session to the secret store"),
            Ok(Err(error)) => {
                tracing::warn!(profile = name, %error, "could not save the session; it is kept in memory only")
            }
            Err(error) => tracing::warn!(profile = name, %error, "the secret store task failed"),
        }
    }

    async fn logout(&self, name: &str) -> Result<Response, AgentError> {
        let config = self.config.current()?;
        let profile = config.profile(name)?;
        let state = self.profile_state(profile).await;
        let was_logged_in = {
            let mut session = state.session();
            let was_logged_in = !session.stored.is_empty();
            session.clear();
            was_logged_in
        };
        self.persist(name, StoredSession::default()).await;
        if !was_logged_in {
            tracing::debug!(profile = name, "logout without a login");
            return Ok(Response::Done {
                message: format!(
                    "Profile `{name}` was not logged in; there were no tokens or AWS credentials to remove."
                ),
            });
        }
        tracing::info!(profile = name, "logged out");
        Ok(Response::Done {
            message: format!(
                "Logged out of profile `{name}`; its tokens and AWS credentials are removed from memory and from the {} secret store.",
                self.store.name()
            ),
        })
    }

    async fn status(&self, name: Option<&str>) -> Result<Response, AgentError> {
        let config = self.config.current()?;
        let profiles: Vec<&Profile> = match name {
            Some(name) => vec![config.profile(name)?],
            None => config.profiles.values().collect(),
        };
        let now = Utc::now();
        let mut statuses = Vec::new();
        for profile in profiles {
            let state = self.profile_state(profile).await;
            let session = state.session();
            let tokens = session.stored.tokens.as_ref();
            statuses.push(ProfileStatus {
                profile: profile.name.clone(),
                identity: tokens.map(|tokens| tokens.identity.clone()),
                id_token_expiration: tokens.map(|tokens| tokens.id_token_expiration),
                has_refresh_token: tokens.is_some_and(|tokens| tokens.refresh_token.is_some()),
                credentials_expiration: session
                    .stored
                    .credentials
                    .as_ref()
                    .filter(|credentials| credentials.expiration > now)
                    .map(|credentials| credentials.expiration),
                last_quota: session.last_quota.clone(),
                secret_store: Some(self.store.name().to_string()),
            });
        }
        Ok(Response::Status { profiles: statuses })
    }

    /// Returns the name of the secret store in use.
    pub fn store_name(&self) -> &'static str {
        self.store.name()
    }
}

#[cfg(test)]
mod tests;
