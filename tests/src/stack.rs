//! [`Stack`]: the real components of one end-to-end test, a throwaway HOME
//! with the agent configuration and `~/.aws/config`, and the environment
//! to run the shim, the AWS CLI and boto3 with.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tempfile::TempDir;
use tollgate_protocol::agent::{Request, RequestBody, Response};
use tollgate_protocol::paths;

use crate::backend::{Backend, BackendOptions};
use crate::locate::{AGENT, SHIM, binary, free_port, support_dir, venv_bin_dir, venv_program};
use crate::moto::Moto;
use crate::oidc::{CLIENT_ID, DeviceFlowOptions, OidcOptions, OidcProvider};
use crate::process::{self, Service, wait_for};
use crate::proxy::CountingProxy;

/// The role every profile assumes. moto accepts any role ARN.
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock";

/// The AWS region of every profile.
pub const REGION: &str = "us-east-1";

/// The environment variable that keeps each stack's folder (logs, HOME,
/// configuration) after the test when set to `1`, for debugging.
pub const KEEP_ENV: &str = "TOLLGATE_TEST_KEEP";

/// How long an agent that the harness starts may take to accept a
/// connection on its socket.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// Numbers profiles within this test process, so that profile names (and
/// the keyring entries the agent keys by them) differ between stacks.
static PROFILE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// One profile of the agent configuration.
#[derive(Debug, Clone)]
pub struct ProfileSpec {
    base: String,
    quota: bool,
    fail_mode: Option<String>,
    quota_recheck_minutes: Option<u32>,
    session_duration_minutes: u32,
    login_timeout_seconds: Option<u64>,
    count_shim_spawns: bool,
    extra: toml::Table,
}

impl ProfileSpec {
    /// A profile called `base` (plus a unique suffix on disk) with 60-minute
    /// credentials and no quota check.
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            quota: false,
            fail_mode: None,
            quota_recheck_minutes: None,
            session_duration_minutes: 60,
            login_timeout_seconds: None,
            count_shim_spawns: false,
            extra: toml::Table::new(),
        }
    }

    /// Points `quota_url` at the stack's backend.
    pub fn quota(mut self) -> Self {
        self.quota = true;
        self
    }

    /// Sets `fail_mode` (`open` or `closed`).
    pub fn fail_mode(mut self, mode: &str) -> Self {
        self.fail_mode = Some(mode.to_owned());
        self
    }

    /// Sets `quota_recheck_minutes`.
    pub fn quota_recheck_minutes(mut self, minutes: u32) -> Self {
        self.quota_recheck_minutes = Some(minutes);
        self
    }

    /// Sets `session_duration_minutes`.
    pub fn session_duration_minutes(mut self, minutes: u32) -> Self {
        self.session_duration_minutes = minutes;
        self
    }

    /// Sets `login_timeout_seconds`.
    pub fn login_timeout_seconds(mut self, seconds: u64) -> Self {
        self.login_timeout_seconds = Some(seconds);
        self
    }

    /// Makes `credential_process` a wrapper script that records each run
    /// before it executes the shim; see [`Stack::shim_spawns`].
    pub fn count_shim_spawns(mut self) -> Self {
        self.count_shim_spawns = true;
        self
    }

    /// Sets any other key of the profile's table verbatim.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
}

/// Builds a [`Stack`].
#[derive(Debug, Clone)]
pub struct StackBuilder {
    profiles: Vec<ProfileSpec>,
    backend: bool,
    backend_args: Vec<String>,
    login: String,
    oidc: OidcOptions,
    extra_env: Vec<(String, String)>,
}

/// What a profile became on disk.
#[derive(Debug, Clone)]
struct ProfileEntry {
    name: String,
    redirect_port: u16,
    spawn_log: Option<PathBuf>,
}

