//! Configuration and connection mistakes end in messages that name the
//! value at fault and the fix, on the shim's stderr where SDKs show it.

use anyhow::Result;
use tollgate_tests::locate::free_port;
use tollgate_tests::{ProfileSpec, Stack};

#[test]
fn malformed_config_names_file() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    stack.write_config_text("[profiles.bedrock\nissuer = \"http://127.0.0.1:1\"\n")?;

    let output = stack.shim("bedrock")?;
    assert!(!output.success(), "credentials from a malformed config");
    let config_path = stack.config_path().display().to_string();
    assert!(
        output.stderr.contains(&config_path),
        "names the file: {}",
        output.stderr
    );
    // The table header on line 1 is never closed.
    assert!(
        output.stderr.contains("line 1, column"),
        "names where in the file: {}",
        output.stderr
    );
    Ok(())
}

#[test]
fn missing_required_key_names_key() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let name = stack.profile("bedrock").to_owned();
    stack.write_config_text(&format!(
        "[profiles.{name}]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"tollgate-cli\"\n"
    ))?;

    let output = stack.shim("bedrock")?;
    assert!(!output.success());
    assert!(
        output.stderr.contains("role_arn"),
        "names the missing key: {}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains(&stack.config_path().display().to_string()),
        "names the file: {}",
        output.stderr
    );
    Ok(())
}

#[test]
fn unknown_profile_lists_known_ones() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;

    let output = stack.shim_raw(&["--profile", "no-such-profile"])?;
    assert!(!output.success());
    assert!(output.stdout.trim().is_empty());
    assert!(
        output.stderr.contains("no-such-profile"),
        "names the profile: {}",
        output.stderr
    );
    assert!(
        output.stderr.contains(stack.profile("bedrock")),
        "lists the configured profiles: {}",
        output.stderr
    );
    Ok(())
}

#[test]
fn unreachable_idp_names_issuer() -> Result<()> {
    // Nothing listens on this port once the probe has released it.
    let issuer = format!("http://127.0.0.1:{}", free_port()?);
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock").set("issuer", issuer.as_str()))
        .start()?;

    let output = stack.shim("bedrock")?;
    assert!(!output.success());
    assert!(
        output.stderr.contains(&issuer),
        "names the issuer: {}",
        output.stderr
    );
    assert!(
        stack.browser_urls().is_empty(),
        "no browser for an unreachable issuer"
    );
    Ok(())
}
