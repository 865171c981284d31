//! `tollgate quota`: the administrator's commands for quota policies,
//! usage, unblocks and the audit log.
//!
//! Every value is checked before the store is opened, and every change is
//! written together with its audit log entry, so a rejected command changes
//! nothing and an accepted one is always audited.

mod audit;
mod delete;
mod settings;
mod show;
mod transfer;
mod unblock;

use std::path::PathBuf;

use chrono::Utc;
use serde_json::json;
use tollgate_protocol::check::PolicyKind;
use tollgate_quota::policy::{enforcement_name, normalize_identifier, policy_kind_name};
use tollgate_quota::{
    DEFAULT_IDENTIFIER, Policy, format_amount, parse_policy_kind, validate_group_name,
};

use super::{DeploymentArgs, StoreArgs, identity, output, table, user_error};
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditEntry, PolicyChange, PolicyKey, Store, StoreError};

pub use settings::PolicySettings;

#[derive(Debug, clap::Subcommand)]
pub enum QuotaCommand {
    /// Create or change the policy of one user.
    SetUser {
        /// The user's identity: their email address, or the value of the
        /// server's --identity-claim.
        email: String,
        #[command(flatten)]
        settings: PolicySettings,
        #[command(flatten)]
        deployment: DeploymentArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create or change the policy of a group (as named in the group claim).
    SetGroup {
        /// The group name, exactly as the identity provider sends it.
        group: String,
        #[command(flatten)]
        settings: PolicySettings,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Create or change the default policy, which applies to users without
    /// an enabled user or group policy.
    SetDefault {
        #[command(flatten)]
        settings: PolicySettings,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List policies.
    List {
        /// Only policies of this kind: user, group or default.
        #[arg(long = "type", value_name = "KIND", value_parser = parse_kind_arg)]
        kind: Option<PolicyKind>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show which policy applies to a user, and why, with their usage and
    /// the decision a check would return now.
    Show(show::ShowArgs),
    /// Show a user's usage today and this month, by token type.
    Usage(show::UsageArgs),
    /// Delete a policy.
    Delete(delete::DeleteArgs),
    /// Let a blocked user continue for a while, or end such an unblock.
    Unblock(unblock::UnblockArgs),
    /// Write policies to a JSON or CSV file.
    Export(transfer::ExportArgs),
    /// Create or update policies from a JSON or CSV file, all or nothing.
    Import(transfer::ImportArgs),
    /// Show the audit log of policy and unblock changes, newest first.
    Audit(audit::AuditArgs),
}

pub fn parse_kind_arg(text: &str) -> Result<PolicyKind, String> {
    parse_policy_kind(text).map_err(|error| error.to_string())
}

pub async fn run(command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::SetUser {
            email,
            settings,
            deployment,
            store,
        } => {
            let user = identity::parse_user(&email, &deployment).map_err(user_error)?;
            set_policy(PolicyKind::User, user.as_str(), &settings, &store).await
        }
        QuotaCommand::SetGroup {
            group,
            settings,
            store,
        } => set_policy(PolicyKind::Group, &group, &settings, &store).await,
        QuotaCommand::SetDefault { settings, store } => {
            set_policy(PolicyKind::Default, DEFAULT_IDENTIFIER, &settings, &store).await
        }
        QuotaCommand::List { kind, json, store } => list(kind, json, &store).await,
        QuotaCommand::Show(args) => show::show(args).await,
        QuotaCommand::Usage(args) => show::usage(args).await,
        QuotaCommand::Delete(args) => delete::run(args).await,
        QuotaCommand::Unblock(args) => unblock::run(args).await,
        QuotaCommand::Export(args) => transfer::export(args).await,
        QuotaCommand::Import(args) => transfer::import(args).await,
        QuotaCommand::Audit(args) => audit::run(args).await,
    }
}

/// Opens the store file named by `--db`, `TOLLGATE_DB` or the default.
pub(super) fn open_store(args: &StoreArgs) -> anyhow::Result<(SqliteStore, PathBuf)> {
    let path = args.writable_path()?;
    let store = SqliteStore::open(&path)?;
    Ok((store, path))
}

/// Opens the store file for a read command, which must not create it: a
/// missing file is a user error, usually a mistyped `--db` or
/// `TOLLGATE_DB`.
pub(super) fn open_existing_store(args: &StoreArgs) -> anyhow::Result<(SqliteStore, PathBuf)> {
    let path = args.path()?;
    if !path.exists() {
        return Err(user_error(format!(
            "no store at {}; check --db or TOLLGATE_DB",
            path.display()
        )));
    }
    open_store(args)
}

/// Turns a failed [`PolicyChange::Expect`] into a user error (exit code 1):
/// nothing changed, and running the command again reads the current
/// policy. Other store errors stay unexpected failures.
pub(super) fn conflict_as_user_error(error: StoreError) -> anyhow::Error {
    match error {
        StoreError::Conflict { .. } => user_error(error.to_string()),
        other => other.into(),
    }
}

/// Builds an audit entry for a change made now by the local user.
pub(super) fn audit_entry(action: &str, target: String, detail: serde_json::Value) -> AuditEntry {
    AuditEntry {
        at: Utc::now(),
        actor: local_user(),
        action: action.to_owned(),
        target,
        detail,
    }
}

async fn set_policy(
    kind: PolicyKind,
    identifier: &str,
    settings: &PolicySettings,
    store_args: &StoreArgs,
) -> anyhow::Result<()> {
    // Check the identifier before the store file is opened (or created).
    let identifier =
        normalize_identifier(kind, identifier).map_err(|error| user_error(error.to_string()))?;
    if kind == PolicyKind::Group {
        validate_group_name(&identifier).map_err(|error| user_error(error.to_string()))?;
    }
    let key = PolicyKey::new(kind, identifier.clone());
    let path = store_args.writable_path()?;
    // Settings that fail on their own, such as --burst without
    // --auto-daily, are reported before the store file is created.
    if !path.exists() {
        settings.apply(None, kind, &identifier, Utc::now())?;
    }
    let store = SqliteStore::open(&path)?;

    let existing = store.policy(&key).await?;
    let policy = settings.apply(existing.as_ref(), kind, &identifier, Utc::now())?;
    if let Some(existing) = &existing
        && transfer::same_settings(existing, &policy)
    {
        output::line(&format!(
            "Unchanged: the {} already has these settings: {}",
            describe_key(&key),
            settings::describe_limits(existing)
        ));
        return Ok(());
    }
    let (action, verb) = match existing {
        None => ("policy.create", "Created"),
        Some(_) => ("policy.update", "Updated"),
    };
    let entry = audit_entry(
        action,
        key.to_string(),
        json!({ "before": existing, "after": policy }),
    );
    // The precondition keeps a change made by someone else since the read
    // above from being overwritten.
    let changes = [
        PolicyChange::Expect {
            key: key.clone(),
            current: existing.clone(),
        },
        PolicyChange::Put(policy.clone()),
    ];
    store
        .apply_policy_changes(&changes, &[entry])
        .await
        .map_err(conflict_as_user_error)?;

    output::line(&format!(
        "{verb} the {}: {}",
        describe_key(&key),
        settings::describe_limits(&policy)
    ));
    Ok(())
}

async fn list(
    kind: Option<PolicyKind>,
    as_json: bool,
    store_args: &StoreArgs,
) -> anyhow::Result<()> {
    let (store, _) = open_existing_store(store_args)?;
    let all = store.list_policies().await?;
    let policies: Vec<&Policy> = all
        .iter()
        .filter(|policy| kind.is_none_or(|kind| policy.kind == kind))
        .collect();
    if as_json {
        output::json(&policies)?;
    } else if policies.is_empty() {
        output::line(match kind {
            Some(kind) => match kind {
                PolicyKind::User => "No user policies.",
                PolicyKind::Group => "No group policies.",
                _ => "No default policy.",
            },
            None => "No policies.",
        });
    } else {
        output::line(&policy_table(&policies));
    }
    if let Some(warning) = coverage_warning(&all) {
        output::warning(&warning);
    }
    Ok(())
}

/// Returns the warning to show when some users are not limited: no policy
/// at all, or no enabled default policy. `GET /health` shows the same one.
pub(super) fn coverage_warning(policies: &[Policy]) -> Option<String> {
    let default = policies
        .iter()
        .find(|policy| policy.kind == PolicyKind::Default);
    crate::server::coverage_warning(policies.len() as u64, default).map(str::to_owned)
}

/// Renders policies as an aligned table.
fn policy_table(policies: &[&Policy]) -> String {
    let header = [
        "KIND",
        "ID",
        "MONTHLY",
        "ENFORCEMENT",
        "DAILY",
        "DAILY ENFORCEMENT",
        "WARNINGS",
        "ENABLED",
    ];
    let rows: Vec<Vec<String>> = policies
        .iter()
        .map(|policy| {
            vec![
                policy_kind_name(policy.kind).to_owned(),
                policy.identifier.clone(),
                format_amount(policy.monthly_limit),
                enforcement_name(policy.monthly_enforcement).to_owned(),
                settings::daily_text(policy),
                if policy.daily_limit.is_some() {
                    enforcement_name(policy.daily_enforcement).to_owned()
                } else {
                    "-".to_owned()
                },
                settings::thresholds_text(&policy.warning_thresholds),
                if policy.enabled { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    table::render(&header, &rows)
}

/// `default policy`, `user policy for ann@example.com`.
pub(super) fn describe_key(key: &PolicyKey) -> String {
    match key.kind {
        PolicyKind::Default => "default policy".to_owned(),
        _ => format!("{} policy for {}", key.kind_name(), key.identifier),
    }
}

/// Returns the local user name recorded as the actor of audit entries:
/// `$USER`, else `$LOGNAME`, else `$USERNAME` (Windows), else the account
/// name of the process's uid, else `uid:N`. A service started without a
/// login shell, such as one running as root under systemd, has no `$USER`.
pub(crate) fn local_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(account_name)
}

#[cfg(unix)]
fn account_name() -> String {
    let uid = uzers::get_current_uid();
    uzers::get_user_by_uid(uid)
        .map(|user| user.name().to_string_lossy().into_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("uid:{uid}"))
}

#[cfg(not(unix))]
fn account_name() -> String {
    "unknown".to_owned()
}
