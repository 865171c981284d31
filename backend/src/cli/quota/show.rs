//! `tollgate quota show` and `tollgate quota usage`: the effective policy
//! of a user and why it applies, and the user's usage in both periods.
//!
//! Both build the same decision the check endpoint makes, from the same
//! store, so their output matches the user's next check (given the same
//! groups). A user's groups come from their token,
//! which the CLI does not have, so `--groups` states them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tollgate_protocol::check::{CheckAnswer, CountedType, PeriodUsage, PolicyKind};
use tollgate_quota::policy::{enforcement_name, policy_kind_name};
use tollgate_quota::{
    CheckInput, DEFAULT_IDENTIFIER, Decision, Explanation, Identity, Period, Policy, TokenType,
    TokenUsage, decide, display_amount, format_amount, parse_group_claim,
};

use super::{open_existing_store, settings};
use crate::cli::usage::parse_time;
use crate::cli::{DeploymentArgs, StoreArgs, identity, output, table, user_error};
use crate::store::{PolicyKey, Store};

/// The user and context options of `show` and `usage`.
#[derive(Debug, clap::Args)]
pub struct UserQuery {
    /// The user's identity: their email address, or the value of the
    /// server's --identity-claim.
    email: String,
    /// The user's groups as the identity provider sends them, such as
    /// eng,ops; group policies apply only to the groups given.
    #[arg(long, value_name = "GROUPS", value_parser = parse_groups_arg)]
    groups: Option<GroupList>,
    /// The instant to evaluate (RFC 3339), which decides the UTC day and
    /// month [default: now].
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    deployment: DeploymentArgs,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    query: UserQuery,
}

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    #[command(flatten)]
    query: UserQuery,
}

/// Group names given with `--groups`, in any form a group claim takes:
/// `eng,ops`, `[eng ops]` or `["eng", "ops"]`.
#[derive(Debug, Clone)]
pub(super) struct GroupList(pub Vec<String>);

pub(super) fn parse_groups_arg(text: &str) -> Result<GroupList, String> {
    parse_group_claim(text)
        .map(GroupList)
        .map_err(|error| error.to_string())
}

/// The decision for one user, as the check endpoint would make it.
pub(super) struct Evaluation {
    pub identity: Identity,
    pub groups: Vec<String>,
    pub at: DateTime<Utc>,
    pub daily: TokenUsage,
    pub monthly: TokenUsage,
    pub decision: Decision,
}

/// Loads the user's policies, usage and unblock and makes the decision at
/// `at`.
pub(super) async fn evaluate(
    store: &dyn Store,
    identity: Identity,
    groups: Vec<String>,
    deployment: &DeploymentArgs,
    at: DateTime<Utc>,
) -> anyhow::Result<Evaluation> {
    let mut keys = vec![PolicyKey::new(PolicyKind::User, identity.as_str())];
    keys.extend(
        groups
            .iter()
            .map(|group| PolicyKey::new(PolicyKind::Group, group.clone())),
    );
    keys.push(PolicyKey::new(PolicyKind::Default, DEFAULT_IDENTIFIER));
    let policies = store.policies(&keys).await?;
    let usage = store.usage(identity.as_str(), at).await?;
    let unblock = store.unblock(identity.as_str()).await?;
    let decision = decide(&CheckInput {
        identity: &identity,
        groups: &groups,
        policies: &policies,
        daily_usage: usage.daily,
        monthly_usage: usage.monthly,
        counting: &deployment.counted_types,
        unblock: unblock.as_ref(),
        now: at,
    });
    Ok(Evaluation {
        identity,
        groups,
        at,
        daily: usage.daily,
        monthly: usage.monthly,
        decision,
    })
}

async fn evaluate_query(query: &UserQuery) -> anyhow::Result<Evaluation> {
    let identity = identity::parse_user(&query.email, &query.deployment).map_err(user_error)?;
    let (store, _) = open_existing_store(&query.store)?;
    let at = query.at.unwrap_or_else(Utc::now);
    evaluate(
        &store,
        identity,
        query
            .groups
            .clone()
            .map(|groups| groups.0)
            .unwrap_or_default(),
        &query.deployment,
        at,
    )
    .await
}

/// The JSON form of `show`.
#[derive(Serialize)]
struct ShowReport<'a> {
    user: &'a str,
    groups: &'a [String],
    /// Whether `--groups` was given; without it group policies are not
    /// considered.
    groups_given: bool,
    policy: Option<&'a Policy>,
    explanation: &'a Explanation,
    explanation_text: String,
    check: &'a CheckAnswer,
}

