//! Quota re-checks that hold: `tollgate-agent refresh` (the command for
//! Claude Code's awsAuthRefresh) explains a block and exits non-zero, a
//! block refuses the next request, and an unblock lets the very next
//! request through without any cleanup.

use anyhow::Result;
use tollgate_tests::{ProfileSpec, Stack};

const CONTACT: &str = "#ai-platform on Slack";

fn recheck_stack(login: &str) -> Result<Stack> {
    Stack::builder()
        .login(login)
        .backend()
        .profile(
            ProfileSpec::new("bedrock")
                .quota()
                .quota_recheck_minutes(0)
                .set("support_contact", CONTACT),
        )
        .start()
}

#[test]
fn refresh_logs_in_and_exits_zero() -> Result<()> {
    let stack = recheck_stack("rhea")?;
    let profile = stack.profile("bedrock").to_owned();
    let output = stack.agent_cli(&["refresh", "--profile", &profile])?;
    output.ensure_success("tollgate-agent refresh")?;
    assert!(
        output.stdout.contains("has AWS credentials until"),
        "{}",
        output.stdout
    );
    assert_eq!(stack.browser_urls().len(), 1, "one browser login");
    stack
        .shim("bedrock")?
        .ensure_success("the shim after refresh")?;
    assert_eq!(
        stack.sts_assume_role_calls(),
        1,
        "refresh's credentials reused"
    );
    Ok(())
}

#[test]
fn refresh_explains_block_and_fails() -> Result<()> {
    let stack = recheck_stack("sami")?;
    let backend = stack.backend();
    let profile = stack.profile("bedrock").to_owned();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "sami@example.com",
        "--monthly-limit",
        "1M",
        "--enforcement",
        "block",
    ])?;
    stack
        .shim("bedrock")?
        .ensure_success("the shim below the limit")?;
    backend.admin_ok(&["usage", "record", "sami@example.com", "--tokens", "1.5M"])?;

    let output = stack.agent_cli(&["refresh", "--profile", &profile])?;
    assert!(!output.success(), "refresh must exit non-zero when blocked");
    let text = &output.stdout;
    assert!(text.contains("blocked by your Tollgate quota"), "{text}");
    assert!(text.contains("monthly limit is reached"), "{text}");
    assert!(text.contains("1.5M of 1M tokens"), "{text}");
    assert!(text.contains("resets at"), "{text}");
    assert!(text.contains(CONTACT), "names whom to ask: {text}");
    assert!(output.stderr.trim().is_empty(), "{}", output.stderr);
    Ok(())
}

#[test]
fn unblock_lets_next_request_succeed() -> Result<()> {
    let stack = recheck_stack("tove")?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "tove@example.com",
        "--monthly-limit",
        "1M",
        "--enforcement",
        "block",
    ])?;
    let first = stack.shim("bedrock")?;
    first.ensure_success("the shim below the limit")?;
    let first_key = first.json()?["AccessKeyId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    backend.admin_ok(&["usage", "record", "tove@example.com", "--tokens", "2M"])?;
    let blocked = stack.shim("bedrock")?;
    assert!(!blocked.success(), "blocked user got credentials");
    let status = stack.agent_cli(&["status", "--profile", stack.profile("bedrock"), "--json"])?;
    status.ensure_success("status --json")?;
    let profiles = status.json()?;
    assert!(
        profiles[0]["credentials_expiration"].is_null(),
        "the block dropped the cached credentials: {profiles}"
    );
    assert_eq!(profiles[0]["last_quota"]["allowed"], false);

    backend.admin_ok(&[
        "quota",
        "unblock",
        "tove@example.com",
        "--duration",
        "24h",
        "--reason",
        "release deadline",
    ])?;
    let after = stack.shim("bedrock")?;
    after.ensure_success("the shim right after the unblock")?;
    let after_key = after.json()?["AccessKeyId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_ne!(first_key, after_key, "new credentials after the block");
    assert_eq!(stack.sts_assume_role_calls(), 2);

    let text = stack.agent_cli(&["status", "--profile", stack.profile("bedrock")])?;
    text.ensure_success("status")?;
    assert!(text.stdout.contains("unblocked until"), "{}", text.stdout);
    assert!(text.stdout.contains("release deadline"), "{}", text.stdout);
    assert!(text.stdout.contains("2M of 1M"), "{}", text.stdout);
    assert!(!text.stdout.contains('\x1b'), "no colour off a terminal");
    Ok(())
}

#[test]
fn status_shows_usage_bars() -> Result<()> {
    let stack = recheck_stack("ugo")?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "ugo@example.com",
        "--monthly-limit",
        "10M",
        "--enforcement",
        "block",
    ])?;
    backend.admin_ok(&["usage", "record", "ugo@example.com", "--tokens", "8.5M"])?;
    stack.shim("bedrock")?.ensure_success("the shim at 85%")?;

    let output = stack.agent_cli(&["status", "--profile", stack.profile("bedrock")])?;
    output.ensure_success("status")?;
    let text = &output.stdout;
    assert!(text.contains("quota allowed for ugo@example.com"), "{text}");
    assert!(text.contains("user policy for ugo@example.com"), "{text}");
    assert!(text.contains("8.5M of 10M"), "{text}");
    assert!(text.contains("85%"), "{text}");
    assert!(
        text.contains("█████████████████░░░"),
        "a 20-cell bar at 85%: {text}"
    );
    Ok(())
}

#[test]
fn hourly_recheck_boto3_spawns_once() -> Result<()> {
    // A 60-minute re-check and 60-minute credentials: the reported
    // Expiration is the STS expiry, so botocore runs the shim once for ten
    // calls on one session.
    let stack = Stack::builder()
        .login("vito")
        .backend()
        .profile(
            ProfileSpec::new("bedrock")
                .quota()
                .quota_recheck_minutes(60)
                .session_duration_minutes(60)
                .count_shim_spawns(),
        )
        .start()?;
    let profile = stack.profile("bedrock");
    let script = format!(
        r#"
import json, boto3
session = boto3.Session(profile_name="{profile}")
sts = session.client("sts")
arns = [sts.get_caller_identity()["Arn"] for _ in range(10)]
print(json.dumps({{"arns": arns}}))
"#
    );
    let output = stack.python(&script)?;
    output.ensure_success("boto3 script")?;
    let arns = output.json()?["arns"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(arns.len(), 10);
    assert_eq!(stack.shim_spawns("bedrock"), 1, "credential_process runs");
    assert_eq!(stack.sts_assume_role_calls(), 1);
    Ok(())
}
