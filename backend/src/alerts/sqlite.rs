//! The SQLite side of alerts: the `alerts` table, keyed by each alert's
//! dedup key so an alert is inserted once, and the `alert_outbox` table the
//! webhook sender claims, retries and completes. The tables are created by
//! the ingest migration in [`crate::ingest::sqlite::MIGRATION`].

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, TransactionBehavior, params};

use super::AlertRecord;
use super::deliver::{AlertDelivery, DeliveryOutcome};

fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn encode(alert: &AlertRecord) -> rusqlite::Result<String> {
    serde_json::to_string(alert)
        .map_err(|error| rusqlite::Error::ToSqlConversionFailure(Box::new(error)))
}

fn decode(body: &str) -> rusqlite::Result<AlertRecord> {
    serde_json::from_str(body).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })
}

/// Inserts each alert whose dedup key is new, queues it for the webhook
/// when `queue_webhook`, and returns the alerts that were new. Runs inside
/// the caller's transaction or savepoint.
pub fn insert_alerts(
    transaction: &Connection,
    alerts: &[AlertRecord],
    queue_webhook: bool,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<AlertRecord>> {
    let mut raised = Vec::new();
    let mut insert = transaction.prepare_cached(
        "INSERT OR IGNORE INTO alerts (dedup_key, user, raised_at, body) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut queue = transaction.prepare_cached(
        "INSERT OR IGNORE INTO alert_outbox (dedup_key, next_attempt_unix_ms, attempts)
         VALUES (?1, ?2, 0)",
    )?;
    for alert in alerts {
        let inserted = insert.execute(params![
            alert.dedup_key,
            alert.user,
            timestamp(alert.raised_at),
            encode(alert)?
        ])?;
        if inserted == 0 {
            continue;
        }
        if queue_webhook {
            queue.execute(params![alert.dedup_key, now.timestamp_millis()])?;
        }
        raised.push(alert.clone());
    }
    Ok(raised)
}

/// Returns the raised alerts, of one user or of all, oldest first.
pub fn list_alerts(
    connection: &Connection,
    user: Option<&str>,
) -> rusqlite::Result<Vec<AlertRecord>> {
    let mut statement = connection.prepare_cached(
        "SELECT body FROM alerts WHERE ?1 IS NULL OR user = ?1 ORDER BY raised_at, dedup_key",
    )?;
    let rows = statement.query_map(params![user], |row| row.get::<_, String>(0))?;
    rows.map(|body| decode(&body?)).collect()
}

/// Claims up to `limit` queued alerts that are due at `now`, moving their
/// next attempt to `lease_until` so that another process does not send
/// them while this one does.
pub fn claim_deliveries(
    connection: &mut Connection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: usize,
) -> rusqlite::Result<Vec<AlertDelivery>> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut claimed = Vec::new();
    {
        let mut select = transaction.prepare_cached(
            "SELECT outbox.id, outbox.attempts, alerts.body
             FROM alert_outbox AS outbox JOIN alerts USING (dedup_key)
             WHERE outbox.delivered_at IS NULL AND outbox.abandoned_at IS NULL
                 AND outbox.next_attempt_unix_ms <= ?1
             ORDER BY outbox.next_attempt_unix_ms LIMIT ?2",
        )?;
        let rows = select.query_map(
            params![
                now.timestamp_millis(),
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                ))
            },
        )?;
        for row in rows {
            let (id, attempts, body) = row?;
            claimed.push(AlertDelivery {
                id,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                alert: decode(&body)?,
            });
        }
        let mut lease = transaction
            .prepare_cached("UPDATE alert_outbox SET next_attempt_unix_ms = ?2 WHERE id = ?1")?;
        for delivery in &claimed {
            lease.execute(params![delivery.id, lease_until.timestamp_millis()])?;
        }
    }
    transaction.commit()?;
    Ok(claimed)
}

/// Records the outcome of one delivery attempt.
pub fn finish_delivery(
    connection: &Connection,
    id: i64,
    outcome: &DeliveryOutcome,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    match outcome {
        DeliveryOutcome::Delivered => connection.execute(
            "UPDATE alert_outbox SET delivered_at = ?2, attempts = attempts + 1 WHERE id = ?1",
            params![id, timestamp(now)],
        ),
        DeliveryOutcome::Retry { error, at } => connection.execute(
            "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?2,
                 next_attempt_unix_ms = ?3 WHERE id = ?1",
            params![id, error, at.timestamp_millis()],
        ),
        DeliveryOutcome::Abandoned { error } => connection.execute(
            "UPDATE alert_outbox SET attempts = attempts + 1, last_error = ?2, abandoned_at = ?3
             WHERE id = ?1",
            params![id, error, timestamp(now)],
        ),
    }
    .map(drop)
}
