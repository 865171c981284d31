//! Desktop notifications on a real notification server: dunst on a
//! private D-Bus session bus and Xvfb display. Each threshold of each
//! limit and period is announced once, across repeated checks and an agent
//! restart, and the status page is opened in the browser with each notice.
//!
//! With `TOLLGATE_SCREENSHOT_DIR` set, `each_threshold_notified_once` saves
//! a screenshot of the 90 % warning and the block notification there
//! (`scripts/notification-screenshot.sh` sets it and installs ImageMagick).

use std::time::Duration;

use std::process::{Command, Stdio};

use anyhow::{Context, Result};
use tollgate_tests::desktop::PrintedNotification;
use tollgate_tests::locate::{SHIM, binary, support_dir};
use tollgate_tests::{Desktop, ProfileSpec, Stack, wait_for};

/// How long a notification may take to reach dunst.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(15);

/// How long the test waits for duplicates that must not come.
const QUIET_PERIOD: Duration = Duration::from_secs(2);

/// The environment variable naming the folder for notification screenshots.
const SCREENSHOT_DIR_ENV: &str = "TOLLGATE_SCREENSHOT_DIR";

/// The screenshot's file name, as `docs/agent.md` references it.
const SCREENSHOT_NAME: &str = "notification-warning-and-block.png";

fn tollgate_notices(desktop: &Desktop) -> Vec<PrintedNotification> {
    desktop
        .notifications()
        .into_iter()
        .filter(|notice| notice.appname == "Tollgate")
        .collect()
}

fn wait_for_notices(desktop: &Desktop, count: usize) -> Result<Vec<PrintedNotification>> {
    wait_for(
        &format!("{count} Tollgate notifications"),
        NOTICE_TIMEOUT,
        || {
            let notices = tollgate_notices(desktop);
            Ok((notices.len() >= count).then_some(notices))
        },
    )?;
    std::thread::sleep(QUIET_PERIOD);
    Ok(tollgate_notices(desktop))
}

fn status_page_urls(stack: &Stack) -> Vec<String> {
    stack
        .browser_urls()
        .into_iter()
        .filter(|url| url.contains("/status/"))
        .collect()
}

#[test]
fn each_threshold_notified_once() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let desktop = Desktop::start(folder.path())?;
    let mut stack = Stack::builder()
        .login("nora")
        .backend()
        .env("DISPLAY", desktop.display())
        .env("DBUS_SESSION_BUS_ADDRESS", desktop.bus_address())
        .env("TOLLGATE_SECRET_STORE", "memory")
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()?;
    stack.backend().admin_ok(&[
        "quota",
        "set-user",
        "nora@example.com",
        "--monthly-limit",
        "1M",
        "--enforcement",
        "block",
    ])?;

    stack
        .backend()
        .admin_ok(&["usage", "record", "nora@example.com", "--tokens", "850K"])?;
    for _ in 0..3 {
        stack.shim("bedrock")?.ensure_success("the shim at 85%")?;
    }
    let notices = wait_for_notices(&desktop, 1)?;
    assert_eq!(notices.len(), 1, "one notice at 80%: {notices:?}");
    assert!(notices[0].summary.contains("80%"), "{notices:?}");
    assert!(notices[0].summary.contains("monthly"), "{notices:?}");
    assert!(
        notices[0].body.contains("850K of 1M tokens (85%)"),
        "{notices:?}"
    );
    assert!(notices[0].body.contains("resets"), "{notices:?}");
    // The screenshot shows the 90 % warning and the block only.
    let screenshot_dir = std::env::var_os(SCREENSHOT_DIR_ENV).map(std::path::PathBuf::from);
    if screenshot_dir.is_some() {
        desktop.close_notifications()?;
    }

    stack
        .backend()
        .admin_ok(&["usage", "record", "nora@example.com", "--tokens", "100K"])?;
    for _ in 0..2 {
        stack.shim("bedrock")?.ensure_success("the shim at 95%")?;
    }
    let notices = wait_for_notices(&desktop, 2)?;
    assert_eq!(notices.len(), 2, "one more notice at 90%: {notices:?}");
    assert!(notices[1].summary.contains("90%"), "{notices:?}");

    // The record of sent notices survives a restart of the agent.
    stack.stop_agents();
    stack
        .shim("bedrock")?
        .ensure_success("the shim after a restart")?;
    std::thread::sleep(QUIET_PERIOD);
    assert_eq!(
        tollgate_notices(&desktop).len(),
        2,
        "no repeat after the restart: {:?}",
        tollgate_notices(&desktop)
    );

    stack
        .backend()
        .admin_ok(&["usage", "record", "nora@example.com", "--tokens", "200K"])?;
    for _ in 0..2 {
        let output = stack.shim("bedrock")?;
        assert!(!output.success(), "blocked user got credentials");
    }
    let notices = wait_for_notices(&desktop, 3)?;
    assert_eq!(notices.len(), 3, "one block notice: {notices:?}");
    assert!(notices[2].summary.contains("blocked"), "{notices:?}");
    assert!(
        notices[2].body.contains("1.1M of 1M tokens used (115%)"),
        "{notices:?}"
    );
    assert!(notices[2].body.contains("administrator"), "{notices:?}");
    if let Some(dir) = &screenshot_dir {
        desktop.screenshot(&dir.join(SCREENSHOT_NAME))?;
    }

    // The status page opened with each notice, and only then.
    let pages = status_page_urls(&stack);
    assert_eq!(pages.len(), 3, "{pages:?}");
    Ok(())
}

