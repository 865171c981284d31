//! Progress notes sent to the requesting client while a request runs.

use tokio::sync::mpsc::UnboundedSender;
use tollgate_protocol::agent::Response;

/// A sender of [`Response::Progress`] lines to one connection. Sending to a
/// client that has gone away is silently dropped.
#[derive(Clone, Default)]
pub struct Progress {
    sender: Option<UnboundedSender<Response>>,
}

impl Progress {
    pub fn new(sender: UnboundedSender<Response>) -> Self {
        Self {
            sender: Some(sender),
        }
    }

    /// A sink for requests that have no client to tell.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn send(&self, message: String, url: Option<String>) {
        if let Some(sender) = &self.sender {
            // The client may have disconnected; the request still finishes.
            let _ = sender.send(Response::Progress { message, url });
        }
    }
}
