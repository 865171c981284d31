//! Runs the real shim binary with no agent listening, so it has to start
//! one. The started "agent" is this test binary run again in fake-agent
//! mode (see [`fake_agent_process`]) through a small shell script that
//! `TOLLGATE_AGENT_BIN` points at.

mod support;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};
use support::{Sandbox, run, wait_for_file};

/// Set (to a report folder) when this binary runs as the fake agent.
const FAKE_AGENT_ENV: &str = "SHIM_TEST_FAKE_AGENT";

/// How long the fake agent process serves before it exits by itself.
const FAKE_AGENT_LIFETIME: Duration = Duration::from_secs(30);

const SPAWNED_JSON: &str = "{\"Version\":1,\"AccessKeyId\":\"ASIASPAWNED\",\"SecretAccessKey\":\"spawned-secret\",\"SessionToken\":\"spawned-token\",\"Expiration\":\"2026-12-04T18:00:00Z\"}\n";

/// The fake agent's entry point. The tests below start this binary with
/// `--exact fake_agent_process` and `SHIM_TEST_FAKE_AGENT` set; in a normal
/// test run the variable is unset and this returns at once.
#[test]
fn fake_agent_process() {
    if let Some(report_dir) = std::env::var_os(FAKE_AGENT_ENV) {
        serve_as_agent(Path::new(&report_dir));
    }
}

/// Records how the process was started, binds the socket (replacing a stale
/// one) and responds to credential requests until its lifetime ends.
fn serve_as_agent(report_dir: &Path) {
    let pid = std::process::id();
    let stat = fs::read_to_string("/proc/self/stat").expect("reading /proc/self/stat");
    // The fields after the parenthesised command name: state, ppid, pgrp, session.
    let after_name = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let streams: Vec<String> = (0..3)
        .map(|fd| {
            fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|target| target.display().to_string())
                .unwrap_or_else(|error| format!("unreadable: {error}"))
        })
        .collect();

    let runtime = std::env::var_os("TOLLGATE_RUNTIME_DIR").expect("the shim passes its env");
    let socket = Path::new(&runtime).join("agent.sock");
    let _ = fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).expect("binding the agent socket");

    let report = json!({
        "pid": pid,
        "pgrp": fields[2].parse::<u32>().unwrap(),
        "session": fields[3].parse::<u32>().unwrap(),
        "streams": streams,
        "args": std::env::var("SHIM_TEST_AGENT_ARGS").unwrap_or_default(),
    });
    fs::write(report_dir.join("report"), format!("{report}\n")).expect("writing the report");

    listener.set_nonblocking(true).unwrap();
    let started = Instant::now();
    while started.elapsed() < FAKE_AGENT_LIFETIME {
        match listener.accept() {
            Ok((stream, _)) => answer_credentials(stream),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

fn answer_credentials(stream: UnixStream) {
    stream.set_nonblocking(false).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() {
        return;
    }
    let _ = writer.write_all(
        b"{\"type\":\"credentials\",\"access_key_id\":\"ASIASPAWNED\",\
          \"secret_access_key\":\"spawned-secret\",\"session_token\":\"spawned-token\",\
          \"expiration\":\"2026-12-04T18:00:00Z\"}\n",
    );
}

/// Ends a process the test started (through the shim), by its PID.
struct KillOnDrop(Option<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(Pid::from_raw) {
            let _ = kill_process(pid, Signal::TERM);
        }
    }
}

/// Returns the PIDs a start script recorded in `starts` (one `PID ARGS`
/// line per start).
fn started_pids(starts: &Path) -> Vec<i32> {
    fs::read_to_string(starts)
        .unwrap_or_default()
        .lines()
        .map(|line| line.split(' ').next().unwrap().parse().unwrap())
        .collect()
}

/// Writes a script that records its start and runs this test binary as
/// the agent, and returns its path and the path of its start record.
fn fake_agent_script(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let starts = sandbox.path("starts");
    let test_binary = std::env::current_exe().unwrap();
    let script = sandbox.script(
        "fake-agent",
        &format!(
            "echo \"$$ $*\" >> '{}'\nSHIM_TEST_AGENT_ARGS=\"$*\" exec '{}' --exact fake_agent_process --test-threads=1",
            starts.display(),
            test_binary.display()
        ),
    );
    (script, starts)
}

fn process_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].chars().next()
}

