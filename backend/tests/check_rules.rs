//! Quota rules through the running `GET /v1/check`: periods, identities of
//! a non-email claim, and a policy created after usage was recorded.

mod support;

use chrono::{Datelike, Duration, Utc};
use serde_json::json;
use tollgate_backend::auth::AuthConfig;
use tollgate_backend::store::{Store, UsageEvent};
use tollgate_protocol::check::{PolicyKind, Reason};
use tollgate_quota::{CheckAnswer, CountingConfig, Policy, TokenType};

use support::{AUDIENCE, Backend, SigningKey, TestIssuer, claims};

async fn record(backend: &Backend, user: &str, at: chrono::DateTime<Utc>, tokens: u64) {
    backend
        .store
        .add_usage(&UsageEvent {
            user: user.to_owned(),
            at,
            token_type: TokenType::Input,
            tokens,
            dedup_key: None,
        })
        .await
        .expect("usage is recorded");
}

fn answer(status: u16, body: serde_json::Value) -> CheckAnswer {
    assert_eq!(status, 200, "{body}");
    serde_json::from_value(body).expect("the body is a CheckAnswer")
}

#[tokio::test]
async fn idle_since_yesterday_shows_no_daily_usage() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    let now = Utc::now();
    let mut policy = Policy::recommended_default(now);
    policy.set_daily(Some(1_000));
    backend.put_policy(&policy).await;
    record(&backend, "idle@example.com", now - Duration::days(1), 5_000).await;

    let token = key.sign(&claims(&issuer.url, "idle@example.com"));
    let (status, body) = backend.check(&token).await;
    let answer = answer(status, body);
    assert_eq!(answer.usage.daily.tokens, 0, "nothing used today");
    assert_eq!(answer.reason, Reason::WithinLimits);
    let same_month = (now - Duration::days(1)).month() == now.month();
    let expected_month = if same_month { 5_000 } else { 0 };
    assert_eq!(answer.usage.monthly.tokens, expected_month);
}

#[tokio::test]
async fn policy_created_later_counts_earlier_usage() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    let now = Utc::now();
    record(&backend, "early@example.com", now, 2_000).await;

    let token = key.sign(&claims(&issuer.url, "early@example.com"));
    let (status, body) = backend.check(&token).await;
    assert_eq!(answer(status, body).reason, Reason::NoPolicy);

    let policy =
        Policy::new(PolicyKind::User, "early@example.com", 2_000, now).expect("a valid policy");
    backend.put_policy(&policy).await;
    let (status, body) = backend.check(&token).await;
    let answer = answer(status, body);
    assert_eq!(answer.reason, Reason::MonthlyLimitExceeded);
    assert_eq!(answer.usage.monthly.tokens, 2_000);
    assert!(!answer.allowed);
}

#[tokio::test]
async fn sub_claim_identifies_users() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let mut auth = AuthConfig::new(&issuer.url, AUDIENCE);
    auth.identity_claim = "sub".to_owned();
    let backend = Backend::start_with(auth, CountingConfig::default()).await;
    let policy = Policy::new(PolicyKind::User, "00u1abc", 100, Utc::now()).expect("valid");
    backend.put_policy(&policy).await;
    record(&backend, "00u1abc", Utc::now(), 100).await;

    let mut token_claims = claims(&issuer.url, "ann@example.com");
    token_claims["sub"] = json!(" 00U1AbC ");
    let (status, body) = backend.check(&key.sign(&token_claims)).await;
    let answer = answer(status, body);
    assert_eq!(answer.user, "00u1abc", "the sub claim, normalised");
    assert_eq!(answer.reason, Reason::MonthlyLimitExceeded);
    assert_eq!(
        answer.policy.map(|policy| policy.id),
        Some("00u1abc".to_owned())
    );

    token_claims["sub"] = json!("two words");
    let (status, body) = backend.check(&key.sign(&token_claims)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_identity");
}
