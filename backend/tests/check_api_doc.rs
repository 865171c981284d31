//! Keeps docs/check-api.md in step with the running server. For each
//! reason, the server gets the policies and usage of the page's example and
//! must return the example's fields and values, times aside. Each example
//! error body must be the body the server sends.
//!
//! The example answers themselves are rendered from the quota code by
//! `backend/quota/tests/doc_examples.rs`. After changing an error message,
//! regenerate the error examples with
//! `TOLLGATE_UPDATE_DOCS=1 cargo test -p tollgate-backend --test check_api_doc`.

mod support;

use std::path::{Path, PathBuf};

use chrono::{Duration, Utc};
use serde_json::{Value, json};
use tollgate_backend::auth::AuthConfig;
use tollgate_backend::store::Store;
use tollgate_backend::store::sqlite::SqliteStore;
use tollgate_protocol::check::{Enforcement, PolicyKind};
use tollgate_quota::{CountingConfig, Identity, Period, Policy, TokenUsage, UnblockGrant};

use support::{AUDIENCE, Backend, SigningKey, TestIssuer, claims};

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/check-api.md")
}

/// Finds the JSON block after `marker` in `doc`, as the byte range of its
/// lines including the last newline (empty for an empty block).
fn block_range(doc: &str, marker: &str) -> Option<std::ops::Range<usize>> {
    let after_marker = doc.find(marker)? + marker.len();
    let fence = "```json\n";
    let start = after_marker + doc[after_marker..].find(fence)? + fence.len();
    let rest = &doc[start..];
    let end = if rest.starts_with("```") {
        start
    } else {
        start + rest.find("\n```")? + 1
    };
    Some(start..end)
}

fn doc_block(doc: &str, marker: &str) -> Value {
    let range = block_range(doc, marker)
        .unwrap_or_else(|| panic!("docs/check-api.md has no ```json block after {marker}"));
    serde_json::from_str(&doc[range]).unwrap_or_else(|error| {
        panic!("the block after {marker} in docs/check-api.md is not JSON: {error}")
    })
}

/// Replaces every `YYYY-MM-DD HH:MM UTC` in `text` with `<time>`.
fn mask_times(text: &str) -> String {
    let bytes = text.as_bytes();
    let shape = b"dddd-dd-dd dd:dd UTC";
    let mut masked = String::new();
    let mut index = 0;
    while index < bytes.len() {
        let candidate = &bytes[index..bytes.len().min(index + shape.len())];
        let matches = candidate.len() == shape.len()
            && candidate.iter().zip(shape).all(|(byte, want)| match want {
                b'd' => byte.is_ascii_digit(),
                other => byte == other,
            });
        if matches {
            masked.push_str("<time>");
            index += shape.len();
        } else {
            let character = text[index..].chars().next().expect("a character");
            masked.push(character);
            index += character.len_utf8();
        }
    }
    masked
}

/// Removes the fields that depend on when the check runs.
fn without_times(mut answer: Value) -> Value {
    let object = answer.as_object_mut().expect("an answer object");
    object.remove("checked_at");
    let message = object["message"].as_str().expect("a message").to_owned();
    object.insert("message".to_owned(), Value::String(mask_times(&message)));
    for period in ["monthly", "daily"] {
        object["usage"][period]
            .as_object_mut()
            .expect("a period object")
            .remove("resets_at");
    }
    if let Some(unblock) = object["unblock"].as_object_mut() {
        unblock.remove("expires_at");
        unblock.remove("granted_at");
    }
    answer
}

fn usage(input: u64, output: u64, cache_read: u64, cache_creation: u64) -> TokenUsage {
    TokenUsage {
        input,
        output,
        cache_read,
        cache_creation,
    }
}

/// The policies, groups, usage and counting of one example on the page.
struct Scenario {
    reason: &'static str,
    groups: Vec<&'static str>,
    policies: Vec<Policy>,
    daily: TokenUsage,
    monthly: TokenUsage,
    counting: CountingConfig,
    unblocked: bool,
}