/// The output of a command run in the stack's environment.
#[derive(Debug, Clone)]
pub struct RunOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    /// Returns whether the command exited 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Returns stdout parsed as JSON.
    pub fn json(&self) -> Result<Value> {
        serde_json::from_str(&self.stdout).with_context(|| {
            format!(
                "stdout is not JSON ({}):\nstdout: {}\nstderr: {}",
                self.status, self.stdout, self.stderr
            )
        })
    }

    /// Fails with both streams unless the command exited 0.
    pub fn ensure_success(&self, what: &str) -> Result<&Self> {
        if !self.success() {
            bail!(
                "{what} failed ({}):\nstdout: {}\nstderr: {}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(self)
    }
}

/// The running components of one test and the HOME they share.
///
/// Dropping it stops every agent started with this HOME, then the backend,
/// the proxy, moto_server and the OIDC provider, then deletes the folder.
#[derive(Debug)]
pub struct Stack {
    profiles: BTreeMap<String, ProfileEntry>,
    env: Vec<(String, String)>,
    home: PathBuf,
    runtime_dir: PathBuf,
    config_path: PathBuf,
    config: toml::Table,
    agent: Option<Service>,
    backend: Option<Backend>,
    sts: CountingProxy,
    moto: Moto,
    oidc: OidcProvider,
    // Dropped last, after every process that writes into it has stopped.
    dir: TempDir,
}

impl Default for StackBuilder {
    fn default() -> Self {
        Self {
            profiles: Vec::new(),
            backend: false,
            backend_args: Vec::new(),
            login: "alice".to_owned(),
            oidc: OidcOptions::default(),
            extra_env: Vec::new(),
        }
    }
}

impl StackBuilder {
    /// Adds a profile.
    pub fn profile(mut self, profile: ProfileSpec) -> Self {
        self.profiles.push(profile);
        self
    }

    /// Starts `tollgate serve` against the stack's OIDC provider.
    pub fn backend(mut self) -> Self {
        self.backend = true;
        self
    }

    /// Adds arguments to `tollgate serve`.
    pub fn backend_args(mut self, args: &[&str]) -> Self {
        self.backend_args
            .extend(args.iter().map(|arg| (*arg).to_owned()));
        self
    }

    /// Sets the login name the scripted browser signs in with.
    pub fn login(mut self, login: &str) -> Self {
        self.login = login.to_owned();
        self
    }

    /// Sets the `groups` claim of a login.
    pub fn groups(mut self, login: &str, groups: &[&str]) -> Self {
        self.oidc.groups.insert(
            login.to_owned(),
            groups.iter().map(|group| (*group).to_owned()).collect(),
        );
        self
    }

    /// Sets the provider's ID token lifetime in seconds.
    pub fn id_token_ttl(mut self, seconds: u64) -> Self {
        self.oidc.id_token_ttl = Some(seconds);
        self
    }

    /// Sets the provider's device authorization grant settings.
    pub fn device_flow(mut self, options: DeviceFlowOptions) -> Self {
        self.oidc.device_flow = options;
        self
    }

    /// Sets (or replaces) a variable of the stack's environment, for
    /// example `DISPLAY` and `DBUS_SESSION_BUS_ADDRESS` of a private
    /// desktop session.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.extra_env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Starts the components and writes the HOME.
    pub fn start(self) -> Result<Stack> {
        Stack::start(self)
    }
}

impl Stack {
    /// Returns a builder with no profiles and no backend.
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    fn start(builder: StackBuilder) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tollgate-e2e-")
            .tempdir()
            .context("failed to create the stack's temporary folder")?;
        let logs = dir.path().join("logs");
        let home = dir.path().join("home");
        let runtime_parent = dir.path().join("run");
        for folder in [&logs, &home, &runtime_parent] {
            fs::create_dir_all(folder)
                .with_context(|| format!("failed to create {}", folder.display()))?;
        }
        fs::set_permissions(&runtime_parent, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("failed to restrict {}", runtime_parent.display()))?;
        let runtime_dir = runtime_parent.join("tollgate");

        let mut profiles = BTreeMap::new();
        for spec in &builder.profiles {
            let number = PROFILE_COUNTER.fetch_add(1, Ordering::SeqCst);
            let name = format!("{}-{:x}{number}", spec.base, std::process::id());
            let spawn_log = spec
                .count_shim_spawns
                .then(|| dir.path().join(format!("shim-spawns-{name}.log")));
            profiles.insert(
                spec.base.clone(),
                ProfileEntry {
                    name,
                    redirect_port: free_port()?,
                    spawn_log,
                },
            );
        }

        let mut oidc_options = builder.oidc.clone();
        oidc_options.redirect_ports = profiles.values().map(|entry| entry.redirect_port).collect();
        let oidc = OidcProvider::start(&logs, &oidc_options)?;
        let moto = Moto::start(&logs)?;
        let sts = CountingProxy::start(moto.url())?;
        let backend = if builder.backend {
            let backend_dir = dir.path().join("backend");
            fs::create_dir_all(&backend_dir)
                .with_context(|| format!("failed to create {}", backend_dir.display()))?;
            Some(Backend::start(
                &backend_dir,
                BackendOptions {
                    issuer: oidc.issuer().to_owned(),
                    audience: CLIENT_ID.to_owned(),
                    extra_args: builder.backend_args.clone(),
                },
            )?)
        } else {
            None
        };

        let config_path = home.join(".config/tollgate/agent.toml");
        let config = agent_config(
            &builder.profiles,
            &profiles,
            oidc.issuer(),
            sts.url(),
            backend.as_ref().map(Backend::url),
        );
        write_file(&config_path, &toml::to_string(&config)?)?;

        let shim = binary(SHIM)?;
        let aws_config = home.join(".aws/config");
        write_file(&aws_config, &aws_config_text(dir.path(), &shim, &profiles)?)?;
        let aws_credentials = home.join(".aws/credentials");
        write_file(&aws_credentials, "")?;

        let env = stack_env(StackPaths {
            dir: dir.path(),
            home: &home,
            runtime_dir: &runtime_dir,
            config_path: &config_path,
            aws_config: &aws_config,
            aws_credentials: &aws_credentials,
            sts_url: sts.url(),
            login: &builder.login,
        })?;
        let mut env = env;
        for (name, value) in &builder.extra_env {
            env.retain(|(key, _)| key != name);
            env.push((name.clone(), value.clone()));
        }

        Ok(Self {
            profiles,
            env,
            home,
            runtime_dir,
            config_path,
            config,
            agent: None,
            backend,
            sts,
            moto,
            oidc,
            dir,
        })
    }

    /// Returns the profile's name on disk for the base name given to
    /// [`ProfileSpec::new`].
    pub fn profile(&self, base: &str) -> &str {
        &self.entry(base).name
    }

    fn entry(&self, base: &str) -> &ProfileEntry {
        self.profiles
            .get(base)
            .unwrap_or_else(|| panic!("the stack has no profile {base:?}"))
    }

    /// Returns the profile's callback port.
    pub fn redirect_port(&self, base: &str) -> u16 {
        self.entry(base).redirect_port
    }

    /// Returns the environment every command of the stack runs with.
    pub fn env(&self) -> &[(String, String)] {
        &self.env
    }

    /// Returns the value of one variable of [`Stack::env`].
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Returns the stack's temporary folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the throwaway HOME.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Returns the agent's runtime folder (it may not exist yet).
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// Returns the agent's socket path.
    pub fn socket_path(&self) -> PathBuf {
        paths::socket_path(&self.runtime_dir)
    }

    /// Returns the agent configuration file's path.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Returns the OIDC provider.
    pub fn oidc(&self) -> &OidcProvider {
        &self.oidc
    }

    /// Returns moto_server.
    pub fn moto(&self) -> &Moto {
        &self.moto
    }

    /// Returns the proxy in front of moto_server that every STS call of
    /// the agent and the AWS tools goes through.
    pub fn sts(&self) -> &CountingProxy {
        &self.sts
    }

    /// Returns the number of `AssumeRoleWithWebIdentity` calls so far.
    pub fn sts_assume_role_calls(&self) -> usize {
        self.sts.count_action("AssumeRoleWithWebIdentity")
    }

    /// Returns the backend.
    pub fn backend(&self) -> &Backend {
        self.backend
            .as_ref()
            .expect("the stack was built without a backend")
    }

    /// Returns the backend for stopping and restarting it.
    pub fn backend_mut(&mut self) -> &mut Backend {
        self.backend
            .as_mut()
            .expect("the stack was built without a backend")
    }

    /// Changes keys of a profile's table and rewrites the configuration.
    pub fn update_profile(
        &mut self,
        base: &str,
        change: impl FnOnce(&mut toml::Table),
    ) -> Result<()> {
        let name = self.profile(base).to_owned();
        let table = self
            .config
            .get_mut("profiles")
            .and_then(|profiles| profiles.get_mut(&name))
            .and_then(toml::Value::as_table_mut)
            .expect("every profile has a table in the configuration");
        change(table);
        write_file(&self.config_path, &toml::to_string(&self.config)?)
    }

    /// Writes `text` as the agent configuration, for tests of invalid files.
    pub fn write_config_text(&self, text: &str) -> Result<()> {
        write_file(&self.config_path, text)
    }

    /// Sets what the scripted browser does with the next login URLs:
    /// `login`, `ignore` (records the URL only) or `deny`.
    pub fn set_browser_mode(&self, mode: &str) -> Result<()> {
        self.write_browser_control("mode", mode)
    }

    /// Sets the login name the scripted browser signs in with next.
    pub fn set_browser_login(&self, login: &str) -> Result<()> {
        self.write_browser_control("login", login)
    }

    fn write_browser_control(&self, key: &str, value: &str) -> Result<()> {
        let path = self.dir.path().join("browser-control");
        let existing = fs::read_to_string(&path).unwrap_or_default();
        let mut lines: Vec<String> = existing
            .lines()
            .filter(|line| !line.starts_with(&format!("{key}=")))
            .map(str::to_owned)
            .collect();
        lines.push(format!("{key}={value}"));
        write_file(&path, &(lines.join("\n") + "\n"))
    }

    /// Returns the URLs the scripted browser was given, oldest first.
    pub fn browser_urls(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("browser.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Returns a command for `program` with only the stack's environment,
    /// run from the HOME.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&self.home)
            .stdin(Stdio::null());
        command
    }

    /// Runs `command` to completion, capturing both streams, and appends
    /// its stderr to `<dir>/logs/<log_name>.stderr.log`.
    pub fn run(&self, mut command: Command, log_name: &str) -> Result<RunOutput> {
        let output = command
            .output()
            .with_context(|| format!("failed to run {command:?}"))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let log = self.dir.path().join(format!("logs/{log_name}.stderr.log"));
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("failed to open {}", log.display()))?;
        file.write_all(stderr.as_bytes())
            .with_context(|| format!("failed to write {}", log.display()))?;
        Ok(RunOutput {
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr,
        })
    }

    /// Runs the shim for a profile, as `credential_process` would.
    pub fn shim(&self, base: &str) -> Result<RunOutput> {
        self.shim_with_args(base, &[])
    }

    /// Runs the shim for a profile with extra arguments.
    pub fn shim_with_args(&self, base: &str, args: &[&str]) -> Result<RunOutput> {
        let mut args_with_profile = vec!["--profile", self.profile(base)];
        args_with_profile.extend_from_slice(args);
        self.shim_raw(&args_with_profile)
    }

    /// Runs the shim with exactly these arguments.
    pub fn shim_raw(&self, args: &[&str]) -> Result<RunOutput> {
        let mut command = self.command(binary(SHIM)?);
        command.args(args);
        self.run(command, "shim")
    }

    /// Runs `tollgate-agent <args>` (login, logout, status, doctor).
    pub fn agent_cli(&self, args: &[&str]) -> Result<RunOutput> {
        let mut command = self.command(binary(AGENT)?);
        command.args(args);
        self.run(command, "agent-cli")
    }

    /// Runs the AWS CLI from the virtual environment.
    pub fn aws(&self, args: &[&str]) -> Result<RunOutput> {
        let mut command = self.command(venv_program("aws")?);
        command.args(args);
        self.run(command, "aws")
    }

    /// Runs a Python script with the virtual environment's interpreter.
    pub fn python(&self, script: &str) -> Result<RunOutput> {
        let mut command = self.command(venv_program("python")?);
        command.arg("-c").arg(script);
        self.run(command, "python")
    }

    /// Returns how often `credential_process` ran for a profile built with
    /// [`ProfileSpec::count_shim_spawns`].
    pub fn shim_spawns(&self, base: &str) -> usize {
        let path = self
            .entry(base)
            .spawn_log
            .as_ref()
            .expect("the profile was built with count_shim_spawns");
        fs::read_to_string(path)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// Starts `tollgate-agent run --foreground` with the stack's
    /// environment and waits until its socket accepts a connection. The
    /// harness stops it with the stack.
    pub fn start_agent(&mut self) -> Result<()> {
        let mut service = self.spawn_agent("agent-foreground")?;
        let socket = self.socket_path();
        wait_for("the agent's socket", AGENT_START_TIMEOUT, || {
            service.ensure_running()?;
            Ok(UnixStream::connect(&socket).ok().map(|_| ()))
        })?;
        self.agent = Some(service);
        Ok(())
    }

    /// Starts `tollgate-agent run --foreground` without waiting for it,
    /// logging to `<dir>/logs/<name>.log`. The caller owns the process.
    pub fn spawn_agent(&self, name: &str) -> Result<Service> {
        let mut command = self.command(binary(AGENT)?);
        command.args(["run", "--foreground"]);
        Service::spawn(name, command, &self.dir.path().join("logs"))
    }

    /// Returns the ids of running agents started with this stack's HOME,
    /// whether the harness or a shim started them.
    pub fn agent_pids(&self) -> Vec<u32> {
        let Ok(agent) = binary(AGENT) else {
            return Vec::new();
        };
        let home_entry = format!("HOME={}", self.home.display());
        let mut pids = Vec::new();
        let Ok(entries) = fs::read_dir("/proc") else {
            return pids;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<u32>().ok())
            else {
                continue;
            };
            // The kernel appends " (deleted)" when the binary was rebuilt
            // while the agent ran.
            let exe = fs::read_link(entry.path().join("exe")).ok();
            let exe = exe
                .as_deref()
                .and_then(Path::to_str)
                .map(|path| path.trim_end_matches(" (deleted)").to_owned());
            if exe.as_deref() != agent.to_str() || process::pid_gone(pid) {
                continue;
            }
            let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
            if environ
                .split(|byte| *byte == 0)
                .any(|variable| variable == home_entry.as_bytes())
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// Returns the id of the process listening on the agent's socket.
    pub fn socket_peer_pid(&self) -> Option<u32> {
        let stream = UnixStream::connect(self.socket_path()).ok()?;
        let credentials = rustix::net::sockopt::socket_peercred(&stream).ok()?;
        u32::try_from(credentials.pid.as_raw_nonzero().get()).ok()
    }

    /// Stops every agent of this stack: SIGTERM, then SIGKILL after five
    /// seconds.
    pub fn stop_agents(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.stop();
        }
        for pid in self.agent_pids() {
            process::stop_pid(pid);
        }
    }

    /// Sends one request on the agent socket and returns every response
    /// line up to and including the final one.
    pub fn agent_request(&self, body: RequestBody) -> Result<Vec<Response>> {
        let socket = self.socket_path();
        let stream = UnixStream::connect(&socket)
            .with_context(|| format!("failed to connect to {}", socket.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut writer = stream.try_clone()?;
        let mut line = serde_json::to_string(&Request::new(body))?;
        line.push('\n');
        writer.write_all(line.as_bytes())?;

        let mut responses = Vec::new();
        for line in BufReader::new(stream).lines() {
            let line = line.with_context(|| format!("failed to read from {}", socket.display()))?;
            let response: Response = serde_json::from_str(&line)
                .with_context(|| format!("invalid response line from the agent: {line}"))?;
            let done = response.is_final();
            responses.push(response);
            if done {
                return Ok(responses);
            }
        }
        bail!(
            "the agent closed {} before a final response",
            socket.display()
        )
    }

    /// Returns the agent's log file (`$XDG_STATE_HOME/tollgate/agent.log`).
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.home.join(".local/state/tollgate/agent.log")).unwrap_or_default()
    }

    /// Returns every log Tollgate's own programs wrote in this stack: the
    /// agent's log file and stderr, the backend's, and the stderr of each
    /// shim, agent CLI, AWS CLI and Python run.
    pub fn tollgate_logs(&self) -> Result<String> {
        let mut text = String::new();
        let mut files = Vec::new();
        for folder in [
            self.home.join(".local/state/tollgate"),
            self.dir.path().join("logs"),
            self.dir.path().join("backend"),
        ] {
            let Ok(entries) = fs::read_dir(&folder) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
                // The OIDC provider and moto_server are not Tollgate's.
                if name.ends_with(".log") && name != "oidc.log" && name != "moto.log" {
                    files.push(path);
                }
            }
        }
        files.sort();
        for path in files {
            let content = fs::read_to_string(&path)
                .with_context(|| format!("failed to read {}", path.display()))?;
            text.push_str(&format!("==> {} <==\n{content}\n", path.display()));
        }
        Ok(text)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Log out first, so that no test session stays in a keyring that
        // outlives the stack (the kernel keyring, or a developer's own
        // Secret Service when the tests run outside scripts/test.sh).
        if UnixStream::connect(self.socket_path()).is_ok() {
            for entry in self.profiles.values() {
                let _ = self.agent_request(RequestBody::Logout {
                    profile: entry.name.clone(),
                });
            }
        }
        self.stop_agents();
        if std::env::var_os(KEEP_ENV).is_some_and(|value| value == "1") {
            self.dir.disable_cleanup(true);
        }
    }
}

