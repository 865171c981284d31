//! The ingest writer: one task that records the usage batches of many
//! export requests in one store transaction (group commit).
//!
//! A request hands its batch to the writer over a bounded queue and waits
//! for its own outcome, which the writer sends only after the commit, so a
//! success response still means the usage is durable. While one group
//! commits, the next requests queue up and form the next group, so the
//! cost of a commit is shared by every request that arrived meanwhile. A
//! full queue rejects the request at once instead of growing without limit;
//! the handler then returns 503 with `Retry-After`, which OTLP exporters retry.
//!
//! The writer also resolves the alert policy of every request in a group
//! with one store read, and deletes expired point identities, a bounded
//! number per transaction, so pruning never holds the write lock for long.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tollgate_protocol::check::PolicyKind;
use tollgate_quota::{CountingConfig, DEFAULT_IDENTIFIER, Identity, resolve};

use super::batch::{BatchOutcome, Prune, UsageBatch, UsageGroup};
use crate::alerts::AlertRule;
use crate::server::error_chain;
use crate::store::{PolicyKey, Store};

/// The default de-duplication window: points that ended longer ago are
/// rejected, and their identities are deleted.
pub const DEFAULT_DEDUP_WINDOW_DAYS: u32 = 35;

/// How long after leaving the window an identity is deleted. Requests check
/// the window when they are decoded and the writer prunes later, so an
/// identity is kept until no request still in flight can carry its point.
/// The margin also covers clock differences between processes that share
/// one store.
pub const PRUNE_MARGIN: chrono::Duration = chrono::Duration::days(1);

/// Settings of the ingest writer.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    /// The maximum number of requests waiting for the writer.
    pub queue_requests: usize,
    /// The maximum number of data points waiting for the writer, which
    /// bounds the memory of the queue.
    pub queue_points: usize,
    /// A group takes further waiting requests until it contains this many
    /// points; the first request of a group is always taken whole.
    pub max_group_points: usize,
    /// Points that ended more than this many days ago are rejected, and
    /// identities older than the window plus [`PRUNE_MARGIN`] are deleted.
    pub dedup_window_days: u32,
    /// How often the writer looks for expired identities when the last
    /// prune found none left.
    pub prune_interval: Duration,
    /// The maximum number of identities one transaction deletes.
    pub prune_batch: usize,
}

impl Default for WriterSettings {
    fn default() -> Self {
        Self {
            queue_requests: 4096,
            queue_points: 1_000_000,
            max_group_points: 50_000,
            dedup_window_days: DEFAULT_DEDUP_WINDOW_DAYS,
            prune_interval: Duration::from_secs(600),
            prune_batch: 1000,
        }
    }
}

impl WriterSettings {
    /// Returns the de-duplication window as a duration.
    pub fn dedup_window(&self) -> chrono::Duration {
        chrono::Duration::days(i64::from(self.dedup_window_days))
    }
}

/// The reason the writer did not record a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error(
        "the ingest queue is full ({requests} requests or {points} data points waiting); \
         the export is retried"
    )]
    QueueFull { requests: usize, points: usize },
    #[error("the ingest writer has stopped because the server is shutting down")]
    Stopped,
    #[error("{0}")]
    Store(String),
}

/// The caller whose policy decides a batch's alerts, resolved by the
/// writer as the check resolves it.
#[derive(Debug, Clone)]
pub struct AlertCaller {
    pub identity: Identity,
    pub groups: Vec<String>,
    /// The arrival time: alerts are raised for its UTC day and month only.
    pub now: DateTime<Utc>,
}

impl AlertCaller {
    /// Lists the keys of the policies that may apply: the user's, the
    /// groups' and the default.
    fn policy_keys(&self) -> impl Iterator<Item = PolicyKey> + '_ {
        std::iter::once(PolicyKey::new(PolicyKind::User, self.identity.as_str()))
            .chain(
                self.groups
                    .iter()
                    .map(|group| PolicyKey::new(PolicyKind::Group, group.clone())),
            )
            .chain(std::iter::once(PolicyKey::new(
                PolicyKind::Default,
                DEFAULT_IDENTIFIER,
            )))
    }
}

/// Settings of the writer's alert evaluation.
#[derive(Debug, Clone, Default)]
pub struct AlertSettings {
    /// The token types that count toward the limits, with their weights.
    pub counting: CountingConfig,
    /// Whether to queue each new alert for the webhook.
    pub queue_webhook: bool,
}

/// One request's batch and the channel its outcome goes back on.
struct Job {
    batch: UsageBatch,
    /// The caller whose policy decides the batch's alerts; `None`
    /// evaluates none.
    alert_caller: Option<AlertCaller>,
    reply: oneshot::Sender<Result<BatchOutcome, WriteError>>,
    /// Released once the job leaves the queue.
    _points: OwnedSemaphorePermit,
}

/// The sending side of the ingest writer; cloning it shares the writer.
#[derive(Clone)]
pub struct UsageWriter {
    sender: mpsc::Sender<Job>,
    points: Arc<Semaphore>,
    settings: Arc<WriterSettings>,
}