fn scenarios() -> Vec<Scenario> {
    let now = Utc::now();
    let recommended = Policy::recommended_default(now);
    let mut daily_blocking =
        Policy::new(PolicyKind::User, "alice@example.com", 500_000_000, now).expect("valid");
    daily_blocking.monthly_enforcement = Enforcement::Alert;
    daily_blocking.daily_limit = Some(20_000_000);
    daily_blocking.daily_enforcement = Enforcement::Block;
    let contractors =
        Policy::new(PolicyKind::Group, "contractors", 100_000_000, now).expect("valid");
    let no_cache_reads: CountingConfig = "input=1,output=1,cacheCreation=1".parse().expect("valid");
    vec![
        Scenario {
            reason: "within_limits",
            groups: vec![],
            policies: vec![recommended.clone()],
            daily: usage(300_000, 150_000, 1_200_000, 100_000),
            monthly: usage(30_000_000, 12_500_000, 130_000_000, 8_000_000),
            counting: CountingConfig::default(),
            unblocked: false,
        },
        Scenario {
            reason: "no_policy",
            groups: vec![],
            policies: vec![],
            daily: usage(300_000, 150_000, 1_200_000, 100_000),
            monthly: usage(30_000_000, 12_500_000, 130_000_000, 8_000_000),
            counting: CountingConfig::default(),
            unblocked: false,
        },
        Scenario {
            reason: "limit_alert",
            groups: vec![],
            policies: vec![recommended],
            daily: usage(2_000_000, 1_000_000, 5_500_000, 500_000),
            monthly: usage(40_000_000, 15_000_000, 60_000_000, 5_000_000),
            counting: CountingConfig::default(),
            unblocked: false,
        },
        Scenario {
            reason: "daily_limit_exceeded",
            groups: vec![],
            policies: vec![daily_blocking],
            daily: usage(12_000_000, 6_000_000, 40_000_000, 2_500_000),
            monthly: usage(150_000_000, 60_000_000, 400_000_000, 25_000_000),
            counting: no_cache_reads,
            unblocked: false,
        },
        Scenario {
            reason: "monthly_limit_exceeded",
            groups: vec!["contractors", "staff"],
            policies: vec![contractors.clone()],
            daily: usage(1_500_000, 700_000, 3_000_000, 300_000),
            monthly: usage(30_000_000, 14_000_000, 52_000_000, 4_500_000),
            counting: CountingConfig::default(),
            unblocked: false,
        },
        Scenario {
            reason: "unblocked",
            groups: vec!["contractors", "staff"],
            policies: vec![contractors],
            daily: usage(1_500_000, 700_000, 3_000_000, 300_000),
            monthly: usage(30_000_000, 14_000_000, 52_000_000, 4_500_000),
            counting: CountingConfig::default(),
            unblocked: true,
        },
    ]
}

/// Writes one user's counters for the current UTC day and month straight
/// into the store file, so the day and month can differ as in the examples
/// on any day of the month.
fn write_counters(path: &Path, user: &str, daily: &TokenUsage, monthly: &TokenUsage) {
    let now = Utc::now();
    let connection = rusqlite::Connection::open(path).expect("the store file opens");
    for (name, daily_tokens, monthly_tokens) in [
        ("input", daily.input, monthly.input),
        ("output", daily.output, monthly.output),
        ("cacheRead", daily.cache_read, monthly.cache_read),
        (
            "cacheCreation",
            daily.cache_creation,
            monthly.cache_creation,
        ),
    ] {
        connection
            .execute(
                "INSERT INTO usage_daily (user, day, token_type, tokens) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![user, Period::Daily.key(now), name, daily_tokens as i64],
            )
            .expect("a daily counter inserts");
        connection
            .execute(
                "INSERT INTO usage_monthly (user, month, token_type, tokens) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![user, Period::Monthly.key(now), name, monthly_tokens as i64],
            )
            .expect("a monthly counter inserts");
    }
}

#[tokio::test]
async fn answers_match_doc_examples() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/check-api.md is readable");
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;

    for scenario in scenarios() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("doc.db");
        let store = SqliteStore::open(&path).expect("the store opens");
        for policy in &scenario.policies {
            store
                .put_policy(policy)
                .await
                .expect("the policy is stored");
        }
        if scenario.unblocked {
            let granted_at = Utc::now() - Duration::hours(2);
            store
                .put_unblock(&UnblockGrant {
                    identity: Identity::parse_email("alice@example.com").expect("valid"),
                    granted_by: "admin@example.com".to_owned(),
                    granted_at,
                    expires_at: granted_at + Duration::hours(24),
                    reason: "release week".to_owned(),
                })
                .await
                .expect("the unblock is stored");
        }
        drop(store);
        write_counters(
            &path,
            "alice@example.com",
            &scenario.daily,
            &scenario.monthly,
        );

        let backend = Backend::start_on_with(
            AuthConfig::new(&issuer.url, AUDIENCE),
            scenario.counting,
            &path,
        )
        .await;
        let mut token_claims = claims(&issuer.url, "alice@example.com");
        token_claims["groups"] = json!(scenario.groups);
        let (status, body) = backend.check(&key.sign(&token_claims)).await;
        assert_eq!(status, 200, "{}: {body}", scenario.reason);

        let marker = format!("<!-- example answer: {} -->", scenario.reason);
        let example = doc_block(&doc, &marker);
        assert_eq!(
            without_times(body),
            without_times(example),
            "the server's {} answer differs from docs/check-api.md",
            scenario.reason
        );
    }
}

