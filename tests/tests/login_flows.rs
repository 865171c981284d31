//! Logins other than the first browser login: the device code flow, a busy
//! redirect port, ID token renewal with the refresh token, and a new login
//! once the provider rejects the refresh token.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tollgate_tests::jwt;
use tollgate_tests::locate::{AGENT, binary, support_dir};
use tollgate_tests::oidc::DEVICE_CODE_GRANT;
use tollgate_tests::{ProfileSpec, Stack, wait_for};

/// How long the device login may take from start to finish.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(90);

/// ID token lifetime shorter than the agent's five-minute renewal margin,
/// so every quota check renews the token.
const SHORT_ID_TOKEN_SECONDS: u64 = 120;

/// ID token lifetime that a test waits out. It has to cover the first
/// login, STS call and quota check on a loaded machine.
const EXPIRING_ID_TOKEN_SECONDS: u64 = 15;

#[test]
fn device_code_login_completes() -> Result<()> {
    let stack = Stack::builder()
        .login("oscar")
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let profile = stack.profile("bedrock").to_owned();

    let mut login = stack.command(binary(AGENT)?);
    login
        .args(["login", "--profile", &profile, "--device-code"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = login
        .spawn()
        .context("failed to start tollgate-agent login")?;
    let stderr = child.stderr.take().expect("stderr was piped");
    let (lines, receiver) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    // The agent prints the verification URL and the user code for the
    // person, who enters the code on another device.
    let mut seen = Vec::new();
    let (url, code) = loop {
        let line = match receiver.recv_timeout(LOGIN_TIMEOUT) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                bail!("no device code instructions from the agent; stderr so far: {seen:?}");
            }
        };
        seen.push(line.clone());
        let words: Vec<&str> = line.split_whitespace().collect();
        let url = words
            .iter()
            .find(|word| word.starts_with("http") && word.contains("/device"));
        if let (Some(url), Some(code)) = (url, words.last()) {
            break (url.trim_end_matches(',').to_owned(), (*code).to_owned());
        }
    };

    let device_login = Command::new(support_dir().join("device-login"))
        .arg(&url)
        .arg(&code)
        .env("TOLLGATE_TEST_LOGIN", "oscar")
        .output()
        .context("failed to run tests/support/device-login")?;
    assert!(
        device_login.status.success(),
        "device-login failed: {}",
        String::from_utf8_lossy(&device_login.stderr)
    );

    let status = wait_for("tollgate-agent login to exit", LOGIN_TIMEOUT, || {
        Ok(child.try_wait()?)
    })?;
    assert!(
        status.success(),
        "tollgate-agent login failed; stderr: {seen:?}"
    );

    let output = stack.shim("bedrock")?;
    output.ensure_success("the shim after the device login")?;
    let stats = stack.oidc().stats()?;
    assert_eq!(stats.device_authorization_requests, 1);
    assert_eq!(stats.authorization_requests, 0, "no browser login");
    assert!(stats.token_requests(DEVICE_CODE_GRANT) >= 1);
    assert!(stack.browser_urls().is_empty(), "no browser was opened");
    assert_eq!(stack.sts().exchanges().len(), 1);
    let session_name = stack.sts().exchanges()[0].form_field("RoleSessionName");
    assert_eq!(session_name.as_deref(), Some("oscar@example.com"));
    Ok(())
}

#[test]
fn busy_redirect_port_named() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let port = stack.redirect_port("bedrock");
    let config = stack.config_path().display().to_string();

    // Another program listens on the redirect port the provider allows.
    let occupant = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("failed to occupy 127.0.0.1:{port}"))?;
    let output = stack.shim("bedrock")?;
    assert_eq!(output.status.code(), Some(1), "stderr: {}", output.stderr);
    assert!(
        output
            .stderr
            .contains(&format!("port 127.0.0.1:{port} is in use")),
        "the message names the port: {}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains(&format!("set redirect_port in `{config}`")),
        "the message names the fix: {}",
        output.stderr
    );
    let stats = stack.oidc().stats()?;
    assert_eq!(stats.authorization_requests, 0, "no login was started");
    assert!(stack.browser_urls().is_empty(), "no browser was opened");

    // Once the port is free, the same agent logs in on it.
    drop(occupant);
    stack
        .shim("bedrock")?
        .ensure_success("the shim after the port was freed")?;
    assert_eq!(stack.oidc().stats()?.authorization_requests, 1);
    Ok(())
}

fn short_token_stack(id_token_seconds: u64) -> Result<Stack> {
    Stack::builder()
        .id_token_ttl(id_token_seconds)
        .backend()
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()
}

#[test]
fn id_token_renews_with_refresh_token() -> Result<()> {
    let stack = short_token_stack(SHORT_ID_TOKEN_SECONDS)?;

    stack
        .shim("bedrock")?
        .ensure_success("the first shim call")?;
    let before = stack.oidc().stats()?;
    assert_eq!(before.authorization_requests, 1);

    // The quota check needs a fresh ID token, which the refresh token gives.
    stack
        .shim("bedrock")?
        .ensure_success("the second shim call")?;
    let after = stack.oidc().stats()?;
    assert_eq!(after.authorization_requests, 1, "no second login");
    assert!(
        after.token_requests("refresh_token") > before.token_requests("refresh_token"),
        "the agent used the refresh token: {after:?}"
    );
    assert_eq!(stack.browser_urls().len(), 1);
    Ok(())
}

#[test]
fn rejected_refresh_token_logs_in_again() -> Result<()> {
    let stack = short_token_stack(EXPIRING_ID_TOKEN_SECONDS)?;
    stack
        .shim("bedrock")?
        .ensure_success("the first shim call")?;

    // With the refresh token revoked and the ID token expired, only a new
    // login gives the quota check a valid token. While the ID token is
    // still valid, the agent rightly keeps using it.
    assert!(stack.oidc().revoke_refresh_tokens(Some("alice"))? >= 1);
    // Access and refresh tokens are opaque here, so the JWTs are the ID
    // tokens; the agent may have renewed one during the first call.
    let expires_at = stack
        .oidc()
        .issued_tokens()?
        .iter()
        .filter_map(|token| jwt::claims_of(token).ok()?["exp"].as_i64())
        .max()
        .context("the provider issued no ID token")?;
    wait_for("the ID token to expire", Duration::from_secs(60), || {
        Ok((chrono::Utc::now().timestamp() > expires_at + 1).then_some(()))
    })?;
    let output = stack.shim("bedrock")?;
    output.ensure_success("the shim after the refresh token was revoked")?;

    let stats = stack.oidc().stats()?;
    assert!(
        stats
            .token_errors
            .get("refresh_token")
            .copied()
            .unwrap_or(0)
            >= 1,
        "the provider rejected a refresh: {stats:?}"
    );
    assert_eq!(stats.authorization_requests, 2, "a second browser login");
    assert_eq!(stack.browser_urls().len(), 2);
    assert!(
        stack.agent_log().contains("refresh token was rejected"),
        "the agent logged the rejection"
    );
    Ok(())
}
