//! A login in progress for one profile, shared by every request that needs
//! it.
//!
//! The login runs in its own task, so a client that leaves does not end it
//! for the others. A request that joins first gets the progress notes sent
//! so far (the login URL or the device code), then each later one, and every
//! request receives the same result. When the last client waiting on a
//! login leaves, the login is cancelled, unless a credential request joined
//! it: the person may still be typing the code or finishing the browser
//! login, and the tokens are cached for the next call when they do.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tollgate_protocol::agent::Response;

use super::AgentError;
use crate::cache::session::IdentityTokens;
use crate::progress::Progress;

type LoginResult = Result<IdentityTokens, AgentError>;

/// One running login and the clients waiting on it.
pub(super) struct PendingLogin {
    profile: String,
    fanout: Mutex<Fanout>,
    result: watch::Sender<Option<LoginResult>>,
    /// Cancels the login; a child of the agent's shutdown token.
    pub(super) cancel: CancellationToken,
    waiters: AtomicUsize,
    /// Set once a credential request joined; such a login outlives its
    /// clients.
    outlives_clients: AtomicBool,
}

/// The notes sent so far and the clients to send later ones to.
#[derive(Default)]
struct Fanout {
    sent: Vec<(String, Option<String>)>,
    listeners: Vec<Progress>,
}

impl PendingLogin {
    pub(super) fn new(profile: &str, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            profile: profile.to_string(),
            fanout: Mutex::new(Fanout::default()),
            result: watch::Sender::new(None),
            cancel,
            waiters: AtomicUsize::new(0),
            outlives_clients: AtomicBool::new(false),
        })
    }

    fn fanout(&self) -> std::sync::MutexGuard<'_, Fanout> {
        self.fanout.lock().expect("fanout lock is never poisoned")
    }

    /// Returns the progress sink the login writes to. Each note is kept for
    /// clients that join later and sent to every client waiting now. The
    /// forwarding task ends when the login drops the sink.
    pub(super) fn progress_sink(self: &Arc<Self>) -> Progress {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let pending = self.clone();
        tokio::spawn(async move {
            while let Some(response) = receiver.recv().await {
                if let Response::Progress { message, url } = response {
                    let mut fanout = pending.fanout();
                    for listener in &fanout.listeners {
                        listener.send(message.clone(), url.clone());
                    }
                    fanout.sent.push((message, url));
                }
            }
        });
        Progress::new(sender)
    }

    /// Adds a client: replays the notes sent so far to `progress` and
    /// returns the handle that waits for the result. `outlives_clients`
    /// marks a credential request, whose login is not cancelled when the
    /// clients leave.
    pub(super) fn join(self: &Arc<Self>, progress: &Progress, outlives_clients: bool) -> Waiter {
        let mut fanout = self.fanout();
        for (message, url) in &fanout.sent {
            progress.send(message.clone(), url.clone());
        }
        fanout.listeners.push(progress.clone());
        drop(fanout);
        if outlives_clients {
            self.outlives_clients.store(true, Ordering::SeqCst);
        }
        self.waiters.fetch_add(1, Ordering::SeqCst);
        Waiter {
            pending: self.clone(),
            result: self.result.subscribe(),
        }
    }

    /// Returns whether the login has ended.
    pub(super) fn is_finished(&self) -> bool {
        self.result.borrow().is_some()
    }

    /// Waits until the login has ended, without joining it.
    pub(super) async fn ended(&self) {
        let mut result = self.result.subscribe();
        // The sender lives in `self`, so it is not dropped while this waits.
        let _ = result.wait_for(Option::is_some).await;
    }

    /// Sends the result to every waiting client.
    pub(super) fn finish(&self, result: LoginResult) {
        self.result.send_replace(Some(result));
        self.fanout().listeners.clear();
    }
}

