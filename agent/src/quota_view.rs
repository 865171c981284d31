//! The quota state as people see it: usage levels and their colours, bars,
//! and the text of `tollgate-agent status`. The status page renders the
//! same levels as HTML.

use chrono::{DateTime, Utc};
use tollgate_protocol::agent::ProfileStatus;
use tollgate_protocol::check::{CheckAnswer, Enforcement, PeriodUsage, PolicyKind};

use crate::quota::format_tokens;

/// Percent of a limit at which usage is shown as a warning.
pub const WARNING_PERCENT: f64 = 80.0;
/// Percent of a limit at which usage is shown as close to the limit.
pub const HIGH_PERCENT: f64 = 90.0;

/// How close usage is to its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Below 80 %: green.
    Normal,
    /// 80 % to below 90 %: amber.
    Warning,
    /// 90 % to below 100 %: orange.
    High,
    /// At or above the limit: red.
    Exceeded,
}

impl Level {
    pub fn of(percent: f64) -> Self {
        if percent >= 100.0 {
            Level::Exceeded
        } else if percent >= HIGH_PERCENT {
            Level::High
        } else if percent >= WARNING_PERCENT {
            Level::Warning
        } else {
            Level::Normal
        }
    }

    /// The CSS colour of the level's bar.
    pub fn css_color(self) -> &'static str {
        match self {
            Level::Normal => "#2e9d4f",
            Level::Warning => "#e0a800",
            Level::High => "#f07c00",
            Level::Exceeded => "#d62828",
        }
    }

    /// The ANSI SGR parameters of the level's colour (orange needs the
    /// 256-colour palette).
    fn ansi(self) -> &'static str {
        match self {
            Level::Normal => "32",
            Level::Warning => "33",
            Level::High => "38;5;208",
            Level::Exceeded => "31",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Normal => "below 80%",
            Level::Warning => "over 80%",
            Level::High => "over 90%",
            Level::Exceeded => "at the limit",
        }
    }
}

/// The percent of the limit used, when the period has a limit. A zero
/// limit counts as exceeded.
pub fn percent_used(usage: &PeriodUsage) -> Option<f64> {
    let limit = usage.limit?;
    Some(usage.percent.unwrap_or_else(|| {
        if limit == 0 {
            100.0
        } else {
            usage.tokens as f64 / limit as f64 * 100.0
        }
    }))
}

/// Draws a bar of `width` cells, full at 100 % and beyond.
pub fn bar(percent: f64, width: usize) -> String {
    let filled = ((percent.clamp(0.0, 100.0) / 100.0) * width as f64).round() as usize;
    let filled = filled.min(width);
    "█".repeat(filled) + &"░".repeat(width - filled)
}

/// Formats a time as UTC with the time left until it.
pub fn time_with_distance(value: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let left = value - now;
    let distance = if left.num_seconds() <= 0 {
        "passed".to_string()
    } else if left.num_minutes() < 1 {
        "in less than a minute".to_string()
    } else if left.num_minutes() < 120 {
        format!("in {} min", left.num_minutes())
    } else if left.num_hours() < 48 {
        format!("in {} h", left.num_hours())
    } else {
        format!("in {} days", left.num_days())
    };
    format!("{} ({distance})", value.format("%Y-%m-%d %H:%M UTC"))
}

/// Describes the policy that applied.
pub fn policy_text(answer: &CheckAnswer) -> String {
    match &answer.policy {
        Some(policy) => match policy.kind {
            PolicyKind::User => format!("user policy for {}", policy.id),
            PolicyKind::Group => format!("group policy `{}`", policy.id),
            PolicyKind::Default => "the default policy".to_string(),
            _ => format!("policy `{}`", policy.id),
        },
        None => "no policy applies, so nothing limits usage".to_string(),
    }
}

/// Names an enforcement mode.
pub fn enforcement_text(enforcement: Option<Enforcement>) -> &'static str {
    match enforcement {
        Some(Enforcement::Block) => "blocks at the limit",
        Some(Enforcement::Alert) => "alerts only",
        _ => "enforcement unknown",
    }
}

