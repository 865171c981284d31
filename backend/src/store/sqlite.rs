//! The SQLite implementation of [`Store`], used by `tollgate serve` and the
//! admin CLI on one machine.
//!
//! One connection behind a mutex serves every call, run on Tokio's blocking
//! pool, except the check's reads, which use a small set of read-only
//! connections. The file is in WAL mode with a busy timeout, so the CLI can
//! write while the server reads. The schema is created and migrated on open; the
//! `schema_version` table records which migrations ran.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tollgate_quota::{Identity, Period, Policy, TokenType, TokenUsage, UnblockGrant};

use super::{
    AuditEntry, CheckSnapshot, PolicyChange, PolicyKey, Store, StoreError, StoreResult, UsageEvent,
    UsageTotals,
};
use crate::alerts::AlertRecord;
use crate::alerts::deliver::{AlertDelivery, DeliveryOutcome};
use crate::ingest::batch::{BatchOutcome, GroupOutcome, ModelUsage, UsageBatch, UsageGroup};

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema migrations, in order. Migration `n` (1-based) brings the
/// schema to version `n`. Append new migrations; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // Version 1: policies, usage counters, event keys, unblocks, audit log.
    "
    CREATE TABLE policies (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    ) WITHOUT ROWID;

    CREATE TABLE usage_daily (
        user TEXT NOT NULL,
        day TEXT NOT NULL,
        token_type TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        PRIMARY KEY (user, day, token_type)
    ) WITHOUT ROWID;

    CREATE TABLE usage_monthly (
        user TEXT NOT NULL,
        month TEXT NOT NULL,
        token_type TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        PRIMARY KEY (user, month, token_type)
    ) WITHOUT ROWID;

    CREATE TABLE usage_events (
        dedup_key TEXT PRIMARY KEY,
        recorded_at TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE unblocks (
        user TEXT PRIMARY KEY,
        expires_at TEXT NOT NULL,
        granted_by TEXT NOT NULL,
        granted_at TEXT NOT NULL,
        reason TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    ",
    // Version 2: usage ingest (point identities, cumulative series,
    // per-model totals) and alerts (raised alerts, webhook outbox).
    crate::ingest::sqlite::MIGRATION,
];

/// Reads one user's daily counters: a prefix lookup on the primary key.
const DAILY_USAGE_SQL: &str =
    "SELECT token_type, tokens FROM usage_daily WHERE user = ?1 AND day = ?2";
/// Reads one user's monthly counters: a prefix lookup on the primary key.
const MONTHLY_USAGE_SQL: &str =
    "SELECT token_type, tokens FROM usage_monthly WHERE user = ?1 AND month = ?2";
/// Settings of the read-only connections: up to 256 MiB of the file
/// memory-mapped, and a 16 MiB page cache.
const READER_PRAGMAS: &str = "PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16384;";
/// Reads one user's unblock by its primary key.
const UNBLOCK_SQL: &str =
    "SELECT expires_at, granted_by, granted_at, reason FROM unblocks WHERE user = ?1";
/// Reads one policy by its primary key.
const POLICY_SQL: &str = "SELECT body FROM policies WHERE kind = ?1 AND id = ?2";

/// A [`Store`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
    /// Read-only connections for the check's reads (see [`SqliteStore::read`]).
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<AtomicUsize>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A failure to open or migrate the store file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create the folder {path} for the store file")]
    CreateFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the SQLite store {path}: {operation} failed")]
    Sqlite {
        path: PathBuf,
        operation: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the SQLite store {path} has schema version {found}, but this tollgate build \
         knows versions up to {supported}; run a newer tollgate against it"
    )]
    SchemaTooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
}