/// One client waiting on a [`PendingLogin`]. Dropping it (the client left)
/// cancels the login when it was the last client and no credential request
/// joined.
pub(super) struct Waiter {
    pending: Arc<PendingLogin>,
    result: watch::Receiver<Option<LoginResult>>,
}

impl Waiter {
    /// Waits for the login's result.
    pub(super) async fn result(mut self) -> LoginResult {
        let result = self
            .result
            .wait_for(Option::is_some)
            .await
            .map(|result| result.clone());
        match result {
            Ok(Some(result)) => result,
            // The sender lives in the PendingLogin, which this waiter holds.
            _ => unreachable!("the login result sender outlives its waiters"),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let pending = &self.pending;
        let left = pending.waiters.fetch_sub(1, Ordering::SeqCst) - 1;
        if left > 0 || pending.is_finished() {
            return;
        }
        if pending.outlives_clients.load(Ordering::SeqCst) {
            tracing::info!(profile = %pending.profile, "every client waiting on the login left; it goes on so that a later request finds its tokens");
        } else {
            tracing::info!(profile = %pending.profile, "the last client waiting on the login left; cancelling the login");
            pending.cancel.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration as StdDuration;

    use chrono::{Duration, Utc};
    use tollgate_protocol::agent::ErrorKind;

    use super::*;
    use crate::service::tests::tokens;

    fn listener() -> (Progress, tokio::sync::mpsc::UnboundedReceiver<Response>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Progress::new(sender), receiver)
    }

    async fn next_url(notes: &mut tokio::sync::mpsc::UnboundedReceiver<Response>) -> String {
        match tokio::time::timeout(StdDuration::from_secs(5), notes.recv()).await {
            Ok(Some(Response::Progress { url: Some(url), .. })) => url,
            other => panic!("expected a progress note with a URL, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn late_joiner_gets_earlier_notes() {
        let pending = PendingLogin::new("bedrock", CancellationToken::new());
        let sink = pending.progress_sink();
        let (first, mut first_notes) = listener();
        let first_waiter = pending.join(&first, false);
        sink.send(
            "open the page".into(),
            Some("http://127.0.0.1:9/device".into()),
        );
        assert_eq!(
            next_url(&mut first_notes).await,
            "http://127.0.0.1:9/device"
        );

        let (second, mut second_notes) = listener();
        let second_waiter = pending.join(&second, false);
        assert_eq!(
            next_url(&mut second_notes).await,
            "http://127.0.0.1:9/device"
        );

        pending.finish(Ok(tokens(Utc::now() + Duration::hours(1))));
        assert!(first_waiter.result().await.is_ok(), "first waiter");
        assert!(second_waiter.result().await.is_ok(), "second waiter");
    }

    #[tokio::test]
    async fn failure_reaches_every_waiter() {
        let pending = PendingLogin::new("bedrock", CancellationToken::new());
        let waiters: Vec<Waiter> = (0..3)
            .map(|_| pending.join(&Progress::none(), true))
            .collect();
        pending.finish(Err(AgentError::new(ErrorKind::LoginFailed, "refused")));
        for waiter in waiters {
            let error = waiter.result().await.unwrap_err();
            assert_eq!(error.kind, ErrorKind::LoginFailed);
        }
    }

    #[tokio::test]
    async fn last_login_client_leaving_cancels() {
        let pending = PendingLogin::new("bedrock", CancellationToken::new());
        let first = pending.join(&Progress::none(), false);
        let second = pending.join(&Progress::none(), false);
        drop(first);
        assert!(!pending.cancel.is_cancelled(), "one client still waits");
        drop(second);
        assert!(pending.cancel.is_cancelled(), "nobody waits any more");
    }

    #[tokio::test]
    async fn credential_request_keeps_login_alive() {
        let pending = PendingLogin::new("bedrock", CancellationToken::new());
        let login = pending.join(&Progress::none(), false);
        let credentials = pending.join(&Progress::none(), true);
        drop(credentials);
        drop(login);
        assert!(!pending.cancel.is_cancelled());
    }
}
