//! The real Claude Code CLI (2.1.328, `tests/support/claude`) against the
//! whole Tollgate chain, inside a network namespace that has nothing but
//! loopback: the OIDC provider, moto_server, `tollgate serve`, the agent
//! and a fake Bedrock runtime all run in the same namespace on 127.0.0.1.
//!
//! Each test re-runs itself through `run-in-netns.sh` (which needs root)
//! and does its work only inside, where `TOLLGATE_NETNS=1`.
//!
//! `scripts/install-deps.sh` installs Claude Code (about 360 MB) in
//! `tests/support/claude`, and the tests need root for the namespace.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tollgate_tests::locate::{SHIM, binary, support_dir};
use tollgate_tests::{ProfileSpec, Service, Stack};

const MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
const REPLY: &str = "Hello from the fake Bedrock runtime for Tollgate.";
/// Token usage the fake endpoint reports for every response, per type.
const USAGE: [(&str, &str, u64); 4] = [
    ("input", "--input-tokens", 37),
    ("output", "--output-tokens", 19),
    ("cacheRead", "--cache-read-tokens", 1234),
    ("cacheCreation", "--cache-creation-tokens", 56),
];
/// Seconds one Claude Code run may take.
const CLAUDE_TIMEOUT_SECONDS: u64 = 120;

/// Runs `test` inside the loopback-only namespace. Outside, it starts this
/// test binary again through `run-in-netns.sh` with only `name` selected
/// and returns its result.
fn in_namespace(name: &str, test: impl FnOnce() -> Result<()>) -> Result<()> {
    if std::env::var("TOLLGATE_NETNS").as_deref() == Ok("1") {
        return test();
    }
    if !rustix::process::getuid().is_root() {
        bail!("the Claude Code tests need root to create a network namespace (unshare --net)");
    }
    let claude = support_dir().join("claude/node_modules/.bin/claude");
    if !claude.exists() {
        bail!(
            "Claude Code is not installed at {}; run `npm ci` in tests/support/claude",
            claude.display()
        );
    }
    let exe = std::env::current_exe().context("failed to find the test binary")?;
    let output = Command::new(support_dir().join("claude/run-in-netns.sh"))
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .output()
        .context("failed to run run-in-netns.sh")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() || !stdout.contains("1 passed") {
        bail!(
            "{name} failed inside the namespace ({}):\n{stdout}\n{stderr}",
            output.status
        );
    }
    Ok(())
}

/// The fake Bedrock runtime and where its request log is.
struct Bedrock {
    _service: Service,
    url: String,
    request_log: PathBuf,
    /// Access keys listed here get 403 `ExpiredTokenException`.
    deny_file: PathBuf,
}

impl Bedrock {
    fn start(dir: &Path) -> Result<Self> {
        let request_log = dir.join("bedrock-requests.jsonl");
        let deny_file = dir.join("bedrock-deny");
        let mut command = Command::new("python3");
        command
            .arg(support_dir().join("bedrock/server.py"))
            .arg("--request-log")
            .arg(&request_log)
            .arg("--deny-file")
            .arg(&deny_file)
            .args(["--reply", REPLY]);
        for (_, flag, tokens) in USAGE {
            command.args([flag, &tokens.to_string()]);
        }
        let (service, url) = Service::spawn_until_line(
            "fake-bedrock",
            command,
            &dir.join("logs"),
            "ready ",
            Duration::from_secs(20),
        )?;
        Ok(Self {
            _service: service,
            url: url.trim().to_owned(),
            request_log,
            deny_file,
        })
    }

    fn requests(&self) -> Result<Vec<Value>> {
        let text = fs::read_to_string(&self.request_log).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).context("a request log line is not JSON"))
            .collect()
    }

    /// Makes every later request signed with one of `access_key_ids` fail
    /// with 403 `ExpiredTokenException`, as when STS credentials expire.
    fn expire(&self, access_key_ids: &[&str]) -> Result<()> {
        let lines: String = access_key_ids
            .iter()
            .map(|key| format!("{key}\n"))
            .collect();
        fs::write(&self.deny_file, lines)
            .with_context(|| format!("failed to write {}", self.deny_file.display()))
    }
}

/// A Claude Code run's folders, settings and environment.
struct ClaudeRun<'a> {
    stack: &'a Stack,
    bedrock: &'a Bedrock,
    work: PathBuf,
    settings: PathBuf,
    extra_env: Vec<(String, String)>,
}

