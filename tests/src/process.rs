//! Child processes that the harness starts, each stopped by its PID when
//! its guard is dropped, and polling helpers that wait for readiness
//! instead of sleeping a fixed time.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::process::{Pid, Signal};

/// How long [`Service::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How often [`wait_for`] probes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// A running child process whose stdout and stderr go to a log file.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Option<Child>,
    log_path: PathBuf,
}

impl Service {
    /// Starts `command` with its output appended to `<log_dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Result<Self> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = open_log(&log_path)?;
        let log_err = log
            .try_clone()
            .with_context(|| format!("failed to duplicate {}", log_path.display()))?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = command
            .spawn()
            .with_context(|| format!("failed to start {name}: {command:?}"))?;
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            log_path,
        })
    }

    /// Starts `command` and waits until it prints a stdout line that starts
    /// with `prefix`, returning the rest of that line. Every stdout line is
    /// also copied to the log; stderr goes to the log directly.
    pub fn spawn_until_line(
        name: &str,
        mut command: Command,
        log_dir: &Path,
        prefix: &str,
        timeout: Duration,
    ) -> Result<(Self, String)> {
        let log_path = log_dir.join(format!("{name}.log"));
        let log = open_log(&log_path)?;
        let mut stdout_log = log
            .try_clone()
            .with_context(|| format!("failed to duplicate {}", log_path.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = command
            .spawn()
            .with_context(|| format!("failed to start {name}: {command:?}"))?;
        let stdout = child.stdout.take().expect("stdout was configured as piped");

        let (sender, receiver) = mpsc::channel();
        let expected_prefix = prefix.to_owned();
        thread::spawn(move || {
            let mut sender = Some(sender);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(stdout_log, "{line}");
                if let Some(rest) = line.strip_prefix(&expected_prefix)
                    && let Some(sender) = sender.take()
                {
                    let _ = sender.send(rest.to_owned());
                }
            }
        });

        let mut service = Self {
            name: name.to_owned(),
            child: Some(child),
            log_path,
        };
        match receiver.recv_timeout(timeout) {
            Ok(rest) => Ok((service, rest)),
            Err(_) => {
                service.stop();
                bail!(
                    "{name} did not print a line starting with `{prefix}` within \
                     {timeout:?}; its log:\n{}",
                    service.log()
                )
            }
        }
    }

    /// Returns the process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Returns the log file's path.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Returns the log file's content so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Returns whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Fails with the log when the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if !self.is_running() {
            bail!("{} exited early; its log:\n{}", self.name, self.log());
        }
        Ok(())
    }

    /// Sends SIGTERM, waits up to five seconds, then sends SIGKILL. Does
    /// nothing when the process was already stopped.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        if let Some(pid) = Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends SIGKILL and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("failed to open log file {}", path.display()))
}

/// Calls `probe` every 25 ms until it returns `Some`, and fails after
/// `timeout` with a message naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Returns whether the process has ended or is a zombie waiting for its
/// parent.
pub fn pid_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// Stops a process that the harness did not spawn as a child (an agent
/// that a shim started): SIGTERM, up to five seconds, then SIGKILL.
pub fn stop_pid(pid: u32) {
    let Some(raw) = Pid::from_raw(pid as i32) else {
        return;
    };
    if rustix::process::kill_process(raw, Signal::TERM).is_err() {
        return;
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if pid_gone(pid) {
            return;
        }
        thread::sleep(POLL_INTERVAL);
    }
    let _ = rustix::process::kill_process(raw, Signal::KILL);
}

/// Sends SIGKILL to a process that the harness did not spawn as a child.
pub fn kill_pid(pid: u32) -> Result<()> {
    let raw = Pid::from_raw(pid as i32).with_context(|| format!("invalid process id {pid}"))?;
    rustix::process::kill_process(raw, Signal::KILL)
        .with_context(|| format!("failed to send SIGKILL to process {pid}"))?;
    Ok(())
}