impl SqliteStore {
    /// Opens the store file at `path`, creating the file, its folder and the
    /// schema when missing and applying pending migrations.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        if let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder).map_err(|source| OpenError::CreateFolder {
                path: folder.to_owned(),
                source,
            })?;
        }
        let sqlite_error = |operation| {
            let path = path.to_owned();
            move |source| OpenError::Sqlite {
                path,
                operation,
                source,
            }
        };

        let mut connection = Connection::open(path).map_err(sqlite_error("open"))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(sqlite_error("setting the busy timeout"))?;
        let journal_mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(sqlite_error("switching to WAL mode"))?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), journal_mode, "SQLite did not switch to WAL mode");
        }
        connection
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(sqlite_error("setting pragmas"))?;
        restrict_permissions(path);

        migrate(&mut connection, path)?;
        let reader_count =
            std::thread::available_parallelism().map_or(2, |count| count.get().max(2));
        let mut readers = Vec::with_capacity(reader_count);
        for _ in 0..reader_count {
            let reader = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(sqlite_error("opening a read-only connection"))?;
            reader
                .busy_timeout(BUSY_TIMEOUT)
                .map_err(sqlite_error("setting the busy timeout"))?;
            // Reading through a memory map saves a pread call per page
            // that is not in SQLite's own cache, which with a million usage
            // rows is most pages a check touches.
            reader
                .execute_batch(READER_PRAGMAS)
                .map_err(sqlite_error("setting the read-only connection's pragmas"))?;
            readers.push(Mutex::new(reader));
        }
        Ok(Self {
            path: path.to_owned(),
            connection: Arc::new(Mutex::new(connection)),
            readers: Arc::new(readers),
            next_reader: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// Runs the read-only `work` on a free reader connection on the calling
    /// thread, or on the blocking pool when every reader is busy.
    ///
    /// The check's reads are a few primary-key lookups that take
    /// microseconds once the pages are cached, less than handing them to
    /// the blocking pool and back: with one hand-off per read, thread
    /// switches took about a quarter of the server's CPU samples in a perf
    /// profile of `backend/benches/check.sh`. WAL readers do not wait for
    /// the writer.
    /// NOTE: a read from a cold disk cache blocks the async worker thread
    /// for the duration of the read.
    async fn read<T, F>(&self, operation: &'static str, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let backend_error = |source: rusqlite::Error| StoreError::Backend {
            backend: "SQLite",
            operation,
            source: Box::new(source),
        };
        let count = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for offset in 0..count {
            let guard = match self.readers[(start + offset) % count].try_lock() {
                Ok(guard) => guard,
                // A panic during an earlier read leaves the connection usable.
                Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            return work(&guard).map_err(backend_error);
        }

        let readers = Arc::clone(&self.readers);
        let result = tokio::task::spawn_blocking(move || {
            let guard = readers[start % count]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&guard)
        })
        .await
        .map_err(|join_error| StoreError::Backend {
            backend: "SQLite",
            operation,
            source: Box::new(join_error),
        })?;
        result.map_err(backend_error)
    }

    /// Returns the store file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the schema version the file is at.
    pub async fn schema_version(&self) -> StoreResult<i64> {
        self.run("reading the schema version", |connection| {
            connection.query_row("SELECT MAX(version) FROM schema_version", [], |row| {
                row.get(0)
            })
        })
        .await
    }

    /// Runs `work` on the connection on Tokio's blocking pool.
    async fn run<T, F>(&self, operation: &'static str, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        let result = tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the connection usable:
            // SQLite rolls back an unfinished transaction when it is dropped.
            let mut guard = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            work(&mut guard)
        })
        .await
        .map_err(|join_error| StoreError::Backend {
            backend: "SQLite",
            operation,
            source: Box::new(join_error),
        })?;
        result.map_err(|source| StoreError::Backend {
            backend: "SQLite",
            operation,
            source: Box::new(source),
        })
    }
}

/// Makes a new store file readable by its owner only: it contains
/// identities and usage.
#[cfg(unix)]
fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(error) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(path = %path.display(), %error, "cannot restrict the store file to its owner");
    }
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) {}

