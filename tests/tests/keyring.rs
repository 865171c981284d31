//! The Secret Service keyring: a real gnome-keyring on the private D-Bus
//! session that scripts/test.sh starts, and the agent's cache in it.

use anyhow::{Result, bail};
use tollgate_protocol::agent::{RequestBody, Response};
use tollgate_tests::{ProfileSpec, Stack};

fn ensure_session_bus() -> Result<()> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        bail!(
            "no D-Bus session: run the suite through scripts/test.sh, which starts \
             dbus-run-session with gnome-keyring unlocked"
        );
    }
    Ok(())
}

#[test]
fn secret_service_round_trip() -> Result<()> {
    ensure_session_bus()?;
    let stack = Stack::builder().start()?;
    let account = format!("round-trip-{}", std::process::id());
    let secret = "keyring-test-value-0123456789";

    let mut store = stack.command("secret-tool");
    store
        .args([
            "store",
            "--label=tollgate e2e",
            "service",
            "tollgate-e2e",
            "account",
            &account,
        ])
        .stdin(std::process::Stdio::piped());
    let mut child = store.stdout(std::process::Stdio::piped()).spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin was piped");
        stdin.write_all(secret.as_bytes())?;
    }
    let status = child.wait()?;
    assert!(status.success(), "secret-tool store failed: {status}");

    let mut lookup = stack.command("secret-tool");
    lookup.args(["lookup", "service", "tollgate-e2e", "account", &account]);
    let found = stack.run(lookup, "secret-tool")?;
    found.ensure_success("secret-tool lookup")?;
    assert_eq!(found.stdout, secret);

    let mut clear = stack.command("secret-tool");
    clear.args(["clear", "service", "tollgate-e2e", "account", &account]);
    stack
        .run(clear, "secret-tool")?
        .ensure_success("secret-tool clear")?;
    let mut lookup = stack.command("secret-tool");
    lookup.args(["lookup", "service", "tollgate-e2e", "account", &account]);
    assert!(
        stack.run(lookup, "secret-tool")?.stdout.is_empty(),
        "the entry was cleared"
    );
    Ok(())
}

#[test]
fn agent_caches_session_in_secret_service() -> Result<()> {
    ensure_session_bus()?;
    let mut stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let profile = stack.profile("bedrock").to_owned();

    let first = stack.shim("bedrock")?;
    first.ensure_success("the first shim call")?;

    let responses = stack.agent_request(RequestBody::Status {
        profile: Some(profile.clone()),
    })?;
    let Some(Response::Status { profiles }) = responses.last() else {
        bail!("no status response: {responses:?}");
    };
    assert_eq!(profiles.len(), 1);
    assert_eq!(profiles[0].secret_store.as_deref(), Some("secret-service"));

    // gnome-keyring contains an entry for the profile under service `tollgate`.
    let mut search = stack.command("secret-tool");
    search.args(["search", "--all", "service", "tollgate"]);
    let found = stack.run(search, "secret-tool")?;
    let listing = format!("{}{}", found.stdout, found.stderr);
    assert!(
        listing
            .lines()
            .any(|line| line.contains("username") && line.contains(&profile)),
        "no keyring entry names {profile}: {listing}"
    );

    // A new agent reads the cache: no second login, same credentials.
    stack.stop_agents();
    assert!(stack.agent_pids().is_empty(), "the agent was stopped");
    let second = stack.shim("bedrock")?;
    second.ensure_success("the shim after an agent restart")?;
    assert_eq!(second.json()?["AccessKeyId"], first.json()?["AccessKeyId"]);
    assert_eq!(
        stack.oidc().stats()?.authorization_requests,
        1,
        "one login in all"
    );
    assert_eq!(stack.browser_urls().len(), 1);
    Ok(())
}
