//! Bearer ID token validation for the quota API.
//!
//! [`TokenValidator::validate`] accepts a token only when its algorithm is an
//! allowed asymmetric one, its signature verifies against a key of the
//! configured issuer's JWKS ([`jwks`]), and its `iss`, `aud`, `exp` and `nbf`
//! claims hold. It then reads the user's identity and groups ([`claims`]).
//! Nothing here touches the store, so a request is authenticated before any
//! quota data is read.

pub mod claims;
pub mod jwks;
pub mod verified;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};
use tollgate_protocol::Secret;

pub use claims::Caller;
use jwks::{KeyLookupError, KeySource};

/// The signature algorithms a token may use. Symmetric (`HS*`) algorithms
/// and `none` are never accepted: the JWKS is public, so a key taken from it
/// as an HMAC secret would let anyone mint tokens.
pub const ALLOWED_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The default of [`AuthConfig::jwks_refresh_interval`].
pub const DEFAULT_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);

/// Settings of token validation.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The OIDC issuer URL, compared exactly with the `iss` claim.
    pub issuer: String,
    /// The expected `aud` claim: the OIDC client id.
    pub audience: String,
    /// The claim that names the user, such as `email`.
    pub identity_claim: String,
    /// The claims that list the user's groups, such as `groups`.
    pub group_claims: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// The minimum time between two JWKS downloads caused by unknown key ids.
    pub jwks_refetch_interval: Duration,
    /// The maximum time between two JWKS downloads of the background
    /// refresh, and so the maximum time a withdrawn key stays trusted. A
    /// shorter `Cache-Control: max-age` on the JWKS, down to
    /// [`jwks::MIN_REFRESH_INTERVAL`], shortens it.
    pub jwks_refresh_interval: Duration,
    /// The timeout of each request to the issuer.
    pub http_timeout: Duration,
}

impl AuthConfig {
    /// Builds settings with the defaults: 30 s leeway, at most one JWKS
    /// download per 30 s for unknown key ids, a JWKS refreshed at least
    /// every 5 minutes, and a 10 s timeout on requests to the issuer.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            identity_claim: "email".to_owned(),
            group_claims: vec!["groups".to_owned(), "cognito:groups".to_owned()],
            leeway: Duration::from_secs(30),
            jwks_refetch_interval: Duration::from_secs(30),
            jwks_refresh_interval: DEFAULT_JWKS_REFRESH_INTERVAL,
            http_timeout: Duration::from_secs(10),
        }
    }
}

/// The reason a request was not authenticated. [`AuthError::code`] is the
/// stable `error` field of the 401 (or 503) response.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "the request has no bearer token; send the OIDC ID token as `Authorization: Bearer <token>`"
    )]
    MissingToken,
    #[error("the bearer token is not a valid JWT ({0}); send the ID token from the OIDC login")]
    Malformed(String),
    #[error(
        "the token is signed with {0}, which is not accepted; the issuer must sign ID tokens \
         with RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
    )]
    UnsupportedAlgorithm(String),
    #[error("{0}")]
    UnknownKey(String),
    #[error("the token's signature is invalid; log in again to get a token from the issuer")]
    BadSignature,
    #[error("the token has expired; log in again")]
    Expired,
    #[error("the token is not valid yet (nbf is in the future); check the clock of this server")]
    NotYetValid,
    #[error("{}", wrong_issuer_message(expected, found.as_deref()))]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss` claim, when it was readable.
        found: Option<String>,
    },
    #[error("the token's audience does not include {0}; log in with that OIDC client")]
    WrongAudience(String),
    #[error("the token has no {0:?} claim, which is required")]
    MissingClaim(String),
    #[error(
        "the token has no {0:?} string claim to identify the user; configure the issuer to \
         include it, or choose another claim with --identity-claim"
    )]
    MissingIdentity(String),
    #[error(
        "the token's {0:?} claim is not a usable identity: {1}; the email claim must hold an \
         email address and any other claim non-empty text without whitespace, so fix the \
         issuer's claim or choose another one with --identity-claim"
    )]
    InvalidIdentity(String, String),
    #[error("{0}")]
    IssuerUnavailable(String),
}