/// Applies the migrations the file has not seen, each in its own
/// transaction. `BEGIN IMMEDIATE` serialises two processes opening a new
/// file at the same time.
fn migrate(connection: &mut Connection, path: &Path) -> Result<(), OpenError> {
    let sqlite_error = |operation| {
        let path = path.to_owned();
        move |source| OpenError::Sqlite {
            path,
            operation,
            source,
        }
    };
    let supported = i64::try_from(MIGRATIONS.len()).expect("the migration count fits in i64");

    for (index, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(index + 1).expect("the migration count fits in i64");
        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_error("starting a migration"))?;
        transaction
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (
                    version INTEGER PRIMARY KEY,
                    applied_at TEXT NOT NULL
                )",
            )
            .map_err(sqlite_error("creating the schema_version table"))?;
        let current: i64 = transaction
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version",
                [],
                |row| row.get(0),
            )
            .map_err(sqlite_error("reading the schema version"))?;
        if current > supported {
            return Err(OpenError::SchemaTooNew {
                path: path.to_owned(),
                found: current,
                supported,
            });
        }
        if current >= version {
            continue;
        }
        transaction
            .execute_batch(sql)
            .map_err(sqlite_error("applying a migration"))?;
        transaction
            .execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![version, timestamp(Utc::now())],
            )
            .map_err(sqlite_error("recording a migration"))?;
        transaction
            .commit()
            .map_err(sqlite_error("committing a migration"))?;
        tracing::info!(path = %path.display(), version, "migrated the SQLite store");
    }
    Ok(())
}

/// Formats a timestamp so that text order is time order.
fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_timestamp(text: &str, what: &'static str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| StoreError::Corrupt {
            what,
            detail: format!("timestamp {text:?}: {error}"),
        })
}

/// Reports whether the stored policy with `key` equals `expected`, or is
/// absent when `expected` is `None`. A stored body that does not decode
/// matches nothing.
fn policy_matches(
    connection: &Connection,
    key: &PolicyKey,
    expected: Option<&Policy>,
) -> rusqlite::Result<bool> {
    let body: Option<String> = connection
        .prepare_cached(POLICY_SQL)?
        .query_row(params![key.kind_name(), key.identifier], |row| row.get(0))
        .optional()?;
    Ok(match (body, expected) {
        (None, None) => true,
        (Some(body), Some(expected)) => {
            serde_json::from_str::<Policy>(&body).is_ok_and(|stored| &stored == expected)
        }
        _ => false,
    })
}

fn decode_policy(body: &str) -> StoreResult<Policy> {
    serde_json::from_str(body).map_err(|error| StoreError::Corrupt {
        what: "policy",
        detail: format!("{error} in {body}"),
    })
}

/// Converts a token count to SQLite's signed 64-bit integer.
fn to_sql_tokens(tokens: u64) -> StoreResult<i64> {
    i64::try_from(tokens).map_err(|_| {
        StoreError::InvalidInput(format!(
            "cannot record {tokens} tokens at once: the SQLite store counts up to {}; \
             record the usage in smaller parts",
            i64::MAX
        ))
    })
}

fn read_counters(
    connection: &Connection,
    sql: &str,
    user: &str,
    period: &str,
) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut statement = connection.prepare_cached(sql)?;
    let rows = statement.query_map(params![user, period], |row| {
        Ok((row.get(0)?, counter_value(row.get_ref(1)?)?))
    })?;
    rows.collect()
}

/// Reads a usage counter. A counter that overflowed into a REAL, which a
/// writer without saturating arithmetic can leave, reads as i64::MAX so
/// that checks keep working for that user.
fn counter_value(value: rusqlite::types::ValueRef<'_>) -> rusqlite::Result<i64> {
    use rusqlite::types::ValueRef;
    match value {
        ValueRef::Integer(tokens) => Ok(tokens),
        // `as` saturates, so any REAL of 2^63 or more becomes i64::MAX.
        ValueRef::Real(tokens) => Ok(tokens as i64),
        other => Err(rusqlite::Error::InvalidColumnType(
            1,
            "tokens".to_owned(),
            other.data_type(),
        )),
    }
}

