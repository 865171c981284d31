//! The re-check cadence long-running SDK clients really get: one boto3
//! session and one JavaScript SDK client call STS in a loop while the user
//! is allowed, then blocked, then unblocked, and each `credential_process`
//! run is recorded with its time and the `Expiration` it returned.
//!
//! The default re-check is 30 minutes and the `Expiration` floor 16, so the
//! tests run on a libfaketime clock 60 times faster than real time. Each
//! test re-runs this binary under `faketime`, skipping the test binary
//! itself: the harness keeps real time for its own timeouts, while every
//! process it starts (moto_server, the OIDC provider, `tollgate serve`, the
//! SDK client, the shim and the agent the shim starts) shares one fake
//! clock. All servers share it too, so STS and ID token lifetimes keep
//! their length on that clock.
//!
//! The re-run test prints its measurements as `cadence:` lines, which the
//! outer test repeats on stderr; run with `--no-capture` to see them.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tollgate_tests::locate::{SHIM, binary, support_dir, venv_program};
use tollgate_tests::{ProfileSpec, Stack};

/// How much faster than real time the fake clock runs.
const SPEED: u32 = 60;

/// Set in the re-run test binary, which runs under `faketime`.
const INNER_ENV: &str = "TOLLGATE_CADENCE_FAKETIME";

/// libfaketime leaves the monotonic clock alone when this is `1`.
const KEEP_MONOTONIC_ENV: &str = "FAKETIME_DONT_FAKE_MONOTONIC";

/// Fake seconds a client pauses between two calls.
const PAUSE_SECONDS: u32 = 15;

/// Real time one re-run test may take before it counts as hung.
const INNER_TIMEOUT: Duration = Duration::from_secs(170);

const MINUTE: f64 = 60.0;