impl AuthError {
    /// Returns the machine-readable code sent as the `error` field.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::Malformed(_) => "malformed_token",
            Self::UnsupportedAlgorithm(_) => "unsupported_alg",
            Self::UnknownKey(_) => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::WrongAudience(_) => "wrong_audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::MissingIdentity(_) => "missing_identity",
            Self::InvalidIdentity(..) => "invalid_identity",
            Self::IssuerUnavailable(_) => "issuer_unavailable",
        }
    }

    /// Reports whether the failure is the server's (the issuer could not be
    /// reached), not the token's.
    pub fn is_server_side(&self) -> bool {
        matches!(self, Self::IssuerUnavailable(_))
    }
}

/// Validates bearer ID tokens against one OIDC issuer.
#[derive(Debug)]
pub struct TokenValidator {
    config: AuthConfig,
    keys: KeySource,
    verified: Arc<verified::VerifiedTokens>,
}

impl TokenValidator {
    /// Builds a validator. Keys are downloaded on first use.
    pub fn new(config: AuthConfig) -> Result<Self, reqwest::Error> {
        // The crate picks its provider from its features; installing it here
        // also covers a build where another crate enabled the RustCrypto
        // backend as well. A second install fails harmlessly.
        let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
        let verified = Arc::new(verified::VerifiedTokens::default());
        let keys = KeySource::new(&config, Arc::clone(&verified))?;
        Ok(Self {
            config,
            keys,
            verified,
        })
    }

    /// Starts the background task that downloads the JWKS again every
    /// refresh interval (see [`jwks`]), so that a key the issuer withdraws
    /// stops verifying tokens, cached ones included, within that interval.
    /// The task ends when the validator is dropped.
    pub fn spawn_key_refresh(validator: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let validator = Arc::downgrade(validator);
        tokio::spawn(async move {
            loop {
                let Some(interval) = validator.upgrade().map(|v| v.keys.refresh_interval()) else {
                    return;
                };
                tokio::time::sleep(interval).await;
                let Some(current) = validator.upgrade() else {
                    return;
                };
                current.keys.refresh_in_background().await;
            }
        })
    }

    /// Returns the settings this validator uses.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Downloads the issuer's keys now, so that a misconfigured issuer shows
    /// at start-up rather than on the first request.
    pub async fn prefetch_keys(&self) -> Result<usize, AuthError> {
        self.keys
            .refresh()
            .await
            .map_err(|error| AuthError::IssuerUnavailable(error.to_string()))
    }

    /// Validates `token` and returns the identity it carries. A token that
    /// passed before is taken from the [`verified`] cache until it expires
    /// or its key is withdrawn from the issuer's JWKS.
    pub async fn validate(&self, token: &Secret) -> Result<Caller, AuthError> {
        let token = token.expose();
        let digest = verified::token_digest(token);
        let now = chrono::Utc::now().timestamp();
        if let Some(caller) = self
            .verified
            .get(&digest, now, |key| self.keys.is_current(key))
        {
            return Ok(caller);
        }
        let algorithm = read_algorithm(token)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Malformed(error.to_string()))?;
        // The unverified `iss` only chooses the error: a token of another
        // issuer would otherwise be reported as signed by an unknown key.
        if let Some(found) = read_unverified_issuer(token)
            && found != self.config.issuer
        {
            return Err(AuthError::WrongIssuer {
                expected: self.config.issuer.clone(),
                found: Some(found),
            });
        }

        let key = self
            .keys
            .find(header.kid.as_deref(), algorithm)
            .await
            .map_err(|error| match error {
                KeyLookupError::Unavailable(message) => AuthError::IssuerUnavailable(message),
                KeyLookupError::NotFound(message) => AuthError::UnknownKey(message),
            })?;

