//! The issuer's signing keys: OIDC discovery and a cached JWKS.
//!
//! The JWKS URL comes from `<issuer>/.well-known/openid-configuration`. The
//! key set is downloaded on first use and again when it is older than the
//! maximum age. A token whose key id is not in the set triggers one more
//! download, at most once per refetch interval, so a stream of tokens with
//! made-up key ids cannot turn the server into a load generator against
//! the issuer.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::AuthConfig;

/// The reason no key was found for a token.
#[derive(Debug, thiserror::Error)]
pub enum KeyLookupError {
    /// The issuer's keys could not be downloaded.
    #[error("{0}")]
    Unavailable(String),
    /// The keys were downloaded but none matches the token.
    #[error("{0}")]
    NotFound(String),
}

/// One usable key from the JWKS.
#[derive(Clone)]
struct SigningKey {
    key_id: Option<String>,
    /// The `alg` the JWKS pins the key to, if any.
    algorithm: Option<KeyAlgorithm>,
    curve: Option<EllipticCurve>,
    key: DecodingKey,
}

impl SigningKey {
    /// Reports whether this key may verify a token signed with `algorithm`.
    fn accepts(&self, algorithm: Algorithm) -> bool {
        if self.key.family() != algorithm.family() {
            return false;
        }
        if let Some(pinned) = self.algorithm
            && Algorithm::try_from(pinned).ok() != Some(algorithm)
        {
            return false;
        }
        match (algorithm, &self.curve) {
            (Algorithm::ES256, Some(curve)) => *curve == EllipticCurve::P256,
            (Algorithm::ES384, Some(curve)) => *curve == EllipticCurve::P384,
            (Algorithm::EdDSA, Some(curve)) => *curve == EllipticCurve::Ed25519,
            _ => true,
        }
    }
}

#[derive(Default)]
struct KeySet {
    keys: Vec<SigningKey>,
    fetched_at: Option<Instant>,
}

/// State of the downloads, guarded so only one runs at a time.
#[derive(Default)]
struct RefreshState {
    jwks_uri: Option<String>,
    /// The last download of any kind, successful or not.
    last_attempt: Option<Instant>,
    /// The last download caused by a key id missing from a fresh set.
    last_unknown_key_download: Option<Instant>,
    last_error: Option<String>,
}

/// Reports whether `since` is unset or at least `interval` ago.
fn elapsed_at_least(since: Option<Instant>, interval: Duration) -> bool {
    since.is_none_or(|instant| instant.elapsed() >= interval)
}

/// The issuer's keys, downloaded on demand and cached.
pub struct KeySource {
    http: reqwest::Client,
    issuer: String,
    refetch_interval: Duration,
    max_age: Duration,
    keys: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<RefreshState>,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("KeySource")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<Value>,
}