/// Wraps text in an ANSI colour when `color` is set.
fn paint(text: &str, level: Level, color: bool) -> String {
    if color {
        format!("\x1b[{}m{text}\x1b[0m", level.ansi())
    } else {
        text.to_string()
    }
}

/// One period's line: name, bar, usage of limit, percent, reset.
fn period_line(name: &str, usage: &PeriodUsage, now: DateTime<Utc>, color: bool) -> String {
    match (usage.limit, percent_used(usage)) {
        (Some(limit), Some(percent)) => {
            let level = Level::of(percent);
            format!(
                "  {name:<8} {} {:>7} of {:<7} {:>4.0}%  {}; resets {}",
                paint(&bar(percent, 20), level, color),
                format_tokens(usage.tokens),
                format_tokens(limit),
                percent,
                enforcement_text(usage.enforcement),
                time_with_distance(usage.resets_at, now)
            )
        }
        _ => format!(
            "  {name:<8} {} tokens, no limit; resets {}",
            format_tokens(usage.tokens),
            time_with_distance(usage.resets_at, now)
        ),
    }
}

/// The terminal text for one profile. `quota_configured` is `Some(false)`
/// when the profile has no `quota_url`, `None` when unknown.
/// `blocked_message` is the explanation to show when the last answer
/// refused access.
pub fn terminal_text(
    status: &ProfileStatus,
    quota_configured: Option<bool>,
    blocked_message: Option<&str>,
    now: DateTime<Utc>,
    color: bool,
) -> String {
    let mut lines = vec![format!("profile {}", status.profile)];
    match &status.identity {
        Some(identity) => lines.push(format!("  logged in as {identity}")),
        None => lines.push(format!(
            "  not logged in; run `tollgate-agent login --profile {}`",
            status.profile
        )),
    }
    if let Some(expiration) = status.id_token_expiration {
        let refresh = if status.has_refresh_token {
            "renewed with the refresh token"
        } else {
            "no refresh token"
        };
        lines.push(format!(
            "  ID token expires {}; {refresh}",
            time_with_distance(expiration, now)
        ));
    }
    match status.credentials_expiration {
        Some(expiration) => lines.push(format!(
            "  AWS credentials expire {}",
            time_with_distance(expiration, now)
        )),
        None => lines.push("  AWS credentials: none cached".to_string()),
    }
    match (&status.last_quota, quota_configured) {
        (Some(answer), _) => {
            let verdict = if answer.allowed {
                paint("allowed", Level::Normal, color)
            } else {
                paint("BLOCKED", Level::Exceeded, color)
            };
            lines.push(format!(
                "  quota {verdict} for {} (checked {}; {})",
                answer.user,
                answer.checked_at.format("%H:%M:%S UTC"),
                policy_text(answer)
            ));
            lines.push(period_line("daily", &answer.usage.daily, now, color));
            lines.push(period_line("monthly", &answer.usage.monthly, now, color));
            if let Some(unblock) = &answer.unblock {
                lines.push(format!(
                    "  unblocked until {} by {}: {}",
                    time_with_distance(unblock.expires_at, now),
                    unblock.granted_by,
                    unblock.reason
                ));
            }
            if !answer.allowed {
                lines.push(format!(
                    "  {}",
                    blocked_message.unwrap_or(answer.message.as_str())
                ));
            }
        }
        (None, Some(false)) => {
            lines.push("  quota not checked: the profile has no quota_url".to_string())
        }
        (None, _) => lines.push("  quota not checked yet".to_string()),
    }
    if let Some(store) = &status.secret_store {
        lines.push(format!("  secrets cached in the {store} store"));
    }
    lines.join("\n")
}

