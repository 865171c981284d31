//! The real AWS CLI and boto3 get credentials through the shim from a
//! profile's `credential_process`, with the login done by the scripted
//! browser at the local OIDC provider and the role assumed at moto.

use anyhow::Result;
use tollgate_tests::{ProfileSpec, Stack};

/// The ARN moto returns for the assumed role and the session name
/// `alice@example.com`, the email the provider gives the login `alice`.
const ALICE_ARN: &str =
    "arn:aws:sts::123456789012:assumed-role/ClaudeCodeBedrock/alice@example.com";

#[test]
fn aws_cli_gets_caller_identity() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let profile = stack.profile("bedrock");

    let output = stack.aws(&[
        "sts",
        "get-caller-identity",
        "--profile",
        profile,
        "--output",
        "json",
    ])?;
    output.ensure_success("aws sts get-caller-identity")?;
    let identity = output.json()?;
    assert_eq!(identity["Arn"], ALICE_ARN);

    assert_eq!(stack.browser_urls().len(), 1, "one login in the browser");
    assert_eq!(stack.oidc().stats()?.authorization_requests, 1);
    assert_eq!(stack.sts_assume_role_calls(), 1);
    Ok(())
}

#[test]
fn boto3_session_spawns_shim_once() -> Result<()> {
    let stack = Stack::builder()
        .profile(
            ProfileSpec::new("bedrock")
                .session_duration_minutes(60)
                .count_shim_spawns(),
        )
        .start()?;
    let profile = stack.profile("bedrock");

    // Ten calls on one session: botocore keeps credentials until fewer
    // than 15 minutes remain, so 60-minute credentials need one spawn.
    let script = format!(
        r#"
import json, boto3
session = boto3.Session(profile_name="{profile}")
sts = session.client("sts")
arns = [sts.get_caller_identity()["Arn"] for _ in range(10)]
frozen = session.get_credentials().get_frozen_credentials()
print(json.dumps({{"arns": arns, "access_key_id": frozen.access_key}}))
"#
    );
    let output = stack.python(&script)?;
    output.ensure_success("boto3 script")?;
    let result = output.json()?;

    let arns = result["arns"].as_array().expect("a list of ARNs");
    assert_eq!(arns.len(), 10);
    assert!(arns.iter().all(|arn| arn == ALICE_ARN), "{arns:?}");
    assert!(
        result["access_key_id"]
            .as_str()
            .is_some_and(|key| key.starts_with("ASIA")),
        "temporary credentials from STS: {result}"
    );
    assert_eq!(stack.shim_spawns("bedrock"), 1, "credential_process runs");
    assert_eq!(stack.sts_assume_role_calls(), 1);
    assert_eq!(stack.sts().count_action("GetCallerIdentity"), 10);
    Ok(())
}

#[test]
fn shim_prints_credential_process_json() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;

    let output = stack.shim("bedrock")?;
    output.ensure_success("the shim")?;
    let credentials = output.json()?;
    assert_eq!(credentials["Version"], 1);
    for field in ["AccessKeyId", "SecretAccessKey", "SessionToken"] {
        assert!(
            credentials[field]
                .as_str()
                .is_some_and(|value| !value.is_empty()),
            "{field} missing in {credentials}"
        );
    }
    let expiration = credentials["Expiration"].as_str().expect("an Expiration");
    assert!(expiration.ends_with('Z'), "UTC with Z: {expiration}");
    let expiration = chrono::DateTime::parse_from_rfc3339(expiration)?;
    let remaining = expiration.signed_duration_since(chrono::Utc::now());
    assert!(
        remaining > chrono::Duration::minutes(15),
        "at least 15 minutes left: {remaining}"
    );

    // A second call is served from the agent without a new login or STS call.
    let again = stack.shim("bedrock")?;
    again.ensure_success("the second shim call")?;
    assert_eq!(again.json()?["AccessKeyId"], credentials["AccessKeyId"]);
    assert_eq!(stack.oidc().stats()?.authorization_requests, 1);
    assert_eq!(stack.sts_assume_role_calls(), 1);
    Ok(())
}

#[test]
fn js_sdk_session_spawns_shim_once() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock").count_shim_spawns())
        .start()?;
    let script = tollgate_tests::locate::support_dir().join("js/caller-identity.mjs");

    let mut command = stack.command("node");
    command
        .arg(&script)
        .arg("10")
        .env("AWS_PROFILE", stack.profile("bedrock"));
    let output = stack.run(command, "node")?;
    output.ensure_success("the JavaScript SDK script")?;
    let result = output.json()?;

    let arns = result["arns"].as_array().expect("a list of ARNs");
    assert_eq!(arns.len(), 10);
    assert!(arns.iter().all(|arn| arn == ALICE_ARN), "{arns:?}");
    assert_eq!(stack.shim_spawns("bedrock"), 1, "credential_process runs");
    assert_eq!(stack.sts_assume_role_calls(), 1);
    Ok(())
}