pub async fn show(args: ShowArgs) -> anyhow::Result<()> {
    let query = &args.query;
    let evaluation = evaluate_query(query).await?;
    let decision = &evaluation.decision;
    if query.json {
        return output::json(&ShowReport {
            user: evaluation.identity.as_str(),
            groups: &evaluation.groups,
            groups_given: query.groups.is_some(),
            policy: decision.policy.as_ref(),
            explanation: &decision.explanation,
            explanation_text: decision.explanation.to_string(),
            check: &decision.answer,
        });
    }

    let groups = match &query.groups {
        Some(groups) if !groups.0.is_empty() => groups.0.join(", "),
        Some(_) => "none".to_owned(),
        None => "not given, so group policies are not considered; pass --groups as the \
                 identity provider sends them"
            .to_owned(),
    };
    let policy = match &decision.policy {
        Some(policy) => format!(
            "{} {}: {}",
            policy_kind_name(policy.kind),
            policy.identifier,
            settings::describe_limits(policy)
        ),
        None => "none".to_owned(),
    };
    let answer = &decision.answer;
    let verdict = if answer.allowed { "allowed" } else { "blocked" };
    let mut lines = vec![
        format!("User:     {}", evaluation.identity),
        format!("Groups:   {groups}"),
        format!("Policy:   {policy}"),
        format!("Why:      {}", decision.explanation),
        format!(
            "Check:    {} ({verdict}) at {}",
            reason_name(answer),
            evaluation.at.format("%Y-%m-%d %H:%M UTC")
        ),
        format!("Message:  {}", answer.message),
    ];
    if let Some(unblock) = &answer.unblock {
        lines.push(format!(
            "Unblock:  active until {}, granted by {} at {}: {}",
            unblock.expires_at.format("%Y-%m-%d %H:%M UTC"),
            unblock.granted_by,
            unblock.granted_at.format("%Y-%m-%d %H:%M UTC"),
            unblock.reason
        ));
    }
    output::line(&lines.join("\n"));
    Ok(())
}

/// Returns the stable name of the answer's reason, such as `within_limits`.
fn reason_name(answer: &CheckAnswer) -> String {
    serde_json::to_value(answer.reason)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// One period of the JSON form of `usage`.
#[derive(Serialize)]
struct PeriodReport<'a> {
    /// The period key: `2026-12-04` or `2026-12`.
    period: String,
    /// Recorded tokens by type, counted or not.
    by_type: &'a TokenUsage,
    #[serde(flatten)]
    counted: &'a PeriodUsage,
}

/// The JSON form of `usage`.
#[derive(Serialize)]
struct UsageReport<'a> {
    user: &'a str,
    at: DateTime<Utc>,
    counted_types: &'a [CountedType],
    policy: Option<&'a tollgate_protocol::check::PolicyRef>,
    daily: PeriodReport<'a>,
    monthly: PeriodReport<'a>,
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let query = &args.query;
    let evaluation = evaluate_query(query).await?;
    let answer = &evaluation.decision.answer;
    let at = evaluation.at;
    if query.json {
        return output::json(&UsageReport {
            user: evaluation.identity.as_str(),
            at,
            counted_types: &answer.usage.counted_types,
            policy: answer.policy.as_ref(),
            daily: PeriodReport {
                period: Period::Daily.key(at),
                by_type: &evaluation.daily,
                counted: &answer.usage.daily,
            },
            monthly: PeriodReport {
                period: Period::Monthly.key(at),
                by_type: &evaluation.monthly,
                counted: &answer.usage.monthly,
            },
        });
    }

    let counted: Vec<String> = answer
        .usage
        .counted_types
        .iter()
        .map(|counted| format!("{} ×{}", counted.token_type, counted.weight))
        .collect();
    let counted = if counted.is_empty() {
        "nothing (every weight is 0)".to_owned()
    } else {
        counted.join(", ")
    };
    let policy = match &answer.policy {
        Some(policy) => format!("{} {}", policy_kind_name(policy.kind), policy.id),
        None => "none, so usage is not limited".to_owned(),
    };
    let header = [
        "PERIOD",
        "INPUT",
        "OUTPUT",
        "CACHE READ",
        "CACHE CREATION",
        "COUNTED",
        "LIMIT",
        "USED",
        "ENFORCEMENT",
        "RESETS (UTC)",
    ];
    let rows = vec![
        period_row(
            format!("today {}", Period::Daily.key(at)),
            &evaluation.daily,
            &answer.usage.daily,
        ),
        period_row(
            format!("month {}", Period::Monthly.key(at)),
            &evaluation.monthly,
            &answer.usage.monthly,
        ),
    ];
    output::line(&format!(
        "Usage of {} at {}\nCounted:  {counted}\nPolicy:   {policy}\n\n{}",
        evaluation.identity,
        at.format("%Y-%m-%d %H:%M UTC"),
        table::render(&header, &rows)
    ));
    Ok(())
}

fn period_row(label: String, by_type: &TokenUsage, counted: &PeriodUsage) -> Vec<String> {
    let mut row = vec![label];
    row.extend(
        TokenType::ALL
            .into_iter()
            .map(|token_type| display_amount(by_type.get(token_type))),
    );
    row.push(display_amount(counted.tokens));
    row.push(counted.limit.map_or_else(|| "-".to_owned(), format_amount));
    row.push(
        counted
            .percent
            .map_or_else(|| "-".to_owned(), |percent| format!("{percent}%")),
    );
    row.push(
        counted
            .enforcement
            .map_or_else(|| "-".to_owned(), |mode| enforcement_name(mode).to_owned()),
    );
    row.push(counted.resets_at.format("%Y-%m-%d %H:%M").to_string());
    row
}