impl std::fmt::Debug for UsageWriter {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("UsageWriter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl UsageWriter {
    /// Starts the writer task on the current Tokio runtime. The task ends
    /// when every clone of the returned writer is dropped.
    pub fn start(store: Arc<dyn Store>, settings: WriterSettings, alerts: AlertSettings) -> Self {
        let queue_requests = settings.queue_requests.max(1);
        let queue_points = settings.queue_points.clamp(1, Semaphore::MAX_PERMITS);
        let (sender, receiver) = mpsc::channel(queue_requests);
        let settings = Arc::new(settings);
        tokio::spawn(run(store, Arc::clone(&settings), alerts, receiver));
        Self {
            sender,
            points: Arc::new(Semaphore::new(queue_points)),
            settings,
        }
    }

    /// Queues `batch` and waits until its group is committed. With
    /// `alert_caller`, the caller's policy is resolved in the writer and
    /// the batch's alerts are evaluated in its transaction. Returns
    /// [`WriteError::QueueFull`] at once when the queue is full.
    pub async fn record(
        &self,
        batch: UsageBatch,
        alert_caller: Option<AlertCaller>,
    ) -> Result<BatchOutcome, WriteError> {
        let queue_full = || WriteError::QueueFull {
            requests: self.settings.queue_requests,
            points: self.settings.queue_points,
        };
        // A batch larger than the whole budget takes all of it, so that it
        // can still be queued once the queue is empty.
        let wanted = batch.points.len().clamp(
            1,
            self.settings.queue_points.clamp(1, Semaphore::MAX_PERMITS),
        );
        let wanted = u32::try_from(wanted).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.points)
            .try_acquire_many_owned(wanted)
            .map_err(|_| queue_full())?;
        let (reply, outcome) = oneshot::channel();
        let job = Job {
            batch,
            alert_caller,
            reply,
            _points: permit,
        };
        self.sender.try_send(job).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => queue_full(),
            mpsc::error::TrySendError::Closed(_) => WriteError::Stopped,
        })?;
        outcome.await.map_err(|_| WriteError::Stopped)?
    }
}

/// Receives jobs, records them in groups and prunes expired identities,
/// until every sender is dropped.
async fn run(
    store: Arc<dyn Store>,
    settings: Arc<WriterSettings>,
    alerts: AlertSettings,
    mut receiver: mpsc::Receiver<Job>,
) {
    let mut next_prune = Instant::now();
    loop {
        let first = tokio::select! {
            biased;
            job = receiver.recv() => match job {
                Some(job) => Some(job),
                None => break,
            },
            () = tokio::time::sleep_until(next_prune) => None,
        };
        let mut jobs = Vec::new();
        if let Some(first) = first {
            let mut points = first.batch.points.len();
            jobs.push(first);
            while points < settings.max_group_points {
                match receiver.try_recv() {
                    Ok(job) => {
                        points += job.batch.points.len();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        let prune = (Instant::now() >= next_prune).then(|| Prune {
            before: Utc::now() - settings.dedup_window() - PRUNE_MARGIN,
            limit: settings.prune_batch.max(1),
        });

        if let Err(error) = resolve_alert_rules(store.as_ref(), &alerts, &mut jobs).await {
            let message = error_chain(&error);
            tracing::error!(
                requests = jobs.len(),
                "reading the alert policies of a group of usage batches failed: {message}"
            );
            for job in jobs {
                let _ = job.reply.send(Err(WriteError::Store(message.clone())));
            }
            continue;
        }
        let mut replies = Vec::with_capacity(jobs.len());
        let mut batches = Vec::with_capacity(jobs.len());
        for job in jobs {
            replies.push(job.reply);
            batches.push(job.batch);
        }
        let group_size = batches.len();
        let result = store
            .record_usage_group(UsageGroup { batches, prune })
            .await;
        let mut pruned_all = true;
        match result {
            Ok(outcome) => {
                for (reply, result) in replies.into_iter().zip(outcome.batches) {
                    // The reply of a request whose client went away has no
                    // receiver, but its usage is recorded all the same.
                    let _ =
                        reply.send(result.map_err(|error| WriteError::Store(error_chain(&error))));
                }
                if let Some(prune) = prune {
                    pruned_all = outcome.pruned < prune.limit;
                    if outcome.pruned > 0 {
                        tracing::debug!(
                            pruned = outcome.pruned,
                            before = %prune.before,
                            "deleted expired usage point identities"
                        );
                    }
                }
            }
            Err(error) => {
                let message = error_chain(&error);
                tracing::error!(
                    requests = group_size,
                    "recording a group of usage batches failed: {message}"
                );
                for reply in replies {
                    let _ = reply.send(Err(WriteError::Store(message.clone())));
                }
            }
        }
        if prune.is_some() {
            // A prune that hit its limit continues at once, between groups.
            next_prune = if pruned_all {
                Instant::now() + settings.prune_interval
            } else {
                Instant::now()
            };
        }
    }
    tracing::debug!("the ingest writer stopped");
}

/// Resolves the alert rule of every job with an alert caller, reading the
/// policies of all of them in one store call, as the check resolves them.
async fn resolve_alert_rules(
    store: &dyn Store,
    alerts: &AlertSettings,
    jobs: &mut [Job],
) -> crate::store::StoreResult<()> {
    let mut seen = HashSet::new();
    let keys: Vec<PolicyKey> = jobs
        .iter()
        .filter_map(|job| job.alert_caller.as_ref())
        .flat_map(AlertCaller::policy_keys)
        .filter(|key| seen.insert(key.clone()))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let policies = store.policies(&keys).await?;
    for job in jobs {
        let Some(caller) = job.alert_caller.take() else {
            continue;
        };
        let resolution = resolve(&caller.identity, &caller.groups, &policies);
        job.batch.alerting = resolution.policy.map(|policy| AlertRule {
            policy,
            counting: alerts.counting.clone(),
            now: caller.now,
            queue_webhook: alerts.queue_webhook,
        });
    }
    Ok(())
}