        let mut validation = Validation::new(algorithm);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|error| self.map_decode_error(error.into_kind()))?;
        let caller = claims::caller_from_claims(&data.claims, &self.config)?;
        // `exp` is required and was checked, so it is a number here.
        if let Some(expires) = data.claims.get("exp").and_then(Value::as_i64) {
            let leeway = i64::try_from(self.config.leeway.as_secs()).unwrap_or(i64::MAX);
            let valid_until = expires.saturating_add(leeway);
            // A refresh that withdrew the key after the lookup above has
            // already purged the cache, and `get` checks the key again.
            self.verified
                .insert(digest, caller.clone(), valid_until, key.serial);
        }
        Ok(caller)
    }

    fn map_decode_error(&self, kind: ErrorKind) -> AuthError {
        match kind {
            ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::ImmatureSignature => AuthError::NotYetValid,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer {
                expected: self.config.issuer.clone(),
                found: None,
            },
            ErrorKind::InvalidAudience => AuthError::WrongAudience(self.config.audience.clone()),
            ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim),
            other => AuthError::Malformed(jsonwebtoken::errors::Error::from(other).to_string()),
        }
    }
}

/// Reads the `iss` claim of the payload without verifying the signature.
/// Returns `None` when the payload or the claim is unreadable, so that the
/// verification that follows reports it.
fn read_unverified_issuer(token: &str) -> Option<String> {
    let payload_part = token.split('.').nth(1)?;
    let payload_json = URL_SAFE_NO_PAD
        .decode(payload_part.trim_end_matches('='))
        .ok()?;
    let payload: Map<String, Value> = serde_json::from_slice(&payload_json).ok()?;
    match payload.get("iss") {
        Some(Value::String(issuer)) => Some(issuer.clone()),
        _ => None,
    }
}

fn wrong_issuer_message(expected: &str, found: Option<&str>) -> String {
    match found {
        Some(found) => format!(
            "the token's issuer is {found:?}, but this server accepts tokens of {expected}; log \
             in at {expected}"
        ),
        None => format!("the token's issuer is not {expected}; log in at that issuer"),
    }
}

/// Reads the `alg` header as text and checks it against
/// [`ALLOWED_ALGORITHMS`], so that `none` and `HS256` are reported by name
/// rather than as a parse failure.
fn read_algorithm(token: &str) -> Result<Algorithm, AuthError> {
    let header_part = token
        .split('.')
        .next()
        .filter(|part| !part.is_empty() && token.matches('.').count() == 2)
        .ok_or_else(|| AuthError::Malformed("a JWT has three dot-separated parts".to_owned()))?;
    let header_json = URL_SAFE_NO_PAD
        .decode(header_part.trim_end_matches('='))
        .map_err(|error| AuthError::Malformed(format!("the header is not base64url: {error}")))?;
    let header: Map<String, Value> = serde_json::from_slice(&header_json).map_err(|error| {
        AuthError::Malformed(format!("the header is not a JSON object: {error}"))
    })?;
    let name = match header.get("alg") {
        Some(Value::String(name)) => name.as_str(),
        Some(other) => return Err(AuthError::UnsupportedAlgorithm(other.to_string())),
        None => return Err(AuthError::Malformed("the header has no alg".to_owned())),
    };
    name.parse::<Algorithm>()
        .ok()
        .filter(|algorithm| ALLOWED_ALGORITHMS.contains(algorithm))
        .ok_or_else(|| AuthError::UnsupportedAlgorithm(name.to_owned()))
}

/// Reads the bearer token from the `Authorization` header.
pub fn bearer_token(parts: &Parts) -> Result<Secret, AuthError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(AuthError::MissingToken)?
        .to_str()
        .map_err(|_| AuthError::Malformed("the Authorization header is not ASCII".to_owned()))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::MissingToken);
    }
    let token = token.trim();
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    Ok(Secret::new(token))
}

/// An extractor that yields the validated caller, or rejects the request
/// with a 401 before the handler body (and so any store read) runs.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Caller);

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<TokenValidator>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let validator = Arc::<TokenValidator>::from_ref(state);
        let result = match bearer_token(parts) {
            Ok(token) => validator.validate(&token).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(caller) => {
                tracing::debug!(user = %caller.identity, groups = ?caller.groups, "authenticated");
                Ok(Self(caller))
            }
            Err(error) if error.is_server_side() => {
                tracing::warn!(
                    error = error.code(),
                    "cannot validate a bearer token: {error}"
                );
                Err(error)
            }
            Err(error) => {
                tracing::debug!(error = error.code(), "rejected a bearer token: {error}");
                Err(error)
            }
        }
    }
}
