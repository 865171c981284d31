//! How the device code login (RFC 8628) ends when the provider sends
//! `slow_down`, when the device code expires, and when the user refuses the
//! sign-in. The provider is the local oidc-provider; the person on the other
//! device is `tests/support/device-login`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tollgate_tests::locate::{AGENT, SHIM, binary, support_dir};
use tollgate_tests::oidc::{DeviceFlowOptions, DevicePoll};
use tollgate_tests::{ProfileSpec, Stack, wait_for};

/// How long a step of a device login may take on a loaded machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(90);

/// The polling interval the provider announces. The agent's first poll
/// comes right after the device authorization, so with the interval check
/// on it is early by this much at most; 2 s leaves margin on a loaded
/// machine and keeps the test short.
const ANNOUNCED_INTERVAL: u64 = 2;

/// What each `slow_down` adds to the interval (RFC 8628, section 3.5).
const SLOW_DOWN_STEP_MS: i64 = 5_000;

/// The device code lifetime of the expiry test.
const SHORT_DEVICE_CODE_SECONDS: u64 = 3;

/// How long a refused login may take to end: one poll interval plus the
/// time the agent needs to respond, with a margin for a loaded machine.
const REFUSAL_LIMIT: Duration = Duration::from_secs(15);

/// A running `tollgate-agent login --device-code`, or a shim whose profile
/// logs in with the device code.
struct DeviceLogin {
    child: Child,
    lines: Receiver<String>,
    /// The stderr lines read so far.
    seen: Vec<String>,
    url: String,
    user_code: String,
}

impl DeviceLogin {
    /// Starts `tollgate-agent login` and waits for the verification URL and
    /// user code on its stderr.
    fn start(stack: &Stack, profile: &str) -> Result<Self> {
        let mut command = stack.command(binary(AGENT)?);
        command.args(["login", "--profile", profile, "--device-code"]);
        Self::spawn(command)
    }

    /// Starts the shim for `profile` and waits for the verification URL and
    /// user code on its stderr.
    fn start_shim(stack: &Stack, profile: &str) -> Result<Self> {
        let mut command = stack.command(binary(SHIM)?);
        command.args(["--profile", profile]);
        Self::spawn(command)
    }

    fn spawn(mut command: Command) -> Result<Self> {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start {command:?}"))?;
        let (sender, lines) = mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().expect("stdout was piped"))
                as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr was piped")),
        ] {
            let sender = sender.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut login = Self {
            child,
            lines,
            seen: Vec::new(),
            url: String::new(),
            user_code: String::new(),
        };
        loop {
            let Some(line) = login.next_line(STEP_TIMEOUT) else {
                let _ = login.child.kill();
                bail!(
                    "no device code instructions from the agent; output so far: {:?}",
                    login.seen
                );
            };
            if let Some((url, user_code)) = instructions(&line) {
                login.url = url;
                login.user_code = user_code;
                return Ok(login);
            }
        }
    }

    fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Runs `tests/support/device-login` for this login as `login_name`,
    /// with `--abort` when `abort` is set.
    fn confirm(&self, login_name: &str, abort: bool) -> Result<()> {
        let mut command = Command::new(support_dir().join("device-login"));
        if abort {
            command.arg("--abort");
        }
        let output = command
            .arg(&self.url)
            .arg(&self.user_code)
            .env("TOLLGATE_TEST_LOGIN", login_name)
            .output()
            .context("failed to run tests/support/device-login")?;
        if !output.status.success() {
            bail!(
                "device-login failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Waits for the process to exit and returns its status and its whole
    /// stdout and stderr.
    fn finish(mut self) -> Result<(ExitStatus, String)> {
        let status = match wait_for("tollgate-agent login to exit", STEP_TIMEOUT, || {
            Ok(self.child.try_wait()?)
        }) {
            Ok(status) => status,
            Err(error) => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(error.context(format!("output so far: {:?}", self.seen)));
            }
        };
        // The reader threads end at the pipes' end of file.
        while self.next_line(Duration::from_secs(5)).is_some() {}
        Ok((status, self.seen.join("\n")))
    }
}

/// Returns the verification URL and the user code from the agent's
/// instruction line, `... open URL on any device and enter the code CODE`.
/// The shim appends `, or open COMPLETE_URL directly` to that line.
fn instructions(line: &str) -> Option<(String, String)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let url = words
        .iter()
        .find(|word| word.starts_with("http") && word.contains("/device"))?;
    let code_at = words.iter().position(|word| *word == "code")?;
    let user_code = words.get(code_at + 1)?;
    Some((
        url.trim_end_matches(',').to_owned(),
        user_code.trim_end_matches(',').to_owned(),
    ))
}

