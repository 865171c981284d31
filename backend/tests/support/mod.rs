//! Test fixtures: signing keys made in the test, a local OIDC issuer that
//! serves discovery and JWKS on 127.0.0.1, a store wrapper that counts
//! calls, and the backend router served on 127.0.0.1.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Json;
use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tollgate_backend::alerts::AlertRecord;
use tollgate_backend::alerts::deliver::{AlertDelivery, DeliveryOutcome};
use tollgate_backend::auth::{AuthConfig, TokenValidator};
use tollgate_backend::ingest::IngestSettings;
use tollgate_backend::ingest::batch::{
    BatchOutcome, GroupOutcome, ModelUsage, UsageBatch, UsageGroup,
};
use tollgate_backend::server::{self, AppState};
use tollgate_backend::store::sqlite::SqliteStore;
use tollgate_backend::store::{
    AuditEntry, PolicyChange, PolicyKey, Store, StoreResult, UsageEvent, UsageTotals,
};
use tollgate_quota::{CountingConfig, Policy, UnblockGrant};

pub const AUDIENCE: &str = "tollgate-cli";

/// A signing key and the public JWK that verifies it.
pub struct SigningKey {
    pub kid: String,
    pub algorithm: Algorithm,
    pub encoding: EncodingKey,
    pub jwk: Value,
    /// The public key as PEM (SubjectPublicKeyInfo), for the HMAC
    /// key-confusion attack.
    pub public_pem: String,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// Generates a 2048-bit RSA key for RS256.
    pub fn rsa(kid: &str) -> Self {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key generation");
        let pkcs8 = pair.as_der().expect("PKCS#8 export");
        let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
        let encoding = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("RSA PEM loads");

        let public = pair.public_key();
        let spki = public.as_der().expect("public key export");
        let jwk = json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": b64(public.modulus().big_endian_without_leading_zero()),
            "e": b64(public.exponent().big_endian_without_leading_zero()),
        });
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::RS256,
            encoding,
            jwk,
            public_pem: pem::encode(&pem::Pem::new("PUBLIC KEY", spki.as_ref().to_vec())),
        }
    }

    /// Generates a P-256 key for ES256.
    pub fn ec(kid: &str) -> Self {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                .expect("EC key generation");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
            .expect("EC key loads");
        // The uncompressed point: 0x04, then x and y of 32 bytes each.
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC",
            "crv": "P-256",
            "use": "sig",
            "kid": kid,
            "x": b64(&point[1..33]),
            "y": b64(&point[33..65]),
        });
        Self {
            kid: kid.to_owned(),
            algorithm: Algorithm::ES256,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
            jwk,
            public_pem: String::new(),
        }
    }

    /// Signs `claims` with this key, its algorithm and its key id.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing works")
    }

    /// Signs `claims` with this key but names `kid` in the header.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(self.algorithm);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing works")
    }
}

/// Standard claims valid for `issuer` now.
pub fn claims(issuer: &str, email: &str) -> Value {
    let now = Utc::now().timestamp();
    json!({
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": format!("sub-{email}"),
        "email": email,
        "iat": now,
        "exp": now + 3600,
    })
}

/// Builds a token from the given header, claims and signature by hand,
/// because no signing library writes `alg: none`.
pub fn unsigned_token(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        signature
    )
}

/// A local OIDC issuer: discovery and JWKS only, counting JWKS downloads.
pub struct TestIssuer {
    pub url: String,
    pub jwks_fetches: Arc<AtomicUsize>,
    published: Arc<Mutex<Vec<Value>>>,
    _shutdown: oneshot::Sender<()>,
}