impl KeySource {
    /// Builds a key source for `config.issuer`; nothing is downloaded yet.
    pub fn new(config: &AuthConfig) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            issuer: config.issuer.clone(),
            refetch_interval: config.jwks_refetch_interval,
            max_age: config.jwks_max_age,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
        })
    }

    /// Returns when the current key set was downloaded, which identifies
    /// it: each download replaces the set.
    pub fn key_set_version(&self) -> Option<Instant> {
        self.snapshot().fetched_at
    }

    fn snapshot(&self) -> Arc<KeySet> {
        Arc::clone(
            &self
                .keys
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Returns the key that verifies a token with key id `key_id` signed
    /// with `algorithm`, downloading the JWKS when it is missing, stale, or
    /// lacks the key id (rate-limited).
    pub async fn find(
        &self,
        key_id: Option<&str>,
        algorithm: Algorithm,
    ) -> Result<DecodingKey, KeyLookupError> {
        let snapshot = self.snapshot();
        let fresh = snapshot
            .fetched_at
            .is_some_and(|fetched_at| fetched_at.elapsed() < self.max_age);
        if fresh && let Some(key) = select(&snapshot, key_id, algorithm)? {
            return Ok(key);
        }

        let mut state = self.refresh.lock().await;
        // Another request may have downloaded the keys while this one waited.
        let current = self.snapshot();
        let refreshed_meanwhile = current.fetched_at != snapshot.fetched_at;
        if refreshed_meanwhile && let Some(key) = select(&current, key_id, algorithm)? {
            return Ok(key);
        }

        let may_download = if refreshed_meanwhile {
            false
        } else if current.fetched_at.is_some() && fresh {
            // The set is fresh but lacks the key: a rotation, or a made-up
            // kid. Only one such download per interval.
            let allowed = elapsed_at_least(state.last_unknown_key_download, self.refetch_interval);
            if allowed {
                state.last_unknown_key_download = Some(Instant::now());
            }
            allowed
        } else {
            // Missing or stale: download, unless the last attempt (which
            // failed) was within the interval, so a failing issuer is not
            // asked again on every request.
            elapsed_at_least(state.last_attempt, self.refetch_interval)
        };
        if may_download {
            match self.download(&mut state).await {
                Ok(count) => tracing::debug!(issuer = %self.issuer, count, "downloaded the JWKS"),
                Err(message) => {
                    tracing::warn!(issuer = %self.issuer, "cannot download the JWKS: {message}");
                    // A stale key set still serves the keys it has.
                    if let Some(key) = select(&current, key_id, algorithm)? {
                        return Ok(key);
                    }
                    return Err(KeyLookupError::Unavailable(message));
                }
            }
        }

        let current = self.snapshot();
        if current.fetched_at.is_none() {
            let message = state.last_error.clone().unwrap_or_else(|| {
                format!("the signing keys of {} are not downloaded yet", self.issuer)
            });
            return Err(KeyLookupError::Unavailable(message));
        }
        select(&current, key_id, algorithm)?.ok_or_else(|| {
            KeyLookupError::NotFound(match key_id {
                Some(key_id) => format!(
                    "the token's key id {key_id:?} is not in the JWKS of {}; log in again \
                     to get a token signed with a current key",
                    self.issuer
                ),
                None => format!(
                    "the token has no key id and the JWKS of {} has no single {algorithm:?} \
                     key to try; the issuer must set kid in its tokens",
                    self.issuer
                ),
            })
        })
    }

    /// Downloads the JWKS now and returns how many usable keys it has.
    pub async fn refresh(&self) -> Result<usize, KeyLookupError> {
        let mut state = self.refresh.lock().await;
        self.download(&mut state)
            .await
            .map_err(KeyLookupError::Unavailable)
    }

    async fn download(&self, state: &mut RefreshState) -> Result<usize, String> {
        state.last_attempt = Some(Instant::now());
        let result = self.download_inner(state).await;
        match &result {
            Ok(_) => state.last_error = None,
            Err(message) => {
                // Discover again next time, in case the JWKS URL moved.
                state.jwks_uri = None;
                state.last_error = Some(message.clone());
            }
        }
        result
    }

    async fn download_inner(&self, state: &mut RefreshState) -> Result<usize, String> {
        let jwks_uri = match &state.jwks_uri {
            Some(uri) => uri.clone(),
            None => {
                let uri = self.discover().await?;
                state.jwks_uri = Some(uri.clone());
                uri
            }
        };
        let raw: RawKeySet = self.get_json(&jwks_uri, "JWKS").await?;
        let keys = parse_keys(raw.keys);
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
        });
        Ok(count)
    }

    async fn discover(&self) -> Result<String, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let document: DiscoveryDocument = self.get_json(&url, "OIDC discovery document").await?;
        if document.issuer != self.issuer {
            return Err(format!(
                "the discovery document at {url} names the issuer {:?}, not {:?}; set the \
                 issuer to exactly the value the provider publishes",
                document.issuer, self.issuer
            ));
        }
        Ok(document.jwks_uri)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<T, String> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|error| format!("cannot fetch the {what} from {url}: {error}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the {what} at {url} returned HTTP {status}"));
        }
        response
            .json()
            .await
            .map_err(|error| format!("the {what} at {url} is not valid JSON: {error}"))
    }
}

/// Converts the JWKS entries this server can use into keys, skipping
/// encryption keys, symmetric keys and entries it cannot parse.
fn parse_keys(entries: Vec<Value>) -> Vec<SigningKey> {
    let mut keys = Vec::new();
    for entry in entries {
        let jwk: Jwk = match serde_json::from_value(entry) {
            Ok(jwk) => jwk,
            Err(error) => {
                tracing::debug!(%error, "skipped a JWKS entry that does not parse");
                continue;
            }
        };
        let key_id = jwk.common.key_id.clone();
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let curve = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => None,
            AlgorithmParameters::EllipticCurve(params) => Some(params.curve.clone()),
            AlgorithmParameters::OctetKeyPair(params) => Some(params.curve.clone()),
            // Symmetric or unknown key types never verify a token here.
            _ => continue,
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) if key.family() != AlgorithmFamily::Hmac => keys.push(SigningKey {
                key_id,
                algorithm: jwk.common.key_algorithm,
                curve,
                key,
            }),
            Ok(_) => {}
            Err(error) => tracing::debug!(?key_id, %error, "skipped a JWKS key that does not load"),
        }
    }
    keys
}

/// Picks the key for a token. With a key id, the key with that id must
/// accept the algorithm. Without one, the only key that accepts it is used.
fn select(
    set: &KeySet,
    key_id: Option<&str>,
    algorithm: Algorithm,
) -> Result<Option<DecodingKey>, KeyLookupError> {
    match key_id {
        Some(key_id) => {
            let Some(key) = set
                .keys
                .iter()
                .find(|key| key.key_id.as_deref() == Some(key_id))
            else {
                return Ok(None);
            };
            if key.accepts(algorithm) {
                Ok(Some(key.key.clone()))
            } else {
                Err(KeyLookupError::NotFound(format!(
                    "the JWKS key {key_id:?} cannot verify a {algorithm:?} signature; \
                     the token's header does not match its key"
                )))
            }
        }
        None => {
            let mut candidates = set.keys.iter().filter(|key| key.accepts(algorithm));
            match (candidates.next(), candidates.next()) {
                (Some(key), None) => Ok(Some(key.key.clone())),
                _ => Ok(None),
            }
        }
    }
}
