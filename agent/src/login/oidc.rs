//! The OpenID Connect client: discovery (cached per issuer), the
//! authorization URL with PKCE S256, `state` and `nonce`, the code exchange,
//! refresh, and validation of every ID token received.
//!
//! ID tokens are validated by `openidconnect`'s verifier: signature against
//! the issuer's JWKS with the algorithms the provider announces, `iss`,
//! `aud`, `exp` and, after a login, `nonce`. When the signature does not
//! verify, the discovery document and JWKS are fetched again once, because
//! the provider may have rotated its keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthenticationFlow, CoreClaimName, CoreClaimType, CoreClient,
    CoreClientAuthMethod, CoreDeviceAuthorizationResponse, CoreErrorResponseType, CoreGrantType,
    CoreIdToken, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType, CoreTokenResponse,
};
use openidconnect::{
    AdditionalProviderMetadata, AuthorizationCode, ClaimsVerificationError, ClientId, CsrfToken,
    DeviceAuthorizationUrl, DeviceCodeErrorResponse, DeviceCodeErrorResponseType, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, ProviderMetadata, RedirectUrl, RefreshToken, RequestTokenError, Scope,
    TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tollgate_protocol::Secret;

use super::{LoginError, RefreshError};
use crate::cache::session::IdentityTokens;
use crate::config::Profile;
use crate::progress::Progress;
use crate::quota::error_chain;

/// How long discovery metadata (and the JWKS in it) is reused.
const METADATA_TTL: Duration = Duration::from_secs(3600);

/// How long one request to the identity provider may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Discovery fields that the core metadata type lacks.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ExtraProviderMetadata {
    /// The device authorization endpoint (RFC 8628), when the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}

impl AdditionalProviderMetadata for ExtraProviderMetadata {}

type Metadata = ProviderMetadata<
    ExtraProviderMetadata,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

type ProviderClient = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A login that waits for the browser's redirect.
pub struct PendingLogin {
    url: url::Url,
    state: CsrfToken,
    nonce: Nonce,
    pkce_verifier: PkceCodeVerifier,
    client: ProviderClient,
}

impl PendingLogin {
    /// Returns the authorization URL to open in the browser.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The `state` the redirect must carry back.
    pub fn state(&self) -> &str {
        self.state.secret()
    }
}

/// The OIDC client shared by all profiles.
pub struct Oidc {
    http: openidconnect::reqwest::Client,
    metadata: Mutex<HashMap<String, (Instant, Metadata)>>,
}

impl Oidc {
    pub fn new() -> anyhow::Result<Self> {
        let http = openidconnect::reqwest::ClientBuilder::new()
            // openidconnect requires no redirects, so a token endpoint cannot
            // bounce a request (and the code in it) to another host.
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(HTTP_TIMEOUT)
            .build()?;
        Ok(Self {
            http,
            metadata: Mutex::new(HashMap::new()),
        })
    }

    /// Returns the HTTP client, which the quota check shares.
    pub fn http(&self) -> &openidconnect::reqwest::Client {
        &self.http
    }

    async fn provider_metadata(
        &self,
        issuer: &str,
        fetch_again: bool,
    ) -> Result<Metadata, LoginError> {
        if !fetch_again
            && let Some((fetched, metadata)) = self
                .metadata
                .lock()
                .expect("metadata cache lock")
                .get(issuer)
            && fetched.elapsed() < METADATA_TTL
        {
            return Ok(metadata.clone());
        }
        let discovery_error = |cause: String| LoginError::Discovery {
            url: format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ),
            cause,
        };
        let issuer_url = IssuerUrl::new(issuer.to_string())
            .map_err(|error| discovery_error(error.to_string()))?;
        let metadata = Metadata::discover_async(issuer_url, &self.http)
            .await
            .map_err(|error| discovery_error(error_chain(&error)))?;
        tracing::debug!(issuer, "fetched the OIDC discovery document and JWKS");
        self.metadata
            .lock()
            .expect("metadata cache lock")
            .insert(issuer.to_string(), (Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    async fn client(
        &self,
        profile: &Profile,
        fetch_again: bool,
    ) -> Result<ProviderClient, LoginError> {
        let metadata = self.provider_metadata(&profile.issuer, fetch_again).await?;
        let redirect = RedirectUrl::new(profile.redirect_uri())
            .map_err(|error| LoginError::Failed(format!("the redirect URI is invalid: {error}")))?;
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(profile.client_id.clone()),
            None,
        )
        .set_redirect_uri(redirect))
    }

    /// Builds the authorization URL for a new login.
    pub async fn begin(&self, profile: &Profile) -> Result<PendingLogin, LoginError> {
        let client = self.client(profile, false).await?;
        let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        );
        for scope in profile
            .scopes
            .iter()
            .filter(|scope| scope.as_str() != "openid")
        {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(PendingLogin {
            url,
            state,
            nonce,
            pkce_verifier,
            client,
        })
    }

    /// Exchanges the authorization code and validates the ID token.
    pub async fn finish(
        &self,
        profile: &Profile,
        pending: PendingLogin,
        code: Secret,
    ) -> Result<IdentityTokens, LoginError> {
        let response = pending
            .client
            .exchange_code(AuthorizationCode::new(code.expose().to_string()))
            .map_err(|error| {
                LoginError::Failed(format!("the provider announces no token endpoint: {error}"))
            })?
            .set_pkce_verifier(pending.pkce_verifier)
            .request_async(&self.http)
            .await
            .map_err(|error| {
                LoginError::Failed(format!(
                    "the code exchange at the token endpoint failed: {}",
                    error_chain(&error)
                ))
            })?;
        let tokens = self
            .tokens_from(profile, &response, Some(&pending.nonce), None)
            .await?;
        tracing::info!(profile = %profile.name, identity = %tokens.identity, expires = %tokens.id_token_expiration, refresh_token = tokens.refresh_token.is_some(), "login finished");
        Ok(tokens)
    }

    /// Gets a new ID token with the refresh token.
    pub async fn refresh(
        &self,
        profile: &Profile,
        refresh_token: &Secret,
    ) -> Result<IdentityTokens, RefreshError> {
        let client = self
            .client(profile, false)
            .await
            .map_err(|error| RefreshError::Failed(error.to_string()))?;
        let token = RefreshToken::new(refresh_token.expose().to_string());
        let response = client
            .exchange_refresh_token(&token)
            .map_err(|error| {
                RefreshError::Failed(format!("the provider announces no token endpoint: {error}"))
            })?
            .request_async(&self.http)
            .await
            .map_err(|error| match &error {
                RequestTokenError::ServerResponse(body)
                    if *body.error() == CoreErrorResponseType::InvalidGrant =>
                {
                    RefreshError::Rejected(body.error_description().cloned().unwrap_or_default())
                }
                _ => RefreshError::Failed(error_chain(&error)),
            })?;
        let tokens = self
            .tokens_from(profile, &response, None, Some(refresh_token.clone()))
            .await
            .map_err(|error| RefreshError::Failed(error.to_string()))?;
        tracing::info!(profile = %profile.name, identity = %tokens.identity, expires = %tokens.id_token_expiration, "renewed the ID token with the refresh token");
        Ok(tokens)
    }

    /// Logs in with the device authorization grant (RFC 8628): sends the
    /// verification URL and user code as progress, then polls the token
    /// endpoint until the user has confirmed on any device.
    pub async fn device_login(
        &self,
        profile: &Profile,
        progress: &Progress,
        cancel: &CancellationToken,
    ) -> Result<IdentityTokens, LoginError> {
        let metadata = self.provider_metadata(&profile.issuer, false).await?;
        let Some(device_url) = metadata
            .additional_metadata()
            .device_authorization_endpoint
            .clone()
        else {
            return Err(LoginError::Failed(format!(
                "the identity provider `{}` announces no device_authorization_endpoint; use the browser login",
                profile.issuer
            )));
        };
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(profile.client_id.clone()),
            None,
        )
        .set_device_authorization_url(device_url);
        let mut request = client.exchange_device_code();
        for scope in profile
            .scopes
            .iter()
            .filter(|scope| scope.as_str() != "openid")
        {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let details: CoreDeviceAuthorizationResponse =
            request.request_async(&self.http).await.map_err(|error| {
                LoginError::Failed(format!(
                    "the device authorization request failed: {}",
                    error_chain(&error)
                ))
            })?;
        let open_url = details
            .verification_uri_complete()
            .map(|complete| complete.secret().clone())
            .unwrap_or_else(|| details.verification_uri().to_string());
        progress.send(
            format!(
                "To log in for Tollgate profile `{}`, open {} on any device and enter the code {}",
                profile.name,
                details.verification_uri().as_str(),
                details.user_code().secret()
            ),
            Some(open_url),
        );
        let expires_in = details.expires_in();
        let login_timeout = Duration::from_secs(profile.login_timeout_seconds);
        tracing::info!(profile = %profile.name, expires_in = expires_in.as_secs(), interval = details.interval().as_secs(), "waiting for the device code login");
        // oauth2 polls at the announced interval and adds 5 s after each
        // `slow_down` (RFC 8628, section 3.5). When the timeout passes, it
        // stops with a synthesized `expired_token` error.
        let polling = client
            .exchange_device_access_token(&details)
            .map_err(|error| {
                LoginError::Failed(format!("the provider announces no token endpoint: {error}"))
            })?
            .request_async(
                &self.http,
                tokio::time::sleep,
                Some(login_timeout.min(expires_in)),
            );
        let response = tokio::select! {
            response = polling => response.map_err(|error| {
                device_poll_error(profile, &error, login_timeout, expires_in)
            })?,
            () = cancel.cancelled() => return Err(LoginError::Cancelled),
        };
        let tokens = self.tokens_from(profile, &response, None, None).await?;
        tracing::info!(profile = %profile.name, identity = %tokens.identity, expires = %tokens.id_token_expiration, refresh_token = tokens.refresh_token.is_some(), "device code login finished");
        Ok(tokens)
    }

    async fn tokens_from(
        &self,
        profile: &Profile,
        response: &CoreTokenResponse,
        nonce: Option<&Nonce>,
        previous_refresh_token: Option<Secret>,
    ) -> Result<IdentityTokens, LoginError> {
        let id_token = response.id_token().ok_or_else(|| {
            LoginError::InvalidToken(
                "the token response has no id_token; check that the scopes include openid".into(),
            )
        })?;
        let client = self.client(profile, false).await?;
        let expiration = match verify(&client, id_token, nonce) {
            Err(ClaimsVerificationError::SignatureVerification(first)) => {
                tracing::debug!(error = %first, "ID token signature did not verify; fetching the JWKS again");
                let fresh = self.client(profile, true).await?;
                verify(&fresh, id_token, nonce)
            }
            other => other,
        }
        .map_err(|error| LoginError::InvalidToken(error.to_string()))?;
        let jwt = id_token.to_string();
        let identity =
            claim_value(&jwt, &profile.identity_claim).map_err(LoginError::InvalidToken)?;
        Ok(IdentityTokens {
            issuer: profile.issuer.clone(),
            client_id: profile.client_id.clone(),
            id_token: Secret::new(jwt),
            id_token_expiration: expiration,
            refresh_token: response
                .refresh_token()
                .map(|token| Secret::new(token.secret().clone()))
                .or(previous_refresh_token),
            identity,
        })
    }
}

/// Maps the error that ended device code polling to a [`LoginError`]:
/// `expired_token` (from the provider, or oauth2's own when the timeout
/// passed) means the code expired unless `login_timeout` cut the wait
/// shorter, and `access_denied` means the user refused the sign-in.
fn device_poll_error<RE: std::error::Error + 'static>(
    profile: &Profile,
    error: &RequestTokenError<RE, DeviceCodeErrorResponse>,
    login_timeout: Duration,
    expires_in: Duration,
) -> LoginError {
    let RequestTokenError::ServerResponse(body) = error else {
        return LoginError::Failed(format!(
            "the device code login failed: {}",
            error_chain(error)
        ));
    };
    match body.error() {
        DeviceCodeErrorResponseType::ExpiredToken if login_timeout < expires_in => {
            LoginError::DeviceLoginTimedOut {
                profile: profile.name.clone(),
                seconds: login_timeout.as_secs(),
            }
        }
        DeviceCodeErrorResponseType::ExpiredToken => LoginError::DeviceCodeExpired {
            profile: profile.name.clone(),
            seconds: expires_in.as_secs(),
        },
        DeviceCodeErrorResponseType::AccessDenied => LoginError::AccessDenied {
            profile: profile.name.clone(),
            client_id: profile.client_id.clone(),
            description: body
                .error_description()
                .cloned()
                .unwrap_or_else(|| "no description".to_string()),
        },
        _ => LoginError::Failed(format!(
            "the device code login failed: {}",
            error_chain(error)
        )),
    }
}

