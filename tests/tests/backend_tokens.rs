//! `GET /v1/check` accepts only ID tokens that the configured issuer signed
//! for the configured audience and that are still valid.
//!
//! Each rejected token is wrong in exactly one way, next to a control token
//! that is right in every way and is accepted, so a 401 can only come from
//! the check under test.

use anyhow::Result;
use serde_json::{Value, json};
use tollgate_tests::backend::{Backend, BackendOptions};
use tollgate_tests::jwt::{self, SigningKey, TestIssuer};
use tollgate_tests::{OidcOptions, OidcProvider};

const AUDIENCE: &str = "tollgate-cli";
const EMAIL: &str = "grace@example.com";

struct Setup {
    key: SigningKey,
    issuer: TestIssuer,
    backend: Backend,
    _dir: tempfile::TempDir,
}

fn setup() -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let key = SigningKey::generate("trusted-key")?;
    let issuer = TestIssuer::start(vec![key.public_jwk()])?;
    let backend = Backend::start(
        dir.path(),
        BackendOptions {
            issuer: issuer.url().to_owned(),
            audience: AUDIENCE.to_owned(),
            extra_args: Vec::new(),
        },
    )?;
    Ok(Setup {
        key,
        issuer,
        backend,
        _dir: dir,
    })
}

fn valid_claims(setup: &Setup) -> Value {
    jwt::id_token_claims(setup.issuer.url(), AUDIENCE, EMAIL, 600)
}

/// Asserts a 401 whose JSON body has `error` and `message` fields.
fn assert_rejected(setup: &Setup, token: &str, case: &str) -> Result<()> {
    let reply = setup.backend.check(token)?;
    assert_eq!(
        reply.status, 401,
        "{case}: expected 401, got {}",
        reply.text
    );
    let body: Value = serde_json::from_str(&reply.text)
        .unwrap_or_else(|_| panic!("{case}: the 401 body is not JSON: {}", reply.text));
    assert!(body["error"].is_string(), "{case}: no `error` in {body}");
    assert!(
        body["message"].is_string(),
        "{case}: no `message` in {body}"
    );
    Ok(())
}

#[test]
fn check_accepts_valid_token() -> Result<()> {
    let setup = setup()?;
    let token = setup.key.sign(&valid_claims(&setup));
    let reply = setup.backend.check(&token)?;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let answer: tollgate_protocol::check::CheckAnswer = serde_json::from_str(&reply.text)?;
    assert_eq!(answer.user, EMAIL);
    Ok(())
}

#[test]
fn check_rejects_bad_signature() -> Result<()> {
    let setup = setup()?;
    // Same key id as the trusted key, signed by another key.
    let impostor = SigningKey::generate(setup.key.kid())?;
    let token = impostor.sign(&valid_claims(&setup));
    assert_rejected(&setup, &token, "bad signature")
}

#[test]
fn check_rejects_wrong_issuer() -> Result<()> {
    let setup = setup()?;
    let mut claims = valid_claims(&setup);
    claims["iss"] = json!("http://127.0.0.1:1/other-issuer");
    assert_rejected(&setup, &setup.key.sign(&claims), "wrong issuer")
}

#[test]
fn check_rejects_wrong_audience() -> Result<()> {
    let setup = setup()?;
    let mut claims = valid_claims(&setup);
    claims["aud"] = json!("some-other-client");
    assert_rejected(&setup, &setup.key.sign(&claims), "wrong audience")
}

#[test]
fn check_rejects_expired_token() -> Result<()> {
    let setup = setup()?;
    // Expired an hour ago, well past any clock-skew leeway.
    let claims = jwt::id_token_claims(setup.issuer.url(), AUDIENCE, EMAIL, -3600);
    assert_rejected(&setup, &setup.key.sign(&claims), "expired")
}

#[test]
fn check_rejects_alg_none() -> Result<()> {
    let setup = setup()?;
    let claims = valid_claims(&setup);
    assert_rejected(&setup, &jwt::unsigned_token(&claims), "alg none")?;
    // The same with the trusted key id in the header.
    let header = json!({ "alg": "none", "typ": "JWT", "kid": setup.key.kid() });
    let signed = setup.key.sign_with_header(&header, &claims);
    assert_rejected(&setup, &signed, "alg none with a signature")
}

#[test]
fn check_rejects_missing_or_garbage_token() -> Result<()> {
    let setup = setup()?;
    let url = format!("{}/v1/check", setup.backend.url());
    let reply = tollgate_tests::http::get(&url, &[])?;
    assert_eq!(reply.status, 401, "no Authorization header: {}", reply.text);
    assert_rejected(&setup, "not-a-jwt", "garbage")
}

#[test]
fn check_rejects_altered_provider_token() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let oidc = OidcProvider::start(dir.path(), &OidcOptions::default())?;
    let backend = Backend::start(
        dir.path(),
        BackendOptions {
            issuer: oidc.issuer().to_owned(),
            audience: AUDIENCE.to_owned(),
            extra_args: Vec::new(),
        },
    )?;
    let token = oidc.device_login("heidi")?.id_token;

    let reply = backend.check(&token)?;
    assert_eq!(reply.status, 200, "the unaltered token: {}", reply.text);

    let mut claims = jwt::claims_of(&token)?;
    claims["email"] = json!("someone-else@example.com");
    let altered = jwt::replace_claims(&token, &claims)?;
    let reply = backend.check(&altered)?;
    assert_eq!(reply.status, 401, "the altered token: {}", reply.text);
    Ok(())
}
