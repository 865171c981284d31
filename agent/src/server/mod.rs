//! The agent's Unix socket: binding it safely, accepting connections from
//! the same user only, and shutting down cleanly.
//!
//! A lock file (`agent.lock`, held with `flock` for the agent's lifetime)
//! makes sure one agent serves a runtime folder. With the lock held, a
//! socket file that accepts no connection is stale (its agent was killed)
//! and is replaced. A socket that accepts a connection means another agent
//! runs, and this one exits without touching it.
//!
//! Shutdown follows the shape of tokio's mini-redis: a broadcast channel
//! notifies every connection to stop after its current request, a task tracker
//! waits for them (bounded by [`DRAIN_TIMEOUT`]), and the socket file is
//! removed.

pub mod connection;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::UnixListener;
use tokio::sync::{Semaphore, broadcast};
use tokio_util::task::TaskTracker;

use crate::service::Agent;

/// The maximum number of connections served at once; further clients wait
/// in the listen backlog until one closes.
pub const MAX_CONNECTIONS: usize = 64;

/// How long shutdown waits for running requests to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The lock file's name inside the runtime folder.
pub const LOCK_NAME: &str = "agent.lock";

/// The result of trying to become the folder's agent.
pub enum Bound {
    /// This process owns the socket.
    Serving(SocketListener),
    /// Another agent runs; this process must exit.
    AlreadyRunning { pid: Option<u32>, socket: PathBuf },
}

/// A bound socket plus the instance lock that protects it.
pub struct SocketListener {
    listener: UnixListener,
    socket_path: PathBuf,
    _lock: File,
}

impl SocketListener {
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }
}

/// Takes the instance lock and binds the socket in `runtime_dir`.
pub fn bind(runtime_dir: &Path) -> anyhow::Result<Bound> {
    let socket_path = tollgate_protocol::paths::socket_path(runtime_dir);
    let lock_path = runtime_dir.join(LOCK_NAME);
    let mut lock = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .with_context(|| format!("could not open the lock file `{}`", lock_path.display()))?;
    if let Err(error) =
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)
    {
        if error == rustix::io::Errno::WOULDBLOCK {
            let mut text = String::new();
            let _ = lock.read_to_string(&mut text);
            return Ok(Bound::AlreadyRunning {
                pid: text.trim().parse().ok(),
                socket: socket_path,
            });
        }
        return Err(anyhow::Error::from(std::io::Error::from(error)))
            .with_context(|| format!("could not lock `{}`", lock_path.display()));
    }
    lock.set_len(0)
        .and_then(|()| lock.rewind())
        .and_then(|()| writeln!(lock, "{}", std::process::id()))
        .with_context(|| {
            format!(
                "could not write the process id to `{}`",
                lock_path.display()
            )
        })?;

    match std::fs::symlink_metadata(&socket_path) {
        Ok(_) => {
            if std::os::unix::net::UnixStream::connect(&socket_path).is_ok() {
                return Ok(Bound::AlreadyRunning {
                    pid: None,
                    socket: socket_path,
                });
            }
            std::fs::remove_file(&socket_path).with_context(|| {
                format!(
                    "could not remove the stale socket `{}`",
                    socket_path.display()
                )
            })?;
            tracing::info!(socket = %socket_path.display(), "removed a stale socket left by an agent that did not shut down");
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error)
                .with_context(|| format!("could not inspect `{}`", socket_path.display()));
        }
    }
    let listener = UnixListener::bind(&socket_path)
        .with_context(|| format!("could not bind the socket `{}`", socket_path.display()))?;
    std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("could not set mode 0600 on `{}`", socket_path.display()))?;
    Ok(Bound::Serving(SocketListener {
        listener,
        socket_path,
        _lock: lock,
    }))
}

/// Serves connections until `shutdown` completes, then drains and removes
/// the socket.
pub async fn serve(
    listener: SocketListener,
    agent: Arc<Agent>,
    shutdown: impl Future<Output = ()>,
) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let tracker = TaskTracker::new();
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let uid = rustix::process::getuid().as_raw();

    tokio::select! {
        () = accept_loop(&listener.listener, &agent, &notify_shutdown, &tracker, &limit, uid) => {}
        () = shutdown => tracing::info!("shutting down"),
    }

    let _ = notify_shutdown.send(());
    drop(notify_shutdown);
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "requests still running after {DRAIN_TIMEOUT:?}; stopping anyway"
        );
    }
    match std::fs::remove_file(&listener.socket_path) {
        Ok(()) => tracing::info!(socket = %listener.socket_path.display(), "removed the socket"),
        Err(error) => {
            tracing::warn!(socket = %listener.socket_path.display(), %error, "could not remove the socket")
        }
    }
}

async fn accept_loop(
    listener: &UnixListener,
    agent: &Arc<Agent>,
    notify_shutdown: &broadcast::Sender<()>,
    tracker: &TaskTracker,
    limit: &Arc<Semaphore>,
    uid: u32,
) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let permit = limit
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = Duration::from_millis(10);
                stream
            }
            Err(error) => {
                // Usually too many open files: wait and retry rather than
                // stop serving.
                tracing::warn!(%error, retry_in = ?backoff, "accepting a connection failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(peer) if connection::peer_allowed(peer.uid(), uid) => {}
            Ok(peer) => {
                tracing::warn!(peer_uid = peer.uid(), peer_pid = ?peer.pid(), "rejected a connection from another user");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "could not read the peer's credentials; closing the connection");
                continue;
            }
        }
        let agent = agent.clone();
        let shutdown = notify_shutdown.subscribe();
        tracker.spawn(async move {
            connection::serve(stream, agent, shutdown).await;
            drop(permit);
        });
    }
}