#[test]
fn missing_server_never_fails_request() -> Result<()> {
    // A session bus with no notification server on it.
    let folder = tempfile::tempdir()?;
    let desktop = Desktop::start(folder.path())?;
    let bus_without_server = format!("unix:path={}", folder.path().join("no-bus").display());
    let stack = Stack::builder()
        .login("odin")
        .backend()
        .env("DISPLAY", desktop.display())
        .env("DBUS_SESSION_BUS_ADDRESS", &bus_without_server)
        .env("TOLLGATE_SECRET_STORE", "memory")
        .profile(ProfileSpec::new("bedrock").quota().quota_recheck_minutes(0))
        .start()?;
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        "odin@example.com",
        "--monthly-limit",
        "1M",
        "--daily-limit",
        "100K",
        "--enforcement",
        "alert",
    ])?;
    backend.admin_ok(&["usage", "record", "odin@example.com", "--tokens", "950K"])?;
    for _ in 0..3 {
        stack
            .shim("bedrock")?
            .ensure_success("the shim with no notification server")?;
    }
    std::thread::sleep(QUIET_PERIOD);
    let log = stack.agent_log();
    let warnings = log
        .lines()
        .filter(|line| line.contains("WARN") && line.contains("desktop notification"))
        .count();
    assert_eq!(warnings, 1, "the failure is logged once at warn:\n{log}");
    assert!(tollgate_notices(&desktop).is_empty());
    Ok(())
}

#[test]
fn device_code_shown_as_notification() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let desktop = Desktop::start(folder.path())?;
    let stack = Stack::builder()
        .login("pavo")
        .env("DISPLAY", desktop.display())
        .env("DBUS_SESSION_BUS_ADDRESS", desktop.bus_address())
        .env("TOLLGATE_SECRET_STORE", "memory")
        .profile(ProfileSpec::new("bedrock").set("login", "device-code"))
        .start()?;
    let mut shim = stack.command(binary(SHIM)?);
    shim.args(["--profile", stack.profile("bedrock")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shim = shim.spawn().context("failed to start the shim")?;

    // The person reads the URL and the code from the notification.
    let notice = wait_for("the login notification", NOTICE_TIMEOUT * 4, || {
        Ok(tollgate_notices(&desktop)
            .into_iter()
            .find(|notice| notice.summary.contains("Tollgate login")))
    })
    .with_context(|| std::fs::read_to_string(desktop.dunst_log_path()).unwrap_or_default())?;
    let words: Vec<&str> = notice.body.split_whitespace().collect();
    let url = words
        .iter()
        .find(|word| word.starts_with("http") && word.contains("/device"))
        .context("the notification names the verification URL")?
        .to_string();
    let code = words
        .last()
        .context("the notification ends with the code")?
        .to_string();
    let confirmed = Command::new(support_dir().join("device-login"))
        .arg(&url)
        .arg(&code)
        .env("TOLLGATE_TEST_LOGIN", "pavo")
        .output()
        .context("failed to run tests/support/device-login")?;
    assert!(
        confirmed.status.success(),
        "device-login failed: {}",
        String::from_utf8_lossy(&confirmed.stderr)
    );

    let output = shim.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the shim failed: {stderr}");
    assert!(
        stderr.contains(&code),
        "the shim's stderr shows the code too: {stderr}"
    );
    assert!(stack.browser_urls().is_empty(), "no browser was opened");
    Ok(())
}
