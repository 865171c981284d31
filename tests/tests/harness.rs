//! Checks of the harness's own components, so that a failure in the
//! end-to-end tests points at Tollgate rather than at the test setup.

use anyhow::Result;
use tollgate_tests::http;
use tollgate_tests::jwt;
use tollgate_tests::{CountingProxy, Moto, OidcOptions, OidcProvider};

#[test]
fn oidc_device_login_issues_id_token() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let mut options = OidcOptions::default();
    options
        .groups
        .insert("carol".to_owned(), vec!["platform".to_owned()]);
    let oidc = OidcProvider::start(logs.path(), &options)?;

    let tokens = oidc.device_login("carol")?;
    let claims = jwt::claims_of(&tokens.id_token)?;
    assert_eq!(claims["iss"], oidc.issuer());
    assert_eq!(claims["aud"], "tollgate-cli");
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["email"], "carol@example.com");
    assert_eq!(claims["groups"], serde_json::json!(["platform"]));
    assert!(
        tokens.refresh_token.is_some(),
        "no refresh token was issued"
    );

    let stats = oidc.stats()?;
    assert_eq!(stats.device_authorization_requests, 1);
    assert_eq!(stats.authorization_requests, 0);
    assert_eq!(
        stats.token_requests(tollgate_tests::oidc::DEVICE_CODE_GRANT),
        1
    );
    assert!(oidc.issued_tokens()?.contains(&tokens.id_token));
    Ok(())
}

#[test]
fn oidc_revoked_refresh_token_is_invalid_grant() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let oidc = OidcProvider::start(logs.path(), &OidcOptions::default())?;
    let tokens = oidc.device_login("dave@corp.test")?;
    let refresh = tokens.refresh_token.expect("a refresh token");
    let token_url = format!("{}/token", oidc.issuer());
    let refresh_form = [
        ("client_id", "tollgate-cli"),
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh.as_str()),
    ];

    let first = http::post_form(&token_url, &refresh_form)?;
    assert_eq!(first.status, 200, "{}", first.text);
    let rotated: serde_json::Value = serde_json::from_str(&first.text)?;
    let rotated = rotated["refresh_token"]
        .as_str()
        .unwrap_or(&refresh)
        .to_owned();

    assert!(oidc.revoke_refresh_tokens(Some("dave@corp.test"))? >= 1);
    let refresh_form = [
        ("client_id", "tollgate-cli"),
        ("grant_type", "refresh_token"),
        ("refresh_token", rotated.as_str()),
    ];
    let second = http::post_form(&token_url, &refresh_form)?;
    assert_eq!(second.status, 400);
    assert!(second.text.contains("invalid_grant"), "{}", second.text);
    Ok(())
}

#[test]
fn proxy_counts_sts_calls_to_moto() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let moto = Moto::start(logs.path())?;
    let proxy = CountingProxy::start(moto.url())?;

    let reply = http::post_form(
        proxy.url(),
        &[
            ("Action", "AssumeRoleWithWebIdentity"),
            ("Version", "2011-06-15"),
            ("RoleArn", "arn:aws:iam::123456789012:role/Test"),
            ("RoleSessionName", "erin@example.com"),
            ("WebIdentityToken", "any-token"),
        ],
    )?;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(
        reply.text.contains("assumed-role/Test/erin@example.com"),
        "{}",
        reply.text
    );
    assert_eq!(proxy.count_action("AssumeRoleWithWebIdentity"), 1);
    assert_eq!(proxy.count_action("GetCallerIdentity"), 0);
    let exchange = &proxy.exchanges()[0];
    assert_eq!(exchange.method, "POST");
    assert_eq!(
        exchange.form_field("WebIdentityToken").as_deref(),
        Some("any-token")
    );
    Ok(())
}

#[test]
fn minted_token_round_trips() -> Result<()> {
    let key = jwt::SigningKey::generate("test-key")?;
    let claims = jwt::id_token_claims(
        "http://127.0.0.1:1",
        "tollgate-cli",
        "frank@example.com",
        600,
    );
    let token = key.sign(&claims);
    assert_eq!(jwt::claims_of(&token)?, claims);
    assert_eq!(jwt::header_of(&token)?["kid"], "test-key");

    let unsigned = jwt::unsigned_token(&claims);
    assert!(unsigned.ends_with('.'));
    assert_eq!(jwt::header_of(&unsigned)?["alg"], "none");

    let altered = jwt::replace_claims(&token, &serde_json::json!({ "email": "eve@example.com" }))?;
    assert_eq!(altered.rsplit('.').next(), token.rsplit('.').next());
    assert_eq!(jwt::claims_of(&altered)?["email"], "eve@example.com");
    Ok(())
}
