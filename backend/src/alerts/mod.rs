//! Quota alerts: which thresholds and limits a batch of usage crossed, the
//! alert record the store keeps once per user, limit, threshold and
//! period, its text, and the sinks that send it (the log and a webhook).
//!
//! The store evaluates [`AlertRule`] inside the transaction that records
//! the usage, so each crossing belongs to exactly one batch. It inserts the
//! alert only when its [`AlertRecord::dedup_key`] is new. Alerts are raised
//! only for the UTC day and month containing the arrival time: a late
//! point for an earlier period still counts there, but raises nothing, and
//! a user without new usage gets no alert on a new day.

pub mod deliver;
pub mod sqlite;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_protocol::check::{Enforcement, PolicyKind, PolicyRef};
use tollgate_quota::policy::enforcement_name;
use tollgate_quota::{
    CountingConfig, Identity, Mark, Period, Policy, TokenUsage, TotalsChange, display_amount,
    newly_crossed, percent_of,
};

/// The settings of alert evaluation for one batch.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// The policy that applies to the batch's user.
    pub policy: Policy,
    pub counting: CountingConfig,
    /// The arrival time: alerts are raised for its UTC day and month only.
    pub now: DateTime<Utc>,
    /// Whether to queue each new alert for the webhook.
    pub queue_webhook: bool,
}

/// One raised alert, as the store keeps it and the webhook sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Unique per user, period instance, limit and threshold, such as
    /// `ann@example.com/daily/2025-01-31/threshold-80`.
    pub dedup_key: String,
    pub user: String,
    pub period: Period,
    /// The day (`2025-01-31`) or month (`2025-01`) of the usage.
    pub period_key: String,
    /// The warning threshold in percent, or `None` for the limit itself.
    pub threshold_percent: Option<u8>,
    /// Counted tokens of the period after the usage that crossed.
    pub tokens: u64,
    pub limit: u64,
    /// `tokens / limit × 100`, truncated to two decimals.
    pub percent: f64,
    pub enforcement: Enforcement,
    pub policy: PolicyRef,
    pub resets_at: DateTime<Utc>,
    pub raised_at: DateTime<Utc>,
}

/// Usage of one period before and after a batch, by token type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageChange {
    pub before: TokenUsage,
    pub after: TokenUsage,
}

impl AlertRule {
    /// Lists the alerts that `daily` and `monthly`, the changes of the UTC
    /// day and month containing [`AlertRule::now`], newly crossed.
    pub fn crossings(
        &self,
        user: &Identity,
        daily: UsageChange,
        monthly: UsageChange,
    ) -> Vec<AlertRecord> {
        let counted = |change: UsageChange| TotalsChange {
            before: self.counting.count(&change.before),
            after: self.counting.count(&change.after),
        };
        let daily = counted(daily);
        let monthly = counted(monthly);
        newly_crossed(&self.policy, daily, monthly)
            .into_iter()
            .map(|crossing| {
                let tokens = match crossing.period {
                    Period::Daily => daily.after,
                    Period::Monthly => monthly.after,
                };
                AlertRecord {
                    dedup_key: crossing.dedup_key(user, self.now),
                    user: user.to_string(),
                    period: crossing.period,
                    period_key: crossing.period.key(self.now),
                    threshold_percent: match crossing.mark {
                        Mark::Threshold(percent) => Some(percent),
                        Mark::Limit => None,
                    },
                    tokens,
                    limit: crossing.limit,
                    percent: percent_of(tokens, crossing.limit),
                    enforcement: crossing.enforcement,
                    policy: self.policy.policy_ref(),
                    resets_at: crossing.period.reset_at(self.now),
                    raised_at: self.now,
                }
            })
            .collect()
    }
}