impl<'a> ClaudeRun<'a> {
    fn new(stack: &'a Stack, bedrock: &'a Bedrock, settings: Value) -> Result<Self> {
        let work = stack.dir().join("work");
        fs::create_dir_all(&work)?;
        let settings_path = stack.dir().join("claude-settings.json");
        fs::write(&settings_path, serde_json::to_string_pretty(&settings)?)?;
        // Skip the first-run theme picker and the folder trust dialog.
        fs::write(
            stack.home().join(".claude.json"),
            serde_json::json!({
                "hasCompletedOnboarding": true,
                "theme": "dark",
                "projects": { work.display().to_string(): { "hasTrustDialogAccepted": true } },
            })
            .to_string(),
        )?;
        Ok(Self {
            stack,
            bedrock,
            work,
            settings: settings_path,
            extra_env: Vec::new(),
        })
    }

    fn env(&self) -> Vec<(String, String)> {
        let stack = self.stack;
        let tmp = stack.env_var("TMPDIR").unwrap_or("/tmp").to_owned();
        let mut env: Vec<(String, String)> = stack
            .env()
            .iter()
            .filter(|(name, _)| name != "AWS_ENDPOINT_URL")
            .cloned()
            .collect();
        let sts = stack.sts().url().to_owned();
        env.extend(
            [
                ("TERM", "dumb"),
                ("CLAUDE_CODE_TMPDIR", tmp.as_str()),
                ("CLAUDE_CODE_USE_BEDROCK", "1"),
                ("AWS_PROFILE", stack.profile("bedrock")),
                ("AWS_ENDPOINT_URL_STS", sts.as_str()),
                ("ANTHROPIC_BEDROCK_BASE_URL", self.bedrock.url.as_str()),
                ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
                ("DISABLE_AUTOUPDATER", "1"),
                ("DISABLE_TELEMETRY", "1"),
                ("DISABLE_ERROR_REPORTING", "1"),
                ("CLAUDE_CODE_MAX_RETRIES", "1"),
            ]
            .map(|(name, value)| (name.to_owned(), value.to_owned())),
        );
        for (name, value) in &self.extra_env {
            env.retain(|(key, _)| key != name);
            env.push((name.clone(), value.clone()));
        }
        env
    }

    /// Runs `claude -p PROMPT` and returns (success, stdout, stderr).
    fn print_mode(&self, prompt: &str) -> Result<(bool, String, String)> {
        let output = Command::new("timeout")
            .arg(CLAUDE_TIMEOUT_SECONDS.to_string())
            .arg("claude")
            .args(["-p", prompt, "--model", MODEL, "--settings"])
            .arg(&self.settings)
            .env_clear()
            .envs(self.env())
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .current_dir(&self.work)
            .stdin(std::process::Stdio::null())
            .output()
            .context("failed to run claude")?;
        Ok((
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Starts interactive Claude Code (with `--debug`) in a private tmux
    /// server. STS returns Claude Code's caller identity, so the
    /// awsAuthRefresh command runs only once getting credentials fails.
    fn start_interactive(&self) -> Result<Interactive> {
        // Claude Code records each awsAuthRefresh outcome here; a fresh
        // state makes the session run the command again.
        if let Ok(entries) = fs::read_dir(self.stack.home().join(".claude")) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".aws_auth_refresh")
                {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let launcher = self.stack.dir().join("run-claude.sh");
        let mut script = String::from("#!/bin/sh\n");
        for (name, value) in self.env() {
            let value = if name == "TERM" {
                "xterm-256color".into()
            } else {
                value
            };
            script.push_str(&format!("export {name}='{value}'\n"));
        }
        script.push_str(&format!(
            "export PATH='{}'\ncd '{}'\nexec timeout {CLAUDE_TIMEOUT_SECONDS} claude --debug --model '{MODEL}' --settings '{}'\n",
            std::env::var("PATH").unwrap_or_default(),
            self.work.display(),
            self.settings.display()
        ));
        fs::write(&launcher, script)?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755))?;
        let session = Interactive {
            socket: self.stack.dir().join("tmux.sock"),
            screens: self.stack.dir().join("screens.txt"),
            started: Instant::now(),
            last: String::new(),
        };
        let started = session
            .tmux(&[
                "new-session",
                "-d",
                "-s",
                "claude",
                "-x",
                "160",
                "-y",
                "50",
                &launcher.display().to_string(),
            ])
            .context("failed to start tmux")?;
        if !started.status.success() {
            bail!("tmux failed: {}", String::from_utf8_lossy(&started.stderr));
        }
        Ok(session)
    }
}

/// Interactive Claude Code in a private tmux server. Every screen it
/// showed is appended to `screens.txt` in the stack's folder.
struct Interactive {
    socket: PathBuf,
    screens: PathBuf,
    started: Instant,
    last: String,
}

impl Interactive {
    fn tmux(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
    }

