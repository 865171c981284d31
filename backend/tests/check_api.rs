//! `GET /v1/check` against a local issuer: token validation (each rejected
//! token gets a 401 naming why, with no store call) and quota decisions.

mod support;

use chrono::{Duration, Utc};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};
use tollgate_backend::auth::AuthConfig;
use tollgate_backend::store::{Store, UsageEvent};
use tollgate_protocol::check::{CheckAnswer, Enforcement, PolicyKind, Reason};
use tollgate_quota::{CountingConfig, Identity, Policy, TokenType, UnblockGrant, display_amount};

use support::{AUDIENCE, Backend, SigningKey, TestIssuer, claims, unsigned_token};

/// Sends `token` and asserts a 401 with `code`, and that the store was not
/// called.
async fn assert_rejected(backend: &Backend, token: &str, code: &str) -> Value {
    let calls_before = backend.store.calls();
    let (status, body) = backend.check(token).await;
    assert_eq!(status, 401, "status for {code}: {body}");
    assert_eq!(body["error"], code, "error code: {body}");
    let message = body["message"].as_str().expect("a message string");
    assert!(!message.is_empty(), "message for {code}");
    assert!(
        !message.contains(token),
        "the message must not echo the token"
    );
    assert_eq!(
        backend.store.calls(),
        calls_before,
        "store calls for a {code} token"
    );
    body
}

fn answer(body: Value) -> CheckAnswer {
    serde_json::from_value(body).expect("the body is a CheckAnswer")
}

async fn record(backend: &Backend, user: &str, token_type: TokenType, tokens: u64) {
    backend
        .store
        .add_usage(&UsageEvent {
            user: user.to_owned(),
            at: Utc::now(),
            token_type,
            tokens,
            dedup_key: None,
        })
        .await
        .expect("usage is recorded");
}

#[tokio::test]
async fn valid_token_gets_an_answer() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let token = key.sign(&claims(&issuer.url, "  Ann@Example.COM "));
    let (status, body) = backend.check(&token).await;
    assert_eq!(status, 200, "{body}");
    let answer = answer(body);
    assert!(answer.allowed);
    assert_eq!(answer.reason, Reason::NoPolicy);
    assert_eq!(answer.user, "ann@example.com");
    assert!(answer.policy.is_none());
    assert!(
        backend.store.calls() > 0,
        "an accepted token reads the store"
    );
}

