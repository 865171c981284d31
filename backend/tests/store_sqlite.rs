//! The shared store behaviour suite, run against the SQLite store.

use std::sync::Arc;

use tollgate_backend::store::sqlite::SqliteStore;
use tollgate_backend::store::suite;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_suite() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let store = SqliteStore::open(&folder.path().join("suite.db")).expect("the store opens");
    suite::run_all(Arc::new(store)).await;
}

/// A counter that an older writer let overflow into a REAL must still read,
/// as i64::MAX, so that checks for that user keep working.
#[tokio::test]
async fn real_usage_counter_reads_as_max() {
    use tollgate_backend::store::{Store as _, UsageEvent};
    use tollgate_quota::TokenType;

    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("real.db");
    let store = SqliteStore::open(&path).expect("the store opens");
    let at = chrono::Utc::now();
    let user = "overflowed@example.com";
    store
        .add_usage(&UsageEvent {
            user: user.to_owned(),
            at,
            token_type: TokenType::Input,
            tokens: 10,
            dedup_key: None,
        })
        .await
        .expect("usage is recorded");

    let connection = rusqlite::Connection::open(&path).expect("the store file opens");
    for table in ["usage_daily", "usage_monthly"] {
        let changed = connection
            .execute(
                &format!("UPDATE {table} SET tokens = 1.8446744073709552e19 WHERE user = ?1"),
                [user],
            )
            .expect("the counter is overwritten");
        assert_eq!(changed, 1, "{table} has the user's counter");
    }
    drop(connection);

    let totals = store.usage(user, at).await.expect("a REAL counter reads");
    let max = i64::MAX.unsigned_abs();
    assert_eq!(totals.daily.input, max, "daily input reads as i64::MAX");
    assert_eq!(totals.monthly.input, max, "monthly input reads as i64::MAX");
}
