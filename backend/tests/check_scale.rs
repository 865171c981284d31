//! The check stays fast with millions of usage rows: the store's reads for
//! one user are keyed lookups. Ignored by default because filling the store
//! takes a while; run with
//! `cargo test --release -p tollgate-backend --test check_scale -- --ignored --nocapture`.

// This test exists to print its measurements.
#![allow(clippy::print_stderr)]

mod support;

use std::time::{Duration, Instant};

use chrono::Utc;
use rusqlite::Connection;
use tollgate_backend::store::Store;
use tollgate_backend::store::sqlite::SqliteStore;
use tollgate_protocol::check::PolicyKind;
use tollgate_quota::Policy;

use support::{Backend, SigningKey, TestIssuer, claims};

const USERS: i64 = 20_000;
const DAYS: i64 = 60;
const TYPES: [&str; 4] = ["input", "output", "cacheRead", "cacheCreation"];

/// Fills `usage_daily` with USERS × DAYS × 4 rows and `usage_monthly` with
/// the matching month rows, straight through SQL for speed.
fn fill(path: &std::path::Path) -> usize {
    let connection = Connection::open(path).expect("the store file opens");
    connection
        .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .expect("pragmas");
    let mut rows = 0;
    for token_type in TYPES {
        rows += connection
            .execute(
                "WITH RECURSIVE
                     users(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM users WHERE n + 1 < ?1),
                     days(d) AS (SELECT 0 UNION ALL SELECT d + 1 FROM days WHERE d + 1 < ?2)
                 INSERT INTO usage_daily (user, day, token_type, tokens)
                 SELECT 'user' || n || '@example.com', date('2026-01-01', '+' || d || ' days'), ?3, n + d
                 FROM users, days",
                rusqlite::params![USERS, DAYS, token_type],
            )
            .expect("daily rows insert");
        rows += connection
            .execute(
                "INSERT INTO usage_monthly (user, month, token_type, tokens)
                 SELECT user, substr(day, 1, 7), token_type, SUM(tokens) FROM usage_daily
                 WHERE token_type = ?1 GROUP BY user, substr(day, 1, 7), token_type",
                rusqlite::params![token_type],
            )
            .expect("monthly rows insert");
    }
    rows
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * fraction).round() as usize;
    sorted[index]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fills a store with millions of rows; run by hand to measure"]
async fn check_is_fast_with_millions_of_rows() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let path = folder.path().join("scale.db");
    drop(SqliteStore::open(&path).expect("the schema is created"));
    let started = Instant::now();
    let rows = fill(&path);
    eprintln!("filled {rows} usage rows in {:.1?}", started.elapsed());

    let store = SqliteStore::open(&path).expect("the store opens");
    let mut reads = Vec::new();
    for index in 0..2_000 {
        let user = format!("user{}@example.com", index * 7 % USERS);
        let at = chrono::DateTime::parse_from_rfc3339("2026-02-10T12:00:00Z")
            .expect("a time")
            .with_timezone(&Utc);
        let started = Instant::now();
        let usage = store.usage(&user, at).await.expect("usage reads");
        reads.push(started.elapsed());
        assert!(usage.monthly.input > 0, "{user} has February usage");
    }
    reads.sort();
    eprintln!(
        "store.usage over {} reads: p50 {:?}, p99 {:?}, max {:?}",
        reads.len(),
        percentile(&reads, 0.5),
        percentile(&reads, 0.99),
        reads[reads.len() - 1]
    );
    // A full scan of millions of rows takes far longer than this.
    assert!(
        percentile(&reads, 0.5) < Duration::from_millis(5),
        "usage reads are not keyed lookups"
    );
    drop(store);

    // The whole check over HTTP, on a backend serving the same file.
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let backend = Backend::start_on(&issuer.url, &path).await;
    backend
        .put_policy(
            &Policy::new(PolicyKind::Default, "default", 225_000_000, Utc::now()).expect("valid"),
        )
        .await;
    let token = key.sign(&claims(&issuer.url, "user42@example.com"));
    let mut checks = Vec::new();
    for _ in 0..500 {
        let started = Instant::now();
        let (status, _) = backend.check(&token).await;
        checks.push(started.elapsed());
        assert_eq!(status, 200);
    }
    checks.sort();
    eprintln!(
        "GET /v1/check over {} requests: p50 {:?}, p99 {:?}, max {:?}",
        checks.len(),
        percentile(&checks, 0.5),
        percentile(&checks, 0.99),
        checks[checks.len() - 1]
    );

    // Throughput with 32 concurrent clients on the same token.
    let backend = std::sync::Arc::new(backend);
    let started = Instant::now();
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let backend = std::sync::Arc::clone(&backend);
            let token = token.clone();
            tokio::spawn(async move {
                for _ in 0..125 {
                    assert_eq!(backend.check(&token).await.0, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("a client task panicked");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "GET /v1/check, 4000 requests from 32 concurrent clients: {:.1?}, {:.0} requests/s",
        elapsed,
        4000.0 / elapsed.as_secs_f64()
    );
}
