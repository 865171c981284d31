//! The issuer's signing keys: OIDC discovery and a cached JWKS.
//!
//! The JWKS URL comes from `<issuer>/.well-known/openid-configuration`. The
//! key set is downloaded at start-up and then again by a background task
//! ([`super::TokenValidator::spawn_key_refresh`]) every refresh interval:
//! the JWKS response's `Cache-Control: max-age`, bounded by
//! [`MIN_REFRESH_INTERVAL`] and the configured interval, or the configured
//! interval when the response has none. A key missing from a new download
//! is withdrawn: tokens signed with it are rejected, and the verified-token
//! cache drops every entry verified with it. A download that fails, or that
//! lists no usable key, keeps the previous set.
//!
//! A token whose key id is not in the set also triggers a download, at
//! most once per refetch interval, so a stream of tokens with made-up key
//! ids cannot turn the server into a load generator against the issuer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use headers::{CacheControl, HeaderMapExt as _};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::AuthConfig;
use super::verified::VerifiedTokens;

/// The shortest refresh interval a JWKS `Cache-Control: max-age` may set,
/// so that `max-age=0` or `no-cache` does not make the server download the
/// keys continuously. A configured interval below it still applies.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// How many withdrawn key ids are remembered to explain a rejection.
const REMEMBERED_WITHDRAWN_KEYS: usize = 32;

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

/// A key that verified a token: the key, and the serial that identifies it
/// for the verified-token cache.
#[derive(Clone)]
pub struct FoundKey {
    pub key: DecodingKey,
    pub serial: u64,
}

/// One usable key from the JWKS.
#[derive(Clone)]
struct SigningKey {
    /// A number that stays the same across downloads while the JWKS entry
    /// (key id and key material) stays the same.
    serial: u64,
    /// The JWKS entry as downloaded, compared to recognise the same key in
    /// the next download.
    entry: Value,
    key_id: Option<String>,
    /// The `alg` the JWKS pins the key to, if any.
    algorithm: Option<KeyAlgorithm>,
    curve: Option<EllipticCurve>,
    key: DecodingKey,
}

impl SigningKey {
    fn found(&self) -> FoundKey {
        FoundKey {
            key: self.key.clone(),
            serial: self.serial,
        }
    }

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
    /// Key ids that earlier downloads listed and later ones did not, the
    /// most recent last.
    withdrawn: Vec<String>,
}

impl KeySet {
    fn contains_serial(&self, serial: u64) -> bool {
        self.keys.iter().any(|key| key.serial == serial)
    }
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

/// Returns the time until the next background download: the JWKS
/// response's `max_age` raised to [`MIN_REFRESH_INTERVAL`] and capped at
/// `configured`, or `configured` when the response set no max-age.
fn refresh_interval_for(max_age: Option<Duration>, configured: Duration) -> Duration {
    max_age.map_or(configured, |age| {
        age.max(MIN_REFRESH_INTERVAL).min(configured)
    })
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
    /// The configured refresh interval: the longest time between downloads.
    refresh_interval: Duration,
    keys: RwLock<Arc<KeySet>>,
    refresh: tokio::sync::Mutex<RefreshState>,
    next_serial: AtomicU64,
    /// The verified-token cache, purged of a key's entries when the key is
    /// withdrawn.
    verified: Arc<VerifiedTokens>,
    /// The refresh interval to wait before the next background download.
    next_interval: Mutex<Duration>,
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
    /// Withdrawn keys' entries are removed from `verified`.
    pub fn new(config: &AuthConfig, verified: Arc<VerifiedTokens>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(config.http_timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            issuer: config.issuer.clone(),
            refetch_interval: config.jwks_refetch_interval,
            refresh_interval: config.jwks_refresh_interval,
            keys: RwLock::new(Arc::new(KeySet::default())),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            next_serial: AtomicU64::new(1),
            verified,
            next_interval: Mutex::new(config.jwks_refresh_interval),
        })
    }

    /// Reports whether the key with `serial` is in the current key set.
    pub fn is_current(&self, serial: u64) -> bool {
        self.snapshot().contains_serial(serial)
    }

