//! `GET /health`: whether the store responds, and a warning when no quota
//! policy exists, because then no user is limited.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use super::AppState;
use super::error::error_chain;

/// The body of the health response.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub store: StoreHealth,
    /// The number of policies, absent when the store does not respond.
    pub policies: Option<u64>,
    /// A condition an operator should fix, such as a missing policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The store part of the health response.
#[derive(Debug, Serialize)]
pub struct StoreHealth {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The warning shown while no policy exists.
pub const NO_POLICY_WARNING: &str = "no quota policy exists, so nobody is limited; create a \
     default policy with `tollgate quota set-default --monthly-limit 225M`";

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let result = match state.store.ping().await {
        Ok(()) => state.store.count_policies().await,
        Err(error) => Err(error),
    };
    match result {
        Ok(count) => {
            let warning = (count == 0).then(|| NO_POLICY_WARNING.to_owned());
            (
                StatusCode::OK,
                Json(Health {
                    status: "ok",
                    store: StoreHealth {
                        status: "ok",
                        error: None,
                    },
                    policies: Some(count),
                    warning,
                }),
            )
        }
        Err(error) => {
            let message = error_chain(&error);
            tracing::warn!("health check failed: the store does not respond: {message}");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable",
                    store: StoreHealth {
                        status: "unavailable",
                        error: Some(message),
                    },
                    policies: None,
                    warning: None,
                }),
            )
        }
    }
}
