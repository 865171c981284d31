//! The policy settings of `set-user`, `set-group` and `set-default`, and
//! how they change a policy.
//!
//! Each setting left out keeps its current value, or its default for a new
//! policy. Every value is parsed by clap before the store is opened, so a
//! bad value changes nothing.

use chrono::{DateTime, Utc};
use tollgate_protocol::check::{Enforcement, PolicyKind};
use tollgate_quota::policy::{enforcement_name, policy_kind_name};
use tollgate_quota::{
    BurstPercent, Policy, WarningThresholds, format_amount, parse_amount, parse_enforcement,
};

use crate::cli::user_error;

/// A daily limit as given with `--daily-limit`.
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
        _ => parse_amount(text).map(DailyLimit::Tokens).map_err(|error| {
            format!("{error}, or none (no daily limit) or auto (derived from the monthly limit)")
        }),
    }
}

pub fn parse_amount_arg(text: &str) -> Result<u64, String> {
    parse_amount(text).map_err(|error| error.to_string())
}

fn parse_enforcement_arg(text: &str) -> Result<Enforcement, String> {
    parse_enforcement(text).map_err(|error| error.to_string())
}

fn parse_thresholds_arg(text: &str) -> Result<WarningThresholds, String> {
    text.parse()
        .map_err(|error: tollgate_quota::PolicyError| error.to_string())
}

pub fn parse_burst_arg(text: &str) -> Result<BurstPercent, String> {
    text.parse()
        .map_err(|error: tollgate_quota::PolicyError| error.to_string())
}

/// The settings of a policy.
#[derive(Debug, Clone, clap::Args)]
pub struct PolicySettings {
    /// Tokens allowed per UTC month, such as 500M, 1.5B, 15K or 2000.
    /// Required for a new policy.
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount_arg, allow_negative_numbers = true)]
    monthly_limit: Option<u64>,

    /// Tokens allowed per UTC day, such as 8M, or `none` for no daily limit
    /// [new policies: none].
    #[arg(
        long,
        value_name = "AMOUNT",
        value_parser = parse_daily_limit,
        allow_negative_numbers = true,
        conflicts_with = "auto_daily"
    )]
    daily_limit: Option<DailyLimit>,

    /// Derive the daily limit from the monthly one: monthly / 30 × (1 +
    /// burst %). It follows later changes of the monthly limit.
    #[arg(long)]
    auto_daily: bool,

    /// The burst of a derived daily limit in percent, 5 to 25 [default: 10].
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
    #[arg(
        long,
        alias = "warning-thresholds",
        value_name = "PERCENTS",
        value_parser = parse_thresholds_arg
    )]
    warn_at: Option<WarningThresholds>,

    /// Disable the policy: it is skipped and the next kind applies.
    #[arg(long, conflicts_with = "enabled")]
    disabled: bool,

    /// Enable a disabled policy.
    #[arg(long)]
    enabled: bool,
}

impl PolicySettings {
    /// Reports whether any setting was given.
    fn is_empty(&self) -> bool {
        self.monthly_limit.is_none()
            && self.daily_limit.is_none()
            && !self.auto_daily
            && self.burst.is_none()
            && self.enforcement.is_none()
            && self.daily_enforcement.is_none()
            && self.warn_at.is_none()
            && !self.disabled
            && !self.enabled
    }

    /// Applies these settings to `existing`, or builds a new policy from
    /// them. Fails, before anything is written, on a missing monthly limit
    /// for a new policy or an inconsistent combination.
    pub fn apply(
        &self,
        existing: Option<&Policy>,
        kind: PolicyKind,
        identifier: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Policy> {
        if self.is_empty() {
            return Err(user_error(
                "no setting given; pass at least one of --monthly-limit, --daily-limit, \
                 --auto-daily, --burst, --enforcement, --daily-enforcement, --warn-at, \
                 --disabled or --enabled",
            ));
        }
        let mut policy = match existing {
            Some(policy) => {
                let mut policy = policy.clone();
                if let Some(monthly) = self.monthly_limit {
                    policy.set_monthly(monthly);
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

        let derive = self.auto_daily || self.daily_limit == Some(DailyLimit::Auto);
        match self.daily_limit {
            Some(DailyLimit::Tokens(tokens)) => policy.set_daily(Some(tokens)),
            Some(DailyLimit::None) => policy.set_daily(None),
            Some(DailyLimit::Auto) | None => {}
        }
        if derive {
            policy.derive_daily(self.burst.unwrap_or_default());
        } else if let Some(burst) = self.burst {
            if policy.daily_burst.is_none() {
                return Err(user_error(
                    "--burst sets the burst of a derived daily limit; add --auto-daily",
                ));
            }
            policy.derive_daily(burst);
        }
        if let Some(mode) = self.enforcement {
            policy.monthly_enforcement = mode;
        }
        if let Some(mode) = self.daily_enforcement {
            policy.daily_enforcement = mode;
        }
        if let Some(thresholds) = &self.warn_at {
            policy.warning_thresholds = thresholds.clone();
        }
        if self.disabled {
            policy.enabled = false;
        }
        if self.enabled {
            policy.enabled = true;
        }
        policy.validate().map_err(|error| {
            user_error(format!("{error} (see --daily-limit and --monthly-limit)"))
        })?;
        Ok(policy)
    }
}

/// Lists warning thresholds as `80%,90%`, or `-` for none.
pub fn thresholds_text(thresholds: &WarningThresholds) -> String {
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

/// Describes a daily limit as `8.25M (auto, 10% burst)`, `8M` or `-`.
pub fn daily_text(policy: &Policy) -> String {
    match (policy.daily_limit, policy.daily_burst) {
        (Some(limit), Some(burst)) => {
            format!(
                "{} (auto, {}% burst)",
                format_amount(limit),
                burst.percent()
            )
        }
        (Some(limit), None) => format_amount(limit),
        (None, _) => "-".to_owned(),
    }
}

/// Describes the limits in one sentence, such as `500M tokens a month
/// (block), 8.25M a day (alert), warnings at 80%,90%`.
pub fn describe_limits(policy: &Policy) -> String {
    let daily = match policy.daily_limit {
        Some(_) => format!(
            "{} a day ({})",
            daily_text(policy),
            enforcement_name(policy.daily_enforcement)
        ),
        None => "no daily limit".to_owned(),
    };
    let state = if policy.enabled { "" } else { ", disabled" };
    format!(
        "{} tokens a month ({}), {daily}, warnings at {}{state}",
        format_amount(policy.monthly_limit),
        enforcement_name(policy.monthly_enforcement),
        thresholds_text(&policy.warning_thresholds),
    )
}