#[tokio::test]
async fn ec_token_is_accepted() {
    let key = SigningKey::ec("ec-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let (status, body) = backend
        .check(&key.sign(&claims(&issuer.url, "ec@example.com")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "ec@example.com");
}

#[tokio::test]
async fn missing_or_malformed_token_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let response = backend
        .http
        .get(format!("{}/v1/check", backend.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response
            .headers()
            .get("www-authenticate")
            .map(|value| value.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let body: Value = response.json().await.expect("JSON body");
    assert_eq!(body["error"], "missing_token");
    assert_eq!(backend.store.calls(), 0);

    assert_rejected(&backend, "not-a-jwt", "malformed_token").await;
    assert_rejected(&backend, "a.b.c", "malformed_token").await;
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let impostor = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let token = impostor.sign(&claims(&issuer.url, "ann@example.com"));
    assert_rejected(&backend, &token, "bad_signature").await;

    // A valid token with its payload swapped keeps the header and signature.
    let genuine = key.sign(&claims(&issuer.url, "ann@example.com"));
    let forged_claims = claims(&issuer.url, "boss@example.com");
    let parts: Vec<&str> = genuine.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            forged_claims.to_string()
        ),
        parts[2]
    );
    assert_rejected(&backend, &forged, "bad_signature").await;
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let mut token_claims = claims(&issuer.url, "ann@example.com");
    token_claims["iss"] = json!("http://127.0.0.1:1/other");
    let body = assert_rejected(&backend, &key.sign(&token_claims), "wrong_issuer").await;
    assert!(
        body["message"].as_str().unwrap().contains(&issuer.url),
        "{body}"
    );

    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("http://127.0.0.1:1/other"),
        "names the token's issuer: {body}"
    );

    // A token of another issuer is signed by a key this issuer never
    // published, and still reports the issuer, not the key.
    let other_key = SigningKey::rsa("other-issuer-key");
    let fetches_before = issuer.fetches();
    let body = assert_rejected(&backend, &other_key.sign(&token_claims), "wrong_issuer").await;
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(&issuer.url), "{body}");
    assert!(message.contains("http://127.0.0.1:1/other"), "{body}");
    assert_eq!(
        issuer.fetches(),
        fetches_before,
        "no JWKS download for another issuer's key"
    );

    token_claims.as_object_mut().unwrap().remove("iss");
    assert_rejected(&backend, &key.sign(&token_claims), "missing_claim").await;
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let mut token_claims = claims(&issuer.url, "ann@example.com");
    token_claims["aud"] = json!("some-other-client");
    let body = assert_rejected(&backend, &key.sign(&token_claims), "wrong_audience").await;
    assert!(
        body["message"].as_str().unwrap().contains(AUDIENCE),
        "{body}"
    );

    // A list of audiences is accepted when it contains ours.
    token_claims["aud"] = json!(["some-other-client", AUDIENCE]);
    let (status, body) = backend.check(&key.sign(&token_claims)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn expired_token_is_rejected_beyond_leeway() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let mut token_claims = claims(&issuer.url, "ann@example.com");
    token_claims["exp"] = json!(Utc::now().timestamp() - 120);
    assert_rejected(&backend, &key.sign(&token_claims), "expired").await;

    // Ten seconds past `exp` is inside the 30-second leeway.
    token_claims["exp"] = json!(Utc::now().timestamp() - 10);
    let (status, body) = backend.check(&key.sign(&token_claims)).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn future_nbf_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let mut token_claims = claims(&issuer.url, "ann@example.com");
    token_claims["nbf"] = json!(Utc::now().timestamp() + 600);
    assert_rejected(&backend, &key.sign(&token_claims), "not_yet_valid").await;
}

#[tokio::test]
async fn alg_none_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let token_claims = claims(&issuer.url, "ann@example.com");
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": "rsa-1"});
        let body = assert_rejected(
            &backend,
            &unsigned_token(&header, &token_claims, ""),
            "unsupported_alg",
        )
        .await;
        assert!(body["message"].as_str().unwrap().contains(alg), "{body}");
    }
}

#[tokio::test]
async fn hs256_with_public_key_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    // The key-confusion attack: HMAC keyed with the issuer's public key.
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("rsa-1".to_owned());
    let secret = EncodingKey::from_secret(key.public_pem.as_bytes()).expect("an HMAC key");
    let token = jsonwebtoken::encode(&header, &claims(&issuer.url, "ann@example.com"), &secret)
        .expect("HMAC signing works");
    let body = assert_rejected(&backend, &token, "unsupported_alg").await;
    assert!(
        body["message"].as_str().unwrap().contains("HS256"),
        "{body}"
    );
}

#[tokio::test]
async fn algorithm_must_match_key() {
    let rsa = SigningKey::rsa("rsa-1");
    let ec = SigningKey::ec("ec-1");
    let issuer = TestIssuer::start(&[&rsa, &ec]).await;
    let backend = Backend::start(&issuer.url).await;

    // An ES256 token that names the RSA key.
    let token = ec.sign_as("rsa-1", &claims(&issuer.url, "ann@example.com"));
    assert_rejected(&backend, &token, "unknown_key").await;
}

