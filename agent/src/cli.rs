//! The command line: `run` starts the daemon; `login`, `logout` and
//! `status` talk to the running agent over its socket and start it first
//! when no agent accepts the connection. This is the only module that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use tollgate_protocol::agent::{ProfileStatus, Request, RequestBody, Response};
use tollgate_protocol::paths::INSIDE_AGENT_ENV;

use crate::config::{self, PROFILE_ENV};
use crate::daemon::{self, RunOutcome};
use crate::logging;
use crate::quota::format_tokens;

/// Prints a line to stdout, ignoring a closed pipe (`status | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Debug, Parser)]
#[command(
    name = "tollgate-agent",
    version,
    about = "The per-user Tollgate agent: OIDC login, AWS STS credentials and quota checks for the credential_process shim"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the agent. Without --foreground it starts in the background and
    /// returns once the socket accepts connections.
    Run {
        /// Stays in this process and logs to stderr as well as the log file.
        #[arg(long)]
        foreground: bool,
    },
    /// Logs in to the identity provider in the browser.
    Login {
        /// The profile in the agent config (default: $TOLLGATE_PROFILE, else the only profile).
        #[arg(long)]
        profile: Option<String>,
        /// Uses the device code login: open the printed URL on any device and enter the code.
        #[arg(long)]
        device_code: bool,
    },
    /// Removes the profile's tokens and AWS credentials from memory and the keyring.
    Logout {
        /// The profile in the agent config (default: $TOLLGATE_PROFILE, else the only profile).
        #[arg(long)]
        profile: Option<String>,
    },
    /// Shows who is logged in, token and credential expiry, the secret store and the last quota result.
    Status {
        /// Shows one profile (default: $TOLLGATE_PROFILE, else all profiles).
        #[arg(long)]
        profile: Option<String>,
        /// Prints the status as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { foreground: true } => run_foreground(),
        Command::Run { foreground: false } => run_background(),
        Command::Login {
            profile,
            device_code,
        } => client(|socket| login(socket, profile, device_code)),
        Command::Logout { profile } => client(|socket| logout(socket, profile)),
        Command::Status { profile, json } => client(|socket| status(socket, profile, json)),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tollgate-agent: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[allow(unsafe_code)]
fn run_foreground() -> anyhow::Result<ExitCode> {
    // SAFETY: this runs before the tokio runtime or any other thread
    // exists, so nothing reads the environment concurrently. The first
    // variable makes a Tollgate shim started under the agent exit instead
    // of calling the agent back, and the second keeps AWS SDK code away
    // from the instance metadata address.
    unsafe {
        std::env::set_var(INSIDE_AGENT_ENV, "1");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    let log_path = logging::init_daemon(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    match runtime.block_on(daemon::run(&log_path))? {
        RunOutcome::Stopped => Ok(ExitCode::SUCCESS),
        RunOutcome::AlreadyRunning { pid, socket } => {
            let pid = pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
            eprintln!(
                "tollgate-agent: another agent is already running{pid} on `{}`; nothing to do",
                socket.display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run_background() -> anyhow::Result<ExitCode> {
    let socket = daemon::socket_path();
    if UnixStream::connect(&socket).is_ok() {
        eprintln!(
            "tollgate-agent: an agent is already running on `{}`",
            socket.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut child = daemon::spawn_detached()?;
    daemon::wait_until_accepting(&socket, &mut child, daemon::START_TIMEOUT)?;
    eprintln!(
        "tollgate-agent: started (pid {}), socket `{}`, log `{}`",
        child.id(),
        socket.display(),
        logging::log_path().display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Connects to the agent, starting it when no agent accepts the connection, and runs `body`.
fn client(body: impl FnOnce(&Path) -> anyhow::Result<ExitCode>) -> anyhow::Result<ExitCode> {
    logging::init_client();
    let socket = daemon::socket_path();
    if UnixStream::connect(&socket).is_err() {
        eprintln!(
            "tollgate-agent: no agent accepts connections on `{}`; starting one",
            socket.display()
        );
        let mut child = daemon::spawn_detached()?;
        daemon::wait_until_accepting(&socket, &mut child, daemon::START_TIMEOUT)?;
    }
    body(&socket)
}

/// Resolves the profile: `--profile`, else `TOLLGATE_PROFILE`, else the
/// only profile in the config file.
fn resolve_profile(requested: Option<String>) -> anyhow::Result<String> {
    let requested = requested.or_else(|| {
        std::env::var(PROFILE_ENV)
            .ok()
            .filter(|name| !name.is_empty())
    });
    if let Some(name) = requested {
        return Ok(name);
    }
    let config = config::load(&config::config_path(|name| std::env::var_os(name)))?;
    Ok(config.default_profile(None)?.name.clone())
}

/// Sends one request and returns the final response, printing progress
/// notes to stderr.
fn exchange(socket: &Path, body: RequestBody) -> anyhow::Result<Response> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("could not connect to the agent at `{}`", socket.display()))?;
    let line =
        serde_json::to_string(&Request::new(body)).context("could not encode the request")?;
    writeln!(stream, "{line}")
        .with_context(|| format!("could not send the request to `{}`", socket.display()))?;
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).with_context(|| {
            format!(
                "could not read the agent's response from `{}`",
                socket.display()
            )
        })?;
        if read == 0 {
            anyhow::bail!(
                "the agent closed the connection without a response; see its log at `{}`",
                logging::log_path().display()
            );
        }
        let response: Response =
            serde_json::from_str(&line).context("the agent sent a line that is not a response")?;
        if let Response::Progress { message, .. } = &response {
            eprintln!("{message}");
            continue;
        }
        return Ok(response);
    }
}

fn finish(response: Response) -> anyhow::Result<ExitCode> {
    match response {
        Response::Done { message } => {
            out!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Response::Error(error) => {
            eprintln!("tollgate-agent: {}", error.message);
            for cause in &error.causes {
                eprintln!("  caused by: {cause}");
            }
            Ok(ExitCode::FAILURE)
        }
        other => anyhow::bail!("the agent sent an unexpected response: {other:?}"),
    }
}

fn login(socket: &Path, profile: Option<String>, device_code: bool) -> anyhow::Result<ExitCode> {
    let profile = resolve_profile(profile)?;
    finish(exchange(
        socket,
        RequestBody::Login {
            profile,
            device_code,
        },
    )?)
}

fn logout(socket: &Path, profile: Option<String>) -> anyhow::Result<ExitCode> {
    let profile = resolve_profile(profile)?;
    finish(exchange(socket, RequestBody::Logout { profile })?)
}

fn status(socket: &Path, profile: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let profile = profile.or_else(|| {
        std::env::var(PROFILE_ENV)
            .ok()
            .filter(|name| !name.is_empty())
    });
    let profiles = match exchange(socket, RequestBody::Status { profile })? {
        Response::Status { profiles } => profiles,
        other => return finish(other),
    };
    if json {
        out!(
            "{}",
            serde_json::to_string_pretty(&profiles).context("could not encode the status")?
        );
        return Ok(ExitCode::SUCCESS);
    }
    // The quota URL is not part of the status response, so it is read from
    // the same config file the agent uses.
    let config = config::load(&config::config_path(|name| std::env::var_os(name))).ok();
    for status in &profiles {
        let quota_url = config
            .as_ref()
            .and_then(|config| config.profiles.get(&status.profile))
            .map(|profile| profile.quota_url.clone());
        print_status(status, quota_url);
    }
    Ok(ExitCode::SUCCESS)
}

fn time(value: DateTime<Utc>) -> String {
    let left = value - Utc::now();
    let left = if left.num_seconds() <= 0 {
        "expired".to_string()
    } else if left.num_minutes() < 120 {
        format!("in {} min", left.num_minutes())
    } else {
        format!("in {} h", left.num_hours())
    };
    format!("{} ({left})", value.format("%Y-%m-%d %H:%M:%S UTC"))
}

fn print_status(status: &ProfileStatus, quota_url: Option<Option<String>>) {
    out!("profile {}", status.profile);
    match &status.identity {
        Some(identity) => out!("  logged in as:    {identity}"),
        None => out!(
            "  logged in as:    nobody (run `tollgate-agent login --profile {}`)",
            status.profile
        ),
    }
    if let Some(expiration) = status.id_token_expiration {
        let refresh = if status.has_refresh_token {
            "refresh token held"
        } else {
            "no refresh token"
        };
        out!("  ID token:        expires {}; {refresh}", time(expiration));
    }
    match status.credentials_expiration {
        Some(expiration) => out!("  AWS credentials: expire {}", time(expiration)),
        None => out!("  AWS credentials: none cached"),
    }
    match (&status.last_quota, quota_url) {
        (Some(answer), _) => {
            let verdict = if answer.allowed { "allowed" } else { "blocked" };
            let period =
                |name: &str, usage: &tollgate_protocol::check::PeriodUsage| match usage.limit {
                    Some(limit) => format!(
                        "{name} {} of {} ({:.0}%)",
                        format_tokens(usage.tokens),
                        format_tokens(limit),
                        usage.percent.unwrap_or(0.0)
                    ),
                    None => format!("{name} {} (no limit)", format_tokens(usage.tokens)),
                };
            out!(
                "  quota:           {verdict} at {}: {}, {}; {}",
                answer.checked_at.format("%H:%M:%S UTC"),
                period("daily", &answer.usage.daily),
                period("monthly", &answer.usage.monthly),
                answer.message
            );
        }
        (None, Some(None)) => {
            out!("  quota:           not checked (the profile has no quota_url)")
        }
        (None, _) => out!("  quota:           not checked yet"),
    }
    if let Some(store) = &status.secret_store {
        out!("  secret store:    {store}");
    }
}
