//! The re-check cadence that long-running SDK clients really get. One boto3
//! session and one JavaScript SDK client call STS in a loop while the user
//! is allowed, then blocked, then unblocked. Each `credential_process` run
//! is recorded with its time and the `Expiration` it returned.
//!
//! The default re-check is 30 minutes and the `Expiration` floor 16, so the
//! tests run on a libfaketime clock 60 times faster than real time. Each
//! test re-runs this binary under `faketime` with the monotonic clock left
//! real, so the harness's timeouts keep real time. Every process it starts
//! shares the fake wall clock: moto_server, the OIDC provider and
//! `tollgate serve` (so STS and ID token lifetimes keep their length), and
//! the SDK client, the shim and the agent, which get a fake monotonic
//! clock too.
//!
//! NOTE: `FAKETIME_SKIP_CMDS` would keep the harness off the fake clock
//! altogether, but with libfaketime 0.9.10 the skipped process's
//! `clock_gettime` then fails in threads and Rust's std panics.
//!
//! The re-run test prints its measurements as `cadence:` lines, which the
//! outer test repeats on stderr. Run with `--no-capture` to see them.

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
        // The harness's timeouts use the monotonic clock, which stays real.
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
    fn wait_for(&mut self, description: &str, wanted: impl Fn(&Call) -> bool) -> Result<Call> {
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
                    "no client call {description} within two real minutes; last calls: {:?}",
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
    /// first rejected call.
    rejection_after_check: f64,
    /// From the first rejected call to the `Expiration` the client held.
    rejection_before_expiration: f64,
    /// From the unblock to the first call that succeeded again.
    recovery_after_unblock: f64,
}

/// The number of shim runs the client makes while allowed. The block comes
/// right after the last of them, so the rejection shows the longest delay.
const ALLOWED_RUNS: usize = 3;

fn run_client(sdk: Sdk, login: &str, recheck_minutes: u32) -> Result<Measured> {
    let stack = Stack::builder().login(login).backend().profile(
        ProfileSpec::new("bedrock")
            .quota()
            .quota_recheck_minutes(recheck_minutes)
            .session_duration_minutes(60),
    );
    // The stack's commands run with a cleared environment, so the fake
    // clock is carried over to them. Their monotonic clock is fake too, so
    // the client's pauses and the agent's timers run fast.
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
    let rejected = client.wait_for("rejected after the block", |call| !call.ok)?;

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
        rejection_after_check: (rejected.t - last_check.t) / MINUTE,
        rejection_before_expiration: (held_expiration - rejected.t) / MINUTE,
        recovery_after_unblock: (again.t - unblocked_at) / MINUTE,
    };
    println!(
        "cadence: {sdk:?}: shim runs while allowed every {gaps} min; runs before \
         Expiration by {leads} min; first rejection {check:.1} min after the last \
         check and {before:.1} min before the held Expiration; working again \
         {unblock:.1} min after the unblock; {count} shim runs, {calls} calls; \
         rejected with: {error}",
        gaps = minutes(&measured.allowed_gaps),
        leads = minutes(&measured.lead_times),
        check = measured.rejection_after_check,
        before = measured.rejection_before_expiration,
        unblock = measured.recovery_after_unblock,
        count = runs.len(),
        error = rejected.error,
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
const MARGIN: f64 = 5.0;

/// Returns the minutes from a quota check to the `Expiration` it reports
/// while the STS credentials last longer: the re-check plus 15, at least 16.
fn expiration_after_check(recheck_minutes: u32) -> f64 {
    (f64::from(recheck_minutes) + 15.0).max(16.0)
}

/// What a client is expected to do, in fake minutes.
struct Expected {
    /// The profile's `quota_recheck_minutes`.
    recheck_minutes: u32,
    /// The second gap between shim runs. With a 30-minute re-check, the
    /// second run's `Expiration` is the STS expiry, 15 minutes after the
    /// first run's, and the third run renews the STS credentials.
    second_gap: f64,
    /// How long before `Expiration` the client runs the shim.
    refresh_lead: f64,
    /// How long before `Expiration` the client's calls fail once the runs
    /// fail.
    rejection_lead: f64,
}

fn assert_between(what: &str, value: f64, low: f64, high: f64, measured: &Measured) {
    assert!(
        (low..=high).contains(&value),
        "{what} is {value:.1} min, expected {low:.1} to {high:.1}: {measured:?}"
    );
}

fn assert_cadence(measured: &Measured, expected: &Expected) {
    assert_eq!(
        measured.allowed_gaps.len(),
        ALLOWED_RUNS - 1,
        "shim runs while allowed: {measured:?}"
    );
    let expiration = expiration_after_check(expected.recheck_minutes);
    let first = expiration - expected.refresh_lead;
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
        expected.second_gap - MARGIN,
        expected.second_gap + MARGIN,
        measured,
    );
    assert_between(
        "the rejection after the last check",
        measured.rejection_after_check,
        0.0,
        expiration - expected.rejection_lead + MARGIN,
        measured,
    );
    assert_between(
        "the rejection before the held Expiration",
        measured.rejection_before_expiration,
        expected.rejection_lead - MARGIN,
        expected.rejection_lead + MARGIN,
        measured,
    );
    assert_between(
        "the recovery after the unblock",
        measured.recovery_after_unblock,
        0.0,
        2.0,
        measured,
    );
}

