//! Log setup: the agent logs to `$XDG_STATE_HOME/tollgate/agent.log`
//! (default `~/.local/state/tollgate/agent.log`) and, with `--foreground`,
//! to stderr as well. `TOLLGATE_LOG` sets the filter in tracing's
//! `EnvFilter` syntax, default `info`.
//!
//! A bare level such as `TOLLGATE_LOG=trace` applies to Tollgate's own
//! crates only, and other crates stay at `warn`: HTTP and D-Bus libraries
//! log request details at trace level, which could include bearer tokens.
//! A filter with explicit targets (`TOLLGATE_LOG=info,hyper=trace`) is used
//! as given.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::Context;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variable with the log filter.
pub const LOG_ENV: &str = "TOLLGATE_LOG";

/// Returns the agent's log file path.
pub fn log_path() -> PathBuf {
    let state = directories::BaseDirs::new()
        .and_then(|dirs| {
            dirs.state_dir()
                .map(std::path::Path::to_path_buf)
                .or_else(|| Some(dirs.home_dir().join(".local").join("state")))
        })
        .unwrap_or_else(|| PathBuf::from(".local/state"));
    state.join("tollgate").join("agent.log")
}

/// Returns the filter directives for `value` (the `TOLLGATE_LOG` setting),
/// falling back to `default_level`.
pub fn directives(value: Option<&str>, default_level: &str) -> String {
    let value = value
        .map(str::trim)
        .filter(|value| !value.is_empty())
        .unwrap_or(default_level);
    if value.contains('=') || value.contains(',') {
        value.to_string()
    } else {
        format!("warn,tollgate_agent={value},tollgate_protocol={value}")
    }
}

/// Builds the filter for `value`; an invalid setting falls back to
/// `default_level` for Tollgate's crates.
pub fn filter(value: Option<&str>, default_level: &str) -> EnvFilter {
    EnvFilter::try_new(directives(value, default_level))
        .unwrap_or_else(|_| EnvFilter::new(directives(None, default_level)))
}

/// Sets up logging for the daemon and returns the log file path.
pub fn init_daemon(stderr: bool) -> anyhow::Result<PathBuf> {
    let path = log_path();
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .create(parent)
            .with_context(|| format!("could not create the log folder `{}`", parent.display()))?;
    }
    let file = File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("could not open the log file `{}`", path.display()))?;
    let setting = std::env::var(LOG_ENV).ok();
    let file_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(Mutex::new(file));
    let stderr_layer =
        stderr.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter(setting.as_deref(), "info"))
        .with(file_layer)
        .with(stderr_layer)
        .try_init()
        .context("could not set up logging")?;
    if let Some(setting) = setting.as_deref()
        && let Err(error) = EnvFilter::try_new(directives(Some(setting), "info"))
    {
        tracing::warn!(%error, "{LOG_ENV}={setting:?} is not a valid filter; logging at info instead");
    }
    Ok(path)
}

/// Sets up logging for the client subcommands: stderr, default `warn`.
pub fn init_client() {
    let setting = std::env::var(LOG_ENV).ok();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(setting.as_deref(), "warn"))
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_level_limited_to_own_crates() {
        assert_eq!(
            directives(Some("trace"), "info"),
            "warn,tollgate_agent=trace,tollgate_protocol=trace"
        );
        assert_eq!(
            directives(None, "info"),
            "warn,tollgate_agent=info,tollgate_protocol=info"
        );
        assert_eq!(
            directives(Some(" "), "warn"),
            "warn,tollgate_agent=warn,tollgate_protocol=warn"
        );
        assert_eq!(
            directives(Some("info,hyper=debug"), "info"),
            "info,hyper=debug"
        );
    }
}