/// Returns the polls of the only device code the provider saw.
fn only_device_polls(stack: &Stack) -> Result<Vec<DevicePoll>> {
    let stats = stack.oidc().stats()?;
    let mut codes = stats.device_polls.into_values();
    let polls = codes
        .next()
        .context("the provider saw no device code poll")?;
    if codes.next().is_some() {
        bail!("the provider saw polls for more than one device code");
    }
    Ok(polls)
}

/// Returns the id of the agent serving the stack's socket. The
/// `tollgate-agent login` client runs the same binary, so a process list
/// cannot tell the two apart.
fn serving_agent_pid(stack: &Stack) -> Result<u32> {
    stack
        .socket_peer_pid()
        .context("no agent answers on the stack's socket")
}

#[test]
fn slow_down_backs_off_and_completes() -> Result<()> {
    let stack = Stack::builder()
        .login("oscar")
        .device_flow(DeviceFlowOptions {
            interval: Some(ANNOUNCED_INTERVAL),
            enforce_interval: true,
            ..DeviceFlowOptions::default()
        })
        .profile(ProfileSpec::new("bedrock"))
        .start()?;
    let profile = stack.profile("bedrock").to_owned();

    let login = DeviceLogin::start(&stack, &profile)?;
    login.confirm("oscar", false)?;
    // The poll record explains a login that never finished, so it is
    // checked before the login's own result.
    let finished = login.finish();
    let polls = only_device_polls(&stack)?;
    let outcomes: Vec<&str> = polls.iter().map(|poll| poll.outcome.as_str()).collect();
    assert!(
        outcomes.contains(&"slow_down"),
        "the provider sent slow_down: {outcomes:?}"
    );
    // The interval grows by 5 s with each slow_down and stays grown for
    // all later polls of the same code.
    let mut interval_ms = i64::try_from(ANNOUNCED_INTERVAL)? * 1000;
    for pair in polls.windows(2) {
        if pair[0].outcome == "slow_down" {
            interval_ms += SLOW_DOWN_STEP_MS;
        }
        let gap = pair[1].at_ms - pair[0].at_ms;
        assert!(
            gap >= interval_ms,
            "a poll came {gap} ms after the previous one, sooner than the interval of {interval_ms} ms: {polls:?}"
        );
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|outcome| **outcome == "slow_down")
            .count(),
        1,
        "one slow_down was enough: {outcomes:?}"
    );
    let (status, output) = finished?;
    assert!(status.success(), "the login failed: {output}");
    assert_eq!(
        outcomes.last(),
        Some(&"tokens"),
        "the login completed: {outcomes:?}"
    );

    stack
        .shim("bedrock")?
        .ensure_success("the shim after the device login")?;
    Ok(())
}

#[test]
fn expired_device_code_ends_cleanly() -> Result<()> {
    let stack = Stack::builder()
        .device_flow(DeviceFlowOptions {
            code_ttl: Some(SHORT_DEVICE_CODE_SECONDS),
            interval: Some(1),
            ..DeviceFlowOptions::default()
        })
        .profile(ProfileSpec::new("bedrock").set("login", "device-code"))
        .start()?;
    let profile = stack.profile("bedrock").to_owned();
    let expired = format!("expired after {SHORT_DEVICE_CODE_SECONDS} seconds");
    let start_again = format!("run `tollgate-agent login --profile {profile} --device-code`");

    // The test never confirms the code the shim shows, so the code expires.
    let shim = stack.shim("bedrock")?;
    assert_eq!(shim.status.code(), Some(1), "stderr: {}", shim.stderr);
    let (_, shim_code) = shim
        .stderr
        .lines()
        .find_map(instructions)
        .with_context(|| format!("no device code instructions: {}", shim.stderr))?;
    assert!(
        !shim_code.contains('/'),
        "a user code, not a URL: {shim_code}"
    );
    assert!(shim.stderr.contains(&expired), "stderr: {}", shim.stderr);
    assert!(
        shim.stderr.contains(&start_again),
        "stderr: {}",
        shim.stderr
    );
    assert!(
        stack.sts().exchanges().is_empty(),
        "no credentials without a login"
    );
    let agent = serving_agent_pid(&stack)?;

    let login = stack.agent_cli(&["login", "--profile", &profile, "--device-code"])?;
    assert_eq!(login.status.code(), Some(1), "stderr: {}", login.stderr);
    assert!(login.stderr.contains(&expired), "stderr: {}", login.stderr);
    assert!(
        login.stderr.contains(&start_again),
        "stderr: {}",
        login.stderr
    );
    assert_eq!(serving_agent_pid(&stack)?, agent, "the agent stayed up");

    // A login with a code that lives long enough works with the same agent.
    stack.oidc().set_device_code_ttl(600)?;
    let login = DeviceLogin::start(&stack, &profile)?;
    login.confirm("alice", false)?;
    let (status, output) = login.finish()?;
    assert!(status.success(), "the later login failed: {output}");
    stack
        .shim("bedrock")?
        .ensure_success("the shim after the later login")?;
    assert_eq!(serving_agent_pid(&stack)?, agent, "the same agent");
    assert_eq!(stack.oidc().stats()?.device_authorization_requests, 3);

    let log = stack.agent_log();
    assert!(
        !log.contains(&shim_code),
        "the agent log does not contain the user code"
    );
    let device_codes = stack.oidc().issued_device_codes()?;
    assert_eq!(device_codes.len(), 3);
    for (index, device_code) in device_codes.iter().enumerate() {
        assert!(
            !log.contains(device_code.as_str()),
            "the agent log contains device code {index}"
        );
        assert!(
            !shim.stderr.contains(device_code.as_str()),
            "the shim's stderr contains device code {index}"
        );
    }
    Ok(())
}

