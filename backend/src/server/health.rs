//! `GET /health`: whether the store responds, and the coverage warning
//! that `tollgate quota list` also prints: no policy at all, or no enabled
//! default policy, because then some users are not limited.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use tollgate_quota::{DEFAULT_IDENTIFIER, Policy, PolicyKind};

use super::AppState;
use super::error::error_chain;
use crate::store::PolicyKey;

/// The body of the health response.
#[derive(Debug, Serialize)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub store: StoreHealth,
    /// The number of policies, absent when the store does not respond.
    pub policies: Option<u64>,
    /// A condition an operator should fix: no policy, or no enabled default
    /// policy ([`coverage_warning`]).
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

/// The warning shown while policies exist but none of them is an enabled
/// default policy.
pub const NO_DEFAULT_WARNING: &str = "no enabled default policy exists, so users without an \
     enabled user or group policy are not limited; create one with `tollgate quota set-default \
     --monthly-limit 225M`";

/// Returns the warning to show when some users are not limited, given the
/// number of policies and the default policy, if one exists.
pub fn coverage_warning(policy_count: u64, default: Option<&Policy>) -> Option<&'static str> {
    if policy_count == 0 {
        return Some(NO_POLICY_WARNING);
    }
    let default_enabled = default.is_some_and(|policy| policy.enabled);
    (!default_enabled).then_some(NO_DEFAULT_WARNING)
}

pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let default_key = PolicyKey::new(PolicyKind::Default, DEFAULT_IDENTIFIER);
    let result = async {
        state.store.ping().await?;
        let count = state.store.count_policies().await?;
        let default = state.store.policy(&default_key).await?;
        Ok::<_, crate::store::StoreError>((count, default))
    }
    .await;
    match result {
        Ok((count, default)) => {
            let warning = coverage_warning(count, default.as_ref()).map(str::to_owned);
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
