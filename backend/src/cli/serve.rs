//! `tollgate serve`: opens the store, prepares token validation and runs
//! the HTTP API until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tollgate_quota::CountingConfig;

use super::{StoreArgs, user_error};
use crate::auth::{AuthConfig, TokenValidator};
use crate::server::{self, AppState};
use crate::store::sqlite::SqliteStore;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free port (see --port-file).
    #[arg(long, env = "TOLLGATE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    #[command(flatten)]
    store: StoreArgs,

    /// The OIDC issuer URL; its discovery document is at
    /// <issuer>/.well-known/openid-configuration.
    #[arg(long, env = "TOLLGATE_ISSUER")]
    issuer: String,

    /// The expected `aud` claim of ID tokens: the OIDC client id.
    #[arg(long, env = "TOLLGATE_AUDIENCE")]
    audience: String,

    /// The token claim that identifies the user (an email address).
    #[arg(long, env = "TOLLGATE_IDENTITY_CLAIM", default_value = "email")]
    identity_claim: String,

    /// The token claims that list the user's groups, comma-separated.
    #[arg(
        long,
        env = "TOLLGATE_GROUP_CLAIMS",
        default_value = "groups,cognito:groups",
        value_delimiter = ','
    )]
    group_claims: Vec<String>,

    /// The token types that count toward limits, with weights, as
    /// TYPE=WEIGHT pairs; a type left out does not count.
    #[arg(
        long,
        env = "TOLLGATE_COUNTED_TYPES",
        default_value = "input=1,output=1,cacheRead=1,cacheCreation=1"
    )]
    counted_types: String,

    /// A file that receives the bound host:port once the server listens.
    #[arg(long, value_name = "PATH")]
    port_file: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let counting: CountingConfig = args.counted_types.parse().map_err(|error| {
        user_error(format!(
            "invalid --counted-types {:?}: {error}",
            args.counted_types
        ))
    })?;
    let issuer = args.issuer.trim().to_owned();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        return Err(user_error(format!(
            "invalid --issuer {issuer:?}: use the issuer's URL, such as https://login.example.com"
        )));
    }
    if args.audience.trim().is_empty() {
        return Err(user_error(
            "--audience is empty; use the OIDC client id the agent logs in with",
        ));
    }

    let mut auth = AuthConfig::new(issuer, args.audience.trim());
    auth.identity_claim = args.identity_claim.trim().to_owned();
    auth.group_claims = args
        .group_claims
        .iter()
        .map(|claim| claim.trim().to_owned())
        .filter(|claim| !claim.is_empty())
        .collect();

    let db_path = args.store.path()?;
    let store = SqliteStore::open(&db_path)?;
    tracing::info!(path = %db_path.display(), "opened the SQLite store");

    let validator =
        TokenValidator::new(auth).context("cannot build the HTTP client for the issuer")?;
    match validator.prefetch_keys().await {
        Ok(count) => {
            tracing::info!(issuer = %validator.config().issuer, count, "downloaded the issuer's signing keys")
        }
        // The issuer may come up after the server; keys are fetched again
        // on the first request.
        Err(error) => {
            tracing::warn!(issuer = %validator.config().issuer, "cannot download the issuer's signing keys yet: {error}")
        }
    }

    let state = AppState {
        validator: Arc::new(validator),
        store: Arc::new(store),
        counting: Arc::new(counting),
    };
    let listener = server::bind(args.listen, args.port_file.as_deref()).await?;
    server::serve(listener, server::router(state), server::shutdown_signal()).await
}