/// Whether to colour terminal output: only on a terminal, and never when
/// `NO_COLOR` is set to a non-empty value (<https://no-color.org>).
pub fn use_color(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::check::{PolicyRef, Reason, Usage};

    #[test]
    fn seconds_left_read_as_less_than_minute() {
        let now = Utc::now();
        let text = time_with_distance(now + chrono::Duration::seconds(2), now);
        assert!(text.ends_with("(in less than a minute)"), "{text}");
        let text = time_with_distance(now + chrono::Duration::seconds(90), now);
        assert!(text.ends_with("(in 1 min)"), "{text}");
    }

    fn period(tokens: u64, limit: Option<u64>) -> PeriodUsage {
        PeriodUsage {
            tokens,
            limit,
            percent: limit.map(|limit| tokens as f64 / limit as f64 * 100.0),
            enforcement: limit.map(|_| Enforcement::Block),
            warning_threshold: None,
            resets_at: "2027-01-01T00:00:00Z".parse().unwrap(),
        }
    }

    fn status(monthly_tokens: u64, allowed: bool) -> ProfileStatus {
        ProfileStatus {
            profile: "bedrock".into(),
            identity: Some("ana@example.com".into()),
            id_token_expiration: None,
            has_refresh_token: true,
            credentials_expiration: None,
            last_quota: Some(CheckAnswer {
                allowed,
                reason: if allowed {
                    Reason::WithinLimits
                } else {
                    Reason::MonthlyLimitExceeded
                },
                message: "Monthly limit reached".into(),
                user: "ana@example.com".into(),
                usage: Usage {
                    monthly: period(monthly_tokens, Some(500_000_000)),
                    daily: period(1_000, None),
                    counted_types: Vec::new(),
                },
                policy: Some(PolicyRef {
                    kind: PolicyKind::Group,
                    id: "engineering".into(),
                }),
                unblock: None,
                checked_at: "2026-12-04T12:00:00Z".parse().unwrap(),
            }),
            secret_store: Some("memory".into()),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-12-04T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn levels_at_thresholds() {
        assert_eq!(Level::of(79.9), Level::Normal);
        assert_eq!(Level::of(80.0), Level::Warning);
        assert_eq!(Level::of(90.0), Level::High);
        assert_eq!(Level::of(99.9), Level::High);
        assert_eq!(Level::of(100.0), Level::Exceeded);
        assert_eq!(Level::of(250.0), Level::Exceeded);
    }

    #[test]
    fn bar_widths() {
        assert_eq!(bar(0.0, 10), "░░░░░░░░░░");
        assert_eq!(bar(50.0, 10), "█████░░░░░");
        assert_eq!(bar(180.0, 10), "██████████");
    }

    #[test]
    fn plain_text_has_no_escapes() {
        let text = terminal_text(&status(450_000_000, true), Some(true), None, now(), false);
        assert!(!text.contains('\x1b'), "{text}");
        assert!(text.contains("450M of 500M"), "{text}");
        assert!(text.contains("90%"), "{text}");
        assert!(text.contains("group policy `engineering`"), "{text}");
        assert!(text.contains("2027-01-01 00:00 UTC (in 27 days)"), "{text}");
        assert!(text.contains("1K tokens, no limit"), "{text}");
    }

    #[test]
    fn colour_follows_level() {
        let text = terminal_text(&status(450_000_000, true), Some(true), None, now(), true);
        assert!(text.contains("\x1b[38;5;208m"), "orange at 90%: {text:?}");
        let text = terminal_text(&status(410_000_000, true), Some(true), None, now(), true);
        assert!(text.contains("\x1b[33m"), "amber at 82%: {text:?}");
    }

    #[test]
    fn blocked_shows_explanation() {
        let text = terminal_text(
            &status(600_000_000, false),
            Some(true),
            Some("the monthly limit is reached"),
            now(),
            false,
        );
        assert!(text.contains("quota BLOCKED"), "{text}");
        assert!(text.contains("the monthly limit is reached"), "{text}");
    }

    #[test]
    fn no_color_respected() {
        assert!(use_color(true, None));
        assert!(!use_color(false, None));
        assert!(!use_color(true, Some("1".into())));
        assert!(use_color(true, Some("".into())));
    }
}
