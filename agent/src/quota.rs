//! The quota check against the backend's `GET {quota_url}/v1/check`, and
//! the messages that explain a block or a failed check to the user.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tollgate_protocol::Secret;
use tollgate_protocol::check::{CheckAnswer, PeriodUsage, Reason};

/// How long one quota check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(10);

/// A quota check that could not be made. The message names the URL and the
/// cause.
#[derive(Debug, thiserror::Error)]
#[error("the quota check at {url} failed: {cause}")]
pub struct CheckFailed {
    pub url: String,
    pub cause: String,
}

/// Returns the check URL for a quota base URL (no trailing slash).
pub fn check_url(quota_url: &str) -> String {
    format!("{quota_url}/v1/check")
}

/// Calls the check endpoint with the ID token as bearer token. Any HTTP
/// status outside 2xx and any body that is not a [`CheckAnswer`] is a
/// [`CheckFailed`].
pub async fn check(
    http: &reqwest::Client,
    quota_url: &str,
    id_token: &Secret,
) -> Result<CheckAnswer, CheckFailed> {
    let url = check_url(quota_url);
    let failed = |cause: String| CheckFailed {
        url: url.clone(),
        cause,
    };
    let response = http
        .get(&url)
        .bearer_auth(id_token.expose())
        .timeout(CHECK_TIMEOUT)
        .send()
        .await
        .map_err(|error| failed(error_chain(&error)))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|error| {
        failed(format!(
            "reading the response body failed: {}",
            error_chain(&error)
        ))
    })?;
    if !status.is_success() {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|json| {
                json.get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        return Err(failed(format!("HTTP {status}: {detail}")));
    }
    serde_json::from_slice(&body)
        .map_err(|error| failed(format!("the answer is not a quota check answer: {error}")))
}

/// Formats an error with its sources, outermost first.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Formats a token count the way limits are written: `15K`, `225M`, `1.5B`.
pub fn format_tokens(tokens: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1_000_000_000, "B"), (1_000_000, "M"), (1_000, "K")];
    for (size, suffix) in UNITS {
        if tokens >= size {
            let value = tokens as f64 / size as f64;
            let text = format!("{value:.1}");
            let text = text.strip_suffix(".0").unwrap_or(&text);
            return format!("{text}{suffix}");
        }
    }
    tokens.to_string()
}

fn format_reset(resets_at: DateTime<Utc>) -> String {
    resets_at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn describe_period(period_name: &str, usage: &PeriodUsage) -> String {
    let used = format_tokens(usage.tokens);
    match (usage.limit, usage.percent) {
        (Some(limit), Some(percent)) => format!(
            "the {period_name} limit is reached: {used} of {} tokens used ({percent:.0}%); it resets at {}",
            format_tokens(limit),
            format_reset(usage.resets_at)
        ),
        (Some(limit), None) => format!(
            "the {period_name} limit is reached: {used} of {} tokens used; it resets at {}",
            format_tokens(limit),
            format_reset(usage.resets_at)
        ),
        _ => format!(
            "the {period_name} limit is reached: {used} tokens used; it resets at {}",
            format_reset(usage.resets_at)
        ),
    }
}

/// Explains a refusal: which limit, usage against it, when it resets and
/// whom to ask (`support_contact` when the profile names one).
pub fn blocked_message(
    profile: &str,
    support_contact: Option<&str>,
    answer: &CheckAnswer,
) -> String {
    let limit_text = match answer.reason {
        Reason::DailyLimitExceeded => describe_period("daily", &answer.usage.daily),
        Reason::MonthlyLimitExceeded => describe_period("monthly", &answer.usage.monthly),
        _ => {
            let daily = &answer.usage.daily;
            let monthly = &answer.usage.monthly;
            if daily.limit.is_some_and(|limit| daily.tokens >= limit) {
                describe_period("daily", daily)
            } else if monthly.limit.is_some_and(|limit| monthly.tokens >= limit) {
                describe_period("monthly", monthly)
            } else {
                format!("the quota backend refused: {}", answer.message)
            }
        }
    };
    let whom = match support_contact {
        Some(contact) => format!("your Tollgate administrator ({contact})"),
        None => "your Tollgate administrator".to_string(),
    };
    format!(
        "Tollgate quota for {} (profile `{profile}`): {limit_text}. Wait for the reset, or ask {whom} to raise the limit or grant a temporary unblock.",
        answer.user
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::check::{Enforcement, Usage};

    fn period(tokens: u64, limit: Option<u64>, resets_at: &str) -> PeriodUsage {
        PeriodUsage {
            tokens,
            limit,
            percent: limit.map(|limit| tokens as f64 / limit as f64 * 100.0),
            enforcement: limit.map(|_| Enforcement::Block),
            warning_threshold: None,
            resets_at: resets_at.parse().unwrap(),
        }
    }

    fn answer(reason: Reason) -> CheckAnswer {
        CheckAnswer {
            allowed: false,
            reason,
            message: "Monthly limit reached".into(),
            user: "ana@example.com".into(),
            usage: Usage {
                monthly: period(512_300_000, Some(500_000_000), "2027-01-01T00:00:00Z"),
                daily: period(20_000_000, Some(18_000_000), "2026-12-05T00:00:00Z"),
                counted_types: Vec::new(),
            },
            policy: None,
            unblock: None,
            checked_at: "2026-12-04T12:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn token_formats() {
        assert_eq!(format_tokens(999), "999");
        assert_eq!(format_tokens(15_000), "15K");
        assert_eq!(format_tokens(225_000_000), "225M");
        assert_eq!(format_tokens(1_500_000_000), "1.5B");
        assert_eq!(format_tokens(512_300_000), "512.3M");
    }

    #[test]
    fn monthly_block_message() {
        let message = blocked_message("bedrock", None, &answer(Reason::MonthlyLimitExceeded));
        assert!(message.contains("ana@example.com"), "{message}");
        assert!(
            message.contains("the monthly limit is reached: 512.3M of 500M tokens used (102%)"),
            "{message}"
        );
        assert!(
            message.contains("resets at 2027-01-01 00:00 UTC"),
            "{message}"
        );
        assert!(
            message.contains("raise the limit or grant a temporary unblock"),
            "{message}"
        );
    }

    #[test]
    fn daily_block_message() {
        let message = blocked_message(
            "bedrock",
            Some("#ai-platform on Slack"),
            &answer(Reason::DailyLimitExceeded),
        );
        assert!(
            message.contains("the daily limit is reached: 20M of 18M tokens used (111%)"),
            "{message}"
        );
        assert!(
            message.contains("resets at 2026-12-05 00:00 UTC"),
            "{message}"
        );
        assert!(
            message.contains("administrator (#ai-platform on Slack)"),
            "{message}"
        );
    }

    #[test]
    fn unknown_reason_falls_back_to_usage() {
        let mut answer = answer(Reason::Unknown);
        answer.usage.daily.tokens = 1;
        let message = blocked_message("bedrock", None, &answer);
        assert!(
            message.contains("the monthly limit is reached"),
            "{message}"
        );
    }
}
