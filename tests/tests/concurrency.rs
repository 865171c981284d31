//! Many callers at once share one login and one STS call, and an agent that
//! dies in the middle of a login leaves nothing behind that blocks the
//! next one.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use tollgate_tests::locate::{AGENT, binary};
use tollgate_tests::process::{kill_pid, pid_gone};
use tollgate_tests::{ProfileSpec, Stack, wait_for};

const PARALLEL_CALLS: usize = 50;

#[test]
fn parallel_shims_share_one_login() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;

    let outputs = thread::scope(|scope| {
        let handles: Vec<_> = (0..PARALLEL_CALLS)
            .map(|_| scope.spawn(|| stack.shim("bedrock")))
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a shim thread panicked"))
            .collect::<Result<Vec<_>>>()
    })?;

    let mut distinct = BTreeSet::new();
    for (index, output) in outputs.iter().enumerate() {
        output.ensure_success(&format!("shim call {index}"))?;
        let credentials = output.json()?;
        distinct.insert((
            credentials["AccessKeyId"].to_string(),
            credentials["SecretAccessKey"].to_string(),
            credentials["SessionToken"].to_string(),
        ));
    }
    assert_eq!(distinct.len(), 1, "all calls print the same credentials");

    let stats = stack.oidc().stats()?;
    assert_eq!(stats.authorization_requests, 1, "authorization requests");
    assert_eq!(stack.browser_urls().len(), 1, "browser launches");
    assert_eq!(stack.sts_assume_role_calls(), 1, "STS calls");
    assert_eq!(stack.agent_pids().len(), 1, "running agents");
    Ok(())
}

#[test]
fn agent_killed_mid_login_recovers() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock").login_timeout_seconds(120))
        .start()?;
    // The browser records the URL and never logs in, so the agent waits
    // for its callback.
    stack.set_browser_mode("ignore")?;

    let first = thread::scope(|scope| -> Result<_> {
        let pending = scope.spawn(|| stack.shim("bedrock"));
        wait_for(
            "the login URL in the browser",
            Duration::from_secs(60),
            || Ok((!stack.browser_urls().is_empty()).then_some(())),
        )?;
        let agents = stack.agent_pids();
        assert_eq!(agents.len(), 1, "one agent is running the login");
        kill_pid(agents[0])?;
        wait_for("the killed agent to end", Duration::from_secs(10), || {
            Ok(pid_gone(agents[0]).then_some(()))
        })?;
        pending.join().expect("the shim thread panicked")
    })?;
    assert!(
        !first.success(),
        "the interrupted call fails: {}",
        first.stdout
    );
    assert!(
        !first.stderr.trim().is_empty(),
        "the interrupted call explains itself"
    );

    // The killed agent left its socket file and any lock behind.
    stack.set_browser_mode("login")?;
    let second = stack.shim("bedrock")?;
    second.ensure_success("the shim after the agent was killed")?;
    assert!(second.json()?["AccessKeyId"].is_string());
    assert_eq!(stack.browser_urls().len(), 2, "a second login was started");
    assert_eq!(stack.agent_pids().len(), 1, "one new agent");
    Ok(())
}

#[test]
fn abandoned_login_blocks_nothing() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock").login_timeout_seconds(120))
        .start()?;
    let profile = stack.profile("bedrock").to_owned();
    let before = stack.shim("bedrock")?;
    before.ensure_success("the shim before the login")?;
    let key = before.json()?["AccessKeyId"].to_string();

    // A second login waits for a browser that never logs in.
    stack.set_browser_mode("ignore")?;
    let mut login = stack
        .command(binary(AGENT)?)
        .args(["login", "--profile", &profile])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for(
        "the login to open the browser",
        Duration::from_secs(60),
        || Ok((stack.browser_urls().len() == 2).then_some(())),
    )?;

    // The cached credentials are still valid, so they come at once.
    let asked = Instant::now();
    let during = stack.shim_with_args("bedrock", &["--timeout", "30"])?;
    let took = asked.elapsed();
    during.ensure_success("the shim during the pending login")?;
    assert!(took < Duration::from_secs(15), "the shim took {took:?}");
    assert_eq!(during.json()?["AccessKeyId"].to_string(), key);

    // The only client of the login leaves, so the agent cancels it.
    login.kill()?;
    login.wait()?;
    wait_for(
        "the agent to cancel the abandoned login",
        Duration::from_secs(30),
        || {
            Ok(stack
                .agent_log()
                .contains("cancelling the login")
                .then_some(()))
        },
    )?;

    // A new login can bind the callback port again and finishes.
    stack.set_browser_mode("login")?;
    let again = stack.agent_cli(&["login", "--profile", &profile])?;
    again.ensure_success("the login after the abandoned one")?;
    Ok(())
}
