//! `tollgate quota audit`: the audit log of policy changes, unblocks and
//! usage corrections, newest first.

use tollgate_quota::policy::normalize_identifier;
use tollgate_quota::{format_amount, parse_policy_kind};

use super::open_existing_store;
use crate::cli::{StoreArgs, output, table, user_error};
use crate::store::{AuditEntry, PolicyKey, Store};

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// The maximum number of entries to show.
    #[arg(long, value_name = "COUNT", default_value_t = 50)]
    limit: usize,
    /// Only entries about this target, such as user:ann@example.com,
    /// group:developers or default:default.
    #[arg(long, value_name = "TARGET", value_parser = parse_target)]
    target: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// Parses `--target` as `KIND:ID` and returns it in the form audit entries
/// use, with the identifier normalised for its kind.
fn parse_target(text: &str) -> Result<String, String> {
    let usage = "use KIND:ID, such as user:ann@example.com, group:developers or default:default";
    let (kind, identifier) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{text:?} has no KIND: prefix; {usage}"))?;
    let kind = parse_policy_kind(kind).map_err(|error| format!("{error}; {usage}"))?;
    let identifier =
        normalize_identifier(kind, identifier).map_err(|error| format!("{error}; {usage}"))?;
    Ok(PolicyKey::new(kind, identifier).to_string())
}

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    if args.limit == 0 {
        return Err(user_error("--limit 0 shows nothing; use 1 or more"));
    }
    let (store, _) = open_existing_store(&args.store)?;
    let entries: Vec<AuditEntry> = match &args.target {
        // The log of a few thousand users fits in memory, and the filter
        // must see every entry, not only the newest `limit`.
        Some(target) => store
            .read_audit(usize::MAX)
            .await?
            .into_iter()
            .filter(|entry| entry.target.eq_ignore_ascii_case(target))
            .take(args.limit)
            .collect(),
        None => store.read_audit(args.limit).await?,
    };
    if args.json {
        return output::json(&entries);
    }
    if entries.is_empty() {
        output::line("No audit entries.");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|entry| {
            vec![
                entry.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                entry.actor.clone(),
                entry.action.clone(),
                entry.target.clone(),
                summarize(entry),
            ]
        })
        .collect();
    output::line(&table::render(
        &["TIME (UTC)", "ACTOR", "ACTION", "TARGET", "DETAIL"],
        &rows,
    ));
    Ok(())
}

/// Summarises an entry's detail in a few words for the table.
fn summarize(entry: &AuditEntry) -> String {
    let detail = &entry.detail;
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_owned();
    match entry.action.as_str() {
        "unblock.grant" => format!(
            "{} until {}: {}",
            text(&detail["duration"]),
            text(&detail["grant"]["expires_at"]),
            text(&detail["grant"]["reason"])
        ),
        "unblock.revoke" => format!("was until {}", text(&detail["before"]["expires_at"])),
        "usage.record" => format!(
            "{} {} tokens: {}",
            amount(&detail["tokens"]),
            text(&detail["type"]),
            text(&detail["reason"])
        ),
        action if action.starts_with("policy.") => {
            let after = &detail["after"];
            if after.is_object() {
                format!(
                    "monthly {} ({}), daily {} ({}), enabled {}",
                    amount(&after["monthly_limit"]),
                    text(&after["monthly_enforcement"]),
                    amount(&after["daily_limit"]),
                    text(&after["daily_enforcement"]),
                    after["enabled"]
                )
            } else {
                String::new()
            }
        }
        _ => String::new(),
    }
}

/// Formats a token amount in a detail as `225M`, or `-` when absent.
fn amount(value: &serde_json::Value) -> String {
    value.as_u64().map_or_else(|| "-".to_owned(), format_amount)
}
