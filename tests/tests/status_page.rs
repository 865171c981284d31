//! The agent's status page in headless Chromium: the warning and the
//! blocked states render the usage, the limit, the colours and the
//! explanation. Screenshots are written to the test's folder, and to
//! `docs/images/` when `TOLLGATE_UPDATE_SCREENSHOTS=1`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use tollgate_tests::locate::workspace_root;
use tollgate_tests::{Desktop, ProfileSpec, Stack, wait_for};

fn chromium(profile_dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--disable-quic",
            "--window-size=900,620",
        ])
        .arg(format!("--user-data-dir={}", profile_dir.display()))
        .args(args)
        .output()
        .context("failed to run chromium (apt package chromium)")?;
    if !output.status.success() {
        bail!(
            "chromium {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn screenshot(folder: &Path, url: &str, name: &str) -> Result<()> {
    let path = folder.join(name);
    let profile = tempfile::tempdir()?;
    chromium(
        profile.path(),
        &[&format!("--screenshot={}", path.display()), url],
    )?;
    let size = std::fs::metadata(&path)
        .with_context(|| format!("no screenshot at {}", path.display()))?
        .len();
    assert!(size > 1000, "{name} is {size} bytes");
    if std::env::var("TOLLGATE_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let target = workspace_root().join("docs/images").join(name);
        std::fs::create_dir_all(target.parent().expect("docs/images has a parent"))?;
        std::fs::copy(&path, &target)
            .with_context(|| format!("failed to copy to {}", target.display()))?;
    }
    Ok(())
}

fn rendered_text(url: &str) -> Result<String> {
    let profile = tempfile::tempdir()?;
    chromium(profile.path(), &["--dump-dom", url])
}

#[test]
fn page_renders_warning_and_block() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let desktop = Desktop::start(&folder.path().join("desktop"))?;
    let stack = Stack::builder()
        .login("pia")
        .backend()
        .env("DISPLAY", desktop.display())
        .env("DBUS_SESSION_BUS_ADDRESS", desktop.bus_address())
        .env("TOLLGATE_SECRET_STORE", "memory")
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "pia@example.com",
        "--monthly-limit",
        "10M",
        "--daily-limit",
        "1M",
        "--daily-enforcement",
        "block",
    ])?;
    backend.admin_ok(&["usage", "record", "pia@example.com", "--tokens", "850K"])?;
    stack.shim("bedrock")?.ensure_success("the shim at 85%")?;

    let url = wait_for(
        "the status page to open",
        std::time::Duration::from_secs(15),
        || {
            Ok(stack
                .browser_urls()
                .into_iter()
                .find(|url| url.contains("/status/")))
        },
    )?;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    // The scripted browser exits with an error for a page that is no
    // login, so the agent logs a failed launch. The page's secret last
    // path segment must not be in that line or any other.
    let secret = url
        .rsplit_once('/')
        .map(|(_, last)| last)
        .unwrap_or_default();
    assert!(secret.len() >= 16, "the page path has a secret part: {url}");
    wait_for(
        "the agent to log the failed status page launch",
        std::time::Duration::from_secs(15),
        || {
            Ok(stack
                .agent_log()
                .contains("could not open the status page")
                .then_some(()))
        },
    )?;
    assert!(
        !stack.agent_log().contains(secret),
        "the agent log contains the status page secret"
    );

    let html = rendered_text(&url)?;
    assert!(html.contains("pia@example.com"), "{html}");
    assert!(
        html.contains("850K of 1M tokens (85%)"),
        "daily bar: {html}"
    );
    assert!(html.contains("over 80%"), "{html}");
    assert!(html.contains("background:#e0a800"), "amber bar: {html}");
    assert!(
        html.contains("850K of 10M tokens (8%)"),
        "monthly bar: {html}"
    );
    assert!(html.contains("background:#2e9d4f"), "green bar: {html}");
    assert!(html.contains("user policy for pia@example.com"), "{html}");
    assert!(!html.contains("Claude Code is blocked"), "{html}");
    screenshot(folder.path(), &url, "status-page-warning.png")?;

    backend.admin_ok(&["usage", "record", "pia@example.com", "--tokens", "350K"])?;
    assert!(
        !stack.shim("bedrock")?.success(),
        "blocked user got credentials"
    );
    let html = rendered_text(&url)?;
    assert!(html.contains("Claude Code is blocked."), "{html}");
    assert!(html.contains("1.2M of 1M tokens (120%)"), "{html}");
    assert!(html.contains("background:#d62828"), "red bar: {html}");
    assert!(html.contains("the daily limit is reached"), "{html}");
    screenshot(folder.path(), &url, "status-page-blocked.png")?;

    // Another path on the same server is not the page.
    let other = url
        .rsplit_once('/')
        .map(|(base, _)| format!("{base}/guess"))
        .unwrap_or_default();
    let html = rendered_text(&other)?;
    assert!(!html.contains("pia@example.com"), "{html}");
    Ok(())
}

#[test]
fn headless_session_opens_nothing() -> Result<()> {
    // No DISPLAY or WAYLAND_DISPLAY, but $BROWSER is set: a headless
    // machine with a text browser for the login.
    let stack = Stack::builder()
        .login("pia")
        .backend()
        .env("TOLLGATE_SECRET_STORE", "memory")
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "pia@example.com",
        "--monthly-limit",
        "10M",
        "--daily-limit",
        "1M",
    ])?;
    backend.admin_ok(&["usage", "record", "pia@example.com", "--tokens", "850K"])?;
    stack.shim("bedrock")?.ensure_success("the shim at 85%")?;

    wait_for(
        "the agent to skip the quota notice",
        std::time::Duration::from_secs(15),
        || {
            Ok(stack
                .agent_log()
                .contains("no graphical display, so no quota notification")
                .then_some(()))
        },
    )?;
    let urls = stack.browser_urls();
    assert_eq!(urls.len(), 1, "only the login URL was opened: {urls:?}");
    assert!(!urls[0].contains("/status/"), "{urls:?}");
    let log = stack.agent_log();
    assert!(
        !log.contains("desktop notification"),
        "the agent tried a desktop notification"
    );
    Ok(())
}
