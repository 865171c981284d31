//! Many callers at once share one login and one STS call, and an agent that
//! dies in the middle of a login leaves nothing behind that blocks the
//! next one.

use std::collections::BTreeSet;
use std::thread;
use std::time::Duration;

use anyhow::Result;
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
