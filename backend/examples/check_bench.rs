//! Fixtures for the `GET /v1/check` benchmark (`backend/benches/check.sh`).
//!
//! - `check_bench issuer --port-file P --tokens FILE --users N` generates
//!   an RSA key, serves OIDC discovery and the JWKS on 127.0.0.1, writes one
//!   RS256 ID token per user (`user<i>@example.com`, in group
//!   `team<i % 50>`) to FILE, then serves until it is stopped.
//! - `check_bench seed --db PATH --users N --usage-rows M` fills a store
//!   with a default policy, 50 group policies, a user policy for every user
//!   and M usage counter rows spread over the users and past days, each
//!   user having counters for today and this month.

// A benchmark fixture prints its progress for the person running it.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;

use anyhow::Context as _;
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use axum::Json;
use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rusqlite::params;
use serde_json::json;
use tollgate_backend::store::Store;
use tollgate_backend::store::sqlite::SqliteStore;
use tollgate_protocol::check::{Enforcement, PolicyKind};
use tollgate_quota::{Period, Policy};

/// The OIDC client id the tokens are issued to.
const AUDIENCE: &str = "tollgate-cli";
/// The number of groups users are spread over.
const GROUPS: usize = 50;
const TOKEN_TYPES: [&str; 4] = ["input", "output", "cacheRead", "cacheCreation"];

fn usage() -> anyhow::Error {
    anyhow::anyhow!(
        "usage: check_bench issuer --port-file PATH --tokens PATH --users N\n       \
         check_bench seed --db PATH --users N --usage-rows M"
    )
}

/// Returns the value after `--name` in `args`.
fn option(args: &[String], name: &str) -> anyhow::Result<String> {
    args.iter()
        .position(|arg| arg == name)
        .and_then(|index| args.get(index + 1))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("missing {name}; {}", usage()))
}

fn number(args: &[String], name: &str) -> anyhow::Result<usize> {
    let text = option(args, name)?;
    text.parse()
        .with_context(|| format!("invalid {name} {text:?}; use a whole number"))
}

fn user(index: usize) -> String {
    format!("user{index}@example.com")
}

fn group(index: usize) -> String {
    format!("team{}", index % GROUPS)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("issuer") => issuer(&args).await,
        Some("seed") => seed(&args).await,
        _ => Err(usage()),
    }
}

async fn issuer(args: &[String]) -> anyhow::Result<()> {
    let port_file = PathBuf::from(option(args, "--port-file")?);
    let tokens_path = PathBuf::from(option(args, "--tokens")?);
    let users = number(args, "--users")?;

    let pair = KeyPair::generate(KeySize::Rsa2048).context("RSA key generation failed")?;
    let pkcs8 = pair
        .as_der()
        .context("cannot export the RSA key as PKCS#8")?;
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", pkcs8.as_ref().to_vec()));
    let encoding =
        EncodingKey::from_rsa_pem(pem.as_bytes()).context("the RSA key does not load")?;
    let public = pair.public_key();
    let jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "alg": "RS256",
        "kid": "bench-1",
        "n": URL_SAFE_NO_PAD.encode(public.modulus().big_endian_without_leading_zero()),
        "e": URL_SAFE_NO_PAD.encode(public.exponent().big_endian_without_leading_zero()),
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot bind 127.0.0.1:0")?;
    let url = format!("http://{}", listener.local_addr()?);

    let now = Utc::now();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("bench-1".to_owned());
    let mut tokens = String::new();
    for index in 0..users {
        let claims = json!({
            "iss": url,
            "aud": AUDIENCE,
            "sub": format!("sub-{index}"),
            "email": user(index),
            "groups": [group(index)],
            "iat": now.timestamp(),
            "exp": (now + Duration::hours(12)).timestamp(),
        });
        tokens.push_str(&jsonwebtoken::encode(&header, &claims, &encoding)?);
        tokens.push('\n');
    }
    std::fs::write(&tokens_path, tokens)
        .with_context(|| format!("cannot write {}", tokens_path.display()))?;

    let discovery = json!({
        "issuer": url,
        "jwks_uri": format!("{url}/jwks"),
        "authorization_endpoint": format!("{url}/auth"),
        "token_endpoint": format!("{url}/token"),
        "id_token_signing_alg_values_supported": ["RS256"],
    });
    let jwks = json!({ "keys": [jwk] });
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || {
                let discovery = discovery.clone();
                async move { Json(discovery) }
            }),
        )
        .route(
            "/jwks",
            get(move || {
                let jwks = jwks.clone();
                async move { Json(jwks) }
            }),
        );
    std::fs::write(&port_file, &url)
        .with_context(|| format!("cannot write {}", port_file.display()))?;
    eprintln!("issuer {url}: {users} tokens in {}", tokens_path.display());
    axum::serve(listener, app).await?;
    Ok(())
}

async fn seed(args: &[String]) -> anyhow::Result<()> {
    let db = PathBuf::from(option(args, "--db")?);
    let users = number(args, "--users")?;
    let usage_rows = number(args, "--usage-rows")?;
    let now = Utc::now();

    let store = SqliteStore::open(&db)?;
    let mut default = Policy::recommended_default(now);
    default.monthly_limit = 900_000_000_000;
    default.derive_daily(Default::default());
    store.put_policy(&default).await?;
    for index in 0..GROUPS {
        let mut policy = Policy::new(PolicyKind::Group, &group(index), 500_000_000_000, now)?;
        policy.daily_enforcement = Enforcement::Block;
        policy.daily_limit = Some(50_000_000_000);
        store.put_policy(&policy).await?;
    }
    for index in 0..users {
        let policy = Policy::new(PolicyKind::User, &user(index), 400_000_000_000, now)?;
        store.put_policy(&policy).await?;
    }
    drop(store);

    // Counter rows go straight through SQL in one transaction, because the
    // store API commits one event per transaction.
    let mut connection = rusqlite::Connection::open(&db)?;
    let transaction = connection.transaction()?;
    let today = Period::Daily.key(now);
    let month = Period::Monthly.key(now);
    let mut written = 0usize;
    {
        let mut daily = transaction.prepare(
            "INSERT OR REPLACE INTO usage_daily (user, day, token_type, tokens)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut monthly = transaction.prepare(
            "INSERT OR REPLACE INTO usage_monthly (user, month, token_type, tokens)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        // Today and this month for as many users as the row budget allows.
        let mut index = 0;
        while index < users && written + 2 <= usage_rows {
            daily.execute(params![user(index), today, "input", 1_000 + index as i64])?;
            monthly.execute(params![user(index), month, "input", 50_000 + index as i64])?;
            written += 2;
            index += 1;
        }
        // The rest as history: earlier days of every user, four types each.
        let mut day = 1i64;
        'history: loop {
            let key = Period::Daily.key(now - Duration::days(day));
            for index in 0..users {
                for token_type in TOKEN_TYPES {
                    if written >= usage_rows {
                        break 'history;
                    }
                    daily.execute(params![user(index), key, token_type, day + index as i64])?;
                    written += 1;
                }
            }
            day += 1;
        }
    }
    transaction.commit()?;
    println!(
        "seeded {} with 1 default, {GROUPS} group and {users} user policies and {written} usage rows",
        db.display()
    );
    Ok(())
}
