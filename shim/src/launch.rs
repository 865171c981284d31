//! Reaching the agent: connecting to its socket, and starting
//! `tollgate-agent run` when nothing listens there.
//!
//! The agent is started detached: in its own process group, with stdin,
//! stdout and stderr on `/dev/null`, and never waited for. An agent that
//! inherited the caller's stdout pipe would keep the AWS SDK waiting for
//! end-of-file, and one in the caller's process group would die with a
//! Ctrl-C meant for the caller.

use std::ffi::OsString;
use std::io::{self, ErrorKind as IoErrorKind};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};

use crate::client::Deadline;
use crate::failure::{Failure, FailureKind};

/// The environment variable that names the agent binary to start. It wins
/// over the binary next to the shim and over PATH.
pub const AGENT_BIN_ENV: &str = "TOLLGATE_AGENT_BIN";

/// The agent's file name next to the shim and on PATH.
const AGENT_FILE_NAME: &str = "tollgate-agent";

/// How long the shim waits for a freshly started agent to open its socket.
pub const START_WAIT: Duration = Duration::from_secs(5);

/// How long the shim keeps trying after the started agent exited, in case
/// it exited because another agent won the race for the socket.
const EXITED_GRACE: Duration = Duration::from_secs(1);

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(10);
const MAX_RETRY_DELAY: Duration = Duration::from_millis(200);

