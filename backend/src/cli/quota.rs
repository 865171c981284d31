//! `tollgate quota`: create, change and list quota policies.
//!
//! `set-user`, `set-group` and `set-default` create a policy or change the
//! settings given on the command line, leaving the others as they are.
//! Every value is checked before the store is opened, so a bad value
//! changes nothing. Each change is written to the audit log.

use chrono::Utc;
use serde_json::json;
use tollgate_protocol::check::{Enforcement, PolicyKind};
use tollgate_quota::policy::{enforcement_name, normalize_identifier, policy_kind_name};
use tollgate_quota::{
    BurstPercent, DEFAULT_IDENTIFIER, Policy, WarningThresholds, derive_daily_limit,
    display_amount, format_amount, parse_amount, parse_enforcement,
};

use super::{StoreArgs, output, user_error};
use crate::server::NO_POLICY_WARNING;
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditEntry, PolicyKey, Store};

#[derive(Debug, clap::Subcommand)]
pub enum QuotaCommand {
    /// Create or change the policy of one user (an email address).
    SetUser {
        /// The user's email address, as the identity provider sends it.
        email: String,
        #[command(flatten)]
        settings: PolicySettings,
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
    /// a user or group policy.
    SetDefault {
        #[command(flatten)]
        settings: PolicySettings,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List every policy.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// A daily limit as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DailyLimit {
    Tokens(u64),
    /// Derived from the monthly limit with the burst percentage.
    Auto,
    None,
}

fn parse_daily_limit(text: &str) -> Result<DailyLimit, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(DailyLimit::Auto),
        "none" => Ok(DailyLimit::None),
        _ => parse_amount(text)
            .map(DailyLimit::Tokens)
            .map_err(|error| format!("{error}, or auto (derived from the monthly limit) or none")),
    }
}

fn parse_amount_arg(text: &str) -> Result<u64, String> {
    parse_amount(text).map_err(|error| error.to_string())
}

fn parse_enforcement_arg(text: &str) -> Result<Enforcement, String> {
    parse_enforcement(text).map_err(|error| error.to_string())
}

fn parse_thresholds_arg(text: &str) -> Result<WarningThresholds, String> {
    text.parse()
        .map_err(|error: tollgate_quota::PolicyError| error.to_string())
}

fn parse_burst_arg(text: &str) -> Result<BurstPercent, String> {
    text.parse()
        .map_err(|error: tollgate_quota::PolicyError| error.to_string())
}

/// The settings of a policy; each one left out keeps its current value (or
/// its default for a new policy).
#[derive(Debug, Clone, clap::Args)]
pub struct PolicySettings {
    /// Tokens allowed per UTC month, such as 500M, 1.5B, 15K or 2000.
    /// Required for a new policy.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount_arg, allow_negative_numbers = true)]
    monthly_limit: Option<u64>,

    /// Tokens allowed per UTC day: an amount, `auto` (monthly / 30 plus the
    /// burst) or `none` [new policies: none].
    #[arg(long, value_name = "AMOUNT", value_parser = parse_daily_limit, allow_negative_numbers = true)]
    daily_limit: Option<DailyLimit>,

    /// The burst percentage, 5 to 25, used by `--daily-limit auto` [default: 10].
    #[arg(long, value_name = "PERCENT", value_parser = parse_burst_arg)]
    burst: Option<BurstPercent>,

    /// The enforcement at the monthly limit: alert or block [new policies: block].
    #[arg(long, value_name = "MODE", value_parser = parse_enforcement_arg)]
    enforcement: Option<Enforcement>,

    /// The enforcement at the daily limit: alert or block [new policies: alert].
    #[arg(long, value_name = "MODE", value_parser = parse_enforcement_arg)]
    daily_enforcement: Option<Enforcement>,

    /// Warning thresholds in percent of each limit, such as 80,90; an empty
    /// value sends no warnings [new policies: 80,90].
    #[arg(long, value_name = "PERCENTS", value_parser = parse_thresholds_arg)]
    warning_thresholds: Option<WarningThresholds>,

    /// Disable the policy: it is skipped and the next kind applies.
    #[arg(long, conflicts_with = "enabled")]
    disabled: bool,

    /// Enable a disabled policy.
    #[arg(long)]
    enabled: bool,
}

impl PolicySettings {
    /// Applies these settings to `existing`, or builds a new policy from
    /// them. Fails, before anything is written, on a missing monthly limit
    /// for a new policy.
    fn apply(
        &self,
        existing: Option<Policy>,
        kind: PolicyKind,
        identifier: &str,
    ) -> anyhow::Result<Policy> {
        let now = Utc::now();
        let mut policy = match existing {
            Some(mut policy) => {
                if let Some(monthly) = self.monthly_limit {
                    policy.monthly_limit = monthly;
                }
                policy.updated_at = now;
                policy
            }
            None => {
                let monthly = self.monthly_limit.ok_or_else(|| {
                    user_error(format!(
                        "no {} policy exists for {identifier:?} yet; give its monthly limit \
                         with --monthly-limit, such as --monthly-limit 225M",
                        policy_kind_name(kind)
                    ))
                })?;
                Policy::new(kind, identifier, monthly, now)
                    .map_err(|error| user_error(error.to_string()))?
            }
        };

        let burst = self.burst.unwrap_or_default();
        match self.daily_limit {
            Some(DailyLimit::Tokens(tokens)) => policy.daily_limit = Some(tokens),
            Some(DailyLimit::Auto) => {
                policy.daily_limit = Some(derive_daily_limit(policy.monthly_limit, burst));
            }
            Some(DailyLimit::None) => policy.daily_limit = None,
            None if self.burst.is_some() => {
                return Err(user_error(
                    "--burst only applies with --daily-limit auto; add --daily-limit auto",
                ));
            }
            None => {}
        }
        if let Some(mode) = self.enforcement {
            policy.monthly_enforcement = mode;
        }
        if let Some(mode) = self.daily_enforcement {
            policy.daily_enforcement = mode;
        }
        if let Some(thresholds) = &self.warning_thresholds {
            policy.warning_thresholds = thresholds.clone();
        }
        if self.disabled {
            policy.enabled = false;
        }
        if self.enabled {
            policy.enabled = true;
        }
        if let Some(daily) = policy.daily_limit
            && daily > policy.monthly_limit
        {
            return Err(user_error(format!(
                "the daily limit {} is above the monthly limit {}; lower --daily-limit or \
                 raise --monthly-limit",
                format_amount(daily),
                format_amount(policy.monthly_limit)
            )));
        }
        policy
            .validate()
            .map_err(|error| user_error(error.to_string()))?;
        Ok(policy)
    }
}

