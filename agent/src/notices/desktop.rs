//! Desktop notifications through the freedesktop notification service
//! (`notify-rust`, over the session D-Bus on Linux).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify_rust::{Notification, Timeout, Urgency};

/// Shows notifications on background threads. A notification that cannot
/// be shown (no session bus, no notification server) is logged at warn
/// once and at debug afterwards; it never fails a request.
#[derive(Default)]
pub struct Desktop {
    failure_logged: Arc<AtomicBool>,
}

impl Desktop {
    /// Shows a notification; `critical` marks a block.
    pub fn show(&self, summary: String, body: String, critical: bool) {
        let failure_logged = self.failure_logged.clone();
        std::thread::spawn(move || {
            let urgency = if critical {
                Urgency::Critical
            } else {
                Urgency::Normal
            };
            let result = Notification::new()
                .appname("Tollgate")
                .summary(&summary)
                .body(&body)
                .urgency(urgency)
                .timeout(Timeout::Milliseconds(20_000))
                .show();
            match result {
                Ok(_) => {
                    tracing::debug!(%summary, "showed a desktop notification")
                }
                Err(error) => {
                    if failure_logged.swap(true, Ordering::Relaxed) {
                        tracing::debug!(%error, "could not show a desktop notification");
                    } else {
                        tracing::warn!(%error, "could not show a desktop notification; later failures are logged at debug");
                    }
                }
            }
        });
    }
}
