//! Quota enforcement through the whole chain: policies set with
//! `tollgate quota`, usage recorded with `tollgate usage record`, the
//! backend's check, and the agent handing out or refusing credentials.

use anyhow::Result;
use tollgate_tests::{ProfileSpec, Stack};

fn quota_stack(login: &str) -> Result<Stack> {
    Stack::builder()
        .login(login)
        .backend()
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()
}

#[test]
fn block_user_over_limit_gets_no_credentials() -> Result<()> {
    let stack = quota_stack("ivan")?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "ivan@example.com",
        "--monthly-limit",
        "1M",
        "--enforcement",
        "block",
    ])?;
    backend.admin_ok(&["usage", "record", "ivan@example.com", "--tokens", "1.2M"])?;

    let output = stack.shim("bedrock")?;
    assert!(
        !output.success(),
        "a blocked user got credentials: {}",
        output.stdout
    );
    assert!(
        output.stdout.trim().is_empty(),
        "nothing on stdout: {}",
        output.stdout
    );
    let message = output.stderr.to_lowercase();
    assert!(
        message.contains("monthly"),
        "names the monthly limit: {}",
        output.stderr
    );
    assert!(
        message.contains("1m") || message.contains("1,000,000") || message.contains("1000000"),
        "names the limit's amount: {}",
        output.stderr
    );
    assert_eq!(
        stack.sts_assume_role_calls(),
        0,
        "no STS call for a blocked user"
    );
    Ok(())
}

#[test]
fn block_user_at_limit_gets_no_credentials() -> Result<()> {
    let stack = quota_stack("judy")?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "judy@example.com",
        "--monthly-limit",
        "500K",
        "--enforcement",
        "block",
    ])?;
    backend.admin_ok(&["usage", "record", "judy@example.com", "--tokens", "500K"])?;

    let output = stack.shim("bedrock")?;
    assert!(!output.success(), "a user at the limit got credentials");
    assert!(
        output.stderr.to_lowercase().contains("monthly"),
        "{}",
        output.stderr
    );
    Ok(())
}

#[test]
fn alert_user_over_limit_gets_credentials() -> Result<()> {
    let stack = quota_stack("mallory")?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "mallory@example.com",
        "--monthly-limit",
        "1M",
        "--enforcement",
        "alert",
    ])?;
    backend.admin_ok(&["usage", "record", "mallory@example.com", "--tokens", "3M"])?;

    let output = stack.shim("bedrock")?;
    output.ensure_success("the shim for an alert-mode user over the limit")?;
    assert!(output.json()?["AccessKeyId"].is_string());
    Ok(())
}

#[test]
fn block_applies_after_usage_grows() -> Result<()> {
    // With a re-check on every request, usage recorded after the first
    // credentials blocks the next request.
    let stack = quota_stack("niaj")?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "niaj@example.com",
        "--monthly-limit",
        "1M",
        "--enforcement",
        "block",
    ])?;

    stack
        .shim("bedrock")?
        .ensure_success("the shim below the limit")?;
    backend.admin_ok(&["usage", "record", "niaj@example.com", "--tokens", "2M"])?;
    let output = stack.shim("bedrock")?;
    assert!(
        !output.success(),
        "still handed out credentials: {}",
        output.stdout
    );
    assert!(
        output.stderr.to_lowercase().contains("monthly"),
        "{}",
        output.stderr
    );
    Ok(())
}

#[test]
fn expiration_follows_quota_recheck() -> Result<()> {
    // Credentials last 60 minutes, but the quota is re-checked after 30:
    // the shim reports the re-check plus botocore's 15-minute refresh
    // window, so SDKs come back for the re-check.
    let stack = Stack::builder()
        .login("olivia")
        .backend()
        .profile(
            ProfileSpec::new("bedrock")
                .quota()
                .quota_recheck_minutes(30)
                .session_duration_minutes(60),
        )
        .start()?;
    stack.backend().admin_ok(&[
        "quota",
        "set-default",
        "--monthly-limit",
        "225M",
        "--enforcement",
        "block",
    ])?;

    let before = chrono::Utc::now();
    let output = stack.shim("bedrock")?;
    output.ensure_success("the shim")?;
    let after = chrono::Utc::now();
    let expiration = output.json()?["Expiration"]
        .as_str()
        .map(chrono::DateTime::parse_from_rfc3339)
        .expect("an Expiration")?;

    let earliest = before + chrono::Duration::minutes(45) - chrono::Duration::seconds(5);
    let latest = after + chrono::Duration::minutes(45) + chrono::Duration::seconds(5);
    assert!(
        expiration >= earliest && expiration <= latest,
        "Expiration {expiration} is not 45 minutes after the check ({before} to {after})"
    );
    Ok(())
}