pub async fn run(command: QuotaCommand) -> anyhow::Result<()> {
    match command {
        QuotaCommand::SetUser {
            email,
            settings,
            store,
        } => set_policy(PolicyKind::User, &email, &settings, &store).await,
        QuotaCommand::SetGroup {
            group,
            settings,
            store,
        } => set_policy(PolicyKind::Group, &group, &settings, &store).await,
        QuotaCommand::SetDefault { settings, store } => {
            set_policy(PolicyKind::Default, DEFAULT_IDENTIFIER, &settings, &store).await
        }
        QuotaCommand::List { json, store } => list(json, &store).await,
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
    let key = PolicyKey::new(kind, identifier.clone());
    let store = SqliteStore::open(&store_args.path()?)?;

    let existing = store.policy(&key).await?;
    let created = existing.is_none();
    let policy = settings.apply(existing, kind, &identifier)?;
    store.put_policy(&policy).await?;
    store
        .append_audit(&AuditEntry {
            at: Utc::now(),
            actor: local_user(),
            action: "policy.put".to_owned(),
            target: key.to_string(),
            detail: json!({ "created": created, "policy": policy }),
        })
        .await?;

    let verb = if created { "Created" } else { "Updated" };
    output::line(&format!(
        "{verb} the {}: {}",
        describe_key(&key),
        describe_limits(&policy)
    ));
    Ok(())
}

async fn list(as_json: bool, store_args: &StoreArgs) -> anyhow::Result<()> {
    let store = SqliteStore::open(&store_args.path()?)?;
    let policies = store.list_policies().await?;
    if as_json {
        output::line(&serde_json::to_string_pretty(&policies)?);
    } else if policies.is_empty() {
        output::line("No policies.");
    } else {
        output::line(&policy_table(&policies));
    }
    if policies.is_empty() {
        output::warning(NO_POLICY_WARNING);
    } else if !policies
        .iter()
        .any(|policy| policy.kind == PolicyKind::Default && policy.enabled)
    {
        output::warning(
            "no enabled default policy exists, so users without a user or group policy are \
             not limited; create one with `tollgate quota set-default --monthly-limit 225M`",
        );
    }
    Ok(())
}

/// Renders policies as an aligned text table.
fn policy_table(policies: &[Policy]) -> String {
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
    let rows: Vec<[String; 8]> = policies
        .iter()
        .map(|policy| {
            [
                policy_kind_name(policy.kind).to_owned(),
                policy.identifier.clone(),
                format_amount(policy.monthly_limit),
                enforcement_name(policy.monthly_enforcement).to_owned(),
                policy
                    .daily_limit
                    .map_or_else(|| "-".to_owned(), format_amount),
                enforcement_name(policy.daily_enforcement).to_owned(),
                thresholds_text(&policy.warning_thresholds),
                if policy.enabled { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();

    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: &[String]| {
        cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut lines = vec![render(&header.map(str::to_owned))];
    lines.extend(rows.iter().map(|row| render(row)));
    lines.join("\n")
}

fn thresholds_text(thresholds: &WarningThresholds) -> String {
    if thresholds.as_slice().is_empty() {
        "-".to_owned()
    } else {
        thresholds
            .as_slice()
            .iter()
            .map(|percent| format!("{percent}%"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn describe_key(key: &PolicyKey) -> String {
    match key.kind {
        PolicyKind::Default => "default policy".to_owned(),
        _ => format!("{} policy for {}", key.kind_name(), key.identifier),
    }
}

/// Describes the limits in one sentence, such as `500M tokens a month (block), 8.25M a
/// day (alert), warnings at 80%,90%`.
fn describe_limits(policy: &Policy) -> String {
    let daily = match policy.daily_limit {
        Some(limit) => format!(
            "{} a day ({})",
            display_amount(limit),
            enforcement_name(policy.daily_enforcement)
        ),
        None => "no daily limit".to_owned(),
    };
    let state = if policy.enabled { "" } else { ", disabled" };
    format!(
        "{} tokens a month ({}), {daily}, warnings at {}{state}",
        display_amount(policy.monthly_limit),
        enforcement_name(policy.monthly_enforcement),
        thresholds_text(&policy.warning_thresholds),
    )
}

/// Returns the local user name recorded as the actor of audit entries.
pub(super) fn local_user() -> String {
    ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}
