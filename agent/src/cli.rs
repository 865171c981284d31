//! The command line: `run` starts the daemon; `login`, `logout`, `status`
//! and `refresh` talk to the running agent over its socket and start it
//! first when no agent accepts the connection; `doctor` checks the setup.
//! This is the only module that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::{Parser, Subcommand};
use tollgate_protocol::agent::{ErrorKind, Request, RequestBody, Response};
use tollgate_protocol::paths::INSIDE_AGENT_ENV;

use crate::config::{self, PROFILE_ENV};
use crate::daemon::{self, RunOutcome};
use crate::doctor::{self, Outcome};
use crate::logging;
use crate::quota;
use crate::quota_view;

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
    /// Shows who is logged in, token and credential expiry, usage against each limit and the secret store.
    Status {
        /// Shows one profile (default: $TOLLGATE_PROFILE, else all profiles).
        #[arg(long)]
        profile: Option<String>,
        /// Prints the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Gets credentials for Claude Code's awsAuthRefresh setting: runs the
    /// login when one is needed and explains a quota block. Exits non-zero
    /// when no credentials can be had.
    Refresh {
        /// The profile in the agent config (default: $TOLLGATE_PROFILE, else the only profile).
        #[arg(long)]
        profile: Option<String>,
        /// Seconds to wait for a login before giving up; Claude Code stops the command after 180.
        #[arg(long, default_value_t = 170, value_parser = clap::value_parser!(u64).range(5..=3600))]
        timeout_seconds: u64,
        /// Seconds to keep running after explaining a block or an error, because an
        /// interactive Claude Code shows the command's output only while it runs.
        /// No wait when stdout is a terminal.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=60))]
        hold_seconds: u64,
    },
    /// Checks the config, keyring, runtime folder, identity provider, quota
    /// backend, clock and AWS config, and prints a fix for each problem.
    Doctor {
        /// The profile to check (default: $TOLLGATE_PROFILE, else the only profile).
        #[arg(long)]
        profile: Option<String>,
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
        Command::Refresh {
            profile,
            timeout_seconds,
            hold_seconds,
        } => client(|socket| {
            refresh(
                socket,
                profile,
                Duration::from_secs(timeout_seconds),
                Duration::from_secs(hold_seconds),
            )
        }),
        Command::Doctor { profile } => run_doctor(profile),
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
    exchange_until(socket, body, None, |message| eprintln!("{message}"))?
        .context("the agent sent no response")
}

/// Sends one request and returns the final response, or `None` when
/// `deadline` passes first. Each progress note goes to `on_progress`.
fn exchange_until(
    socket: &Path,
    body: RequestBody,
    deadline: Option<Instant>,
    mut on_progress: impl FnMut(&str),
) -> anyhow::Result<Option<Response>> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("could not connect to the agent at `{}`", socket.display()))?;
    let line =
        serde_json::to_string(&Request::new(body)).context("could not encode the request")?;
    writeln!(stream, "{line}")
        .with_context(|| format!("could not send the request to `{}`", socket.display()))?;
    let mut reader = BufReader::new(stream);
    loop {
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            reader
                .get_ref()
                .set_read_timeout(Some(left))
                .context("could not set the socket read timeout")?;
        }
        let mut line = String::new();
        let read = match reader.read_line(&mut line) {
            Ok(read) => read,
            Err(error)
                if deadline.is_some()
                    && matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
            {
                return Ok(None);
            }
            Err(error) => {
                return Err(error).with_context(|| {
                    format!(
                        "could not read the agent's response from `{}`",
                        socket.display()
                    )
                });
            }
        };
        if read == 0 {
            anyhow::bail!(
                "the agent closed the connection without a response; see its log at `{}`",
                logging::log_path().display()
            );
        }
        let response: Response =
            serde_json::from_str(&line).context("the agent sent a line that is not a response")?;
        if let Response::Progress { message, .. } = &response {
            on_progress(message);
            continue;
        }
        return Ok(Some(response));
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
    // The quota URL and the support contact are not part of the status
    // response, so they are read from the same config file the agent uses.
    let config = config::load(&config::config_path(|name| std::env::var_os(name))).ok();
    let color = quota_view::use_color(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    for status in &profiles {
        let profile = config
            .as_ref()
            .and_then(|config| config.profiles.get(&status.profile));
        let blocked = status
            .last_quota
            .as_ref()
            .filter(|answer| !answer.allowed)
            .map(|answer| {
                quota::blocked_message(
                    &status.profile,
                    profile.and_then(|profile| profile.support_contact.as_deref()),
                    answer,
                )
            });
        out!(
            "{}",
            quota_view::terminal_text(
                status,
                profile.map(|profile| profile.quota_url.is_some()),
                blocked.as_deref(),
                Utc::now(),
                color,
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `refresh`: asks for credentials, letting the agent log in, and
/// prints everything to stdout, which Claude Code shows in its sign-in box.
///
/// In a running session, Claude Code 2.1.328 shows that box only while the
/// command runs and replaces it with its own error once the command exits,
/// even with a non-zero exit code. So after explaining a block or an error the command waits
/// `hold` before it exits, ending no later than 5 s after the login
/// timeout, inside Claude Code's 180-second limit at the defaults. The
/// cost: a session that starts while blocked draws its interface only
/// after the hold, and shows no box there.
fn refresh(
    socket: &Path,
    profile: Option<String>,
    timeout: Duration,
    hold: Duration,
) -> anyhow::Result<ExitCode> {
    let profile = resolve_profile(profile)?;
    let deadline = Instant::now() + timeout;
    let response = exchange_until(
        socket,
        RequestBody::GetCredentials {
            profile: profile.clone(),
            interactive: true,
        },
        Some(deadline),
        |message| out!("{message}"),
    )?;
    match response {
        None => {
            out!(
                "Tollgate: the login for profile `{profile}` did not finish within {} seconds. Finish it in the browser or with the code above, or run `tollgate-agent login --profile {profile}`, then retry.",
                timeout.as_secs()
            );
            Ok(ExitCode::FAILURE)
        }
        Some(Response::Credentials(credentials)) => {
            out!(
                "Tollgate: profile `{profile}` has AWS credentials until {}.",
                credentials.expiration.format("%Y-%m-%d %H:%M UTC")
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(Response::Error(error)) => {
            let what = match error.kind {
                ErrorKind::QuotaBlocked => "Claude Code is blocked by your Tollgate quota.",
                _ => "Tollgate could not get AWS credentials.",
            };
            out!("{what}");
            out!("{}", error.message);
            for cause in &error.causes {
                out!("  caused by: {cause}");
            }
            // A person who runs the command in a terminal has read it already.
            if !std::io::stdout().is_terminal() {
                let hold_until = (Instant::now() + hold).min(deadline + Duration::from_secs(5));
                std::thread::sleep(hold_until.saturating_duration_since(Instant::now()));
            }
            Ok(ExitCode::FAILURE)
        }
        Some(other) => anyhow::bail!("the agent sent an unexpected response: {other:?}"),
    }
}

/// Runs `doctor` and prints one block per check.
fn run_doctor(profile: Option<String>) -> anyhow::Result<ExitCode> {
    logging::init_client();
    let profile = profile.or_else(|| {
        std::env::var(PROFILE_ENV)
            .ok()
            .filter(|name| !name.is_empty())
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let checks = runtime.block_on(doctor::run(profile.as_deref()));
    let color = quota_view::use_color(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let mut failed = 0;
    let mut warned = 0;
    for check in &checks {
        let label = match check.outcome {
            Outcome::Pass => "ok  ",
            Outcome::Warn => {
                warned += 1;
                "warn"
            }
            Outcome::Fail => {
                failed += 1;
                "FAIL"
            }
            Outcome::Skip => "skip",
        };
        let label = if color {
            let code = match check.outcome {
                Outcome::Pass => "32",
                Outcome::Warn => "33",
                Outcome::Fail => "31",
                Outcome::Skip => "2",
            };
            format!("\x1b[{code}m{label}\x1b[0m")
        } else {
            label.to_string()
        };
        out!("{label} {}: {}", check.name, check.detail);
        if let Some(fix) = &check.fix {
            out!("     fix: {fix}");
        }
    }
    out!(
        "{} checks: {} failed, {} warnings",
        checks.len(),
        failed,
        warned
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