/// Runs `test` on the fake clock: outside, starts this test binary again
/// under `faketime` with only `name` selected and returns its result.
fn on_fake_clock(name: &str, test: impl FnOnce() -> Result<()>) -> Result<()> {
    if std::env::var(INNER_ENV).as_deref() == Ok("1") {
        return test();
    }
    let exe = std::env::current_exe().context("failed to find the test binary")?;
    let mut command = Command::new("faketime");
    command
        .args(["-f", &format!("+0 x{SPEED}")])
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(INNER_ENV, "1")
        // The harness's timeouts (monotonic) keep real time; the SDK
        // client, the shim and the agent get a fully fake clock below.
        .env(KEEP_MONOTONIC_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().context(
        "failed to run faketime; install the Debian packages faketime and libfaketime \
         (scripts/install-deps.sh does)",
    )?;
    let output = wait_with_timeout(child, INNER_TIMEOUT)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stdout.contains("1 passed") {
        bail!(
            "{name} failed on the fake clock ({}):\nstdout: {stdout}\nstderr: {stderr}",
            output.status
        );
    }
    // The measurements, for the record in docs/agent.md.
    // libtest may print the test's name on the same line first.
    for line in stdout.lines() {
        if let Some(start) = line.find("cadence:") {
            report(&line[start..]);
        }
    }
    Ok(())
}

fn report(line: &str) {
    eprintln!("{line}");
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> Result<std::process::Output> {
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout was configured as piped");
    let stderr = child.stderr.take().expect("stderr was configured as piped");
    let read_all = |mut stream: Box<dyn std::io::Read + Send>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(stdout));
    let stderr = read_all(Box::new(stderr));
    thread::spawn(move || {
        let _ = sender.send(child.wait());
    });
    let status = match receiver.recv_timeout(timeout) {
        Ok(status) => status.context("failed to wait for the re-run test binary")?,
        Err(_) => {
            tollgate_tests::process::stop_pid(pid);
            bail!("the re-run test binary (pid {pid}) ran longer than {timeout:?} and was stopped");
        }
    };
    Ok(std::process::Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// The SDK a long-running client uses.
#[derive(Debug, Clone, Copy)]
enum Sdk {
    Botocore,
    JavaScript,
}

impl Sdk {
    fn command(self, stack: &Stack, stop: &Path) -> Result<Command> {
        let mut command = match self {
            Self::Botocore => {
                let mut command = stack.command(venv_program("python")?);
                command.arg(support_dir().join("cadence_client.py"));
                command
            }
            Self::JavaScript => {
                let mut command = stack.command("node");
                command.arg(support_dir().join("js/cadence-client.mjs"));
                command
            }
        };
        command
            .arg(stop)
            .arg(PAUSE_SECONDS.to_string())
            .env("AWS_PROFILE", stack.profile("bedrock"));
        Ok(command)
    }
}

/// One call of the client, on the fake clock.
#[derive(Debug, Clone)]
struct Call {
    t: f64,
    ok: bool,
    arn: String,
    error: String,
}

/// One `credential_process` run, on the fake clock.
#[derive(Debug, Clone)]
struct ShimRun {
    t: f64,
    ok: bool,
    expiration: Option<f64>,
}

/// A running client whose calls arrive on a channel.
struct Client {
    child: Child,
    calls: Receiver<Call>,
    seen: Vec<Call>,
    stop: PathBuf,
}

impl Client {
    fn start(stack: &Stack, sdk: Sdk) -> Result<Self> {
        let stop = stack.dir().join("client-stop");
        let stderr_path = stack.dir().join("logs/cadence-client.stderr.log");
        let stderr = fs::File::create(&stderr_path)
            .with_context(|| format!("failed to create {}", stderr_path.display()))?;
        let mut command = sdk.command(stack, &stop)?;
        command.stdout(Stdio::piped()).stderr(stderr);
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start the {sdk:?} client: {command:?}"))?;
        let stdout = child.stdout.take().expect("stdout was configured as piped");
        let (sender, calls) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(value) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let call = Call {
                    t: value["t"].as_f64().unwrap_or_default(),
                    ok: value["ok"].as_bool().unwrap_or_default(),
                    arn: value["arn"].as_str().unwrap_or_default().to_owned(),
                    error: value["error"].as_str().unwrap_or_default().to_owned(),
                };
                if sender.send(call).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            calls,
            seen: Vec::new(),
            stop,
        })
    }

    /// Waits (in real time) for the first call that satisfies `wanted`.
    fn wait_for(&mut self, what: &str, wanted: impl Fn(&Call) -> bool) -> Result<Call> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.calls.recv_timeout(left) {
                Ok(call) => {
                    self.seen.push(call.clone());
                    if wanted(&call) {
                        return Ok(call);
                    }
                }
                Err(_) => bail!(
                    "no client call {what} within two real minutes; last calls: {:?}",
                    self.seen.iter().rev().take(3).collect::<Vec<_>>()
                ),
            }
        }
    }

    fn stop(mut self) -> Result<()> {
        fs::write(&self.stop, "")
            .with_context(|| format!("failed to create {}", self.stop.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
        tollgate_tests::process::stop_pid(self.child.id());
        bail!("the client did not stop within 20 seconds after the stop file appeared")
    }
}

/// Returns the fake clock's time, read by `date` in the stack's
/// environment.
fn fake_now(stack: &Stack) -> Result<f64> {
    let mut command = stack.command("date");
    command.arg("+%s.%N");
    let output = stack.run(command, "date")?;
    output.ensure_success("date")?;
    output
        .stdout
        .trim()
        .parse()
        .with_context(|| format!("date printed {:?}, not epoch seconds", output.stdout))
}

fn shim_runs(log: &Path) -> Result<Vec<ShimRun>> {
    let text =
        fs::read_to_string(log).with_context(|| format!("failed to read {}", log.display()))?;
    let mut runs = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [t, status, expiration] = fields[..] else {
            bail!("malformed line in {}: {line:?}", log.display());
        };
        let expiration = match expiration {
            "-" => None,
            text => Some(
                chrono::DateTime::parse_from_rfc3339(text)
                    .with_context(|| format!("invalid Expiration {text:?} in {}", log.display()))?
                    .timestamp() as f64,
            ),
        };
        runs.push(ShimRun {
            t: t.parse()
                .with_context(|| format!("invalid time in {}: {line:?}", log.display()))?,
            ok: status == "0",
            expiration,
        });
    }
    Ok(runs)
}