impl TestIssuer {
    /// Starts the issuer on 127.0.0.1 with `keys` in its JWKS.
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the issuer");
        let url = format!("http://{}", listener.local_addr().expect("issuer address"));
        let published: Arc<Mutex<Vec<Value>>> =
            Arc::new(Mutex::new(keys.iter().map(|key| key.jwk.clone()).collect()));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));

        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "authorization_endpoint": format!("{url}/auth"),
            "token_endpoint": format!("{url}/token"),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        });
        let keys_for_route = Arc::clone(&published);
        let fetches_for_route = Arc::clone(&jwks_fetches);
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let discovery = discovery.clone();
                    async move { Json(discovery) }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    fetches_for_route.fetch_add(1, Ordering::SeqCst);
                    let keys = keys_for_route.lock().expect("keys lock").clone();
                    async move { Json(json!({ "keys": keys })) }
                }),
            );
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = shutdown_signal.await;
                })
                .await
                .expect("the issuer serves");
        });
        Self {
            url,
            jwks_fetches,
            published,
            _shutdown: shutdown,
        }
    }

    /// Replaces the published keys, as a key rotation does.
    pub fn publish(&self, keys: &[&SigningKey]) {
        *self.published.lock().expect("keys lock") =
            keys.iter().map(|key| key.jwk.clone()).collect();
    }

    pub fn fetches(&self) -> usize {
        self.jwks_fetches.load(Ordering::SeqCst)
    }
}

/// A [`Store`] that counts every call before passing it on, to prove that
/// rejected requests never reach the store.
pub struct CountingStore {
    inner: SqliteStore,
    calls: AtomicUsize,
}

impl CountingStore {
    pub fn new(inner: SqliteStore) -> Self {
        Self {
            inner,
            calls: AtomicUsize::new(0),
        }
    }

    /// Returns the path of the SQLite file.
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Store for CountingStore {
    async fn ping(&self) -> StoreResult<()> {
        self.count();
        self.inner.ping().await
    }
    async fn put_policy(&self, policy: &Policy) -> StoreResult<()> {
        self.count();
        self.inner.put_policy(policy).await
    }
    async fn policy(&self, key: &PolicyKey) -> StoreResult<Option<Policy>> {
        self.count();
        self.inner.policy(key).await
    }
    async fn policies(&self, keys: &[PolicyKey]) -> StoreResult<Vec<Policy>> {
        self.count();
        self.inner.policies(keys).await
    }
    async fn list_policies(&self) -> StoreResult<Vec<Policy>> {
        self.count();
        self.inner.list_policies().await
    }
    async fn count_policies(&self) -> StoreResult<u64> {
        self.count();
        self.inner.count_policies().await
    }
    async fn delete_policy(&self, key: &PolicyKey) -> StoreResult<bool> {
        self.count();
        self.inner.delete_policy(key).await
    }
    async fn add_usage(&self, event: &UsageEvent) -> StoreResult<bool> {
        self.count();
        self.inner.add_usage(event).await
    }
    async fn usage(&self, user: &str, at: DateTime<Utc>) -> StoreResult<UsageTotals> {
        self.count();
        self.inner.usage(user, at).await
    }
    async fn put_unblock(&self, grant: &UnblockGrant) -> StoreResult<()> {
        self.count();
        self.inner.put_unblock(grant).await
    }
    async fn unblock(&self, user: &str) -> StoreResult<Option<UnblockGrant>> {
        self.count();
        self.inner.unblock(user).await
    }
    async fn delete_unblock(&self, user: &str) -> StoreResult<bool> {
        self.count();
        self.inner.delete_unblock(user).await
    }
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        self.count();
        self.inner.append_audit(entry).await
    }
    async fn read_audit(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.count();
        self.inner.read_audit(limit).await
    }
    async fn apply_policy_changes(
        &self,
        changes: &[PolicyChange],
        audit: &[AuditEntry],
    ) -> StoreResult<()> {
        self.count();
        self.inner.apply_policy_changes(changes, audit).await
    }
    async fn record_usage_points(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome> {
        self.count();
        self.inner.record_usage_points(batch).await
    }
    async fn record_usage_group(&self, group: UsageGroup) -> StoreResult<GroupOutcome> {
        self.count();
        self.inner.record_usage_group(group).await
    }
    async fn model_usage(&self, user: &str, at: DateTime<Utc>) -> StoreResult<Vec<ModelUsage>> {
        self.count();
        self.inner.model_usage(user, at).await
    }
    async fn alerts(&self, user: Option<&str>) -> StoreResult<Vec<AlertRecord>> {
        self.count();
        self.inner.alerts(user).await
    }
    async fn claim_alert_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<AlertDelivery>> {
        self.count();
        self.inner
            .claim_alert_deliveries(now, lease_until, limit)
            .await
    }
    async fn finish_alert_delivery(&self, id: i64, outcome: &DeliveryOutcome) -> StoreResult<()> {
        self.count();
        self.inner.finish_alert_delivery(id, outcome).await
    }
}

/// The backend served on 127.0.0.1 against a counting SQLite store.
pub struct Backend {
    pub url: String,
    pub store: Arc<CountingStore>,
    pub http: reqwest::Client,
    _folder: tempfile::TempDir,
    _shutdown: oneshot::Sender<()>,
}

impl Backend {
    /// Starts the backend for `issuer` with default settings.
    pub async fn start(issuer: &str) -> Self {
        Self::start_with(AuthConfig::new(issuer, AUDIENCE), CountingConfig::default()).await
    }

