//! `tollgate usage record`: an administrator's correction of recorded
//! usage, for example to carry over usage measured elsewhere. Normal usage
//! arrives from Claude Code's telemetry. Every correction is written to the
//! audit log with who made it and why.

use chrono::{DateTime, Utc};
use serde_json::json;
use tollgate_quota::{TokenType, display_amount, parse_amount};

use super::quota::local_user;
use super::{DeploymentArgs, StoreArgs, identity, output, user_error};
use crate::store::sqlite::SqliteStore;
use crate::store::{AuditEntry, Store, StoreError, UsageEvent};

#[derive(Debug, clap::Subcommand)]
pub enum UsageCommand {
    /// Add tokens to a user's usage by hand (an admin correction, written to
    /// the audit log).
    Record {
        /// The user's identity: their email address, or the value of the
        /// server's --identity-claim.
        email: String,
        /// How many tokens to add, such as 1500 or 2.5M.
        #[arg(long, value_name = "AMOUNT", value_parser = parse_tokens, allow_negative_numbers = true)]
        tokens: u64,
        /// The token type: input, output, cacheRead or cacheCreation.
        #[arg(long = "type", value_name = "TYPE", default_value = "input", value_parser = parse_token_type)]
        token_type: TokenType,
        /// When the tokens were used (RFC 3339), which decides the UTC day
        /// and month they count in [default: now].
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        at: Option<DateTime<Utc>>,
        /// The reason for the correction, kept in the audit log.
        #[arg(long, default_value = "manual correction")]
        reason: String,
        #[command(flatten)]
        deployment: DeploymentArgs,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn parse_tokens(text: &str) -> Result<u64, String> {
    parse_amount(text).map_err(|error| error.to_string())
}

fn parse_token_type(text: &str) -> Result<TokenType, String> {
    text.parse()
        .map_err(|error: tollgate_quota::CountingError| error.to_string())
}

pub(crate) fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|error| {
            format!("invalid time {text:?} ({error}); use RFC 3339, such as 2026-12-04T10:00:00Z")
        })
}

pub async fn run(command: UsageCommand) -> anyhow::Result<()> {
    let UsageCommand::Record {
        email,
        tokens,
        token_type,
        at,
        reason,
        deployment,
        store,
    } = command;
    let user = identity::parse_user(&email, &deployment)
        .map_err(user_error)?
        .to_string();
    let at = at.unwrap_or_else(Utc::now);
    let store = SqliteStore::open(&store.writable_path()?)?;

    // The store saturates a counter at i64::MAX instead of failing, so
    // reject a correction that would pass it while the admin can still
    // act on the message.
    let recorded = store.usage(&user, at).await?;
    let current = recorded
        .daily
        .get(token_type)
        .max(recorded.monthly.get(token_type));
    let limit = i64::MAX.unsigned_abs();
    if current
        .checked_add(tokens)
        .is_none_or(|total| total > limit)
    {
        return Err(user_error(format!(
            "cannot record {tokens} {token_type} tokens for {user}: {current} are already \
             recorded and the maximum per counter is {limit}; record fewer tokens"
        )));
    }

    let event = UsageEvent {
        user: user.clone(),
        at,
        token_type,
        tokens,
        dedup_key: None,
    };
    match store.add_usage(&event).await {
        Ok(_) => {}
        Err(StoreError::InvalidInput(message)) => return Err(user_error(message)),
        Err(error) => return Err(error.into()),
    }
    store
        .append_audit(&AuditEntry {
            at: Utc::now(),
            actor: local_user(),
            action: "usage.record".to_owned(),
            target: format!("user:{user}"),
            detail: json!({
                "tokens": tokens,
                "type": token_type.as_str(),
                "at": at,
                "reason": reason,
            }),
        })
        .await?;
    output::line(&format!(
        "Recorded {} {} tokens for {user} at {}.",
        display_amount(tokens),
        token_type,
        at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    Ok(())
}