impl AlertRecord {
    /// Writes the alert for people: who, which limit, usage against the
    /// limit, the policy, the enforcement mode and the admin commands that
    /// raise the limit or unblock.
    pub fn text(&self) -> String {
        let period = self.period.as_str();
        let what = match self.threshold_percent {
            Some(percent) => format!("reached {percent} % of the {period} limit"),
            None => format!("reached the {period} limit"),
        };
        let effect = match (self.threshold_percent, self.enforcement) {
            (None, Enforcement::Alert) => "Access continues: this limit only alerts.".to_owned(),
            (None, _) => format!(
                "New AWS credentials are refused until the limit resets at {} or an \
                 administrator unblocks the user.",
                self.resets_at.format("%Y-%m-%d %H:%M UTC")
            ),
            (Some(_), Enforcement::Alert) => {
                "At the limit access continues: this limit only alerts.".to_owned()
            }
            (Some(_), _) => "At the limit new AWS credentials are refused.".to_owned(),
        };
        let mut text = format!(
            "Tollgate: {user} {what}: {tokens} of {limit} tokens ({percent:.2} %) in {key} (UTC). \
             Policy: {policy}; {period} enforcement: {mode}. {effect}\n\
             Raise this user's limit: `{raise}`",
            user = self.user,
            tokens = display_amount(self.tokens),
            limit = display_amount(self.limit),
            percent = self.percent,
            key = self.period_key,
            policy = policy_label(&self.policy),
            mode = enforcement_name(self.enforcement),
            raise = self.raise_command(),
        );
        if let Some(policy_command) = self.policy_command() {
            text.push_str(&format!(
                "\nRaise the {} policy: `{policy_command}`",
                policy_label(&self.policy)
            ));
        }
        if self.enforcement != Enforcement::Alert {
            text.push_str(&format!("\nUnblock: `{}`", self.unblock_command()));
        }
        text
    }

    fn limit_flag(&self) -> &'static str {
        match self.period {
            Period::Daily => "--daily-limit",
            Period::Monthly => "--monthly-limit",
        }
    }

    /// Returns the command that gives this user a higher limit of the
    /// alert's period. A user policy overrides group and default policies.
    pub fn raise_command(&self) -> String {
        format!(
            "tollgate quota set-user {} {} <tokens>",
            self.user,
            self.limit_flag()
        )
    }

    /// Returns the command that raises the limit of the group or default
    /// policy that applied, or `None` for a user policy.
    pub fn policy_command(&self) -> Option<String> {
        match self.policy.kind {
            PolicyKind::Group => Some(format!(
                "tollgate quota set-group {} {} <tokens>",
                self.policy.id,
                self.limit_flag()
            )),
            PolicyKind::Default => Some(format!(
                "tollgate quota set-default {} <tokens>",
                self.limit_flag()
            )),
            _ => None,
        }
    }

    /// Returns the command that lets a blocked user in until the period
    /// resets.
    pub fn unblock_command(&self) -> String {
        format!(
            "tollgate quota unblock {} --duration until-reset --reason \"<why>\"",
            self.user
        )
    }

    /// Builds the webhook body: a Slack-compatible `text` and the alert's
    /// fields under `alert`.
    pub fn webhook_body(&self) -> serde_json::Value {
        serde_json::json!({
            "text": self.text(),
            "alert": self,
            "commands": {
                "raise_user_limit": self.raise_command(),
                "raise_policy_limit": self.policy_command(),
                "unblock": self.unblock_command(),
            },
        })
    }

    /// Writes the alert to the log, the sink that is always on.
    pub fn log(&self) {
        tracing::warn!(
            target: "tollgate::alert",
            user = %self.user,
            period = self.period.as_str(),
            period_key = %self.period_key,
            threshold_percent = ?self.threshold_percent,
            tokens = self.tokens,
            limit = self.limit,
            enforcement = enforcement_name(self.enforcement),
            dedup_key = %self.dedup_key,
            "{}",
            self.log_text()
        );
    }

    /// Returns [`Self::text`] on one line, its lines joined with ` | `, so
    /// that each alert is one log record for line-based log collectors.
    pub fn log_text(&self) -> String {
        self.text().lines().collect::<Vec<_>>().join(" | ")
    }
}