#[tokio::test]
async fn unknown_kid_refetches_once_then_rejects() {
    let key = SigningKey::rsa("rsa-1");
    let stranger = SigningKey::rsa("rsa-unknown");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    assert_eq!(issuer.fetches(), 1, "the JWKS is downloaded at start");

    let token = stranger.sign(&claims(&issuer.url, "ann@example.com"));
    assert_rejected(&backend, &token, "unknown_key").await;
    assert_eq!(
        issuer.fetches(),
        2,
        "an unknown kid downloads the JWKS again"
    );

    assert_rejected(&backend, &token, "unknown_key").await;
    let other = SigningKey::rsa("rsa-other");
    assert_rejected(
        &backend,
        &other.sign(&claims(&issuer.url, "a@example.com")),
        "unknown_key",
    )
    .await;
    assert_eq!(
        issuer.fetches(),
        2,
        "further unknown kids within 30 s do not download again"
    );

    // Known keys keep working without a download.
    let (status, body) = backend
        .check(&key.sign(&claims(&issuer.url, "ann@example.com")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn rotated_key_is_picked_up() {
    let old = SigningKey::rsa("rsa-old");
    let new = SigningKey::rsa("rsa-new");
    let issuer = TestIssuer::start(&[&old]).await;
    let backend = Backend::start(&issuer.url).await;

    issuer.publish(&[&old, &new]);
    let (status, body) = backend
        .check(&new.sign(&claims(&issuer.url, "ann@example.com")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(issuer.fetches(), 2);
}

#[tokio::test]
async fn missing_identity_claim_is_rejected() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let mut token_claims = claims(&issuer.url, "ann@example.com");
    token_claims.as_object_mut().unwrap().remove("email");
    assert_rejected(&backend, &key.sign(&token_claims), "missing_identity").await;

    token_claims["email"] = json!("not an email");
    assert_rejected(&backend, &key.sign(&token_claims), "invalid_identity").await;
}

#[tokio::test]
async fn unreachable_issuer_is_unavailable() {
    let key = SigningKey::rsa("rsa-1");
    // Nothing listens on this issuer: bind a port, then free it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_issuer = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    let backend = Backend::start(&dead_issuer).await;

    let (status, body) = backend
        .check(&key.sign(&claims(&dead_issuer, "ann@example.com")))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "issuer_unavailable");
    assert!(
        body["message"].as_str().unwrap().contains(&dead_issuer),
        "{body}"
    );
    assert_eq!(backend.store.calls(), 0);
}

#[tokio::test]
async fn block_mode_at_monthly_limit_is_refused() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    let user = "blocked@example.com";

    let policy = Policy::new(PolicyKind::User, user, 1_500_000, Utc::now()).expect("valid policy");
    assert_eq!(policy.monthly_enforcement, Enforcement::Block);
    backend.put_policy(&policy).await;
    let token = key.sign(&claims(&issuer.url, user));

    record(&backend, user, TokenType::Input, 1_000_000).await;
    record(&backend, user, TokenType::Output, 499_999).await;
    let below = answer(backend.check(&token).await.1);
    assert!(below.allowed, "one token below the limit: {below:?}");
    assert_eq!(below.usage.monthly.tokens, 1_499_999);

    record(&backend, user, TokenType::CacheRead, 1).await;
    let (status, body) = backend.check(&token).await;
    assert_eq!(status, 200, "a refusal is still HTTP 200: {body}");
    let at_limit = answer(body);
    assert!(!at_limit.allowed);
    assert_eq!(at_limit.reason, Reason::MonthlyLimitExceeded);
    assert_eq!(at_limit.usage.monthly.limit, Some(1_500_000));
    assert_eq!(at_limit.usage.monthly.tokens, 1_500_000);
    assert_eq!(at_limit.usage.monthly.enforcement, Some(Enforcement::Block));
    assert!(
        at_limit.message.contains(&display_amount(1_500_000)),
        "the message names the limit: {}",
        at_limit.message
    );
    let applied = at_limit.policy.expect("the applied policy");
    assert_eq!(applied.kind, PolicyKind::User);
    assert_eq!(applied.id, user);
}

#[tokio::test]
async fn alert_mode_over_limit_is_allowed() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    let user = "alerted@example.com";

    let mut policy = Policy::new(PolicyKind::User, user, 1_000, Utc::now()).expect("valid policy");
    policy.monthly_enforcement = Enforcement::Alert;
    backend.put_policy(&policy).await;
    record(&backend, user, TokenType::Input, 5_000).await;

    let answer = answer(backend.check(&key.sign(&claims(&issuer.url, user))).await.1);
    assert!(answer.allowed);
    assert_eq!(answer.reason, Reason::LimitAlert);
    assert_eq!(answer.usage.monthly.tokens, 5_000);
    assert_eq!(answer.usage.monthly.enforcement, Some(Enforcement::Alert));
}

#[tokio::test]
async fn group_claim_selects_group_policy() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    let user = "grouped@example.com";

    backend
        .put_policy(&Policy::new(PolicyKind::Default, "default", 1_000_000, Utc::now()).unwrap())
        .await;
    backend
        .put_policy(&Policy::new(PolicyKind::Group, "interns", 100, Utc::now()).unwrap())
        .await;
    record(&backend, user, TokenType::Input, 100).await;

    let mut token_claims = claims(&issuer.url, user);
    token_claims["cognito:groups"] = json!("[staff interns]");
    let in_group = answer(backend.check(&key.sign(&token_claims)).await.1);
    assert!(!in_group.allowed, "{in_group:?}");
    let applied = in_group.policy.expect("the applied policy");
    assert_eq!(applied.kind, PolicyKind::Group);
    assert_eq!(applied.id, "interns");

    // Without the group, the default applies and allows.
    let outside = answer(backend.check(&key.sign(&claims(&issuer.url, user))).await.1);
    assert!(outside.allowed);
    assert_eq!(
        outside.policy.expect("the default").kind,
        PolicyKind::Default
    );
}