/// Writes `~/.aws/config` again with `cadence-shim` recording each run of
/// the shim to `log`.
fn record_shim_runs(stack: &Stack, log: &Path) -> Result<()> {
    let config = PathBuf::from(
        stack
            .env_var("AWS_CONFIG_FILE")
            .context("the stack sets AWS_CONFIG_FILE")?,
    );
    let profile = stack.profile("bedrock");
    let text = format!(
        "[profile {profile}]\ncredential_process = {recorder} {log} {shim} --profile {profile}\n\
         region = us-east-1\n",
        recorder = support_dir().join("cadence-shim").display(),
        log = log.display(),
        shim = binary(SHIM)?.display(),
    );
    fs::write(&config, text).with_context(|| format!("failed to write {}", config.display()))
}

/// What one run of a client showed, in fake minutes.
#[derive(Debug)]
struct Measured {
    /// Gaps between successive shim runs while the user was allowed.
    allowed_gaps: Vec<f64>,
    /// How long before the `Expiration` it held the client ran the shim.
    lead_times: Vec<f64>,
    /// From the last shim run before the block (a quota check) to the
    /// first refused call.
    refusal_after_check: f64,
    /// From the first refused call to the `Expiration` the client held.
    refusal_before_expiration: f64,
    /// From the unblock to the first call that succeeded again.
    recovery_after_unblock: f64,
}

/// Shim runs the client makes while allowed; the block comes right after
/// the last of them, so the refusal shows the longest delay.
const ALLOWED_RUNS: usize = 3;

fn run_client(sdk: Sdk, login: &str) -> Result<Measured> {
    let stack = Stack::builder().login(login).backend().profile(
        ProfileSpec::new("bedrock")
            .quota()
            .quota_recheck_minutes(30)
            .session_duration_minutes(60),
    );
    // The stack's commands run with a cleared environment; carry the fake
    // clock over to them, monotonic clock included, so that the client's
    // pauses and the agent's timers run fast too.
    let stack = std::env::vars()
        .filter(|(name, _)| name.starts_with("FAKETIME") || name == "LD_PRELOAD")
        .fold(stack, |stack, (name, value)| stack.env(&name, &value))
        .env(KEEP_MONOTONIC_ENV, "0")
        .start()?;
    let email = format!("{login}@example.com");
    let backend = stack.backend();
    backend.admin_ok(&[
        "quota",
        "set-user",
        &email,
        "--monthly-limit",
        "1M",
        "--enforcement",
        "block",
    ])?;
    let log = stack.dir().join("shim-runs.log");
    record_shim_runs(&stack, &log)?;

    let mut client = Client::start(&stack, sdk)?;
    client.wait_for("after the allowed shim runs", |_| {
        shim_runs(&log).is_ok_and(|runs| runs.len() >= ALLOWED_RUNS)
    })?;
    backend.admin_ok(&["usage", "record", &email, "--tokens", "2M"])?;
    let blocked_at = fake_now(&stack)?;
    assert!(
        client.seen.iter().all(|call| call.ok),
        "a call failed while the user was allowed: {:?}",
        client.seen.iter().find(|call| !call.ok)
    );
    let refused = client.wait_for("refused after the block", |call| !call.ok)?;

    backend.admin_ok(&[
        "quota",
        "unblock",
        &email,
        "--duration",
        "24h",
        "--reason",
        "cadence test",
    ])?;
    let unblocked_at = fake_now(&stack)?;
    let again = client.wait_for("succeeding after the unblock", |call| {
        call.ok && call.t >= unblocked_at
    })?;
    let calls = client.seen.len();
    client.stop()?;

    let runs = shim_runs(&log)?;
    let allowed: Vec<&ShimRun> = runs.iter().filter(|run| run.t < blocked_at).collect();
    assert!(
        allowed.iter().all(|run| run.ok),
        "a shim run failed while allowed: {runs:?}"
    );
    let last_check = allowed.last().context("no shim run before the block")?;
    let held_expiration = last_check
        .expiration
        .context("the last shim run before the block printed no Expiration")?;
    // Each run's lead: the Expiration of the last successful run before
    // it, minus the time of this run.
    let mut lead_times = Vec::new();
    let mut expiration = None;
    for run in &runs {
        if let Some(previous) = expiration {
            lead_times.push((previous - run.t) / MINUTE);
        }
        if run.ok {
            expiration = run.expiration;
        }
    }
    let measured = Measured {
        allowed_gaps: allowed
            .windows(2)
            .map(|pair| (pair[1].t - pair[0].t) / MINUTE)
            .collect(),
        lead_times,
        refusal_after_check: (refused.t - last_check.t) / MINUTE,
        refusal_before_expiration: (held_expiration - refused.t) / MINUTE,
        recovery_after_unblock: (again.t - unblocked_at) / MINUTE,
    };
    println!(
        "cadence: {sdk:?}: shim runs while allowed every {gaps} min; runs before \
         Expiration by {leads} min; first refusal {check:.1} min after the last \
         check and {before:.1} min before the held Expiration; working again \
         {unblock:.1} min after the unblock; {count} shim runs, {calls} calls; \
         refused with: {error}",
        gaps = minutes(&measured.allowed_gaps),
        leads = minutes(&measured.lead_times),
        check = measured.refusal_after_check,
        before = measured.refusal_before_expiration,
        unblock = measured.recovery_after_unblock,
        count = runs.len(),
        error = refused.error,
    );
    assert!(
        again.arn.ends_with(&format!("/{email}")),
        "the call after the unblock is the user's role session: {again:?}"
    );
    Ok(measured)
}