/// Connects to the agent at `socket`, starting one when the socket is
/// missing or refuses connections.
pub fn connect_or_start(
    socket: &Path,
    deadline: &Deadline,
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<UnixStream, Failure> {
    if let Some(stream) = try_connect(socket, deadline, env)? {
        return Ok(stream);
    }

    let not_started = || {
        format!(
            "no agent is listening at {} and none could be started",
            socket.display()
        )
    };
    let binary = find_agent_binary(env, std::env::current_exe().ok()).map_err(|error| {
        Failure::new(FailureKind::Unreachable, error.context(not_started())).with_hint(format!(
            "install tollgate-agent next to this program or on PATH, or set \
             {AGENT_BIN_ENV} to its path"
        ))
    })?;
    let child = spawn_detached(&binary).map_err(|error| {
        Failure::new(FailureKind::Unreachable, error.context(not_started()))
            .with_hint(start_by_hand_hint(env))
    })?;
    wait_for_socket(socket, child, &binary, deadline, env)
}

/// Connects to the agent socket and checks its peer. Returns `None` when no
/// agent listens there.
fn try_connect(
    socket: &Path,
    deadline: &Deadline,
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<Option<UnixStream>, Failure> {
    match connect(socket, deadline) {
        Ok(stream) => verify_peer(stream, socket).map(Some),
        Err(error) if agent_absent(&error) => Ok(None),
        Err(error) if error.kind() == IoErrorKind::TimedOut => Err(Failure::new(
            FailureKind::TimedOut,
            anyhow!(
                "the agent at {} did not accept the connection within {} s, because \
                 its queue of pending connections stayed full",
                socket.display(),
                deadline.idle().as_secs_f64()
            ),
        )
        .with_hint("restart the agent with `tollgate-agent run`, or check its log")),
        Err(error) => Err(Failure::new(
            FailureKind::Unreachable,
            anyhow::Error::new(error).context(format!(
                "failed to connect to the agent socket {}",
                socket.display()
            )),
        )
        .with_hint(start_by_hand_hint(env))),
    }
}

/// Connects without blocking on a full accept queue. A blocking `connect`
/// on a Unix socket waits with no timeout while the listener's queue is
/// full. A non-blocking one fails with `EAGAIN` instead, and this retries
/// until the deadline.
#[cfg(target_os = "linux")]
fn connect(socket: &Path, deadline: &Deadline) -> io::Result<UnixStream> {
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

    let address = SocketAddrUnix::new(socket)?;
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        match rustix::net::connect(&fd, &address) {
            Ok(()) => {
                rustix::io::ioctl_fionbio(&fd, false)?;
                return Ok(UnixStream::from(fd));
            }
            Err(Errno::AGAIN) => {
                let left = deadline
                    .remaining()
                    .map_err(|_| io::Error::from(IoErrorKind::TimedOut))?;
                std::thread::sleep(delay.min(left));
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
            Err(error) => return Err(error.into()),
        }
    }
}

/// NOTE: other Unix systems use a blocking connect, which waits with no
/// timeout while the agent's accept queue is full.
#[cfg(not(target_os = "linux"))]
fn connect(socket: &Path, _deadline: &Deadline) -> io::Result<UnixStream> {
    UnixStream::connect(socket)
}

/// Returns whether a connect error means that no agent listens. That is
/// the case when the socket file or its folder is missing, or when the file
/// is left over from an agent that exited.
fn agent_absent(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        IoErrorKind::NotFound | IoErrorKind::ConnectionRefused
    )
}

/// Finds the agent binary: `$TOLLGATE_AGENT_BIN`, else `tollgate-agent`
/// next to `current_exe`, else on PATH.
pub fn find_agent_binary(
    env: &impl Fn(&str) -> Option<OsString>,
    current_exe: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
    if let Some(path) = env(AGENT_BIN_ENV).filter(|value| !value.is_empty()) {
        let path = PathBuf::from(path);
        if !is_executable(&path) {
            return Err(anyhow!(
                "{AGENT_BIN_ENV} is {}, which is not an executable file",
                path.display()
            ));
        }
        return Ok(path);
    }

    let sibling = current_exe
        .as_deref()
        .and_then(Path::parent)
        .map(|folder| folder.join(AGENT_FILE_NAME));
    if let Some(sibling) = sibling.as_ref().filter(|path| is_executable(path)) {
        return Ok(sibling.clone());
    }

    if let Some(path_var) = env("PATH") {
        for folder in std::env::split_paths(&path_var) {
            let candidate = folder.join(AGENT_FILE_NAME);
            if is_executable(&candidate) {
                return Ok(candidate);
            }
        }
    }

    let next_to = sibling
        .as_deref()
        .and_then(Path::parent)
        .map(|folder| format!("in {} or ", folder.display()))
        .unwrap_or_default();
    Err(anyhow!(
        "{AGENT_FILE_NAME} was not found {next_to}on PATH, and {AGENT_BIN_ENV} is not set"
    ))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Starts `binary run` in its own process group with the standard streams
/// on `/dev/null`. The child is not waited for, so it outlives the shim.
fn spawn_detached(binary: &Path) -> anyhow::Result<Child> {
    Command::new(binary)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("failed to start `{} run`", binary.display()))
}

/// Retries the socket with a doubling delay until the agent accepts the
/// connection, the start wait or the run's hard cap runs out, or the agent
/// has exited.
fn wait_for_socket(
    socket: &Path,
    mut child: Child,
    binary: &Path,
    deadline: &Deadline,
    env: &impl Fn(&str) -> Option<OsString>,
) -> Result<UnixStream, Failure> {
    let started = Instant::now();
    let limit = START_WAIT.min(deadline.until_hard_end());
    let mut delay = FIRST_RETRY_DELAY;
    let mut exited: Option<(ExitStatus, Instant)> = None;

    loop {
        if let Some(stream) = try_connect(socket, deadline, env)? {
            return Ok(stream);
        }

        if exited.is_none()
            && let Ok(Some(status)) = child.try_wait()
        {
            exited = Some((status, Instant::now()));
        }
        let elapsed = started.elapsed();
        let gave_up = match exited {
            Some((_, at)) => at.elapsed() >= EXITED_GRACE || elapsed >= limit,
            None => elapsed >= limit,
        };
        if gave_up {
            let reason = match exited {
                Some((status, _)) => format!(
                    "started `{} run` (pid {}), but it exited with {status} before \
                     opening the socket",
                    binary.display(),
                    child.id()
                ),
                None => format!(
                    "started `{} run` (pid {}), but it did not open the socket within {} s",
                    binary.display(),
                    child.id(),
                    limit.as_secs_f64()
                ),
            };
            return Err(Failure::new(
                FailureKind::Unreachable,
                anyhow!("no agent is listening at {}: {reason}", socket.display()),
            )
            .with_hint(start_by_hand_hint(env)));
        }

        std::thread::sleep(delay.min(limit.saturating_sub(elapsed)));
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// Checks that the process serving the socket runs as the same user, so a
/// socket planted by another user in a shared temporary folder gets no
/// request.
#[cfg(target_os = "linux")]
fn verify_peer(stream: UnixStream, socket: &Path) -> Result<UnixStream, Failure> {
    let own = rustix::process::getuid().as_raw();
    let peer = rustix::net::sockopt::socket_peercred(&stream)
        .map_err(io::Error::from)
        .with_context(|| {
            format!(
                "failed to read the peer credentials of the agent socket {}",
                socket.display()
            )
        })
        .map_err(|error| Failure::new(FailureKind::Unreachable, error))?;
    let peer_uid = peer.uid.as_raw();
    if peer_uid != own {
        return Err(Failure::new(
            FailureKind::Unreachable,
            anyhow!(
                "the agent socket {} is served by uid {peer_uid}, not by this user (uid {own})",
                socket.display()
            ),
        )
        .with_hint(
            "remove that socket, or set TOLLGATE_RUNTIME_DIR to a folder only you can \
             write, then retry",
        ));
    }
    Ok(stream)
}

/// NOTE: other Unix systems skip the peer check, because their call for it
/// (`getpeereid`) is not wired up yet. The agent's 0700 runtime folder
/// still keeps other users out.
#[cfg(not(target_os = "linux"))]
fn verify_peer(stream: UnixStream, _socket: &Path) -> Result<UnixStream, Failure> {
    Ok(stream)
}

/// Returns the next step when no agent can be reached: how to run it by
/// hand and where it logs.
pub fn start_by_hand_hint(env: &impl Fn(&str) -> Option<OsString>) -> String {
    let log = agent_log_path(env)
        .map(|path| format!(" or read its log at {}", path.display()))
        .unwrap_or_default();
    format!("start the agent by hand with `tollgate-agent run --foreground` to see why{log}")
}

/// Returns the agent's log file: `$XDG_STATE_HOME/tollgate/agent.log`,
/// else `~/.local/state/tollgate/agent.log`.
fn agent_log_path(env: &impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let state = env("XDG_STATE_HOME")
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .filter(|path| path.is_absolute())
        .or_else(|| {
            env("HOME")
                .filter(|value| !value.is_empty())
                .map(|home| PathBuf::from(home).join(".local/state"))
        })?;
    Some(state.join("tollgate").join("agent.log"))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn make_executable(path: &Path) {
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn agent_bin_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let from_env = dir.path().join("custom-agent");
        make_executable(&from_env);
        let sibling = dir.path().join(AGENT_FILE_NAME);
        make_executable(&sibling);
        let env = |name: &str| (name == AGENT_BIN_ENV).then(|| from_env.clone().into_os_string());
        let found = find_agent_binary(&env, Some(dir.path().join("shim"))).unwrap();
        assert_eq!(found, from_env);
    }

    #[test]
    fn agent_bin_env_must_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let env = |name: &str| (name == AGENT_BIN_ENV).then(|| missing.clone().into_os_string());
        let error = find_agent_binary(&env, None).unwrap_err().to_string();
        assert!(error.contains(AGENT_BIN_ENV), "{error}");
        assert!(error.contains("nope"), "{error}");
    }

    #[test]
    fn sibling_before_path() {
        let shim_dir = tempfile::tempdir().unwrap();
        let path_dir = tempfile::tempdir().unwrap();
        make_executable(&shim_dir.path().join(AGENT_FILE_NAME));
        make_executable(&path_dir.path().join(AGENT_FILE_NAME));
        let path_var = path_dir.path().as_os_str().to_owned();
        let env = |name: &str| (name == "PATH").then(|| path_var.clone());
        let found = find_agent_binary(&env, Some(shim_dir.path().join("shim"))).unwrap();
        assert_eq!(found, shim_dir.path().join(AGENT_FILE_NAME));
    }

    #[test]
    fn path_is_searched() {
        let shim_dir = tempfile::tempdir().unwrap();
        let empty_dir = tempfile::tempdir().unwrap();
        let path_dir = tempfile::tempdir().unwrap();
        // A non-executable file earlier on PATH is skipped.
        fs::write(empty_dir.path().join(AGENT_FILE_NAME), "data").unwrap();
        make_executable(&path_dir.path().join(AGENT_FILE_NAME));
        let path_var = std::env::join_paths([empty_dir.path(), path_dir.path()]).unwrap();
        let env = |name: &str| (name == "PATH").then(|| path_var.clone());
        let found = find_agent_binary(&env, Some(shim_dir.path().join("shim"))).unwrap();
        assert_eq!(found, path_dir.path().join(AGENT_FILE_NAME));
    }

    #[test]
    fn missing_agent_names_fix() {
        let shim_dir = tempfile::tempdir().unwrap();
        let env = |_: &str| None;
        let error = find_agent_binary(&env, Some(shim_dir.path().join("shim")))
            .unwrap_err()
            .to_string();
        assert!(error.contains(AGENT_BIN_ENV), "{error}");
        assert!(
            error.contains(&shim_dir.path().display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn log_path_prefers_xdg_state_home() {
        let env = |name: &str| match name {
            "XDG_STATE_HOME" => Some(OsString::from("/state")),
            "HOME" => Some(OsString::from("/home/u")),
            _ => None,
        };
        assert_eq!(
            agent_log_path(&env).unwrap(),
            PathBuf::from("/state/tollgate/agent.log")
        );
        let env = |name: &str| (name == "HOME").then(|| OsString::from("/home/u"));
        assert_eq!(
            agent_log_path(&env).unwrap(),
            PathBuf::from("/home/u/.local/state/tollgate/agent.log")
        );
    }
}
