//! Test support: a fake agent that serves the agent socket from a thread,
//! and a runner for the real shim binary with a bounded wait.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

pub const SHIM: &str = env!("CARGO_BIN_EXE_tollgate-credential-process");

/// The maximum time a test waits for the shim before failing.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// How long the fake agent waits for the shim to connect.
const ACCEPT_LIMIT: Duration = Duration::from_secs(20);

pub const CREDENTIALS_LINE: &str = r#"{"type":"credentials","access_key_id":"ASIAFAKEKEY","secret_access_key":"fake/secret+key","session_token":"fake-session-token","expiration":"2026-12-04T18:00:00.750Z"}"#;

pub const CREDENTIALS_JSON: &str = "{\"Version\":1,\"AccessKeyId\":\"ASIAFAKEKEY\",\"SecretAccessKey\":\"fake/secret+key\",\"SessionToken\":\"fake-session-token\",\"Expiration\":\"2026-12-04T18:00:00Z\"}\n";

/// A temporary runtime folder (for the socket) and home folder.
pub struct Sandbox {
    pub dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temporary folder for the test"),
        }
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.runtime_dir().join("agent.sock")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes an executable shell script and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.path(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("writing a test script");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .expect("making a test script executable");
        path
    }

    /// Returns a shim command with a clean environment: the runtime folder set, no
    /// profile, and an agent binary that records that it was started and
    /// fails, so a test that expects no start notices one.
    pub fn shim(&self, args: &[&str]) -> Command {
        fs::create_dir_all(self.runtime_dir()).expect("creating the runtime folder");
        let unexpected_agent = self.script(
            "unexpected-agent",
            &format!(
                "echo started >> {}\nexit 1",
                self.path("unexpected-starts").display()
            ),
        );
        let mut command = Command::new(SHIM);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("TOLLGATE_RUNTIME_DIR", self.runtime_dir())
            .env("TOLLGATE_AGENT_BIN", unexpected_agent);
        command
    }

    /// Returns how often the unexpected agent of [`Sandbox::shim`] was started.
    pub fn unexpected_starts(&self) -> usize {
        fs::read_to_string(self.path("unexpected-starts"))
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }
}

/// What a finished shim run produced.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    pub fn code(&self) -> i32 {
        self.status.code().expect("the shim exited by a signal")
    }
}

/// Runs the shim with stdin held open (so a shim that read stdin would
/// hang) and returns once stdout and stderr are closed. Fails the test when
/// that takes longer than [`RUN_LIMIT`], which also catches a started agent
/// that inherited the output pipes.
pub fn run(mut command: Command) -> Run {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the shim binary");

    let stdin = child.stdin.take();
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");

    let (sender, receiver) = mpsc::channel();
    for (index, mut pipe) in [
        Box::new(stdout) as Box<dyn Read + Send>,
        Box::new(stderr) as Box<dyn Read + Send>,
    ]
    .into_iter()
    .enumerate()
    {
        let sender = sender.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            let _ = sender.send((index, text));
        });
    }

    let mut outputs = [None, None];
    for _ in 0..2 {
        let left = RUN_LIMIT.saturating_sub(started.elapsed());
        match receiver.recv_timeout(left) {
            Ok((index, text)) => outputs[index] = Some(text),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the shim's stdout or stderr stayed open for {RUN_LIMIT:?}");
            }
        }
    }

    let status = child.wait().expect("waiting for the shim");
    let elapsed = started.elapsed();
    drop(stdin);
    let [stdout, stderr] = outputs.map(|text| text.expect("both pipes were read"));
    Run {
        status,
        stdout,
        stderr,
        elapsed,
    }
}

/// One accepted connection of the fake agent.
pub struct Session {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    requests: Vec<Value>,
}

impl Session {
    /// Reads one request line as JSON.
    pub fn read_request(&mut self) -> Value {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("reading the shim's request");
        assert!(
            line.ends_with('\n'),
            "request line without newline: {line:?}"
        );
        let request: Value = serde_json::from_str(&line).expect("the shim's request is JSON");
        self.requests.push(request.clone());
        request
    }

    /// Sends one response line and returns whether the write succeeded. It
    /// fails once the shim has closed the connection.
    pub fn send(&mut self, line: &str) -> bool {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .is_ok()
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes);
    }

    /// Waits until the shim closes the connection, or `limit` passes.
    pub fn wait_for_close(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        self.writer
            .set_read_timeout(Some(limit))
            .expect("setting a read timeout");
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        started.elapsed()
    }
}

/// A fake agent serving one connection on the sandbox socket from a thread.
pub struct FakeAgent {
    thread: Option<JoinHandle<Vec<Value>>>,
}

impl FakeAgent {
    /// Binds the socket and runs `script` for the first connection. The
    /// requests the script read are returned by [`FakeAgent::requests`].
    pub fn serve(sandbox: &Sandbox, script: impl FnOnce(&mut Session) + Send + 'static) -> Self {
        fs::create_dir_all(sandbox.runtime_dir()).expect("creating the runtime folder");
        let listener = UnixListener::bind(sandbox.socket()).expect("binding the fake agent");
        listener
            .set_nonblocking(true)
            .expect("making the listener non-blocking");
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        if started.elapsed() > ACCEPT_LIMIT {
                            return Vec::new();
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(error) => panic!("accept failed: {error}"),
                }
            };
            stream
                .set_nonblocking(false)
                .expect("making the connection blocking");
            let writer = stream.try_clone().expect("cloning the connection");
            let mut session = Session {
                reader: BufReader::new(stream),
                writer,
                requests: Vec::new(),
            };
            script(&mut session);
            session.requests
        });
        Self {
            thread: Some(thread),
        }
    }

    /// Waits for the script to finish and returns the requests it read.
    pub fn requests(mut self) -> Vec<Value> {
        self.thread
            .take()
            .expect("requests is called once")
            .join()
            .expect("the fake agent's script panicked")
    }
}

/// Waits until `path` exists and ends with a newline, and returns its text.
pub fn wait_for_file(path: &Path, limit: Duration) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Ok(text) = fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return Some(text);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
