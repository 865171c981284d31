//! What a profile does when its quota backend cannot be reached:
//! `fail_mode = "open"` hands out credentials and `"closed"` rejects the
//! request, and each reports the reason.

use anyhow::Result;
use tollgate_tests::{ProfileSpec, Stack};

fn stack_with_backend_down(mode: &str) -> Result<Stack> {
    let mut stack = Stack::builder()
        .backend()
        .profile(
            ProfileSpec::new("bedrock")
                .quota()
                .quota_recheck_minutes(0)
                .fail_mode(mode),
        )
        .start()?;
    stack.backend_mut().stop();
    Ok(stack)
}

#[test]
fn backend_down_fail_open_allows() -> Result<()> {
    let stack = stack_with_backend_down("open")?;

    let output = stack.shim("bedrock")?;
    output.ensure_success("the shim with the backend down and fail_mode open")?;
    assert!(output.json()?["AccessKeyId"].is_string());

    let log = stack.agent_log().to_lowercase();
    assert!(
        log.contains("quota check failed"),
        "the agent log names the failed check"
    );
    assert!(
        log.contains("fail_mode is open"),
        "the agent log names the fail mode"
    );
    Ok(())
}

#[test]
fn backend_down_fail_closed_refuses() -> Result<()> {
    let stack = stack_with_backend_down("closed")?;
    let backend_url = stack.backend().url().to_owned();

    let output = stack.shim("bedrock")?;
    assert!(
        !output.success(),
        "credentials despite fail_mode closed: {}",
        output.stdout
    );
    assert!(
        output.stdout.trim().is_empty(),
        "nothing on stdout: {}",
        output.stdout
    );
    let message = output.stderr.to_lowercase();
    assert!(
        message.contains("quota"),
        "names the quota check: {}",
        output.stderr
    );
    assert!(
        message.contains("closed"),
        "names the fail mode: {}",
        output.stderr
    );
    assert!(
        output.stderr.contains(&backend_url) || message.contains("reachable"),
        "names the backend or the fix: {}",
        output.stderr
    );
    assert_eq!(
        stack.sts_assume_role_calls(),
        0,
        "no STS call when refusing"
    );
    Ok(())
}

#[test]
fn fail_closed_recovers_when_backend_returns() -> Result<()> {
    let mut stack = stack_with_backend_down("closed")?;
    assert!(!stack.shim("bedrock")?.success());

    // The backend comes back on a new port; point the profile at it.
    stack.backend_mut().restart()?;
    let url = stack.backend().url().to_owned();
    stack.update_profile("bedrock", |profile| {
        profile.insert("quota_url".into(), url.into());
    })?;
    stack.stop_agents();

    let output = stack.shim("bedrock")?;
    output.ensure_success("the shim once the backend is back")?;
    Ok(())
}
