//! `tollgate quota delete`: removes one policy, after a confirmation on a
//! terminal or with `--force`.

use std::io::IsTerminal as _;

use serde_json::json;
use tollgate_protocol::check::PolicyKind;
use tollgate_quota::policy::normalize_identifier;

use super::{
    audit_entry, conflict_as_user_error, coverage_warning, describe_key, open_store, parse_kind_arg,
};
use crate::cli::{DeploymentArgs, StoreArgs, identity, output, user_error};
use crate::store::{PolicyChange, PolicyKey, Store};

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The policy kind: user, group or default.
    #[arg(value_name = "KIND", value_parser = parse_kind_arg)]
    kind: PolicyKind,
    /// The user's identity, the group name, or `default` (may be left out
    /// for the default policy).
    #[arg(value_name = "ID")]
    id: Option<String>,
    /// Delete without asking. Required when stdin is not a terminal.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[command(flatten)]
    store: StoreArgs,
}

pub async fn run(args: DeleteArgs) -> anyhow::Result<()> {
    let identifier = match (args.kind, args.id.as_deref()) {
        (PolicyKind::User, Some(id)) => identity::parse_user(id, &args.deployment)
            .map_err(user_error)?
            .to_string(),
        (PolicyKind::Default, id) => normalize_identifier(PolicyKind::Default, id.unwrap_or(""))
            .map_err(|error| user_error(error.to_string()))?,
        (kind, Some(id)) => {
            normalize_identifier(kind, id).map_err(|error| user_error(error.to_string()))?
        }
        (_, None) => {
            return Err(user_error(
                "name the policy to delete, such as `tollgate quota delete user ann@example.com` \
                 or `tollgate quota delete group developers`",
            ));
        }
    };
    let key = PolicyKey::new(args.kind, identifier);
    if !args.store.path()?.exists() {
        return Err(not_found(&key));
    }
    let (store, _) = open_store(&args.store)?;
    let Some(policy) = store.policy(&key).await? else {
        return Err(not_found(&key));
    };

    if !args.force {
        if !std::io::stdin().is_terminal() {
            return Err(user_error(format!(
                "deleting the {} needs confirmation; add --force to delete without asking",
                describe_key(&key)
            )));
        }
        let answer = output::prompt(&format!("Delete the {}? [y/N]", describe_key(&key)))?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            output::line("Nothing deleted.");
            return Ok(());
        }
    }

    let entry = audit_entry(
        "policy.delete",
        key.to_string(),
        json!({ "before": policy }),
    );
    // The precondition keeps a change made while the prompt was open from
    // being deleted unseen.
    let changes = [
        PolicyChange::Expect {
            key: key.clone(),
            current: Some(policy),
        },
        PolicyChange::Delete(key.clone()),
    ];
    store
        .apply_policy_changes(&changes, &[entry])
        .await
        .map_err(conflict_as_user_error)?;
    output::line(&format!("Deleted the {}.", describe_key(&key)));
    if let Some(warning) = coverage_warning(&store.list_policies().await?) {
        output::warning(&warning);
    }
    Ok(())
}

fn not_found(key: &PolicyKey) -> anyhow::Error {
    user_error(format!(
        "no {} exists; see `tollgate quota list` for the policies there are",
        describe_key(key)
    ))
}
