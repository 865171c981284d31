//! `tollgate-agent run`: preparing the runtime folder, binding the socket,
//! choosing the secret store and serving until SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tollgate_protocol::paths;

use crate::config::{ConfigSource, config_path};
use crate::login::oidc::Oidc;
use crate::notices::Notices;
use crate::server::{self, Bound};
use crate::service::Agent;
use crate::store::{self, MemoryStore};
use crate::sts::AwsSts;
use crate::{logging, runtime_dir};

/// How long the secret store probe may take before memory is used instead.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a starting client waits for a newly started agent's socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The outcome of `run`.
pub enum RunOutcome {
    Stopped,
    AlreadyRunning { pid: Option<u32>, socket: PathBuf },
}

/// Returns the runtime folder for this user.
pub fn runtime_dir_path() -> PathBuf {
    paths::runtime_dir(
        |name| std::env::var_os(name),
        rustix::process::getuid().as_raw(),
    )
}

/// Returns the socket path for this user.
pub fn socket_path() -> PathBuf {
    paths::socket_path(&runtime_dir_path())
}

/// Runs the agent in this process until a signal stops it.
pub async fn run(log_path: &Path) -> anyhow::Result<RunOutcome> {
    let uid = rustix::process::getuid().as_raw();
    let dir = runtime_dir_path();
    runtime_dir::prepare(&dir, uid)?;
    let listener = match server::bind(&dir)? {
        Bound::Serving(listener) => listener,
        Bound::AlreadyRunning { pid, socket } => {
            tracing::info!(pid = ?pid, socket = %socket.display(), "another agent is already running; exiting");
            return Ok(RunOutcome::AlreadyRunning { pid, socket });
        }
    };

    let preference = std::env::var(store::STORE_ENV).ok();
    let probe = tokio::task::spawn_blocking(move || store::select(preference.as_deref()));
    let selection = match tokio::time::timeout(STORE_PROBE_TIMEOUT, probe).await {
        Ok(Ok(Ok(selection))) => selection,
        Ok(Ok(Err(message))) => anyhow::bail!(message),
        Ok(Err(error)) => store::Selection {
            store: Arc::new(MemoryStore::default()),
            reason: format!(
                "probing the OS keyring failed ({error}); caching secrets in memory only"
            ),
        },
        Err(_) => store::Selection {
            store: Arc::new(MemoryStore::default()),
            reason: format!(
                "the OS keyring did not respond within {STORE_PROBE_TIMEOUT:?}; caching secrets in memory only"
            ),
        },
    };
    tracing::info!(store = selection.store.name(), "{}", selection.reason);

    let config = ConfigSource::new(config_path(|name| std::env::var_os(name)));
    let cancel = CancellationToken::new();
    let agent = Arc::new(
        Agent::new(
            config,
            Oidc::new().context("could not build the HTTP client")?,
            Arc::new(AwsSts::default()),
            selection.store,
            cancel.clone(),
        )
        .with_notices(Arc::new(Notices::new(Notices::default_ledger_path()))),
    );
    agent.load_sessions().await;
    tracing::info!(pid = std::process::id(), socket = %listener.socket_path().display(), log = %log_path.display(), "agent started");

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("could not listen for SIGTERM")?;
    let stop = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = tokio::signal::ctrl_c() => tracing::info!("received SIGINT"),
        }
        cancel.cancel();
    };
    server::serve(listener, agent, stop).await;
    tracing::info!("agent stopped");
    Ok(RunOutcome::Stopped)
}

/// Starts `tollgate-agent run --foreground` from this executable as a
/// detached process in its own process group, with no terminal I/O.
pub fn spawn_detached() -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("could not find the tollgate-agent executable")?;
    Command::new(&exe)
        .args(["run", "--foreground"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .with_context(|| format!("could not start `{} run`", exe.display()))
}

/// Waits until the agent accepts connections on `socket`. Fails early when `child`
/// exits without a live agent behind the socket.
pub fn wait_until_accepting(
    socket: &Path,
    child: &mut Child,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Some(status) = child
            .try_wait()
            .context("could not check on the started agent")?
        {
            // A second agent exits at once when one already serves; the
            // socket check above covers that case on the next round.
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                return Ok(());
            }
            anyhow::bail!(
                "the agent exited ({status}) before it accepted connections on `{}`; see its log at `{}`",
                socket.display(),
                logging::log_path().display()
            );
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "the agent did not accept connections on `{}` within {timeout:?}; see its log at `{}`",
                socket.display(),
                logging::log_path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
