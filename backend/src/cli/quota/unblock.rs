//! `tollgate quota unblock`: lets one user past a `block` limit for a
//! while, recording who granted it, when and why, or ends such an unblock
//! early with `--revoke`.

use chrono::Utc;
use serde_json::json;
use tollgate_protocol::check::Reason;
use tollgate_quota::{UnblockDuration, UnblockGrant};

use super::{audit_entry, local_user, open_store, show};
use crate::cli::{DeploymentArgs, StoreArgs, identity, output, user_error};
use crate::store::{PolicyChange, Store};

#[derive(Debug, clap::Args)]
pub struct UnblockArgs {
    /// The user's identity: their email address, or the value of the
    /// server's --identity-claim.
    email: String,
    /// How long the unblock lasts: hours such as 24h, days such as 3d, or
    /// until-reset (until the blocking limit resets); at most 7 days.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    duration: UnblockDuration,
    /// The reason the user may continue, kept in the audit log and shown to
    /// the user. Required unless --revoke is given.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// The name of the person granting the unblock, such as an admin's
    /// email address [default: the local user name].
    #[arg(long, value_name = "NAME")]
    by: Option<String>,
    /// The user's groups as the identity provider sends them, so that
    /// until-reset finds the limit a group policy blocks at.
    #[arg(long, value_name = "GROUPS", value_parser = show::parse_groups_arg)]
    groups: Option<show::GroupList>,
    /// End the user's unblock now instead of granting one.
    #[arg(long, conflicts_with_all = ["duration", "groups"])]
    revoke: bool,
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[command(flatten)]
    store: StoreArgs,
}

fn parse_duration(text: &str) -> Result<UnblockDuration, String> {
    text.parse()
        .map_err(|error: tollgate_quota::UnblockError| error.to_string())
}

pub async fn run(args: UnblockArgs) -> anyhow::Result<()> {
    let identity = identity::parse_user(&args.email, &args.deployment).map_err(user_error)?;
    let granted_by = args.by.clone().unwrap_or_else(local_user);
    if args.revoke {
        return revoke(&args, identity.as_str()).await;
    }
    let reason = args.reason.as_deref().unwrap_or("").trim().to_owned();
    if reason.is_empty() {
        return Err(user_error(
            "an unblock needs a reason; add --reason TEXT saying why the user may continue",
        ));
    }
    if granted_by.trim().is_empty() {
        return Err(user_error("--by is empty; name who grants the unblock"));
    }

    let (store, _) = open_store(&args.store)?;
    let now = Utc::now();
    let evaluation = show::evaluate(
        &store,
        identity.clone(),
        args.groups
            .clone()
            .map(|groups| groups.0)
            .unwrap_or_default(),
        &args.deployment,
        now,
    )
    .await?;
    let decision = &evaluation.decision;
    let grant = UnblockGrant::new(
        identity.clone(),
        args.duration,
        &granted_by,
        &reason,
        now,
        decision.blocking_reset_at(),
    )
    .map_err(|error| user_error(error.to_string()))?;

    let entry = audit_entry(
        "unblock.grant",
        format!("user:{identity}"),
        json!({
            "duration": args.duration.to_string(),
            "grant": grant.to_wire(),
            "reason_at_grant": decision.answer.reason,
        }),
    );
    store
        .apply_policy_changes(&[PolicyChange::PutUnblock(grant.clone())], &[entry])
        .await?;

    output::line(&format!(
        "Unblocked {identity} until {} ({}), granted by {}: {}",
        grant.expires_at.format("%Y-%m-%d %H:%M UTC"),
        args.duration,
        grant.granted_by,
        grant.reason
    ));
    if !matches!(
        decision.answer.reason,
        Reason::DailyLimitExceeded | Reason::MonthlyLimitExceeded | Reason::Unblocked
    ) {
        output::warning(&format!(
            "{identity} is not blocked now ({}); the unblock lets them past a block limit \
             reached before it expires",
            decision.answer.message
        ));
    }
    Ok(())
}

async fn revoke(args: &UnblockArgs, user: &str) -> anyhow::Result<()> {
    if !args.store.path()?.exists() {
        return Err(no_unblock(user));
    }
    let (store, _) = open_store(&args.store)?;
    let Some(grant) = store.unblock(user).await? else {
        return Err(no_unblock(user));
    };
    let reason = args.reason.clone().unwrap_or_default();
    let entry = audit_entry(
        "unblock.revoke",
        format!("user:{user}"),
        json!({ "before": grant.to_wire(), "reason": reason }),
    );
    store
        .apply_policy_changes(&[PolicyChange::DeleteUnblock(user.to_owned())], &[entry])
        .await?;
    let state = if grant.is_active(Utc::now()) {
        "active"
    } else {
        "already expired"
    };
    output::line(&format!(
        "Ended the unblock of {user} ({state}; it was granted by {} until {}).",
        grant.granted_by,
        grant.expires_at.format("%Y-%m-%d %H:%M UTC")
    ));
    Ok(())
}

fn no_unblock(user: &str) -> anyhow::Error {
    user_error(format!(
        "{user} has no unblock to end; `tollgate quota show {user}` shows their state"
    ))
}