fn minutes(values: &[f64]) -> String {
    let parts: Vec<String> = values.iter().map(|value| format!("{value:.1}")).collect();
    format!("[{}]", parts.join(", "))
}

/// Fake minutes of slack in each bound: one real second of delay on a
/// loaded machine is one minute on the fake clock.
const MARGIN: f64 = 3.0;

/// The re-check interval of the tests' profile, in minutes.
const RECHECK: f64 = 30.0;

/// The gap after a run that renewed STS credentials with fewer than 16
/// minutes left: the agent checks again then, and the new credentials'
/// Expiration is that check plus 45 minutes.
const SHORT_GAP: f64 = 15.0;

fn assert_between(what: &str, value: f64, low: f64, high: f64, measured: &Measured) {
    assert!(
        (low..=high).contains(&value),
        "{what} is {value:.1} min, expected {low:.1} to {high:.1}: {measured:?}"
    );
}

fn assert_cadence(measured: &Measured, refresh_lead: f64, refusal_lead: f64) {
    assert_eq!(
        measured.allowed_gaps.len(),
        ALLOWED_RUNS - 1,
        "shim runs while allowed: {measured:?}"
    );
    // The first gap is the client's refresh lead before the Expiration of
    // the first check (re-check plus 15 minutes).
    let first = RECHECK + 15.0 - refresh_lead;
    assert_between(
        "the first gap",
        measured.allowed_gaps[0],
        first - MARGIN,
        first + MARGIN,
        measured,
    );
    assert_between(
        "the second gap",
        measured.allowed_gaps[1],
        SHORT_GAP - MARGIN,
        SHORT_GAP + MARGIN,
        measured,
    );
    let refusal = RECHECK + 15.0 - refusal_lead;
    assert_between(
        "refusal after the last check",
        measured.refusal_after_check,
        0.0,
        refusal + MARGIN,
        measured,
    );
    assert_between(
        "refusal before the held Expiration",
        measured.refusal_before_expiration,
        refusal_lead - MARGIN,
        refusal_lead + MARGIN,
        measured,
    );
    assert_between(
        "recovery after the unblock",
        measured.recovery_after_unblock,
        0.0,
        2.0,
        measured,
    );
}

/// botocore runs the shim 15 minutes before `Expiration` (its advisory
/// window) but keeps its credentials when that run fails, and gives up
/// only 10 minutes before `Expiration` (its mandatory window).
#[test]
fn boto3_client_refused_within_cadence() -> Result<()> {
    on_fake_clock("boto3_client_refused_within_cadence", || {
        let measured = run_client(Sdk::Botocore, "cara")?;
        assert_cadence(&measured, 15.0, 10.0);
        Ok(())
    })
}

/// The JavaScript SDK runs the shim 5 minutes before `Expiration` and on
/// every call after that, and keeps its credentials until `Expiration`
/// when the runs fail.
#[test]
fn js_sdk_client_refused_within_cadence() -> Result<()> {
    on_fake_clock("js_sdk_client_refused_within_cadence", || {
        let measured = run_client(Sdk::JavaScript, "dov")?;
        assert_cadence(&measured, 5.0, 0.0);
        Ok(())
    })
}