struct StackPaths<'a> {
    dir: &'a Path,
    home: &'a Path,
    runtime_dir: &'a Path,
    config_path: &'a Path,
    aws_config: &'a Path,
    aws_credentials: &'a Path,
    sts_url: &'a str,
    login: &'a str,
}

fn stack_env(paths: StackPaths<'_>) -> Result<Vec<(String, String)>> {
    let home = paths.home.display().to_string();
    let tmp = paths.dir.join("tmp");
    fs::create_dir_all(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
    let inherited_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_owned());

    let mut env = vec![
        ("HOME".to_owned(), home.clone()),
        (
            "USER".to_owned(),
            std::env::var("USER").unwrap_or_else(|_| "root".to_owned()),
        ),
        ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ("TMPDIR".to_owned(), tmp.display().to_string()),
        (
            "PATH".to_owned(),
            format!("{}:{inherited_path}", venv_bin_dir().display()),
        ),
        ("XDG_CONFIG_HOME".to_owned(), format!("{home}/.config")),
        ("XDG_STATE_HOME".to_owned(), format!("{home}/.local/state")),
        ("XDG_DATA_HOME".to_owned(), format!("{home}/.local/share")),
        ("XDG_CACHE_HOME".to_owned(), format!("{home}/.cache")),
        (
            "XDG_RUNTIME_DIR".to_owned(),
            paths
                .runtime_dir
                .parent()
                .expect("the runtime folder has a parent")
                .display()
                .to_string(),
        ),
        (
            paths::RUNTIME_DIR_ENV.to_owned(),
            paths.runtime_dir.display().to_string(),
        ),
        (
            "TOLLGATE_CONFIG".to_owned(),
            paths.config_path.display().to_string(),
        ),
        (
            "TOLLGATE_AGENT_BIN".to_owned(),
            binary(AGENT)?.display().to_string(),
        ),
        ("TOLLGATE_LOG".to_owned(), "trace".to_owned()),
        (
            "AWS_CONFIG_FILE".to_owned(),
            paths.aws_config.display().to_string(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
            paths.aws_credentials.display().to_string(),
        ),
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
        // Every AWS call of the CLI and SDKs goes to moto (through the
        // counting proxy), never to AWS.
        ("AWS_ENDPOINT_URL".to_owned(), paths.sts_url.to_owned()),
        ("AWS_REGION".to_owned(), REGION.to_owned()),
        ("AWS_DEFAULT_REGION".to_owned(), REGION.to_owned()),
        ("AWS_SDK_LOAD_CONFIG".to_owned(), "1".to_owned()),
        (
            "BROWSER".to_owned(),
            support_dir().join("browser").display().to_string(),
        ),
        ("TOLLGATE_TEST_LOGIN".to_owned(), paths.login.to_owned()),
        (
            "TOLLGATE_TEST_BROWSER_LOG".to_owned(),
            paths.dir.join("browser.log").display().to_string(),
        ),
        (
            "TOLLGATE_TEST_BROWSER_CONTROL".to_owned(),
            paths.dir.join("browser-control").display().to_string(),
        ),
    ];
    // The keyring and notification tests need the session bus and display
    // that scripts/test.sh starts; without them the agent falls back.
    for name in ["DBUS_SESSION_BUS_ADDRESS", "DISPLAY"] {
        if let Ok(value) = std::env::var(name) {
            env.push((name.to_owned(), value));
        }
    }
    Ok(env)
}

fn agent_config(
    specs: &[ProfileSpec],
    entries: &BTreeMap<String, ProfileEntry>,
    issuer: &str,
    sts_url: &str,
    backend_url: Option<&str>,
) -> toml::Table {
    let mut profiles = toml::Table::new();
    for spec in specs {
        let entry = &entries[&spec.base];
        let mut table = toml::Table::new();
        table.insert("issuer".into(), issuer.into());
        table.insert("client_id".into(), CLIENT_ID.into());
        table.insert(
            "redirect_port".into(),
            i64::from(entry.redirect_port).into(),
        );
        table.insert("role_arn".into(), ROLE_ARN.into());
        table.insert("region".into(), REGION.into());
        table.insert(
            "session_duration_minutes".into(),
            i64::from(spec.session_duration_minutes).into(),
        );
        table.insert("sts_endpoint".into(), sts_url.into());
        if spec.quota {
            let url =
                backend_url.expect("a profile with a quota check needs StackBuilder::backend");
            table.insert("quota_url".into(), url.into());
        }
        if let Some(minutes) = spec.quota_recheck_minutes {
            table.insert("quota_recheck_minutes".into(), i64::from(minutes).into());
        }
        if let Some(mode) = &spec.fail_mode {
            table.insert("fail_mode".into(), mode.as_str().into());
        }
        if let Some(seconds) = spec.login_timeout_seconds {
            table.insert(
                "login_timeout_seconds".into(),
                i64::try_from(seconds).unwrap_or(i64::MAX).into(),
            );
        }
        for (key, value) in &spec.extra {
            table.insert(key.clone(), value.clone());
        }
        profiles.insert(entry.name.clone(), table.into());
    }
    let mut config = toml::Table::new();
    config.insert("profiles".into(), profiles.into());
    config
}

fn aws_config_text(
    dir: &Path,
    shim: &Path,
    entries: &BTreeMap<String, ProfileEntry>,
) -> Result<String> {
    let mut text = String::new();
    for entry in entries.values() {
        let program = match &entry.spawn_log {
            Some(spawn_log) => {
                let wrapper = dir.join(format!("shim-wrapper-{}.sh", entry.name));
                let script = format!(
                    "#!/bin/sh\n# Records each credential_process run, then runs the shim.\n\
                     echo \"$$\" >> '{}'\nexec '{}' \"$@\"\n",
                    spawn_log.display(),
                    shim.display()
                );
                write_file(&wrapper, &script)?;
                fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("failed to make {} executable", wrapper.display()))?;
                wrapper
            }
            None => shim.to_path_buf(),
        };
        text.push_str(&format!(
            "[profile {name}]\ncredential_process = {program} --profile {name}\nregion = {REGION}\n\n",
            name = entry.name,
            program = program.display(),
        ));
    }
    Ok(text)
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("failed to create {}", parent.display()))?;
    }
    fs::write(path, text).with_context(|| format!("failed to write {}", path.display()))
}
