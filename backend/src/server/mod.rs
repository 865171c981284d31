//! The HTTP API: the router, its shared state, and the serve loop with
//! graceful shutdown.
//!
//! Routes:
//! - `GET /health`: store status and a warning when some users are not
//!   limited (no policy, or no enabled default policy).
//! - `GET /v1/check`: the quota decision for the bearer token's user.
//! - `POST /v1/metrics`: OTLP/HTTP usage ingest ([`crate::ingest`]).

mod check;
mod error;
mod health;
mod trace;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tollgate_quota::CountingConfig;

use crate::auth::TokenValidator;
use crate::ingest::IngestSettings;
use crate::store::Store;

pub use error::ApiError;
pub(crate) use error::error_chain;
pub use health::{NO_DEFAULT_WARNING, NO_POLICY_WARNING, coverage_warning};

/// The state shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub validator: Arc<TokenValidator>,
    pub store: Arc<dyn Store>,
    /// The token types that count toward the limits, with their weights.
    pub counting: Arc<CountingConfig>,
}

impl FromRef<AppState> for Arc<TokenValidator> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.validator)
    }
}

/// Builds the router with every route and the request logging layer, and
/// the default ingest settings (alerts to the log only).
pub fn router(state: AppState) -> Router {
    router_with_ingest(state, IngestSettings::default())
}

/// Builds the router with every route, the request logging layer and the
/// given settings of `POST /v1/metrics`.
pub fn router_with_ingest(state: AppState, ingest: IngestSettings) -> Router {
    Router::new()
        .route("/health", get(health::health))
        .route("/v1/check", get(check::check))
        .route(
            "/v1/metrics",
            post(crate::ingest::handler::export_metrics).layer(Extension(Arc::new(ingest))),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(trace::trace_request))
        .with_state(state)
}

/// Returns the 404 JSON error for a path without a route.
async fn not_found(uri: axum::http::Uri) -> axum::response::Response {
    error::json_error(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {}; the routes are GET /health, GET /v1/check and POST /v1/metrics",
            uri.path()
        ),
    )
}

/// Returns the 405 JSON error for a known path requested with another
/// method. axum adds the `Allow` header.
async fn method_not_allowed(
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> axum::response::Response {
    error::json_error(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} does not accept {method}; the routes are GET /health, GET /v1/check and POST \
             /v1/metrics",
            uri.path()
        ),
    )
}

/// Binds `address` and writes the bound `host:port` to `port_file`, if
/// given, once the socket is listening.
pub async fn bind(address: SocketAddr, port_file: Option<&Path>) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(address).await.with_context(|| {
        format!("cannot listen on {address}; choose a free address with --listen")
    })?;
    let bound = listener
        .local_addr()
        .context("cannot read the bound address of the listening socket")?;
    if let Some(port_file) = port_file {
        write_port_file(port_file, bound)?;
    }
    Ok(listener)
}

/// Writes the bound address through a temporary file and a rename, so a
/// reader polling for the file never reads it half-written.
pub fn write_port_file(path: &Path, bound: SocketAddr) -> anyhow::Result<()> {
    let mut temporary = PathBuf::from(path);
    temporary.as_mut_os_string().push(".tmp");
    std::fs::write(&temporary, bound.to_string())
        .with_context(|| format!("cannot write the port file {}", temporary.display()))?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot write the port file {}", path.display()))?;
    Ok(())
}

/// Serves `app` on `listener` until `shutdown` completes, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match listener.local_addr() {
        Ok(address) => tracing::info!(%address, "listening"),
        Err(error) => tracing::info!(%error, "listening on an address that cannot be read"),
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM (Ctrl-C on other platforms).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };

    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => tracing::info!("received SIGINT, shutting down"),
        () = terminate => tracing::info!("received SIGTERM, shutting down"),
    }
}