fn counters_to_usage(counters: Vec<(String, i64)>) -> StoreResult<TokenUsage> {
    let mut usage = TokenUsage::default();
    for (name, tokens) in counters {
        let token_type: TokenType = name.parse().map_err(|_| StoreError::Corrupt {
            what: "usage counter",
            detail: format!("unknown token type {name:?}"),
        })?;
        let tokens = u64::try_from(tokens).map_err(|_| StoreError::Corrupt {
            what: "usage counter",
            detail: format!("{name} has {tokens} tokens"),
        })?;
        usage.add(token_type, tokens);
    }
    Ok(usage)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.run("ping", |connection| {
            connection.query_row("SELECT 1", [], |row| row.get::<_, i64>(0))
        })
        .await
        .map(drop)
    }

    async fn put_policy(&self, policy: &Policy) -> StoreResult<()> {
        let key = PolicyKey::of(policy);
        policy.validate().map_err(|error| {
            StoreError::InvalidInput(format!("cannot store the policy {key}: {error}"))
        })?;
        let body = serde_json::to_string(policy).map_err(|error| {
            StoreError::InvalidInput(format!("cannot encode the policy {key}: {error}"))
        })?;
        let (kind, id) = (key.kind_name().to_owned(), key.identifier.clone());
        let now = timestamp(Utc::now());
        self.run("storing a policy", move |connection| {
            connection.execute(
                "INSERT INTO policies (kind, id, body, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body,
                     updated_at = excluded.updated_at",
                params![kind, id, body, now],
            )
        })
        .await
        .map(drop)
    }

    async fn policy(&self, key: &PolicyKey) -> StoreResult<Option<Policy>> {
        let (kind, id) = (key.kind_name().to_owned(), key.identifier.clone());
        let body: Option<String> = self
            .run("reading a policy", move |connection| {
                connection
                    .prepare_cached(POLICY_SQL)?
                    .query_row(params![kind, id], |row| row.get(0))
                    .optional()
            })
            .await?;
        body.as_deref().map(decode_policy).transpose()
    }

    async fn policies(&self, keys: &[PolicyKey]) -> StoreResult<Vec<Policy>> {
        let keys: Vec<(String, String)> = keys
            .iter()
            .map(|key| (key.kind_name().to_owned(), key.identifier.clone()))
            .collect();
        let bodies: Vec<String> = self
            .run("reading policies", move |connection| {
                let mut statement = connection.prepare_cached(POLICY_SQL)?;
                let mut bodies = Vec::new();
                for (kind, id) in &keys {
                    if let Some(body) = statement
                        .query_row(params![kind, id], |row| row.get(0))
                        .optional()?
                    {
                        bodies.push(body);
                    }
                }
                Ok(bodies)
            })
            .await?;
        bodies.iter().map(|body| decode_policy(body)).collect()
    }

    async fn list_policies(&self) -> StoreResult<Vec<Policy>> {
        let bodies: Vec<String> = self
            .run("listing policies", |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT body FROM policies ORDER BY
                         CASE kind WHEN 'user' THEN 0 WHEN 'group' THEN 1 ELSE 2 END, id",
                )?;
                let rows = statement.query_map([], |row| row.get(0))?;
                rows.collect()
            })
            .await?;
        bodies.iter().map(|body| decode_policy(body)).collect()
    }

    async fn count_policies(&self) -> StoreResult<u64> {
        let count: i64 = self
            .run("counting policies", |connection| {
                connection.query_row("SELECT COUNT(*) FROM policies", [], |row| row.get(0))
            })
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn delete_policy(&self, key: &PolicyKey) -> StoreResult<bool> {
        let (kind, id) = (key.kind_name().to_owned(), key.identifier.clone());
        let deleted = self
            .run("deleting a policy", move |connection| {
                connection.execute(
                    "DELETE FROM policies WHERE kind = ?1 AND id = ?2",
                    params![kind, id],
                )
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn add_usage(&self, event: &UsageEvent) -> StoreResult<bool> {
        let tokens = to_sql_tokens(event.tokens)?;
        let day = Period::Daily.key(event.at);
        let month = Period::Monthly.key(event.at);
        let user = event.user.clone();
        let token_type = event.token_type.as_str();
        let dedup_key = event.dedup_key.clone();
        let now = timestamp(Utc::now());

        self.run("recording usage", move |connection| {
            let transaction =
                connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(dedup_key) = &dedup_key {
                let inserted = transaction.execute(
                    "INSERT OR IGNORE INTO usage_events (dedup_key, recorded_at) VALUES (?1, ?2)",
                    params![dedup_key, now],
                )?;
                if inserted == 0 {
                    return Ok(false);
                }
            }
            // The counters saturate at i64::MAX, because SQLite turns an
            // integer sum that overflows into a REAL.
            transaction.execute(
                "INSERT INTO usage_daily (user, day, token_type, tokens) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user, day, token_type) DO UPDATE SET tokens = CASE
                     WHEN tokens > 9223372036854775807 - excluded.tokens THEN 9223372036854775807
                     ELSE tokens + excluded.tokens END",
                params![user, day, token_type, tokens],
            )?;
            transaction.execute(
                "INSERT INTO usage_monthly (user, month, token_type, tokens) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user, month, token_type) DO UPDATE SET tokens = CASE
                     WHEN tokens > 9223372036854775807 - excluded.tokens THEN 9223372036854775807
                     ELSE tokens + excluded.tokens END",
                params![user, month, token_type, tokens],
            )?;
            transaction.commit()?;
            Ok(true)
        })
        .await
    }

    async fn usage(&self, user: &str, at: DateTime<Utc>) -> StoreResult<UsageTotals> {
        let user = user.to_owned();
        let day = Period::Daily.key(at);
        let month = Period::Monthly.key(at);
        let (daily, monthly) = self
            .run("reading usage", move |connection| {
                let daily = read_counters(connection, DAILY_USAGE_SQL, &user, &day)?;
                let monthly = read_counters(connection, MONTHLY_USAGE_SQL, &user, &month)?;
                Ok((daily, monthly))
            })
            .await?;
        Ok(UsageTotals {
            daily: counters_to_usage(daily)?,
            monthly: counters_to_usage(monthly)?,
        })
    }

    async fn put_unblock(&self, grant: &UnblockGrant) -> StoreResult<()> {
        let user = grant.identity.as_str().to_owned();
        let unblock = grant.clone();
        self.run("storing an unblock", move |connection| {
            connection.execute(
                "INSERT INTO unblocks (user, expires_at, granted_by, granted_at, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (user) DO UPDATE SET expires_at = excluded.expires_at,
                     granted_by = excluded.granted_by, granted_at = excluded.granted_at,
                     reason = excluded.reason",
                params![
                    user,
                    timestamp(unblock.expires_at),
                    unblock.granted_by,
                    timestamp(unblock.granted_at),
                    unblock.reason
                ],
            )
        })
        .await
        .map(drop)
    }

    async fn unblock(&self, user: &str) -> StoreResult<Option<UnblockGrant>> {
        let identity =
            Identity::parse(user).map_err(|error| StoreError::InvalidInput(error.to_string()))?;
        let user = user.to_owned();
        let row: Option<(String, String, String, String)> = self
            .run("reading an unblock", move |connection| {
                connection
                    .prepare_cached(UNBLOCK_SQL)?
                    .query_row(params![user], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .optional()
            })
            .await?;
        row.map(|(expires_at, granted_by, granted_at, reason)| {
            Ok(UnblockGrant {
                identity: identity.clone(),
                expires_at: parse_timestamp(&expires_at, "unblock expiry")?,
                granted_by,
                granted_at: parse_timestamp(&granted_at, "unblock grant time")?,
                reason,
            })
        })
        .transpose()
    }

    async fn delete_unblock(&self, user: &str) -> StoreResult<bool> {
        let user = user.to_owned();
        let deleted = self
            .run("deleting an unblock", move |connection| {
                connection.execute("DELETE FROM unblocks WHERE user = ?1", params![user])
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        let entry = entry.clone();
        self.run("appending to the audit log", move |connection| {
            connection.execute(
                "INSERT INTO audit_log (at, actor, action, target, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    timestamp(entry.at),
                    entry.actor,
                    entry.action,
                    entry.target,
                    entry.detail.to_string()
                ],
            )
        })
        .await
        .map(drop)
    }

    async fn read_audit(&self, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(String, String, String, String, String)> = self
            .run("reading the audit log", move |connection| {
                let mut statement = connection.prepare_cached(
                    "SELECT at, actor, action, target, detail FROM audit_log
                     ORDER BY id DESC LIMIT ?1",
                )?;
                let rows = statement.query_map(params![limit], |row| {
                    Ok((
                        row.get(0)?,
                        row.get(1)?,
                        row.get(2)?,
                        row.get(3)?,
                        row.get(4)?,
                    ))
                })?;
                rows.collect()
            })
            .await?;
        rows.into_iter()
            .map(|(at, actor, action, target, detail)| {
                Ok(AuditEntry {
                    at: parse_timestamp(&at, "audit entry time")?,
                    actor,
                    action,
                    target,
                    detail: serde_json::from_str(&detail).map_err(|error| StoreError::Corrupt {
                        what: "audit entry detail",
                        detail: error.to_string(),
                    })?,
                })
            })
            .collect()
    }

    async fn record_usage_points(&self, batch: &UsageBatch) -> StoreResult<BatchOutcome> {
        let identity = Identity::parse(&batch.user)
            .map_err(|error| StoreError::InvalidInput(error.to_string()))?;
        let batch = batch.clone();
        self.run("recording usage points", move |connection| {
            crate::ingest::sqlite::record_batch(connection, &batch, &identity)
        })
        .await
    }

    async fn record_usage_group(&self, group: UsageGroup) -> StoreResult<GroupOutcome> {
        self.run("recording a group of usage batches", move |connection| {
            crate::ingest::sqlite::record_group(connection, &group)
        })
        .await
    }

    async fn model_usage(&self, user: &str, at: DateTime<Utc>) -> StoreResult<Vec<ModelUsage>> {
        let user = user.to_owned();
        self.run("reading per-model usage", move |connection| {
            crate::ingest::sqlite::read_model_usage(connection, &user, at)
        })
        .await
    }

    async fn alerts(&self, user: Option<&str>) -> StoreResult<Vec<AlertRecord>> {
        let user = user.map(str::to_owned);
        self.run("reading alerts", move |connection| {
            crate::alerts::sqlite::list_alerts(connection, user.as_deref())
        })
        .await
    }

    async fn claim_alert_deliveries(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<AlertDelivery>> {
        self.run("claiming queued alerts", move |connection| {
            crate::alerts::sqlite::claim_deliveries(connection, now, lease_until, limit)
        })
        .await
    }

    async fn finish_alert_delivery(&self, id: i64, outcome: &DeliveryOutcome) -> StoreResult<()> {
        let outcome = outcome.clone();
        self.run("recording an alert delivery", move |connection| {
            crate::alerts::sqlite::finish_delivery(connection, id, &outcome, Utc::now())
        })
        .await
    }

    async fn apply_policy_changes(
        &self,
        changes: &[PolicyChange],
        audit: &[AuditEntry],
    ) -> StoreResult<()> {
        /// A change with its policy encoded, ready for the transaction.
        enum Row {
            Expect(PolicyKey, Option<Policy>),
            PutPolicy(&'static str, String, String),
            DeletePolicy(&'static str, String),
            PutUnblock(UnblockGrant),
            DeleteUnblock(String),
        }
        let mut rows = Vec::with_capacity(changes.len());
        for change in changes {
            rows.push(match change {
                PolicyChange::Expect { key, current } => Row::Expect(key.clone(), current.clone()),
                PolicyChange::Put(policy) => {
                    let key = PolicyKey::of(policy);
                    policy.validate().map_err(|error| {
                        StoreError::InvalidInput(format!("cannot store the policy {key}: {error}"))
                    })?;
                    let body = serde_json::to_string(policy).map_err(|error| {
                        StoreError::InvalidInput(format!("cannot encode the policy {key}: {error}"))
                    })?;
                    Row::PutPolicy(key.kind_name(), key.identifier, body)
                }
                PolicyChange::Delete(key) => {
                    Row::DeletePolicy(key.kind_name(), key.identifier.clone())
                }
                PolicyChange::PutUnblock(grant) => Row::PutUnblock(grant.clone()),
                PolicyChange::DeleteUnblock(user) => Row::DeleteUnblock(user.clone()),
            });
        }
        let audit = audit.to_vec();
        let now = timestamp(Utc::now());
        /// The end of the transaction.
        enum Outcome {
            Committed,
            /// Preconditions failed on these keys; rolled back.
            Conflict(Vec<PolicyKey>),
        }
        let outcome = self
            .run("applying policy changes", move |connection| {
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Preconditions are checked against the state before the batch,
                // as DynamoDB evaluates the conditions of a transaction.
                let mut changed = Vec::new();
                for row in &rows {
                    if let Row::Expect(key, expected) = row
                        && !policy_matches(&transaction, key, expected.as_ref())?
                    {
                        changed.push(key.clone());
                    }
                }
                if !changed.is_empty() {
                    // Dropping the transaction rolls it back.
                    return Ok(Outcome::Conflict(changed));
                }
                for row in &rows {
                    match row {
                    Row::Expect(..) => 0,
                    Row::PutPolicy(kind, id, body) => transaction.execute(
                        "INSERT INTO policies (kind, id, body, updated_at) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (kind, id) DO UPDATE SET body = excluded.body,
                             updated_at = excluded.updated_at",
                        params![kind, id, body, now],
                    )?,
                    Row::DeletePolicy(kind, id) => transaction.execute(
                        "DELETE FROM policies WHERE kind = ?1 AND id = ?2",
                        params![kind, id],
                    )?,
                    Row::PutUnblock(grant) => transaction.execute(
                        "INSERT INTO unblocks (user, expires_at, granted_by, granted_at, reason)
                         VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (user) DO UPDATE SET expires_at = excluded.expires_at,
                             granted_by = excluded.granted_by, granted_at = excluded.granted_at,
                             reason = excluded.reason",
                        params![
                            grant.identity.as_str(),
                            timestamp(grant.expires_at),
                            grant.granted_by,
                            timestamp(grant.granted_at),
                            grant.reason
                        ],
                    )?,
                    Row::DeleteUnblock(user) => transaction
                        .execute("DELETE FROM unblocks WHERE user = ?1", params![user])?,
                };
                }
                for entry in &audit {
                    transaction.execute(
                        "INSERT INTO audit_log (at, actor, action, target, detail)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            timestamp(entry.at),
                            entry.actor,
                            entry.action,
                            entry.target,
                            entry.detail.to_string()
                        ],
                    )?;
                }
                transaction.commit()?;
                Ok(Outcome::Committed)
            })
            .await?;
        match outcome {
            Outcome::Committed => Ok(()),
            Outcome::Conflict(changed) => Err(StoreError::Conflict { changed }),
        }
    }

    async fn check_snapshot(
        &self,
        keys: &[PolicyKey],
        user: &str,
        at: DateTime<Utc>,
    ) -> StoreResult<CheckSnapshot> {
        let identity =
            Identity::parse(user).map_err(|error| StoreError::InvalidInput(error.to_string()))?;
        let keys: Vec<(&'static str, String)> = keys
            .iter()
            .map(|key| (key.kind_name(), key.identifier.clone()))
            .collect();
        let user = user.to_owned();
        let (day, month) = (Period::Daily.key(at), Period::Monthly.key(at));
        type UnblockRow = (String, String, String, String);
        let (bodies, daily, monthly, unblock) = self
            .read("reading a check snapshot", move |connection| {
                // One read transaction: a consistent snapshot, and one
                // shared lock instead of one per statement.
                let transaction = connection.unchecked_transaction()?;
                let connection = &*transaction;
                let mut statement = connection.prepare_cached(POLICY_SQL)?;
                let mut bodies: Vec<String> = Vec::with_capacity(keys.len());
                for (kind, id) in &keys {
                    if let Some(body) = statement
                        .query_row(params![kind, id], |row| row.get(0))
                        .optional()?
                    {
                        bodies.push(body);
                    }
                }
                let daily = read_counters(connection, DAILY_USAGE_SQL, &user, &day)?;
                let monthly = read_counters(connection, MONTHLY_USAGE_SQL, &user, &month)?;
                let unblock: Option<UnblockRow> = connection
                    .prepare_cached(UNBLOCK_SQL)?
                    .query_row(params![user], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .optional()?;
                drop(statement);
                transaction.commit()?;
                Ok((bodies, daily, monthly, unblock))
            })
            .await?;
        let unblock = unblock
            .map(|(expires_at, granted_by, granted_at, reason)| {
                Ok::<_, StoreError>(UnblockGrant {
                    identity,
                    expires_at: parse_timestamp(&expires_at, "unblock expiry")?,
                    granted_by,
                    granted_at: parse_timestamp(&granted_at, "unblock grant time")?,
                    reason,
                })
            })
            .transpose()?;
        Ok(CheckSnapshot {
            policies: bodies
                .iter()
                .map(|body| decode_policy(body))
                .collect::<StoreResult<_>>()?,
            usage: UsageTotals {
                daily: counters_to_usage(daily)?,
                monthly: counters_to_usage(monthly)?,
            },
            unblock,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Returns the query plan's detail lines for `sql`.
    fn query_plan(connection: &Connection, sql: &str) -> Vec<String> {
        let mut statement = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("the statement prepares");
        // Bind as many of the sample values as the statement has parameters.
        let values = ["user@example.com", "2026-01"];
        let count = statement.parameter_count();
        let rows = statement
            .query_map(rusqlite::params_from_iter(&values[..count]), |row| {
                row.get::<_, String>(3)
            })
            .expect("the plan runs");
        rows.collect::<Result<_, _>>().expect("the plan rows read")
    }

    #[test]
    fn check_reads_are_keyed_lookups() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let store = SqliteStore::open(&folder.path().join("plan.db")).expect("the store opens");
        let connection = store.connection.lock().expect("the lock is free");
        for sql in [DAILY_USAGE_SQL, MONTHLY_USAGE_SQL, POLICY_SQL, UNBLOCK_SQL] {
            let plan = query_plan(&connection, sql);
            assert!(!plan.is_empty(), "{sql} has no plan");
            assert!(
                plan.iter()
                    .all(|step| step.starts_with("SEARCH") && step.contains("PRIMARY KEY")),
                "{sql} is not a primary-key search: {plan:?}"
            );
        }
    }

    #[test]
    fn newer_schema_is_rejected() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("future.db");
        drop(SqliteStore::open(&path).expect("the store opens"));
        let connection = Connection::open(&path).expect("the file opens");
        connection
            .execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (99, 'later')",
                [],
            )
            .expect("the row inserts");
        drop(connection);

        let error = SqliteStore::open(&path).expect_err("a newer schema is rejected");
        let message = error.to_string();
        assert!(message.contains("schema version 99"), "{message}");
        assert!(message.contains("newer tollgate"), "{message}");
    }

    fn latest_version() -> i64 {
        i64::try_from(MIGRATIONS.len()).expect("the migration count fits in i64")
    }

    #[tokio::test]
    async fn reopen_keeps_data_and_version() {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("nested").join("reopen.db");
        let store = SqliteStore::open(&path).expect("the store opens");
        assert_eq!(
            store.schema_version().await.expect("version"),
            latest_version()
        );
        let policy = Policy::recommended_default(Utc::now());
        store.put_policy(&policy).await.expect("put");
        drop(store);

        let store = SqliteStore::open(&path).expect("the store reopens");
        assert_eq!(
            store.schema_version().await.expect("version"),
            latest_version()
        );
        assert_eq!(store.list_policies().await.expect("list"), vec![policy]);
        let journal: String = store
            .connection
            .lock()
            .expect("the lock is free")
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .expect("the pragma reads");
        assert_eq!(journal, "wal");
    }

    #[cfg(unix)]
    #[test]
    fn store_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("private.db");
        drop(SqliteStore::open(&path).expect("the store opens"));
        let mode = std::fs::metadata(&path)
            .expect("the file exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