/// Validates `id_token` and returns its expiry. A `nonce` of `None` (after
/// a refresh or a device code login) accepts any nonce, because refreshed ID
/// tokens repeat the login's nonce or carry none, and the device flow sends
/// no nonce.
fn verify(
    client: &ProviderClient,
    id_token: &CoreIdToken,
    nonce: Option<&Nonce>,
) -> Result<chrono::DateTime<chrono::Utc>, ClaimsVerificationError> {
    let verifier = client.id_token_verifier();
    let claims = match nonce {
        Some(nonce) => id_token.claims(&verifier, nonce)?,
        None => id_token.claims(&verifier, |_: Option<&Nonce>| Ok::<(), String>(()))?,
    };
    Ok(claims.expiration())
}

/// Reads `claim` from a validated JWT's payload. Strings are used as they
/// are and numbers as their decimal text.
pub fn claim_value(jwt: &str, claim: &str) -> Result<String, String> {
    let payload = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| "the ID token is not a JWT".to_string())?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|error| format!("the ID token payload is not base64url: {error}"))?;
    let claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes)
        .map_err(|error| format!("the ID token payload is not a JSON object: {error}"))?;
    match claims.get(claim) {
        Some(serde_json::Value::String(value)) if !value.is_empty() => Ok(value.clone()),
        Some(serde_json::Value::Number(value)) => Ok(value.to_string()),
        Some(other) => Err(format!(
            "the ID token's `{claim}` claim is {other}, not a non-empty string"
        )),
        None => {
            let mut names: Vec<&str> = claims.keys().map(String::as_str).collect();
            names.sort_unstable();
            Err(format!(
                "the ID token has no `{claim}` claim; set identity_claim in the config to one it has ({}), or have the provider add the claim",
                names.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let encode = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
        format!("{}.{}.sig", encode("{\"alg\":\"RS256\"}"), encode(payload))
    }

    #[test]
    fn claim_found() {
        let token = jwt(r#"{"sub":"u1","email":"ana@example.com","n":42}"#);
        assert_eq!(claim_value(&token, "email").unwrap(), "ana@example.com");
        assert_eq!(claim_value(&token, "n").unwrap(), "42");
    }

    #[test]
    fn missing_claim_lists_present_ones() {
        let token = jwt(r#"{"sub":"u1","aud":"x"}"#);
        let message = claim_value(&token, "email").unwrap_err();
        assert!(message.contains("has no `email` claim"), "{message}");
        assert!(message.contains("(aud, sub)"), "{message}");
    }

    fn profile() -> Profile {
        let text = r#"
[profiles.bedrock]
issuer = "http://127.0.0.1:9400"
client_id = "tollgate-cli"
role_arn = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
region = "us-east-1"
"#;
        crate::config::parse(std::path::Path::new("agent.toml"), text)
            .expect("the test config is valid")
            .profiles["bedrock"]
            .clone()
    }

    fn poll_error(kind: DeviceCodeErrorResponseType, login_timeout: u64) -> LoginError {
        let error = RequestTokenError::<std::io::Error, _>::ServerResponse(
            DeviceCodeErrorResponse::new(kind, Some("End-User aborted interaction".into()), None),
        );
        device_poll_error(
            &profile(),
            &error,
            Duration::from_secs(login_timeout),
            Duration::from_secs(600),
        )
    }

    #[test]
    fn expired_device_code_names_restart() {
        let message = poll_error(DeviceCodeErrorResponseType::ExpiredToken, 900).to_string();
        assert!(message.contains("expired after 600 seconds"), "{message}");
        assert!(
            message.contains("tollgate-agent login --profile bedrock --device-code"),
            "{message}"
        );
    }

    #[test]
    fn shorter_login_timeout_named() {
        let error = poll_error(DeviceCodeErrorResponseType::ExpiredToken, 120);
        assert!(
            matches!(error, LoginError::DeviceLoginTimedOut { seconds: 120, .. }),
            "{error}"
        );
        assert!(error.to_string().contains("login_timeout_seconds"));
    }

    #[test]
    fn access_denied_names_refusal() {
        let message = poll_error(DeviceCodeErrorResponseType::AccessDenied, 300).to_string();
        assert!(
            message.contains("was refused at the identity provider"),
            "{message}"
        );
        assert!(
            message.contains("End-User aborted interaction"),
            "{message}"
        );
        assert!(message.contains("client `tollgate-cli`"), "{message}");
    }

    #[test]
    fn non_string_claim_rejected() {
        let token = jwt(r#"{"email":["a","b"]}"#);
        assert!(
            claim_value(&token, "email")
                .unwrap_err()
                .contains("not a non-empty string")
        );
    }
}
