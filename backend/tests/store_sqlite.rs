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