#[tokio::test]
async fn active_unblock_allows_blocked_user() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    let user = "unblocked@example.com";

    backend
        .put_policy(&Policy::new(PolicyKind::User, user, 10, Utc::now()).unwrap())
        .await;
    record(&backend, user, TokenType::Output, 10).await;
    let now = Utc::now();
    backend
        .store
        .put_unblock(&UnblockGrant {
            identity: Identity::parse(user).unwrap(),
            granted_by: "admin".to_owned(),
            granted_at: now - Duration::minutes(1),
            expires_at: now + Duration::hours(1),
            reason: "release day".to_owned(),
        })
        .await
        .unwrap();

    let answer = answer(backend.check(&key.sign(&claims(&issuer.url, user))).await.1);
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.reason, Reason::Unblocked);
    assert_eq!(answer.unblock.expect("the unblock").reason, "release day");
}

#[tokio::test]
async fn counted_types_setting_is_applied() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let counting: CountingConfig = "input=1,output=1".parse().unwrap();
    let backend = Backend::start_with(AuthConfig::new(&issuer.url, AUDIENCE), counting).await;
    let user = "weights@example.com";

    backend
        .put_policy(&Policy::new(PolicyKind::User, user, 1_000, Utc::now()).unwrap())
        .await;
    record(&backend, user, TokenType::CacheRead, 50_000).await;
    record(&backend, user, TokenType::Input, 10).await;

    let answer = answer(backend.check(&key.sign(&claims(&issuer.url, user))).await.1);
    assert!(answer.allowed, "{answer:?}");
    assert_eq!(answer.usage.monthly.tokens, 10);
    let types: Vec<&str> = answer
        .usage
        .counted_types
        .iter()
        .map(|counted| counted.token_type.as_str())
        .collect();
    assert_eq!(types, ["input", "output"]);
}

#[tokio::test]
async fn health_warns_without_enabled_default() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let health: Value = backend
        .http
        .get(format!("{}/health", backend.url))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON body");
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["status"], "ok");
    assert_eq!(health["policies"], 0);
    assert!(
        health["warning"]
            .as_str()
            .unwrap()
            .contains("nobody is limited"),
        "{health}"
    );

    let user_policy =
        Policy::new(PolicyKind::User, "alice@example.com", 1_000, Utc::now()).expect("valid");
    backend.put_policy(&user_policy).await;
    let health = backend.health().await;
    assert_eq!(health["policies"], 1);
    let warning = health["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("no enabled default policy exists"),
        "{health}"
    );

    let mut default = Policy::recommended_default(Utc::now());
    default.enabled = false;
    backend.put_policy(&default).await;
    let health = backend.health().await;
    assert_eq!(health["policies"], 2);
    let warning = health["warning"].as_str().unwrap_or_default();
    assert!(
        warning.contains("no enabled default policy exists"),
        "{health}"
    );

    default.enabled = true;
    backend.put_policy(&default).await;
    let health = backend.health().await;
    assert_eq!(health["policies"], 2);
    assert!(health.get("warning").is_none(), "{health}");
}

#[tokio::test]
async fn unknown_route_and_method_get_json_errors() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;

    let response = backend
        .http
        .get(format!("{}/v1/nope", backend.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 404);
    let body: Value = response.json().await.expect("a JSON 404 body");
    assert_eq!(body["error"], "not_found", "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("/v1/nope"), "{body}");
    assert!(message.contains("GET /v1/check"), "{body}");

    let response = backend
        .http
        .post(format!("{}/v1/check", backend.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 405);
    let allow = response
        .headers()
        .get("allow")
        .map(|value| value.to_str().unwrap_or_default().to_owned());
    let body: Value = response.json().await.expect("a JSON 405 body");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("POST"),
        "{body}"
    );
    assert!(
        allow.as_deref().is_some_and(|allow| allow.contains("GET")),
        "the Allow header lists GET: {allow:?}"
    );
    assert_eq!(backend.store.calls(), 0, "no store read");
}