/// Renders an error body as the page shows it.
fn render(body: &Value) -> String {
    serde_json::to_string_pretty(body).expect("a body serialises") + "\n"
}

#[tokio::test]
async fn errors_match_doc_examples() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("errors.db");
    drop(SqliteStore::open(&path).expect("the store opens"));
    let backend = Backend::start_on(&issuer.url, &path).await;

    let mut bodies: Vec<(&str, u16, Value)> = Vec::new();
    let response = backend
        .http
        .get(format!("{}/v1/check", backend.url))
        .send()
        .await
        .expect("answered");
    let status = response.status().as_u16();
    bodies.push((
        "missing_token",
        status,
        response.json().await.expect("JSON"),
    ));

    let mut expired = claims(&issuer.url, "alice@example.com");
    expired["exp"] = json!((Utc::now() - Duration::hours(1)).timestamp());
    let (status, body) = backend.check(&key.sign(&expired)).await;
    bodies.push(("expired", status, body));

    let mut other_client = claims(&issuer.url, "alice@example.com");
    other_client["aud"] = json!("another-client");
    let (status, body) = backend.check(&key.sign(&other_client)).await;
    bodies.push(("wrong_audience", status, body));

    let (status, body) = backend
        .check(&key.sign(&claims(&issuer.url, "not-an-email")))
        .await;
    bodies.push(("invalid_identity", status, body));

    // Break the store under the running server.
    rusqlite::Connection::open(&path)
        .expect("the store file opens")
        .execute_batch("DROP TABLE policies")
        .expect("the table drops");
    let (status, body) = backend
        .check(&key.sign(&claims(&issuer.url, "alice@example.com")))
        .await;
    bodies.push(("store_unavailable", status, body));

    let doc_file = doc_path();
    let mut doc = std::fs::read_to_string(&doc_file).expect("docs/check-api.md is readable");
    let update = std::env::var_os("TOLLGATE_UPDATE_DOCS").is_some();
    let mut stale = Vec::new();
    for (code, status, body) in bodies {
        let expected_status = if code == "store_unavailable" {
            503
        } else {
            401
        };
        assert_eq!(status, expected_status, "{code}: {body}");
        assert_eq!(body["error"], code, "{body}");
        let marker = format!("<!-- example error: {code} -->");
        let range = block_range(&doc, &marker)
            .unwrap_or_else(|| panic!("docs/check-api.md has no ```json block after {marker}"));
        let rendered = render(&body);
        if doc[range.clone()] != rendered {
            stale.push(code);
            doc.replace_range(range, &rendered);
        }
    }
    if update && !stale.is_empty() {
        std::fs::write(&doc_file, &doc).expect("docs/check-api.md is writable");
        return;
    }
    assert!(
        stale.is_empty(),
        "the error examples for {stale:?} in docs/check-api.md differ from the server; rerun \
         with TOLLGATE_UPDATE_DOCS=1 to regenerate them"
    );
}

#[test]
fn doc_lists_every_error_code() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/check-api.md is readable");
    for code in [
        "missing_token",
        "malformed_token",
        "unsupported_alg",
        "unknown_key",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "missing_claim",
        "missing_identity",
        "invalid_identity",
        "issuer_unavailable",
        "store_unavailable",
    ] {
        assert!(
            doc.contains(&format!("| `{code}` |")),
            "docs/check-api.md lacks the error code {code}"
        );
    }
}

#[tokio::test]
async fn health_matches_doc_example() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start(&issuer.url).await;
    let user_policy = Policy::new(PolicyKind::User, "alice@example.com", 1_000, Utc::now())
        .expect("a valid policy");
    backend.put_policy(&user_policy).await;

    let body = backend.health().await;
    let doc = std::fs::read_to_string(doc_path()).expect("docs/check-api.md is readable");
    let example = doc_block(&doc, "<!-- example health: user policy only -->");
    assert_eq!(
        body, example,
        "docs/check-api.md shows a different health body"
    );
}
