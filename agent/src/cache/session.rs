//! One profile's session: the OIDC tokens, the STS credentials and the last
//! quota result, and the form in which tokens and credentials are kept in
//! the secret store.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use tollgate_protocol::Secret;
use tollgate_protocol::check::CheckAnswer;

/// An ID token is renewed with the refresh token once fewer than this many
/// seconds of it remain.
pub const ID_TOKEN_RENEW_BEFORE: Duration = Duration::minutes(5);

/// The tokens from one login.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityTokens {
    /// The issuer and client the tokens belong to; a config change to either
    /// discards them.
    pub issuer: String,
    pub client_id: String,
    pub id_token: Secret,
    pub id_token_expiration: DateTime<Utc>,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    /// The value of the profile's identity claim.
    pub identity: String,
}

impl IdentityTokens {
    /// Whether the ID token is still valid at `now`.
    pub fn id_token_valid(&self, now: DateTime<Utc>) -> bool {
        self.id_token_expiration > now
    }

    /// Whether the ID token should be renewed (it expires within
    /// [`ID_TOKEN_RENEW_BEFORE`]).
    pub fn id_token_needs_renewal(&self, now: DateTime<Utc>) -> bool {
        self.id_token_expiration - now < ID_TOKEN_RENEW_BEFORE
    }
}

/// STS credentials for the profile's role.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    /// The STS expiry of the credentials themselves.
    pub expiration: DateTime<Utc>,
    #[serde(default)]
    pub assumed_role_arn: Option<String>,
}

/// The part of a session that is written to the secret store.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredSession {
    /// The role the credentials were issued for, so a config change to the
    /// role discards them.
    #[serde(default)]
    pub role_arn: Option<String>,
    #[serde(default)]
    pub tokens: Option<IdentityTokens>,
    #[serde(default)]
    pub credentials: Option<StsCredentials>,
}

impl StoredSession {
    /// Serializes to the JSON kept in the secret store.
    pub fn to_secret(&self) -> Secret {
        Secret::new(serde_json::to_string(self).expect("a session always serializes to JSON"))
    }

    /// Parses the JSON kept in the secret store.
    pub fn from_secret(secret: &Secret) -> Result<Self, serde_json::Error> {
        serde_json::from_str(secret.expose())
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_none() && self.credentials.is_none()
    }
}

/// A profile's in-memory state.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub stored: StoredSession,
    /// The last quota result and when it was received.
    pub last_quota: Option<CheckAnswer>,
    pub last_quota_check: Option<DateTime<Utc>>,
}

impl Session {
    pub fn from_stored(stored: StoredSession) -> Self {
        Self {
            stored,
            ..Self::default()
        }
    }

    /// Forgets the STS credentials and the quota state that went with them.
    pub fn drop_credentials(&mut self) {
        self.stored.credentials = None;
        self.stored.role_arn = None;
        self.last_quota_check = None;
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_session_round_trip() {
        let stored = StoredSession {
            role_arn: Some("arn:aws:iam::123456789012:role/R".into()),
            tokens: Some(IdentityTokens {
                issuer: "http://127.0.0.1:9400".into(),
                client_id: "tollgate-cli".into(),
                id_token: Secret::new("id-token-value"),
                id_token_expiration: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                refresh_token: Some(Secret::new("refresh-value")),
                identity: "ana@example.com".into(),
            }),
            credentials: None,
        };
        let back = StoredSession::from_secret(&stored.to_secret()).unwrap();
        let tokens = back.tokens.unwrap();
        assert_eq!(tokens.id_token.expose(), "id-token-value");
        assert_eq!(tokens.refresh_token.unwrap().expose(), "refresh-value");
        assert!(!format!("{stored:?}").contains("id-token-value"));
    }

    #[test]
    fn renewal_window() {
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let tokens = IdentityTokens {
            issuer: String::new(),
            client_id: String::new(),
            id_token: Secret::new("t"),
            id_token_expiration: now + Duration::minutes(4),
            refresh_token: None,
            identity: String::new(),
        };
        assert!(tokens.id_token_valid(now));
        assert!(tokens.id_token_needs_renewal(now));
        assert!(!tokens.id_token_valid(now + Duration::minutes(4)));
    }
}
