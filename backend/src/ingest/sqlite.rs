//! The SQLite side of usage ingest: the schema of point identities,
//! cumulative series and per-model totals, and the one-transaction batch
//! write behind `SqliteStore::record_usage_points`.
//!
//! A batch is one `BEGIN IMMEDIATE` transaction with prepared statements.
//! An `INSERT OR IGNORE` of each point's identity decides whether it is
//! new. The new points' tokens are summed in memory per day, month, type
//! and model, and each sum is one UPSERT on the counters. Alerts are evaluated
//! and inserted before the commit, so a crossing is seen by exactly one
//! batch even with several processes on one file.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tollgate_quota::{Identity, TokenType, TokenUsage};

use super::batch::{
    BatchOutcome, GroupOutcome, ModelUsage, PointValue, Prune, SeriesState, UsageBatch, UsageGroup,
    cumulative_delta,
};
use crate::alerts::{UsageChange, sqlite::insert_alerts};
use crate::store::StoreError;

/// The schema migration that adds ingest and alert tables.
pub const MIGRATION: &str = "
    CREATE TABLE usage_points (
        id BLOB PRIMARY KEY,
        end_unix_nano INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE usage_series (
        id BLOB PRIMARY KEY,
        start_unix_nano INTEGER NOT NULL,
        end_unix_nano INTEGER NOT NULL,
        total INTEGER NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE usage_models (
        user TEXT NOT NULL,
        day TEXT NOT NULL,
        model TEXT NOT NULL,
        token_type TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        PRIMARY KEY (user, day, model, token_type)
    ) WITHOUT ROWID;

    CREATE TABLE alerts (
        dedup_key TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        raised_at TEXT NOT NULL,
        body TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE alert_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dedup_key TEXT NOT NULL UNIQUE REFERENCES alerts (dedup_key),
        next_attempt_unix_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        last_error TEXT,
        delivered_at TEXT,
        abandoned_at TEXT
    );

    CREATE INDEX alert_outbox_pending ON alert_outbox (next_attempt_unix_ms)
        WHERE delivered_at IS NULL AND abandoned_at IS NULL;
";

const INSERT_POINT_SQL: &str =
    "INSERT OR IGNORE INTO usage_points (id, end_unix_nano) VALUES (?1, ?2)";
/// Deletes the oldest identities up to a key, a bounded number at a time.
/// SQLite's `DELETE ... LIMIT` needs a compile option, hence the subquery.
const PRUNE_POINTS_SQL: &str = "
    DELETE FROM usage_points WHERE id IN (
        SELECT id FROM usage_points WHERE id < ?1 ORDER BY id LIMIT ?2)";
const READ_SERIES_SQL: &str =
    "SELECT start_unix_nano, end_unix_nano, total FROM usage_series WHERE id = ?1";
const WRITE_SERIES_SQL: &str = "
    INSERT INTO usage_series (id, start_unix_nano, end_unix_nano, total) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (id) DO UPDATE SET start_unix_nano = excluded.start_unix_nano,
        end_unix_nano = excluded.end_unix_nano, total = excluded.total";
// The counters stop at i64::MAX, as the store's own usage adds do, because
// SQLite turns an overflowing integer sum into a REAL.
const ADD_DAILY_SQL: &str = "
    INSERT INTO usage_daily (user, day, token_type, tokens) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (user, day, token_type) DO UPDATE SET tokens = CASE
        WHEN tokens > 9223372036854775807 - excluded.tokens THEN 9223372036854775807
        ELSE tokens + excluded.tokens END";
const ADD_MONTHLY_SQL: &str = "
    INSERT INTO usage_monthly (user, month, token_type, tokens) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (user, month, token_type) DO UPDATE SET tokens = CASE
        WHEN tokens > 9223372036854775807 - excluded.tokens THEN 9223372036854775807
        ELSE tokens + excluded.tokens END";
const ADD_MODEL_SQL: &str = "
    INSERT INTO usage_models (user, day, model, token_type, tokens) VALUES (?1, ?2, ?3, ?4, ?5)
    ON CONFLICT (user, day, model, token_type) DO UPDATE SET tokens = CASE
        WHEN tokens > 9223372036854775807 - excluded.tokens THEN 9223372036854775807
        ELSE tokens + excluded.tokens END";
const READ_DAILY_SQL: &str =
    "SELECT token_type, tokens FROM usage_daily WHERE user = ?1 AND day = ?2";
const READ_MONTHLY_SQL: &str =
    "SELECT token_type, tokens FROM usage_monthly WHERE user = ?1 AND month = ?2";
const READ_MODELS_SQL: &str = "
    SELECT model, token_type, tokens FROM usage_models WHERE user = ?1 AND day = ?2
    ORDER BY model, token_type";

/// A UTC calendar month, as year and month number.
type Month = (i32, u32);

fn month_of(date: NaiveDate) -> Month {
    (date.year(), date.month())
}

fn month_key((year, month): Month) -> String {
    format!("{year:04}-{month:02}")
}

/// Formats `date` as `YYYY-MM-DD` without parsing a strftime pattern on
/// every call, which showed in profiles of small export requests.
fn day_key(date: NaiveDate) -> String {
    format!("{:04}-{:02}-{:02}", date.year(), date.month(), date.day())
}

/// Converts a stored count or time to SQLite's signed integer. Ingest
/// bounds both far below `i64::MAX`.
fn sql_integer(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Records `batch` in one transaction; see the module docs.
pub fn record_batch(
    connection: &mut Connection,
    batch: &UsageBatch,
    identity: &Identity,
) -> rusqlite::Result<BatchOutcome> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let outcome = record_in(&transaction, batch, identity)?;
    transaction.commit()?;
    Ok(outcome)
}

/// Records every batch of `group` and runs its prune in one `BEGIN
/// IMMEDIATE` transaction, so the group pays for one commit. A batch that
/// fails is rolled back alone and gets its error, and the other batches are
/// kept. Batches are applied in order, so alerts see the usage of the
/// batches before them.
///
/// The batches are first written without savepoints, because a savepoint
/// per batch copies every page it changes to the statement journal, which
/// costs as much as the writes of a small batch. Only when a batch fails is
/// the transaction rolled back and the group written again with one
/// savepoint per batch, by [`record_group_isolated`].
pub fn record_group(
    connection: &mut Connection,
    group: &UsageGroup,
) -> rusqlite::Result<GroupOutcome> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = GroupOutcome {
        batches: Vec::with_capacity(group.batches.len()),
        pruned: 0,
    };
    for (index, batch) in group.batches.iter().enumerate() {
        let identity = match Identity::parse(&batch.user) {
            Ok(identity) => identity,
            Err(error) => {
                outcome
                    .batches
                    .push(Err(StoreError::InvalidInput(error.to_string())));
                continue;
            }
        };
        match record_in(&transaction, batch, &identity) {
            Ok(recorded) => outcome.batches.push(Ok(recorded)),
            Err(error) => {
                tracing::warn!(
                    batch = index,
                    batches = group.batches.len(),
                    user = batch.user,
                    "recording a batch of a usage group failed ({error}); writing the group \
                     again with one savepoint per batch"
                );
                // Dropping the transaction rolls back every batch of the group.
                drop(transaction);
                return record_group_isolated(connection, group);
            }
        }
    }
    if let Some(prune) = &group.prune {
        outcome.pruned = prune_points(&transaction, prune)?;
    }
    transaction.commit()?;
    Ok(outcome)
}

/// Records `group` like [`record_group`], with each batch in its own
/// savepoint, so a batch that fails is rolled back alone.
fn record_group_isolated(
    connection: &mut Connection,
    group: &UsageGroup,
) -> rusqlite::Result<GroupOutcome> {
    let mut transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = GroupOutcome {
        batches: Vec::with_capacity(group.batches.len()),
        pruned: 0,
    };
    for batch in &group.batches {
        let identity = match Identity::parse(&batch.user) {
            Ok(identity) => identity,
            Err(error) => {
                outcome
                    .batches
                    .push(Err(StoreError::InvalidInput(error.to_string())));
                continue;
            }
        };
        let savepoint = transaction.savepoint()?;
        match record_in(&savepoint, batch, &identity) {
            Ok(recorded) => {
                savepoint.commit()?;
                outcome.batches.push(Ok(recorded));
            }
            // Dropping the savepoint rolls back this batch's writes.
            Err(error) => outcome.batches.push(Err(StoreError::Backend {
                backend: "SQLite",
                operation: "recording usage points",
                source: Box::new(error),
            })),
        }
    }
    if let Some(prune) = &group.prune {
        outcome.pruned = prune_points(&transaction, prune)?;
    }
    transaction.commit()?;
    Ok(outcome)
}

/// Deletes up to `prune.limit` identities of points that ended before
/// `prune.before`. Identities start with the end time in big-endian
/// nanoseconds, so the old ones are a range at the start of the key index.
fn prune_points(connection: &Connection, prune: &Prune) -> rusqlite::Result<usize> {
    let before_nanos = prune.before.timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
    let limit = i64::try_from(prune.limit).unwrap_or(i64::MAX);
    connection
        .prepare_cached(PRUNE_POINTS_SQL)?
        .execute(params![&before_nanos.to_be_bytes()[..], limit])
}

/// Records `batch` inside the caller's transaction or savepoint.
fn record_in(
    connection: &Connection,
    batch: &UsageBatch,
    identity: &Identity,
) -> rusqlite::Result<BatchOutcome> {
    let mut outcome = BatchOutcome::default();
    let mut daily: HashMap<(NaiveDate, TokenType), u64> = HashMap::new();
    let mut models: HashMap<(NaiveDate, &str, &str), u64> = HashMap::new();
    {
        let mut insert_point = connection.prepare_cached(INSERT_POINT_SQL)?;
        let mut read_series = connection.prepare_cached(READ_SERIES_SQL)?;
        let mut write_series = connection.prepare_cached(WRITE_SERIES_SQL)?;
        for point in &batch.points {
            let end_nanos = point.end.timestamp_nanos_opt().unwrap_or(i64::MAX);
            if insert_point.execute(params![&point.id[..], end_nanos])? == 0 {
                outcome.duplicates += 1;
                continue;
            }
            outcome.recorded += 1;
            let tokens = match &point.value {
                PointValue::Delta(tokens) => *tokens,
                PointValue::Cumulative(value) => {
                    let previous = read_series
                        .query_row(params![&value.series[..]], |row| {
                            Ok(SeriesState {
                                start_unix_nano: row.get::<_, i64>(0)?.max(0) as u64,
                                end_unix_nano: row.get::<_, i64>(1)?.max(0) as u64,
                                total: row.get::<_, i64>(2)?.max(0) as u64,
                            })
                        })
                        .optional()?;
                    let (delta, next) = cumulative_delta(previous, value);
                    if let Some(next) = next {
                        write_series.execute(params![
                            &value.series[..],
                            sql_integer(next.start_unix_nano),
                            sql_integer(next.end_unix_nano),
                            sql_integer(next.total)
                        ])?;
                    }
                    delta
                }
            };
            let date = point.end.date_naive();
            // The sums saturate like the stored counters, so a batch of
            // points too large for a u64 stops at the maximum.
            let model_total = models
                .entry((date, point.model.as_str(), point.type_name.as_str()))
                .or_default();
            *model_total = model_total.saturating_add(tokens);
            if let Some(token_type) = point.counted_as {
                let day_total = daily.entry((date, token_type)).or_default();
                *day_total = day_total.saturating_add(tokens);
            }
        }
    }

    write_counters(connection, &batch.user, &daily, &models)?;
    if let Some(rule) = &batch.alerting {
        let today = rule.now.date_naive();
        let (daily_change, monthly_change) =
            period_changes(connection, &batch.user, &daily, today)?;
        if daily_change.before != daily_change.after
            || monthly_change.before != monthly_change.after
        {
            let crossings = rule.crossings(identity, daily_change, monthly_change);
            outcome.alerts = insert_alerts(connection, &crossings, rule.queue_webhook, rule.now)?;
        }
    }
    Ok(outcome)
}

fn write_counters(
    transaction: &Connection,
    user: &str,
    daily: &HashMap<(NaiveDate, TokenType), u64>,
    models: &HashMap<(NaiveDate, &str, &str), u64>,
) -> rusqlite::Result<()> {
    let mut keys = PeriodKeys::default();
    let mut monthly: HashMap<(Month, TokenType), u64> = HashMap::new();
    let mut add_daily = transaction.prepare_cached(ADD_DAILY_SQL)?;
    for ((date, token_type), tokens) in daily {
        add_daily.execute(params![
            user,
            keys.day(*date),
            token_type.as_str(),
            sql_integer(*tokens)
        ])?;
        let month_total = monthly.entry((month_of(*date), *token_type)).or_default();
        *month_total = month_total.saturating_add(*tokens);
    }
    let mut add_monthly = transaction.prepare_cached(ADD_MONTHLY_SQL)?;
    for ((month, token_type), tokens) in &monthly {
        add_monthly.execute(params![
            user,
            keys.month(*month),
            token_type.as_str(),
            sql_integer(*tokens)
        ])?;
    }
    let mut add_model = transaction.prepare_cached(ADD_MODEL_SQL)?;
    for ((date, model, type_name), tokens) in models {
        add_model.execute(params![
            user,
            keys.day(*date),
            model,
            type_name,
            sql_integer(*tokens)
        ])?;
    }
    Ok(())
}

/// The day and month keys of the last date formatted. The points of a
/// batch almost always share one day, so each key is formatted once per
/// batch instead of once per counter.
#[derive(Default)]
struct PeriodKeys {
    day: Option<(NaiveDate, String)>,
    month: Option<(Month, String)>,
}

impl PeriodKeys {
    fn day(&mut self, date: NaiveDate) -> &str {
        if self.day.as_ref().is_none_or(|(last, _)| *last != date) {
            self.day = Some((date, day_key(date)));
        }
        self.day.as_ref().map_or("", |(_, key)| key.as_str())
    }

    fn month(&mut self, month: Month) -> &str {
        if self.month.as_ref().is_none_or(|(last, _)| *last != month) {
            self.month = Some((month, month_key(month)));
        }
        self.month.as_ref().map_or("", |(_, key)| key.as_str())
    }
}

/// Returns the usage of the UTC day `today` and its month before and after
/// the batch's `daily` additions, read inside the batch's transaction.
fn period_changes(
    transaction: &Connection,
    user: &str,
    daily: &HashMap<(NaiveDate, TokenType), u64>,
    today: NaiveDate,
) -> rusqlite::Result<(UsageChange, UsageChange)> {
    let mut added_today = TokenUsage::default();
    let mut added_month = TokenUsage::default();
    for ((date, token_type), tokens) in daily {
        if *date == today {
            added_today.add(*token_type, *tokens);
        }
        if month_of(*date) == month_of(today) {
            added_month.add(*token_type, *tokens);
        }
    }
    let after_today = read_usage(transaction, READ_DAILY_SQL, user, &day_key(today))?;
    let after_month = read_usage(
        transaction,
        READ_MONTHLY_SQL,
        user,
        &month_key(month_of(today)),
    )?;
    Ok((
        UsageChange {
            before: subtract(after_today, added_today),
            after: after_today,
        },
        UsageChange {
            before: subtract(after_month, added_month),
            after: after_month,
        },
    ))
}

fn subtract(total: TokenUsage, added: TokenUsage) -> TokenUsage {
    let mut before = TokenUsage::default();
    for token_type in TokenType::ALL {
        before.add(
            token_type,
            total.get(token_type).saturating_sub(added.get(token_type)),
        );
    }
    before
}

fn read_usage(
    connection: &Connection,
    sql: &str,
    user: &str,
    period: &str,
) -> rusqlite::Result<TokenUsage> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params![user, period], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
    })?;
    let mut usage = TokenUsage::default();
    for row in rows {
        let (name, tokens) = row?;
        // Counters of a type this build does not know are left out, as
        // the check leaves them out.
        if let Ok(token_type) = name.parse::<TokenType>() {
            usage.add(token_type, tokens.max(0) as u64);
        }
    }
    Ok(usage)
}

/// Returns a user's per-model totals for the UTC day containing `at`.
pub fn read_model_usage(
    connection: &Connection,
    user: &str,
    at: DateTime<Utc>,
) -> rusqlite::Result<Vec<ModelUsage>> {
    let mut statement = connection.prepare_cached(READ_MODELS_SQL)?;
    let rows = statement.query_map(params![user, day_key(at.date_naive())], |row| {
        Ok(ModelUsage {
            model: row.get(0)?,
            type_name: row.get(1)?,
            tokens: row.get::<_, i64>(2)?.max(0) as u64,
        })
    })?;
    rows.collect()
}
