//! The `tollgate-agent` command line: starting the agent on demand, the
//! default profile, `status --json`, and a second `run`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const CONFIG: &str = r#"
[profiles.bedrock]
issuer = "http://127.0.0.1:9"
client_id = "tollgate-cli"
role_arn = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
region = "us-east-1"
"#;

/// A private folder with a config file, and the agent the commands start.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.toml"), CONFIG).unwrap();
        Self { dir }
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn run(&self, args: &[&str]) -> Output {
        let home = self.dir.path().join("home");
        Command::new(env!("CARGO_BIN_EXE_tollgate-agent"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join("state"))
            .env("TOLLGATE_RUNTIME_DIR", self.runtime())
            .env("TOLLGATE_CONFIG", self.dir.path().join("agent.toml"))
            .env("TOLLGATE_SECRET_STORE", "memory")
            .output()
            .unwrap()
    }

    fn agent_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.runtime().join("agent.lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Setup {
    /// Stops the agent that a command started, by the PID in its lock file.
    fn drop(&mut self) {
        let Some(pid) = self.agent_pid().and_then(rustix::process::Pid::from_raw) else {
            return;
        };
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && socket_exists(&self.runtime()) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn socket_exists(runtime: &Path) -> bool {
    runtime.join("agent.sock").exists()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn status_starts_agent() {
    let setup = Setup::new();
    let output = setup.run(&["status", "--json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("starting one"),
        "{}",
        text(&output.stderr)
    );
    let profiles: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(profiles[0]["profile"], "bedrock");
    assert!(profiles[0]["identity"].is_null());
    assert_eq!(profiles[0]["secret_store"], "memory");

    // The agent keeps running for the next command.
    let again = setup.run(&["status"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        !text(&again.stderr).contains("starting one"),
        "{}",
        text(&again.stderr)
    );
    assert!(
        text(&again.stdout).contains("not logged in; run `tollgate-agent login"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn logout_uses_only_profile() {
    let setup = Setup::new();
    let output = setup.run(&["logout"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("Profile `bedrock` was not logged in"),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn unknown_profile_names_configured() {
    let setup = Setup::new();
    let output = setup.run(&["status", "--profile", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("profile `nope` is not in"), "{stderr}");
    assert!(stderr.contains("configured profiles: bedrock"), "{stderr}");
}

#[test]
fn second_run_exits_cleanly() {
    let setup = Setup::new();
    let first = setup.run(&["run"]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    assert!(
        text(&first.stderr).contains("started (pid"),
        "{}",
        text(&first.stderr)
    );
    let pid = setup.agent_pid().expect("the agent wrote its pid");

    let second = setup.run(&["run", "--foreground"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("another agent is already running"),
        "{}",
        text(&second.stderr)
    );
    assert_eq!(
        setup.agent_pid(),
        Some(pid),
        "the first agent keeps the socket"
    );
}

#[test]
fn open_runtime_folder_rejected() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    std::fs::create_dir(setup.runtime()).unwrap();
    std::fs::set_permissions(setup.runtime(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let output = setup.run(&["run", "--foreground"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("chmod 700 {}", setup.runtime().display())),
        "{stderr}"
    );
}
