//! The webhook sink: a background task that sends queued alerts as JSON
//! POSTs and retries failures with exponential backoff.
//!
//! Ingest only inserts alerts into the store's outbox, so a slow or failing
//! webhook never delays it. The sender claims due alerts with a lease (so
//! several processes on one store do not send the same alert at once),
//! POSTs each, and records the outcome. A sender stopped between the POST
//! and the record sends that alert again once the lease expires, so the
//! webhook may rarely receive an alert twice. Its `alert.dedup_key`
//! identifies repeats.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::AlertRecord;
use crate::store::Store;

/// A queued alert claimed for one delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDelivery {
    /// The outbox row.
    pub id: i64,
    /// Failed attempts so far.
    pub attempts: u32,
    pub alert: AlertRecord,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeliveryOutcome {
    Delivered,
    /// Failed; try again at `at`.
    Retry {
        error: String,
        at: DateTime<Utc>,
    },
    /// Failed for the last time; the alert stays in the log only.
    Abandoned {
        error: String,
    },
}

/// Settings of the webhook sender.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    /// The timeout of each POST.
    pub timeout: Duration,
    /// How often the sender looks for due alerts when nothing wakes it.
    pub poll_interval: Duration,
    /// How long a claimed alert is reserved for one sender.
    pub lease: Duration,
    /// The wait after the first failure; it doubles after each failure.
    pub first_retry: Duration,
    /// The maximum wait between two attempts.
    pub max_retry: Duration,
    /// Attempts after which an alert is abandoned.
    pub max_attempts: u32,
}

impl WebhookSettings {
    /// Builds settings for `url` with the defaults: 10 s timeout, a poll
    /// every 5 s, a 60 s lease, retries after 5 s doubling up to 1 h, and
    /// 48 attempts (about 40 hours) before an alert is abandoned.
    pub fn new(url: reqwest::Url) -> Self {
        Self {
            url,
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(5),
            lease: Duration::from_secs(60),
            first_retry: Duration::from_secs(5),
            max_retry: Duration::from_secs(3600),
            max_attempts: 48,
        }
    }

    /// Returns the wait before the next attempt after `failures` failures.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(30));
        self.first_retry.saturating_mul(factor).min(self.max_retry)
    }
}

/// Sends queued alerts to the webhook.
pub struct WebhookSender {
    store: Arc<dyn Store>,
    client: reqwest::Client,
    settings: WebhookSettings,
    wake: Arc<Notify>,
}

impl WebhookSender {
    /// Builds a sender; `wake` makes it look for due alerts at once.
    pub fn new(
        store: Arc<dyn Store>,
        settings: WebhookSettings,
        wake: Arc<Notify>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            store,
            client,
            settings,
            wake,
        })
    }

    /// Runs the sender until the task is dropped.
    pub async fn run(self) {
        tracing::info!(url = %redacted_url(&self.settings.url), "sending alerts to the webhook");
        loop {
            self.send_due().await;
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Sends every due alert, in claims of 20.
    pub async fn send_due(&self) {
        loop {
            let now = Utc::now();
            let lease_until = now + self.settings.lease;
            let claimed = match self
                .store
                .claim_alert_deliveries(now, lease_until, 20)
                .await
            {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::warn!(error = %crate::server::error_chain(&error), "cannot read queued alerts; retrying later");
                    return;
                }
            };
            if claimed.is_empty() {
                return;
            }
            for delivery in claimed {
                let outcome = self.send(&delivery).await;
                if let Err(error) = self
                    .store
                    .finish_alert_delivery(delivery.id, &outcome)
                    .await
                {
                    tracing::warn!(
                        dedup_key = %delivery.alert.dedup_key,
                        error = %crate::server::error_chain(&error),
                        "cannot record an alert delivery; it is sent again after its lease"
                    );
                }
            }
        }
    }

    async fn send(&self, delivery: &AlertDelivery) -> DeliveryOutcome {
        let result = self
            .client
            .post(self.settings.url.clone())
            .json(&delivery.alert.webhook_body())
            .send()
            .await;
        let error = match result {
            Ok(response) if response.status().is_success() => {
                tracing::info!(
                    dedup_key = %delivery.alert.dedup_key,
                    attempts = delivery.attempts + 1,
                    "sent an alert to the webhook"
                );
                return DeliveryOutcome::Delivered;
            }
            Ok(response) => format!("the webhook answered HTTP {}", response.status()),
            Err(error) => format!(
                "the POST to the webhook failed: {}",
                crate::server::error_chain(&error.without_url())
            ),
        };
        let failures = delivery.attempts + 1;
        if failures >= self.settings.max_attempts {
            tracing::error!(
                dedup_key = %delivery.alert.dedup_key,
                attempts = failures,
                "abandoned an alert after its last webhook attempt failed: {error}"
            );
            return DeliveryOutcome::Abandoned { error };
        }
        let wait = self.settings.backoff(failures);
        tracing::warn!(
            dedup_key = %delivery.alert.dedup_key,
            attempts = failures,
            retry_in_seconds = wait.as_secs(),
            "cannot send an alert to the webhook; retrying: {error}"
        );
        DeliveryOutcome::Retry {
            error,
            at: Utc::now() + wait,
        }
    }
}

/// Returns the URL without its path and query, which may hold a secret
/// (Slack webhook URLs do), for logs.
pub fn redacted_url(url: &reqwest::Url) -> String {
    format!(
        "{}://{}{}/…",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port()
            .map(|port| format!(":{port}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let settings = WebhookSettings::new("http://127.0.0.1:1/hook".parse().expect("a URL"));
        let waits: Vec<u64> = (1..=12)
            .map(|failures| settings.backoff(failures).as_secs())
            .collect();
        assert_eq!(
            waits,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]
        );
        assert_eq!(settings.backoff(200).as_secs(), 3600);
    }

    #[test]
    fn redacted_url_drops_the_path() {
        let url: reqwest::Url = "https://hooks.example.com/services/T0/B0/secret"
            .parse()
            .expect("a URL");
        assert_eq!(redacted_url(&url), "https://hooks.example.com/…");
    }
}