    /// Starts the backend with the given settings.
    pub async fn start_with(auth: AuthConfig, counting: CountingConfig) -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("tollgate.db");
        Self::start_inner(auth, counting, &path, folder, IngestSettings::default()).await
    }

    /// Starts the backend for `issuer` with the given `POST /v1/metrics`
    /// settings.
    pub async fn start_with_ingest(issuer: &str, ingest: IngestSettings) -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("tollgate.db");
        let auth = AuthConfig::new(issuer, AUDIENCE);
        Self::start_inner(auth, CountingConfig::default(), &path, folder, ingest).await
    }

    /// Starts the backend for `issuer` on the existing store file `path`.
    pub async fn start_on(issuer: &str, path: &Path) -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let auth = AuthConfig::new(issuer, AUDIENCE);
        Self::start_inner(
            auth,
            CountingConfig::default(),
            path,
            folder,
            IngestSettings::default(),
        )
        .await
    }

    /// Starts the backend with the given settings on the existing store
    /// file `path`.
    pub async fn start_on_with(auth: AuthConfig, counting: CountingConfig, path: &Path) -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        Self::start_inner(auth, counting, path, folder, IngestSettings::default()).await
    }

    async fn start_inner(
        auth: AuthConfig,
        counting: CountingConfig,
        path: &Path,
        folder: tempfile::TempDir,
        ingest: IngestSettings,
    ) -> Self {
        let sqlite = SqliteStore::open(path).expect("store opens");
        let store = Arc::new(CountingStore::new(sqlite));
        let validator = TokenValidator::new(auth).expect("the validator builds");
        // Prefetch as `tollgate serve` does; failures are the issuer-down case.
        let _ = validator.prefetch_keys().await;
        let state = AppState {
            validator: Arc::new(validator),
            store: Arc::clone(&store) as Arc<dyn Store>,
            counting: Arc::new(counting),
        };
        let address: SocketAddr = "127.0.0.1:0".parse().expect("a valid address");
        let listener = server::bind(address, None).await.expect("bind the backend");
        let url = format!("http://{}", listener.local_addr().expect("backend address"));
        let (shutdown, shutdown_signal) = oneshot::channel::<()>();
        tokio::spawn(server::serve(
            listener,
            server::router_with_ingest(state, ingest),
            async {
                let _ = shutdown_signal.await;
            },
        ));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("the HTTP client builds");
        Self {
            url,
            store,
            http,
            _folder: folder,
            _shutdown: shutdown,
        }
    }

    /// Calls `GET /v1/check` with `token` and returns the status and body.
    pub async fn check(&self, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/v1/check", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("the check request is answered");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.expect("the check body is JSON"),
        )
    }

    /// Calls `GET /health` and returns the JSON body.
    pub async fn health(&self) -> Value {
        self.http
            .get(format!("{}/health", self.url))
            .send()
            .await
            .expect("the health request is answered")
            .json()
            .await
            .expect("the health body is JSON")
    }

    /// Stores a policy directly.
    pub async fn put_policy(&self, policy: &Policy) {
        self.store
            .put_policy(policy)
            .await
            .expect("the policy is stored");
    }
}