#[test]
fn absent_agent_is_started_detached() {
    let sandbox = Sandbox::new();
    let (script, starts) = fake_agent_script(&sandbox);
    let shim = || {
        let mut command = sandbox.shim(&["--profile", "bedrock"]);
        command
            .env("TOLLGATE_AGENT_BIN", &script)
            .env(FAKE_AGENT_ENV, sandbox.dir.path());
        command
    };

    let first = run(shim());
    let agent_pid = started_pids(&starts).first().copied();
    let _cleanup = KillOnDrop(agent_pid);

    assert_eq!(first.code(), 0, "stderr: {}", first.stderr);
    assert_eq!(first.stdout, SPAWNED_JSON);
    assert_eq!(first.stderr, "");
    let agent_pid = agent_pid.expect("the start script ran");

    let report: Value = serde_json::from_str(
        &wait_for_file(&sandbox.path("report"), Duration::from_secs(5)).expect("agent report"),
    )
    .unwrap();
    assert_eq!(report["pid"], agent_pid);
    assert_eq!(report["args"], "run");
    assert_eq!(
        report["pgrp"], agent_pid,
        "the agent has its own process group"
    );
    assert_eq!(
        report["streams"],
        json!(["/dev/null", "/dev/null", "/dev/null"])
    );

    // The agent outlives the shim and serves the next call without a new start.
    let state = process_state(agent_pid);
    assert!(
        matches!(state, Some(s) if s != 'Z'),
        "agent state {state:?}"
    );
    let second = run(shim());
    assert_eq!(second.code(), 0, "stderr: {}", second.stderr);
    assert_eq!(second.stdout, SPAWNED_JSON);
    assert_eq!(started_pids(&starts).len(), 1);
}

#[test]
fn stale_socket_starts_agent() {
    let sandbox = Sandbox::new();
    fs::create_dir_all(sandbox.runtime_dir()).unwrap();
    drop(UnixListener::bind(sandbox.socket()).unwrap());
    assert!(
        sandbox.socket().exists(),
        "the stale socket file stays behind"
    );

    let (script, starts) = fake_agent_script(&sandbox);
    let mut command = sandbox.shim(&["--profile", "bedrock"]);
    command
        .env("TOLLGATE_AGENT_BIN", &script)
        .env(FAKE_AGENT_ENV, sandbox.dir.path());
    let result = run(command);
    let _cleanup = KillOnDrop(started_pids(&starts).first().copied());

    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, SPAWNED_JSON);
    assert_eq!(started_pids(&starts).len(), 1);
}

#[test]
fn agent_exiting_early_is_reported() {
    let sandbox = Sandbox::new();
    let script = sandbox.script("failing-agent", "exit 3");
    let mut command = sandbox.shim(&["--profile", "bedrock"]);
    command.env("TOLLGATE_AGENT_BIN", &script);
    let result = run(command);

    assert_eq!(result.code(), 3, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, "");
    let socket = sandbox.socket().display().to_string();
    assert!(
        result.stderr.starts_with(&format!(
            "tollgate: no agent is listening at {socket}: started `"
        )),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("exit status: 3"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("`tollgate-agent run --foreground`"),
        "{}",
        result.stderr
    );
    assert!(
        result.elapsed < Duration::from_secs(4),
        "{:?}",
        result.elapsed
    );
}

#[test]
fn agent_without_socket_gives_up() {
    let sandbox = Sandbox::new();
    let pid_file = sandbox.path("sleeper.pid");
    let script = sandbox.script(
        "sleeping-agent",
        &format!("echo $$ > '{}'\nexec sleep 30", pid_file.display()),
    );
    let mut command = sandbox.shim(&["--profile", "bedrock", "--timeout", "1"]);
    command.env("TOLLGATE_AGENT_BIN", &script);
    let result = run(command);
    let sleeper =
        wait_for_file(&pid_file, Duration::from_secs(2)).and_then(|text| text.trim().parse().ok());
    let _cleanup = KillOnDrop(sleeper);

    assert_eq!(result.code(), 3, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, "");
    assert!(
        result
            .stderr
            .contains(&sandbox.socket().display().to_string()),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("did not open the socket within"),
        "{}",
        result.stderr
    );
    // The start wait is cut to the 2 s hard cap of --timeout 1.
    assert!(
        result.elapsed < Duration::from_millis(3500),
        "{:?}",
        result.elapsed
    );
}

#[test]
fn no_agent_binary_names_fix() {
    let sandbox = Sandbox::new();
    // A copy of the shim with no tollgate-agent beside it and an empty PATH.
    let lonely = sandbox.path("lonely-shim");
    fs::copy(support::SHIM, &lonely).unwrap();
    let empty_path = sandbox.path("empty-bin");
    fs::create_dir_all(&empty_path).unwrap();
    fs::create_dir_all(sandbox.runtime_dir()).unwrap();
    let mut command = std::process::Command::new(&lonely);
    command
        .args(["--profile", "bedrock"])
        .env_clear()
        .env("PATH", &empty_path)
        .env("HOME", sandbox.dir.path())
        .env("TOLLGATE_RUNTIME_DIR", sandbox.runtime_dir());
    let result = run(command);

    assert_eq!(result.code(), 3, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, "");
    let socket = sandbox.socket().display().to_string();
    assert!(
        result.stderr.starts_with(&format!(
            "tollgate: no agent is listening at {socket} and none could be started\n"
        )),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("tollgate-agent was not found"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("TOLLGATE_AGENT_BIN"),
        "{}",
        result.stderr
    );
}
