//! Checks of the machine itself: the secret store, the runtime folder and
//! the agent's socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use tollgate_protocol::agent::{Request, RequestBody, Response};

use super::Check;
use crate::daemon;
use crate::runtime_dir;
use crate::store::{self, STORE_ENV};

/// Probes the secret store the agent would pick.
pub fn keyring() -> Check {
    let preference = std::env::var(STORE_ENV).ok();
    match store::select(preference.as_deref()) {
        Ok(selection) if selection.store.name() == "memory" && preference.is_none() => Check::warn(
            "keyring",
            selection.reason,
            "logins are lost when the agent stops; start a Secret Service (for example gnome-keyring) in the desktop session, or run the agent in a kernel session keyring (`keyctl session`)",
        ),
        Ok(selection) => Check::pass("keyring", selection.reason),
        Err(error) => Check::fail(
            "keyring",
            error,
            format!("unset {STORE_ENV} or set it to a store that works here"),
        ),
    }
}

/// Checks the runtime folder's owner and mode and the socket's mode, and
/// whether an agent accepts connections.
pub fn runtime_folder() -> Vec<Check> {
    let folder = daemon::runtime_dir_path();
    let uid = rustix::process::getuid().as_raw();
    let metadata = match std::fs::symlink_metadata(&folder) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::pass(
                "runtime folder",
                format!(
                    "`{}` does not exist yet; the agent creates it with mode 0700",
                    folder.display()
                ),
            )];
        }
        Err(error) => {
            return vec![Check::fail(
                "runtime folder",
                format!("could not inspect `{}`: {error}", folder.display()),
                "set TOLLGATE_RUNTIME_DIR to a private folder you own",
            )];
        }
    };
    let mut checks = Vec::new();
    match runtime_dir::check(&folder, &metadata, uid) {
        Ok(()) => checks.push(Check::pass(
            "runtime folder",
            format!("`{}` is yours with mode 0700", folder.display()),
        )),
        Err(error) => {
            checks.push(Check::fail(
                "runtime folder",
                error.to_string(),
                "the agent refuses to use this folder; apply the fix named above, then run any AWS command",
            ));
            return checks;
        }
    }
    checks.push(socket(&daemon::socket_path()));
    checks
}

fn socket(path: &std::path::Path) -> Check {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(_) => {
            return Check::pass(
                "agent socket",
                format!(
                    "no agent is running (no `{}`); the shim starts one on the first request",
                    path.display()
                ),
            );
        }
    };
    if !metadata.file_type().is_socket() {
        return Check::fail(
            "agent socket",
            format!("`{}` is not a socket", path.display()),
            format!(
                "remove it (`rm {}`); the agent creates the socket when it starts",
                path.display()
            ),
        );
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Check::fail(
            "agent socket",
            format!(
                "`{}` has mode {mode:04o}, which lets group or others connect",
                path.display()
            ),
            "stop the agent (`kill` its pid) and start it again; it creates the socket with mode 0600",
        );
    }
    match hello(path) {
        Ok(version) => Check::pass(
            "agent socket",
            format!(
                "`{}` has mode {mode:04o}; agent {version} accepts connections",
                path.display()
            ),
        ),
        Err(error) => Check::warn(
            "agent socket",
            format!("`{}` does not answer: {error}", path.display()),
            "the socket is left over from an agent that stopped; run `tollgate-agent run` or any AWS command to start a new one",
        ),
    }
}

/// Sends a `hello` and returns the agent's version.
fn hello(path: &std::path::Path) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let line = serde_json::to_string(&Request::new(RequestBody::Hello {
        client: "tollgate-agent doctor".into(),
    }))?;
    writeln!(stream, "{line}")?;
    let mut response = String::new();
    BufReader::new(stream).read_line(&mut response)?;
    match serde_json::from_str(&response)? {
        Response::Hello { agent_version, .. } => Ok(agent_version),
        other => anyhow::bail!("unexpected response {other:?}"),
    }
}
