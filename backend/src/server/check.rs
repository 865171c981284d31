//! `GET /v1/check`: the quota decision for the caller.
//!
//! The [`Authenticated`] extractor validates the bearer token before this
//! handler's body runs, so an invalid token gets its 401 without a single
//! store read. The user is whoever the token names: nothing in the query
//! can name another user.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use tollgate_protocol::check::{CheckAnswer, PolicyKind};
use tollgate_quota::{CheckInput, DEFAULT_IDENTIFIER, decide};

use super::{ApiError, AppState};
use crate::auth::Authenticated;
use crate::store::PolicyKey;

pub async fn check(
    Authenticated(caller): Authenticated,
    State(state): State<AppState>,
) -> Result<Json<CheckAnswer>, ApiError> {
    let now = Utc::now();
    let user = caller.identity.as_str();

    // Only the policies that can apply: the user's, their groups' and the
    // default. Each is a primary-key lookup, and the store reads them with
    // the usage and the unblock in one call.
    let mut keys = Vec::with_capacity(caller.groups.len() + 2);
    keys.push(PolicyKey::new(PolicyKind::User, user));
    keys.extend(
        caller
            .groups
            .iter()
            .map(|group| PolicyKey::new(PolicyKind::Group, group.clone())),
    );
    keys.push(PolicyKey::new(PolicyKind::Default, DEFAULT_IDENTIFIER));

    let snapshot = state.store.check_snapshot(&keys, user, now).await?;

    let decision = decide(&CheckInput {
        identity: &caller.identity,
        groups: &caller.groups,
        policies: &snapshot.policies,
        daily_usage: snapshot.usage.daily,
        monthly_usage: snapshot.usage.monthly,
        counting: &state.counting,
        unblock: snapshot.unblock.as_ref(),
        now,
    });
    let answer = decision.answer;
    tracing::debug!(
        user,
        allowed = answer.allowed,
        reason = ?answer.reason,
        policy = ?answer.policy,
        monthly_tokens = answer.usage.monthly.tokens,
        daily_tokens = answer.usage.daily.tokens,
        "decided"
    );
    Ok(Json(answer))
}
