//! Usage ingest through the whole chain. The shim's `--otel-headers` gets
//! the ID token from the agent, and the OpenTelemetry Python SDK exports
//! Claude Code-shaped usage with it to `tollgate serve`. Once a block-mode
//! daily limit is crossed, the next shim call for that user is refused.
//! The lag from export to refusal is printed (run with `--nocapture`).

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use tollgate_tests::locate::{venv_program, workspace_root};
use tollgate_tests::{ProfileSpec, RunOutput, Stack};

/// Runs `backend/tests/otel_export.py` with the stack's environment.
fn export_usage(stack: &Stack, token: &str, args: &[&str]) -> Result<RunOutput> {
    let endpoint = format!("{}/v1/metrics", stack.backend().url());
    let mut command = stack.command(venv_program("python")?);
    command
        .arg(workspace_root().join("backend/tests/otel_export.py"))
        .args(["--endpoint", &endpoint])
        .env("OTLP_BEARER_TOKEN", token)
        .args(args);
    stack.run(command, "otel-export")
}

/// Returns the bearer token from `--otel-headers` output.
fn bearer_token(output: &RunOutput) -> Result<String> {
    let headers = output.json()?;
    let value = headers["Authorization"]
        .as_str()
        .context("the headers have an Authorization string")?;
    let token = value
        .strip_prefix("Bearer ")
        .context("the Authorization header is a bearer token")?;
    Ok(token.to_owned())
}

#[test]
fn exported_usage_blocks_next_shim_call() -> Result<()> {
    let stack = Stack::builder()
        .login("olga")
        .backend()
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "olga@example.com",
        "--monthly-limit",
        "100M",
        "--daily-limit",
        "10K",
        "--daily-enforcement",
        "block",
    ])?;
    stack
        .shim("bedrock")?
        .ensure_success("the shim below the limit")?;

    let headers = stack.shim_with_args("bedrock", &["--otel-headers"])?;
    headers.ensure_success("the shim's --otel-headers")?;
    let token = bearer_token(&headers)?;

    // One export request: 4 types × 3,000 tokens = 12,000, past the 10K
    // daily limit. The payload names another user, which must not matter.
    let export_started = Instant::now();
    let export = export_usage(
        &stack,
        &token,
        &[
            "--rounds",
            "1",
            "--fixed-value",
            "3000",
            "--spoof-email",
            "someone.else@example.com",
        ],
    )?;
    export.ensure_success("the OpenTelemetry SDK export")?;
    let exported = export_started.elapsed();

    let refused_after = Instant::now();
    let output = stack.shim("bedrock")?;
    let lag = export_started.elapsed();
    ensure!(
        !output.success(),
        "the shim still handed out credentials: {}",
        output.stdout
    );
    let message = output.stderr.to_lowercase();
    assert!(
        message.contains("daily"),
        "names the daily limit: {}",
        output.stderr
    );
    assert!(
        message.contains("12k") || message.contains("12,000") || message.contains("12000"),
        "states the usage: {}",
        output.stderr
    );
    assert!(
        message.contains("10k") || message.contains("10,000") || message.contains("10000"),
        "states the limit: {}",
        output.stderr
    );
    println!(
        "export to refusal: the export took {:.0} ms, the refused shim call {:.0} ms, \
         {:.0} ms in all (quota_recheck_minutes = 0)",
        exported.as_secs_f64() * 1000.0,
        refused_after.elapsed().as_secs_f64() * 1000.0,
        lag.as_secs_f64() * 1000.0
    );

    let check = backend.check(&token)?;
    let answer: Value = serde_json::from_str(&check.text)?;
    assert_eq!(answer["reason"], "daily_limit_exceeded", "{answer}");
    assert_eq!(answer["usage"]["daily"]["tokens"], 12_000, "{answer}");
    Ok(())
}

#[test]
fn otel_headers_never_start_a_login() -> Result<()> {
    let stack = Stack::builder()
        .login("pia")
        .backend()
        .profile(ProfileSpec::new("bedrock").quota())
        .start()?;
    let started = Instant::now();
    let output = stack.shim_with_args("bedrock", &["--otel-headers"])?;
    let elapsed = started.elapsed();
    ensure!(
        !output.success(),
        "printed headers without a login: {}",
        output.stdout
    );
    assert!(output.stdout.trim().is_empty(), "stdout: {}", output.stdout);
    assert!(
        output.stderr.contains("tollgate-agent login"),
        "says how to log in: {}",
        output.stderr
    );
    assert!(
        stack.browser_urls().is_empty(),
        "no browser login started: {:?}",
        stack.browser_urls()
    );
    // Starting the agent is part of this run; a login would wait for the
    // browser for much longer.
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");

    // After a login, the headers carry a token the backend accepts.
    stack.shim("bedrock")?.ensure_success("the shim logs in")?;
    let headers = stack.shim_with_args("bedrock", &["--otel-headers"])?;
    headers.ensure_success("--otel-headers after the login")?;
    let token = bearer_token(&headers)?;
    let check = stack.backend().check(&token)?;
    assert_eq!(check.status, 200, "{}", check.text);
    Ok(())
}

/// Returns the `exp` claim of a JWT, in seconds since the epoch.
fn expiry(token: &str) -> Result<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).context("a JWT has a payload")?;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    claims["exp"].as_i64().context("the token has an exp claim")
}

#[test]
fn otel_headers_token_is_fresh() -> Result<()> {
    let stack = Stack::builder()
        .login("quin")
        .id_token_ttl(20)
        .backend()
        .profile(ProfileSpec::new("bedrock").quota())
        .start()?;
    stack.shim("bedrock")?.ensure_success("the shim logs in")?;
    let first = bearer_token(&stack.shim_with_args("bedrock", &["--otel-headers"])?)?;
    std::thread::sleep(Duration::from_secs(21));

    let output = stack.shim_with_args("bedrock", &["--otel-headers"])?;
    output.ensure_success("--otel-headers after the ID token expired")?;
    let second = bearer_token(&output)?;
    let now = chrono::Utc::now().timestamp();
    assert_ne!(first, second, "a new ID token after the old one expired");
    assert!(
        expiry(&second)? > now,
        "the token expires in the future: {} <= {now}",
        expiry(&second)?
    );
    assert_eq!(
        stack.browser_urls().len(),
        1,
        "renewed without a browser login"
    );
    Ok(())
}