    /// Returns how long the background refresh waits before its next
    /// download.
    pub fn refresh_interval(&self) -> Duration {
        *self
            .next_interval
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    ) -> Result<FoundKey, KeyLookupError> {
        let snapshot = self.snapshot();
        // The background refresh keeps the set younger than the refresh
        // interval; an older set means its downloads fail.
        let fresh = snapshot
            .fetched_at
            .is_some_and(|fetched_at| fetched_at.elapsed() < self.refresh_interval);
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
                Some(key_id) if current.withdrawn.iter().any(|id| id == key_id) => format!(
                    "the token is signed with the key {key_id:?}, which the issuer {} has \
                     withdrawn from its JWKS; log in again to get a token signed with a \
                     current key",
                    self.issuer
                ),
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

    /// Downloads the JWKS for the background refresh and logs the outcome.
    /// A failure keeps the current keys.
    pub async fn refresh_in_background(&self) {
        match self.refresh().await {
            Ok(count) => {
                tracing::debug!(issuer = %self.issuer, count, "refreshed the JWKS");
            }
            Err(error) => {
                let kept = self.snapshot().keys.len();
                tracing::warn!(
                    issuer = %self.issuer,
                    kept,
                    "cannot refresh the JWKS, so the keys downloaded before stay in use: {error}"
                );
            }
        }
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
        let (raw, max_age): (RawKeySet, _) = self.get_json_with_max_age(&jwks_uri, "JWKS").await?;
        let previous = self.snapshot();
        let mut keys = parse_keys(raw.keys);
        if keys.is_empty() {
            // An issuer always publishes at least one signing key, so an
            // empty set is a broken response, not a withdrawal of every key.
            return Err(format!(
                "the JWKS at {jwks_uri} lists no usable signing key; check the issuer's \
                 key configuration"
            ));
        }
        for key in &mut keys {
            key.serial = previous
                .keys
                .iter()
                .find(|old| old.entry == key.entry)
                .map_or_else(
                    || self.next_serial.fetch_add(1, Ordering::Relaxed),
                    |old| old.serial,
                );
        }
        let removed: Vec<&SigningKey> = previous
            .keys
            .iter()
            .filter(|old| !keys.iter().any(|key| key.serial == old.serial))
            .collect();
        let mut withdrawn = previous.withdrawn.clone();
        for old in &removed {
            let Some(key_id) = &old.key_id else { continue };
            // A key id that is still published names a new key, not a
            // withdrawn one.
            if keys.iter().any(|key| key.key_id.as_ref() == Some(key_id)) {
                continue;
            }
            withdrawn.retain(|id| id != key_id);
            withdrawn.push(key_id.clone());
        }
        withdrawn.retain(|id| !keys.iter().any(|key| key.key_id.as_ref() == Some(id)));
        let excess = withdrawn.len().saturating_sub(REMEMBERED_WITHDRAWN_KEYS);
        withdrawn.drain(..excess);

        let count = keys.len();
        let removed_serials: Vec<u64> = removed.iter().map(|old| old.serial).collect();
        for old in &removed {
            let replaced = keys.iter().any(|key| key.key_id == old.key_id);
            if replaced {
                tracing::info!(
                    issuer = %self.issuer,
                    key_id = ?old.key_id,
                    "the issuer published a new key under a known key id; the old key's \
                     tokens are verified again"
                );
            } else {
                tracing::info!(
                    issuer = %self.issuer,
                    key_id = ?old.key_id,
                    "the issuer withdrew a signing key; tokens signed with it are rejected \
                     from now on"
                );
            }
        }
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(KeySet {
            keys,
            fetched_at: Some(Instant::now()),
            withdrawn,
        });
        if !removed_serials.is_empty() {
            let dropped = self.verified.remove_keys(&removed_serials);
            tracing::debug!(dropped, "dropped cached verifications of withdrawn keys");
        }

        *self
            .next_interval
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            refresh_interval_for(max_age, self.refresh_interval);
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
        self.get_json_with_max_age(url, what)
            .await
            .map(|(value, _)| value)
    }

    /// Downloads and parses JSON, and returns the response's
    /// `Cache-Control: max-age` (zero for `no-cache` or `no-store`).
    async fn get_json_with_max_age<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
        what: &str,
    ) -> Result<(T, Option<Duration>), String> {
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
        let max_age = response
            .headers()
            .typed_get::<CacheControl>()
            .and_then(|control| {
                if control.no_cache() || control.no_store() {
                    Some(Duration::ZERO)
                } else {
                    control.max_age()
                }
            });
        let value = response
            .json()
            .await
            .map_err(|error| format!("the {what} at {url} is not valid JSON: {error}"))?;
        Ok((value, max_age))
    }
}

/// Converts the JWKS entries this server can use into keys, skipping
/// encryption keys, symmetric keys and entries it cannot parse.
fn parse_keys(entries: Vec<Value>) -> Vec<SigningKey> {
    let mut keys = Vec::new();
    for entry in entries {
        let jwk: Jwk = match serde_json::from_value(entry.clone()) {
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
                // Assigned by the download that compares with earlier keys.
                serial: 0,
                entry,
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
) -> Result<Option<FoundKey>, KeyLookupError> {
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
                Ok(Some(key.found()))
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
                (Some(key), None) => Ok(Some(key.found())),
                _ => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_interval_follows_bounded_max_age() {
        let five_minutes = Duration::from_secs(300);
        let cases = [
            (None, five_minutes, five_minutes),
            (
                Some(Duration::from_secs(60)),
                five_minutes,
                Duration::from_secs(60),
            ),
            (
                Some(Duration::from_secs(86_400)),
                five_minutes,
                five_minutes,
            ),
            (Some(Duration::ZERO), five_minutes, MIN_REFRESH_INTERVAL),
            (
                Some(Duration::ZERO),
                Duration::from_secs(1),
                Duration::from_secs(1),
            ),
            (None, Duration::from_secs(1), Duration::from_secs(1)),
        ];
        for (max_age, configured, expected) in cases {
            assert_eq!(
                refresh_interval_for(max_age, configured),
                expected,
                "max-age {max_age:?} with a configured {configured:?}"
            );
        }
    }
}
