//! Where the agent's socket lives.
//!
//! The shim and the agent compute the same path from the environment, so
//! the shim can find (or start) the agent without any configuration.
//!
//! - `TOLLGATE_RUNTIME_DIR`, when set, is the folder.
//! - Linux and other Unix with `XDG_RUNTIME_DIR`: `$XDG_RUNTIME_DIR/tollgate`.
//! - Otherwise: `$TMPDIR/tollgate-<uid>` (or `/tmp/tollgate-<uid>`).
//!
//! The agent checks and creates the folder (0700, owned by the user); the
//! shim only connects.

use std::ffi::OsString;
use std::path::PathBuf;

/// The environment variable that overrides the runtime folder.
pub const RUNTIME_DIR_ENV: &str = "TOLLGATE_RUNTIME_DIR";

/// The socket's file name inside the runtime folder.
pub const SOCKET_NAME: &str = "agent.sock";

/// The environment variable the agent sets for itself and its children. A
/// shim that sees it refuses to run, because the agent resolving its own AWS
/// credentials through the shim would call itself forever.
pub const INSIDE_AGENT_ENV: &str = "TOLLGATE_INSIDE_AGENT";

/// Returns the agent's runtime folder, reading the environment through
/// `env` so tests can supply their own.
pub fn runtime_dir(env: impl Fn(&str) -> Option<OsString>, uid: u32) -> PathBuf {
    if let Some(dir) = env(RUNTIME_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR").filter(|dir| !dir.is_empty()) {
        return PathBuf::from(dir).join("tollgate");
    }
    let tmp = env("TMPDIR")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    tmp.join(format!("tollgate-{uid}"))
}

/// Returns the agent's socket path for the given runtime folder.
pub fn socket_path(runtime_dir: &std::path::Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<OsString> {
        move |key| {
            pairs
                .iter()
                .find(|(name, _)| *name == key)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn override_wins() {
        let env = env_of(&[
            (RUNTIME_DIR_ENV, "/x/y"),
            ("XDG_RUNTIME_DIR", "/run/user/5"),
        ]);
        assert_eq!(runtime_dir(env, 5), PathBuf::from("/x/y"));
    }

    #[test]
    fn xdg_runtime_dir_is_used() {
        let env = env_of(&[("XDG_RUNTIME_DIR", "/run/user/5")]);
        assert_eq!(runtime_dir(env, 5), PathBuf::from("/run/user/5/tollgate"));
    }

    #[test]
    fn falls_back_to_tmp_with_uid() {
        assert_eq!(
            runtime_dir(env_of(&[]), 1234),
            PathBuf::from("/tmp/tollgate-1234")
        );
        let env = env_of(&[("TMPDIR", "/var/tmp")]);
        assert_eq!(runtime_dir(env, 7), PathBuf::from("/var/tmp/tollgate-7"));
    }
}