/// botocore's windows as measured: it runs the shim 15 minutes before
/// `Expiration` (advisory) and keeps its credentials when that run fails,
/// and its calls fail 10 minutes before `Expiration` (mandatory).
const BOTOCORE_REFRESH_LEAD: f64 = 15.0;
const BOTOCORE_REJECTION_LEAD: f64 = 10.0;

/// The JavaScript SDK's window as measured: it runs the shim 5 minutes
/// before `Expiration` and keeps its credentials until `Expiration`.
const JS_SDK_REFRESH_LEAD: f64 = 5.0;
const JS_SDK_REJECTION_LEAD: f64 = 0.0;

#[test]
fn boto3_cadence_default_interval() -> Result<()> {
    on_fake_clock("boto3_cadence_default_interval", || {
        let measured = run_client(Sdk::Botocore, "cara", 30)?;
        assert_cadence(
            &measured,
            &Expected {
                recheck_minutes: 30,
                second_gap: 15.0,
                refresh_lead: BOTOCORE_REFRESH_LEAD,
                rejection_lead: BOTOCORE_REJECTION_LEAD,
            },
        );
        Ok(())
    })
}

#[test]
fn js_sdk_cadence_default_interval() -> Result<()> {
    on_fake_clock("js_sdk_cadence_default_interval", || {
        let measured = run_client(Sdk::JavaScript, "dov", 30)?;
        assert_cadence(
            &measured,
            &Expected {
                recheck_minutes: 30,
                second_gap: 15.0,
                refresh_lead: JS_SDK_REFRESH_LEAD,
                rejection_lead: JS_SDK_REJECTION_LEAD,
            },
        );
        Ok(())
    })
}

/// With a check on every shim run, the 16-minute floor sets the cadence.
#[test]
fn boto3_cadence_zero_interval() -> Result<()> {
    on_fake_clock("boto3_cadence_zero_interval", || {
        let measured = run_client(Sdk::Botocore, "emil", 0)?;
        assert_cadence(
            &measured,
            &Expected {
                recheck_minutes: 0,
                second_gap: 16.0 - BOTOCORE_REFRESH_LEAD,
                refresh_lead: BOTOCORE_REFRESH_LEAD,
                rejection_lead: BOTOCORE_REJECTION_LEAD,
            },
        );
        Ok(())
    })
}

#[test]
fn js_sdk_cadence_zero_interval() -> Result<()> {
    on_fake_clock("js_sdk_cadence_zero_interval", || {
        let measured = run_client(Sdk::JavaScript, "fenna", 0)?;
        assert_cadence(
            &measured,
            &Expected {
                recheck_minutes: 0,
                second_gap: 16.0 - JS_SDK_REFRESH_LEAD,
                refresh_lead: JS_SDK_REFRESH_LEAD,
                rejection_lead: JS_SDK_REJECTION_LEAD,
            },
        );
        Ok(())
    })
}