#[test]
fn refused_device_login_ends_at_once() -> Result<()> {
    let stack = Stack::builder()
        .device_flow(DeviceFlowOptions {
            interval: Some(1),
            ..DeviceFlowOptions::default()
        })
        .profile(ProfileSpec::new("bedrock").set("login", "device-code"))
        .start()?;
    let profile = stack.profile("bedrock").to_owned();
    let refusal = "was refused at the identity provider";

    let login = DeviceLogin::start(&stack, &profile)?;
    let agent = serving_agent_pid(&stack)?;
    login.confirm("alice", true)?;
    let refused = Instant::now();
    let (status, output) = login.finish()?;
    let took = refused.elapsed();
    assert_eq!(status.code(), Some(1), "output: {output}");
    assert!(
        took < REFUSAL_LIMIT,
        "the login ended {took:?} after the refusal"
    );
    assert!(output.contains(refusal), "output: {output}");
    assert!(output.contains("access_denied"), "output: {output}");
    assert!(
        output.contains(&format!("run `tollgate-agent login --profile {profile}`")),
        "output: {output}"
    );

    // The agent neither polls the refused code again nor starts a new
    // device login on its own.
    let polls = only_device_polls(&stack)?;
    assert_eq!(
        polls.last().map(|poll| poll.outcome.as_str()),
        Some("access_denied"),
        "{polls:?}"
    );
    thread::sleep(Duration::from_secs(3));
    assert_eq!(only_device_polls(&stack)?.len(), polls.len());
    assert_eq!(stack.oidc().stats()?.device_authorization_requests, 1);
    assert_eq!(serving_agent_pid(&stack)?, agent, "the agent stayed up");

    // A credential request that needs the login fails the same way.
    let shim = DeviceLogin::start_shim(&stack, &profile)?;
    shim.confirm("alice", true)?;
    let (status, stderr) = shim.finish()?;
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains(refusal), "stderr: {stderr}");
    assert_eq!(stack.oidc().stats()?.device_authorization_requests, 2);
    assert_eq!(serving_agent_pid(&stack)?, agent, "the agent stayed up");
    assert!(stack.sts().exchanges().is_empty());
    Ok(())
}

#[test]
fn joining_callers_see_pending_code() -> Result<()> {
    let stack = Stack::builder()
        .device_flow(DeviceFlowOptions {
            interval: Some(1),
            ..DeviceFlowOptions::default()
        })
        .profile(
            ProfileSpec::new("bedrock")
                .set("login", "device-code")
                .login_timeout_seconds(300),
        )
        .start()?;
    let profile = stack.profile("bedrock").to_owned();

    // The first caller gives up after showing the code; the login goes on,
    // because the person may still be typing that code.
    let first = stack.shim_with_args("bedrock", &["--timeout", "3"])?;
    assert_eq!(first.status.code(), Some(4), "stderr: {}", first.stderr);
    let (_, first_code) = first
        .stderr
        .lines()
        .find_map(instructions)
        .with_context(|| format!("no device code instructions: {}", first.stderr))?;

    // Later callers join that login and see its code at once.
    let shim = DeviceLogin::start_shim(&stack, &profile)?;
    assert_eq!(shim.user_code, first_code, "the joining shim's code");
    let login = DeviceLogin::start(&stack, &profile)?;
    assert_eq!(login.user_code, first_code, "the joining login's code");

    shim.confirm("alice", false)?;
    let (status, stderr) = shim.finish()?;
    assert!(status.success(), "the joining shim failed: {stderr}");
    let (status, output) = login.finish()?;
    assert!(status.success(), "the joining login failed: {output}");

    // The abandoned first caller starts no login of its own later.
    thread::sleep(Duration::from_secs(3));
    assert_eq!(stack.oidc().stats()?.device_authorization_requests, 1);
    assert_eq!(stack.sts_assume_role_calls(), 1, "STS calls");
    Ok(())
}