fn policy_label(policy: &PolicyRef) -> String {
    match policy.kind {
        PolicyKind::User => format!("user {}", policy.id),
        PolicyKind::Group => format!("group {}", policy.id),
        PolicyKind::Default => "default".to_owned(),
        _ => policy.id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use tollgate_quota::TokenType;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("valid test time")
            .with_timezone(&Utc)
    }

    fn rule(kind: PolicyKind, id: &str) -> AlertRule {
        let mut policy =
            Policy::new(kind, id, 1_000_000, at("2026-01-01T00:00:00Z")).expect("a valid policy");
        policy.daily_limit = Some(100_000);
        policy.daily_enforcement = Enforcement::Block;
        AlertRule {
            policy,
            counting: CountingConfig::default(),
            now: at("2026-03-05T10:00:00Z"),
            queue_webhook: false,
        }
    }

    fn usage(tokens: u64) -> TokenUsage {
        let mut usage = TokenUsage::default();
        usage.add(TokenType::Output, tokens);
        usage
    }

    fn change(before: u64, after: u64) -> UsageChange {
        UsageChange {
            before: usage(before),
            after: usage(after),
        }
    }

    #[test]
    fn daily_limit_alert_names_everything() {
        let rule = rule(PolicyKind::User, "ann@example.com");
        let ann = Identity::parse("ann@example.com").expect("valid");
        let alerts = rule.crossings(&ann, change(70_000, 120_000), change(70_000, 120_000));
        let keys: Vec<&str> = alerts
            .iter()
            .map(|alert| alert.dedup_key.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "ann@example.com/daily/2026-03-05/threshold-80",
                "ann@example.com/daily/2026-03-05/threshold-90",
                "ann@example.com/daily/2026-03-05/limit",
            ]
        );
        let limit = &alerts[2];
        assert_eq!(limit.tokens, 120_000);
        assert_eq!(limit.percent, 120.0);
        let log_text = limit.log_text();
        assert!(!log_text.contains('\n'), "one log line: {log_text}");
        assert!(
            log_text.contains("| Unblock: `tollgate quota unblock ann@example.com"),
            "{log_text}"
        );
        let text = limit.text();
        for expected in [
            "ann@example.com",
            "daily limit",
            "120K of 100K tokens",
            "120.00 %",
            "user ann@example.com",
            "enforcement: block",
            "tollgate quota set-user ann@example.com --daily-limit",
            "tollgate quota unblock ann@example.com",
            "2026-03-06 00:00 UTC",
        ] {
            assert!(text.contains(expected), "{expected:?} missing from {text}");
        }
    }

    #[test]
    fn group_policy_alert_names_the_group_command() {
        let rule = rule(PolicyKind::Group, "developers");
        let bob = Identity::parse("bob@example.com").expect("valid");
        let alerts = rule.crossings(&bob, change(0, 0), change(0, 850_000));
        assert_eq!(alerts.len(), 1);
        let alert = &alerts[0];
        assert_eq!(alert.threshold_percent, Some(80));
        assert_eq!(alert.period_key, "2026-03");
        let body = alert.webhook_body();
        let text = body["text"].as_str().expect("text is a string");
        assert!(text.contains("group developers"), "{text}");
        assert!(
            text.contains("tollgate quota set-group developers --monthly-limit"),
            "{text}"
        );
        assert_eq!(body["alert"]["user"], "bob@example.com");
    }

    #[test]
    fn nothing_crossed_raises_nothing() {
        let rule = rule(PolicyKind::Default, "default");
        let carol = Identity::parse("carol@example.com").expect("valid");
        assert!(
            rule.crossings(&carol, change(1, 2), change(1, 2))
                .is_empty()
        );
    }
}
