//! A whole session's logs (the agent at trace level, the backend, the
//! shim's stderr) contain none of the session's tokens or secret keys.

use anyhow::Result;
use tollgate_protocol::agent::RequestBody;
use tollgate_tests::{ProfileSpec, Stack};

/// Returns the text between `<tag>` and `</tag>` in each place it occurs.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    xml.split(&open)
        .skip(1)
        .filter_map(|rest| rest.split_once(&close).map(|(value, _)| value.to_owned()))
        .collect()
}

#[test]
fn session_logs_contain_no_secrets() -> Result<()> {
    let stack = Stack::builder()
        .backend()
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()?;
    let profile = stack.profile("bedrock").to_owned();

    // A session: a login through the shim, a second credential request, the
    // AWS CLI through credential_process, an ID token for telemetry, and
    // the status.
    let first = stack.shim("bedrock")?;
    first.ensure_success("the first shim call")?;
    stack
        .shim("bedrock")?
        .ensure_success("the second shim call")?;
    stack
        .aws(&["sts", "get-caller-identity", "--profile", &profile])?
        .ensure_success("aws sts get-caller-identity")?;
    stack
        .shim_with_args("bedrock", &["--otel-headers"])?
        .ensure_success("the shim with --otel-headers")?;
    stack.agent_request(RequestBody::Status { profile: None })?;
    stack.agent_cli(&["status"])?;

    let mut secrets = stack.oidc().issued_tokens()?;
    assert!(!secrets.is_empty(), "the provider issued tokens");
    for exchange in stack.sts().exchanges() {
        if let Some(token) = exchange.form_field("WebIdentityToken") {
            secrets.push(token);
        }
        secrets.extend(xml_values(&exchange.response_body, "SecretAccessKey"));
        secrets.extend(xml_values(&exchange.response_body, "SessionToken"));
    }
    let credentials = first.json()?;
    for field in ["SecretAccessKey", "SessionToken"] {
        secrets.push(credentials[field].as_str().unwrap_or_default().to_owned());
    }
    secrets.retain(|secret| secret.len() >= 16);
    assert!(
        secrets.len() >= 5,
        "too few secrets collected: {}",
        secrets.len()
    );

    let logs = stack.tollgate_logs()?;
    let agent_log = stack.agent_log();
    assert!(!agent_log.is_empty(), "the agent wrote its log file");
    // TOLLGATE_LOG=trace enables every level; DEBUG lines show the
    // filter took effect.
    assert!(
        agent_log.contains("DEBUG"),
        "the agent logged at a verbose level"
    );
    assert!(!stack.backend().log().is_empty(), "the backend logged");

    for secret in &secrets {
        // A JWT's header and claims are not secret because the claims only
        // name the user, but its signature part is. Other secrets are
        // checked whole and by their last 16 characters, which catches a
        // truncated copy.
        let parts: Vec<&str> = secret.split('.').collect();
        let needles: Vec<&str> = if parts.len() == 3 {
            vec![secret.as_str(), parts[2]]
        } else {
            vec![secret.as_str(), &secret[secret.len() - 16..]]
        };
        for needle in needles {
            assert!(
                !logs.contains(needle),
                "a log contains a secret ending in ...{}",
                &needle[needle.len().saturating_sub(6)..]
            );
        }
    }
    Ok(())
}