    /// Returns the screen as it is now, with box borders and line breaks
    /// folded into spaces, and records it when it changed.
    fn screen(&mut self) -> Result<String> {
        let captured = self.tmux(&["capture-pane", "-p", "-t", "claude"])?;
        let raw = String::from_utf8_lossy(&captured.stdout).into_owned();
        if raw != self.last {
            let mut file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.screens)?;
            use std::io::Write;
            writeln!(
                file,
                "--- {:.1} s\n{}",
                self.started.elapsed().as_secs_f64(),
                raw.trim_end()
            )?;
            self.last = raw;
        }
        Ok(fold_screen(&self.last))
    }

    /// Waits up to `timeout` for the screen to contain `wanted` and
    /// returns the last screen either way.
    fn wait_for(&mut self, wanted: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen()?;
            if screen.contains(wanted) || Instant::now() >= deadline {
                return Ok(screen);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Types `text` and presses Enter, as a person would.
    fn send(&self, text: &str) -> Result<()> {
        self.tmux(&["send-keys", "-t", "claude", text, "Enter"])?;
        Ok(())
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// Folds a terminal screen into one line: box-drawing characters and line
/// breaks become spaces, and runs of spaces one space.
fn fold_screen(screen: &str) -> String {
    let replaced: String = screen
        .chars()
        .map(|c| {
            if ('\u{2500}'..='\u{257f}').contains(&c) || c == '\n' {
                ' '
            } else {
                c
            }
        })
        .collect();
    replaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn shim_command(stack: &Stack, extra: &str) -> Result<String> {
    Ok(format!(
        "{} --profile {}{extra}",
        binary(SHIM)?.display(),
        stack.profile("bedrock")
    ))
}

fn agent_command(stack: &Stack, args: &str) -> Result<String> {
    Ok(format!(
        "{} {args} --profile {}",
        stack
            .env_var("TOLLGATE_AGENT_BIN")
            .context("the stack names the agent binary")?,
        stack.profile("bedrock")
    ))
}

fn claude_stack(login: &str) -> Result<Stack> {
    Stack::builder()
        .login(login)
        .backend()
        .profile(
            ProfileSpec::new("bedrock")
                .quota()
                .quota_recheck_minutes(0)
                .set("support_contact", "#ai-platform"),
        )
        .start()
}

#[test]
fn claude_code_blocked_then_unblocked() -> Result<()> {
    in_namespace("claude_code_blocked_then_unblocked", || {
        let stack = claude_stack("cleo")?;
        let bedrock = Bedrock::start(stack.dir())?;
        let run = ClaudeRun::new(
            &stack,
            &bedrock,
            serde_json::json!({ "awsAuthRefresh": agent_command(&stack, "refresh")? }),
        )?;
        let backend = stack.backend();
        backend.admin_ok(&[
            "quota",
            "set-user",
            "cleo@example.com",
            "--monthly-limit",
            "1M",
            "--enforcement",
            "block",
        ])?;

        // Allowed: Claude Code's requests are signed with the agent's key.
        let (ok, stdout, stderr) = run.print_mode("say hi")?;
        assert!(ok, "claude failed while allowed:\n{stdout}\n{stderr}");
        assert!(stdout.contains(REPLY), "{stdout}");
        let key = stack.shim("bedrock")?.json()?["AccessKeyId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let requests = bedrock.requests()?;
        assert!(requests.len() >= 2, "{requests:?}");
        for request in &requests {
            assert_eq!(request["access_key_id"], key.as_str(), "{request}");
            assert_eq!(request["signed_service"], "bedrock", "{request}");
        }

        // An interactive session starts while allowed and gets a reply.
        let mut session = run.start_interactive()?;
        session.wait_for("? for shortcuts", Duration::from_secs(30))?;
        session.send("say hi")?;
        let screen = session.wait_for(REPLY, Duration::from_secs(40))?;
        assert!(screen.contains(REPLY), "{screen}");
        let key = bedrock
            .requests()?
            .last()
            .and_then(|request| request["access_key_id"].as_str().map(str::to_owned))
            .context("the session sent a request")?;

        // Blocked: the session's credentials expire (Bedrock returns 403
        // ExpiredTokenException), Claude Code runs the credential_process
        // again, which fails, and then the awsAuthRefresh command. Its
        // output stays in the Sign-in box while the command holds, and
        // Claude Code shows its own error after the command exits.
        backend.admin_ok(&["usage", "record", "cleo@example.com", "--tokens", "2M"])?;
        bedrock.expire(&[&key])?;
        session.send("say hi again")?;
        let screen = session.wait_for("blocked by your Tollgate quota", Duration::from_secs(60))?;
        assert!(screen.contains("Sign-in"), "{screen}");
        assert!(
            screen.contains("Claude Code is blocked by your Tollgate quota."),
            "{screen}"
        );
        assert!(
            screen.contains("the monthly limit is reached: 2M of 1M tokens used"),
            "{screen}"
        );
        assert!(screen.contains("#ai-platform"), "{screen}");
        let screen = session.wait_for("Could not load AWS credentials", Duration::from_secs(40))?;
        assert!(
            screen.contains("Could not load AWS credentials"),
            "Claude Code's error follows the box: {screen}"
        );
        drop(session);

        // Claude Code's --debug log has the command's output too: after
        // this line, as one quoted string or as one line per output line.
        let debug_log = fs::read_to_string(stack.home().join(".claude/debug/latest"))
            .context("Claude Code wrote no --debug log")?;
        let refresh_output = debug_log
            .lines()
            .skip_while(|line| !line.contains("Running AWS auth refresh command"))
            .skip(1)
            .take(8)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            refresh_output.contains("Claude Code is blocked by your Tollgate quota"),
            "{refresh_output}"
        );
        assert!(
            refresh_output.contains("the monthly limit is reached: 2M of 1M tokens used"),
            "{refresh_output}"
        );
        assert!(refresh_output.contains("#ai-platform"), "{refresh_output}");

        // The next session fails too, and sends no model request.
        let before = bedrock.requests()?.len();
        let (ok, stdout, _) = run.print_mode("say hi again")?;
        assert!(!ok, "claude succeeded while blocked: {stdout}");
        assert!(
            stdout.contains("Could not load AWS credentials"),
            "{stdout}"
        );
        let streamed = bedrock.requests()?[before..]
            .iter()
            .filter(|request| request["operation"] == "invoke-with-response-stream")
            .count();
        assert_eq!(streamed, 0, "no model request while blocked");
        bedrock.expire(&[])?;

        // Unblocked: the next session works with no cleanup.
        backend.admin_ok(&[
            "quota",
            "unblock",
            "cleo@example.com",
            "--duration",
            "24h",
            "--reason",
            "demo day",
        ])?;
        let (ok, stdout, stderr) = run.print_mode("say hi after the unblock")?;
        assert!(ok, "claude failed after the unblock:\n{stdout}\n{stderr}");
        assert!(stdout.contains(REPLY), "{stdout}");
        Ok(())
    })
}

#[test]
fn claude_code_usage_counted() -> Result<()> {
    in_namespace("claude_code_usage_counted", || {
        let stack = claude_stack("dara")?;
        let bedrock = Bedrock::start(stack.dir())?;
        let mut run = ClaudeRun::new(
            &stack,
            &bedrock,
            serde_json::json!({ "otelHeadersHelper": shim_command(&stack, " --otel-headers")? }),
        )?;
        let metrics = format!("{}/v1/metrics", stack.backend().url());
        run.extra_env = [
            ("CLAUDE_CODE_ENABLE_TELEMETRY", "1"),
            ("OTEL_METRICS_EXPORTER", "otlp"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", metrics.as_str()),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1000"),
        ]
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .to_vec();
        // The header helper never logs in, so log in first.
        stack.shim("bedrock")?.ensure_success("the first login")?;
        let (ok, stdout, stderr) = run.print_mode("say hi")?;
        assert!(ok, "claude failed:\n{stdout}\n{stderr}");

        stack
            .shim("bedrock")?
            .ensure_success("a re-check after the session")?;
        let status =
            stack.agent_cli(&["status", "--profile", stack.profile("bedrock"), "--json"])?;
        let answer = status.json()?[0]["last_quota"].clone();
        let weights: Vec<(String, f64)> = answer["usage"]["counted_types"]
            .as_array()
            .context("the answer lists counted types")?
            .iter()
            .map(|counted| {
                (
                    counted["type"].as_str().unwrap_or_default().to_owned(),
                    counted["weight"].as_f64().unwrap_or_default(),
                )
            })
            .collect();
        let expected: f64 = USAGE
            .iter()
            .map(|(kind, _, tokens)| {
                let weight = weights
                    .iter()
                    .find(|(name, _)| name == kind)
                    .map_or(0.0, |(_, weight)| *weight);
                weight * *tokens as f64
            })
            .sum();
        assert!(expected > 0.0, "some token type counts: {answer}");
        assert_eq!(
            answer["usage"]["monthly"]["tokens"].as_u64(),
            Some(expected.round() as u64),
            "the backend counted Claude Code's own usage: {answer}"
        );
        Ok(())
    })
}

/// One run of `tests/support/claude/expiring-credentials`: when it started
/// and the `Expiration` it printed (`None` for a failed run), both in epoch
/// seconds.
#[derive(Debug, Clone, Copy)]
struct CredentialRun {
    started: u64,
    expiration: Option<u64>,
}

/// An AWS profile `expiring` whose credential_process is
/// `tests/support/claude/expiring-credentials`.
struct ExpiringCredentials {
    lifetime_file: PathBuf,
    runs_log: PathBuf,
    aws_config: PathBuf,
}

impl ExpiringCredentials {
    /// Writes the profile into `dir`, with credentials that expire
    /// `lifetime_seconds` after each run.
    fn new(dir: &Path, lifetime_seconds: u64) -> Result<Self> {
        let credentials = Self {
            lifetime_file: dir.join("credential-lifetime"),
            runs_log: dir.join("credential-runs.log"),
            aws_config: dir.join("aws-config-expiring"),
        };
        credentials.set_lifetime(&lifetime_seconds.to_string())?;
        let config = format!(
            "[profile expiring]\ncredential_process = {} {} {}\nregion = us-east-1\n",
            support_dir().join("claude/expiring-credentials").display(),
            credentials.lifetime_file.display(),
            credentials.runs_log.display()
        );
        fs::write(&credentials.aws_config, config)
            .with_context(|| format!("failed to write {}", credentials.aws_config.display()))?;
        Ok(credentials)
    }

    /// Sets the lifetime of later runs' credentials in seconds, or `fail`
    /// to make later runs exit 1.
    fn set_lifetime(&self, lifetime: &str) -> Result<()> {
        fs::write(&self.lifetime_file, lifetime)
            .with_context(|| format!("failed to write {}", self.lifetime_file.display()))
    }

    /// Points Claude Code at the `expiring` profile.
    fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_CONFIG_FILE".to_owned(),
                self.aws_config.display().to_string(),
            ),
            ("AWS_PROFILE".to_owned(), "expiring".to_owned()),
        ]
    }

    /// Reads the runs recorded so far. A missing log means no run yet.
    fn runs(&self) -> Result<Vec<CredentialRun>> {
        let log = &self.runs_log;
        let text = fs::read_to_string(log).unwrap_or_default();
        text.lines()
            .map(|line| {
                let invalid = || {
                    anyhow::anyhow!(
                        "{} has an invalid line {line:?}; expected \"<started> <expiration>\" or \"<started> failed\"",
                        log.display()
                    )
                };
                let (started, expiration) = line.split_once(' ').ok_or_else(invalid)?;
                let started = started.parse().map_err(|_| invalid())?;
                let expiration = match expiration {
                    "failed" => None,
                    seconds => Some(seconds.parse().map_err(|_| invalid())?),
                };
                Ok(CredentialRun {
                    started,
                    expiration,
                })
            })
            .collect()
    }

    /// Returns the `Expiration` of the first run, which Claude Code makes at
    /// session start.
    fn first_expiration(&self) -> Result<u64> {
        let first = *self
            .runs()?
            .first()
            .context("Claude Code did not run the credential_process at start")?;
        let expiration = first
            .expiration
            .context("the credential_process failed at session start")?;
        Ok(expiration)
    }
}

/// Sleeps until the epoch second `at`, if it is still ahead.
fn sleep_until_epoch(at: u64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64();
    if (at as f64) > now {
        std::thread::sleep(Duration::from_secs_f64(at as f64 - now));
    }
}

/// Returns the access key id of each streamed model request, in order.
fn streamed_keys(bedrock: &Bedrock) -> Result<Vec<String>> {
    Ok(bedrock
        .requests()?
        .iter()
        .filter(|request| request["operation"] == "invoke-with-response-stream")
        .map(|request| {
            request["access_key_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect())
}

/// Waits up to 30 s for `count` streamed model requests and returns their
/// access key ids.
fn wait_for_streams(bedrock: &Bedrock, count: usize) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys = streamed_keys(bedrock)?;
        if keys.len() >= count || Instant::now() >= deadline {
            return Ok(keys);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Claude Code 2.1.328 runs the credential_process again on the first
/// request less than about 30 s before `Expiration` (observed with lifetimes
/// of 61 to 330 s: 29.9 s before it did, 30.8 s before it did not).
#[test]
fn claude_code_refreshes_credentials_shortly_before_expiration() -> Result<()> {
    in_namespace(
        "claude_code_refreshes_credentials_shortly_before_expiration",
        || {
            // Credentials that expire 100 s after each run. The JavaScript
            // SDK's own process provider would run the command again 5
            // minutes before Expiration, so already at the first prompt.
            let stack = Stack::builder()
                .profile(ProfileSpec::new("bedrock"))
                .start()?;
            let bedrock = Bedrock::start(stack.dir())?;
            let credentials = ExpiringCredentials::new(stack.dir(), 100)?;
            let mut run = ClaudeRun::new(&stack, &bedrock, serde_json::json!({}))?;
            run.extra_env = credentials.env();

            let mut session = run.start_interactive()?;
            session.wait_for("? for shortcuts", Duration::from_secs(30))?;
            session.send("say hi")?;
            assert_eq!(wait_for_streams(&bedrock, 1)?, ["AKIAEXPIRING1"]);
            let expiration = credentials.first_expiration()?;

            // 45 s before Expiration: the session keeps its credentials.
            sleep_until_epoch(expiration - 45);
            session.send("say hi again")?;
            let keys = wait_for_streams(&bedrock, 2)?;
            let runs = credentials.runs()?;
            assert_eq!(keys, ["AKIAEXPIRING1", "AKIAEXPIRING1"], "runs: {runs:?}");
            assert_eq!(runs.len(), 1, "no run 45 s before Expiration: {runs:?}");

            // 15 s before Expiration: the next prompt runs the command
            // again first and is signed with the new key.
            sleep_until_epoch(expiration - 15);
            session.send("say hi once more")?;
            let keys = wait_for_streams(&bedrock, 3)?;
            let runs = credentials.runs()?;
            assert_eq!(
                keys.last().map(String::as_str),
                Some("AKIAEXPIRING2"),
                "runs: {runs:?}"
            );
            assert_eq!(runs.len(), 2, "one run 15 s before Expiration: {runs:?}");
            assert!(
                runs[1].started < expiration,
                "the second run comes before the first Expiration: {runs:?}"
            );
            drop(session);
            Ok(())
        },
    )
}

/// A credential_process that fails inside Claude Code's 30 s refresh
/// window fails the request at once, although the cached credentials are
/// valid for 15 s more.
#[test]
fn claude_code_refresh_failure_fails_request() -> Result<()> {
    in_namespace("claude_code_refresh_failure_fails_request", || {
        let stack = Stack::builder()
            .profile(ProfileSpec::new("bedrock"))
            .start()?;
        let bedrock = Bedrock::start(stack.dir())?;
        let credentials = ExpiringCredentials::new(stack.dir(), 50)?;
        let mut run = ClaudeRun::new(&stack, &bedrock, serde_json::json!({}))?;
        run.extra_env = credentials.env();

        let mut session = run.start_interactive()?;
        session.wait_for("? for shortcuts", Duration::from_secs(30))?;
        session.send("say hi")?;
        assert_eq!(wait_for_streams(&bedrock, 1)?, ["AKIAEXPIRING1"]);
        let expiration = credentials.first_expiration()?;

        credentials.set_lifetime("fail")?;
        sleep_until_epoch(expiration - 15);
        session.send("say hi again")?;
        let screen = session.wait_for("Could not load AWS credentials", Duration::from_secs(30))?;
        assert!(
            screen.contains("Could not load AWS credentials"),
            "{screen}"
        );
        let runs = credentials.runs()?;
        assert!(
            runs.len() >= 2 && runs[1..].iter().all(|run| run.expiration.is_none()),
            "the prompt ran the failing command: {runs:?}"
        );
        assert!(
            runs[1].started < expiration,
            "the failed runs come before Expiration: {runs:?}"
        );
        assert_eq!(
            streamed_keys(&bedrock)?,
            ["AKIAEXPIRING1"],
            "no model request with the still valid key"
        );
        drop(session);
        Ok(())
    })
}
