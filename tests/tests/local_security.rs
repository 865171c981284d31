//! The agent's local defences: its socket serves only its own user, and it
//! refuses a runtime folder that others can write to or that is a symlink.
//!
//! The other-user case runs a client as `nobody` through `setpriv`, so this
//! file needs root, as CI has.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tollgate_tests::process::Service;
use tollgate_tests::{ProfileSpec, Stack, wait_for};

/// The uid and gid of `nobody` on Debian.
const NOBODY: &str = "65534";

/// How long a rejecting agent may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// A client run as `nobody`: connects to the socket, sends one request
/// line and prints what happened as JSON.
const CLIENT: &str = r#"
import json, socket, sys
path, request = sys.argv[1], sys.argv[2]
result = {"connected": False, "error": None, "reply": ""}
try:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(10)
    client.connect(path)
    result["connected"] = True
    client.sendall(request.encode() + b"\n")
    chunks = []
    while True:
        chunk = client.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if b"\n" in chunk:
            break
    result["reply"] = b"".join(chunks).decode("utf-8", "replace")
except OSError as error:
    result["error"] = f"{type(error).__name__}: {error}"
print(json.dumps(result))
"#;

fn ensure_root() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("this test runs a client as another user with setpriv and needs root");
    }
    Ok(())
}

/// Runs [`CLIENT`] as `nobody` against `socket` and returns its JSON.
fn connect_as_nobody(stack: &Stack, request: &str) -> Result<Value> {
    let output = Command::new("setpriv")
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            CLIENT,
        ])
        .arg(stack.socket_path())
        .arg(request)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir("/")
        .output()
        .context("failed to run setpriv")?;
    if !output.status.success() {
        bail!(
            "the client as nobody failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("the client printed no JSON")
}

#[test]
fn socket_rejects_other_uid() -> Result<()> {
    ensure_root()?;
    let mut stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    stack.start_agent()?;
    // A logged-in profile, so a leak would be real credentials.
    stack
        .shim("bedrock")?
        .ensure_success("the shim as the owner")?;
    let request = serde_json::json!({
        "v": 1,
        "type": "get-credentials",
        "profile": stack.profile("bedrock"),
        "interactive": false,
    })
    .to_string();

    // The runtime folder is 0700, so the filesystem keeps others out.
    let blocked = connect_as_nobody(&stack, &request)?;
    assert_eq!(blocked["connected"], false, "{blocked}");

    // Open the path to the socket and the socket itself to everyone: now
    // only the agent's peer credential check is between nobody and the
    // credentials.
    let runtime_dir = stack.runtime_dir().to_path_buf();
    let folders = [
        stack.dir().to_path_buf(),
        runtime_dir
            .parent()
            .expect("the runtime folder has a parent")
            .to_path_buf(),
        runtime_dir.clone(),
    ];
    let socket = stack.socket_path();
    for folder in &folders {
        fs::set_permissions(folder, fs::Permissions::from_mode(0o711))?;
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o666))?;
    let result = connect_as_nobody(&stack, &request);
    for folder in &folders {
        fs::set_permissions(folder, fs::Permissions::from_mode(0o700))?;
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600))?;
    let result = result?;

    assert_eq!(
        result["connected"], true,
        "the kernel let nobody connect: {result}"
    );
    let reply = result["reply"].as_str().unwrap_or_default();
    assert!(
        !reply.contains("secret_access_key") && !reply.contains("credentials"),
        "the agent served another user: {reply}"
    );
    assert!(reply.is_empty(), "the agent answered another user: {reply}");
    assert!(
        stack.agent_log().contains(NOBODY),
        "the agent logged the rejected uid {NOBODY}"
    );
    Ok(())
}

/// Starts an agent and waits for it to exit, failing if it keeps running.
fn agent_exit_log(stack: &Stack) -> Result<String> {
    let mut agent: Service = stack.spawn_agent("agent-rejected")?;
    wait_for("the agent to exit", EXIT_TIMEOUT, || {
        Ok((!agent.is_running()).then_some(()))
    })
    .with_context(|| format!("the agent kept running; its log:\n{}", agent.log()))?;
    Ok(agent.log())
}

#[test]
fn runtime_dir_world_writable_rejected() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let runtime_dir = stack.runtime_dir().to_path_buf();
    fs::create_dir_all(&runtime_dir)?;
    fs::set_permissions(&runtime_dir, fs::Permissions::from_mode(0o777))?;

    let log = agent_exit_log(&stack)?;
    assert!(
        log.contains(&runtime_dir.display().to_string()),
        "names the folder: {log}"
    );
    assert!(stack.agent_pids().is_empty(), "no agent kept running");
    assert!(
        !stack.socket_path().exists(),
        "no socket in a world-writable folder"
    );

    let output = stack.shim("bedrock")?;
    assert!(
        !output.success(),
        "credentials through a world-writable folder"
    );
    Ok(())
}

#[test]
fn runtime_dir_symlink_rejected() -> Result<()> {
    let stack = Stack::builder()
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let runtime_dir = stack.runtime_dir().to_path_buf();
    let target = stack.dir().join("elsewhere");
    fs::create_dir_all(&target)?;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700))?;
    std::os::unix::fs::symlink(&target, &runtime_dir)?;

    let log = agent_exit_log(&stack)?;
    assert!(
        log.contains(&runtime_dir.display().to_string()),
        "names the folder: {log}"
    );
    assert!(
        log.to_lowercase().contains("symlink") || log.to_lowercase().contains("symbolic link"),
        "{log}"
    );
    assert!(
        !target.join("agent.sock").exists(),
        "no socket behind the symlink"
    );
    Ok(())
}
