//! The human message of a check answer: which limit, usage and limit in
//! K/M/B, percent, reset time in UTC, and what the user can do.

use chrono::{DateTime, Utc};
use tollgate_protocol::check::{PeriodUsage, Reason, Usage};

use crate::amount::display_amount;
use crate::decide::usage_of;
use crate::period::Period;
use crate::unblock::UnblockGrant;

pub(crate) struct MessageInput<'a> {
    pub reason: Reason,
    pub usage: &'a Usage,
    pub exceeded: &'a [Period],
    pub blocking: Option<Period>,
    pub unblock: Option<&'a UnblockGrant>,
}

pub(crate) fn compose(input: &MessageInput<'_>) -> String {
    let usage = input.usage;
    match input.reason {
        Reason::NoPolicy => format!(
            "No quota policy applies to you, so your usage is not limited ({}).",
            usage_phrase(Period::Monthly, &usage.monthly)
        ),
        Reason::WithinLimits => {
            let mut text = format!(
                "Within limits: {}",
                usage_phrase(Period::Monthly, &usage.monthly)
            );
            if usage.daily.limit.is_some() {
                text.push_str(&format!(", {}", usage_phrase(Period::Daily, &usage.daily)));
            }
            text.push('.');
            for period in [Period::Monthly, Period::Daily] {
                let period_usage = usage_of(usage, period);
                if let Some(threshold) = period_usage.warning_threshold {
                    text.push_str(&format!(
                        " You have passed {threshold}% of your {} limit.",
                        period.as_str()
                    ));
                }
            }
            text
        }
        Reason::LimitAlert => {
            let sentences: Vec<String> = input
                .exceeded
                .iter()
                .rev()
                .map(|period| {
                    let period_usage = usage_of(usage, *period);
                    format!(
                        "{} limit reached: {}. Access continues because this limit only alerts, and it resets at {}.",
                        capitalized(*period),
                        usage_phrase(*period, period_usage),
                        format_instant(period_usage.resets_at)
                    )
                })
                .collect();
            sentences.join(" ")
        }
        Reason::DailyLimitExceeded | Reason::MonthlyLimitExceeded => {
            let period = input
                .blocking
                .expect("a limit_exceeded reason always has a blocking period");
            let period_usage = usage_of(usage, period);
            let mut text = format!(
                "{} limit reached: {}. Access is blocked until the {} reset at {}.",
                capitalized(period),
                usage_phrase(period, period_usage),
                period.as_str(),
                format_instant(period_usage.resets_at)
            );
            if period == Period::Monthly && input.exceeded.contains(&Period::Daily) {
                text.push_str(" The daily limit is also reached.");
            }
            text.push_str(
                " Ask your administrator for a temporary unblock if you need access sooner.",
            );
            text
        }
        Reason::Unblocked => {
            let period = input
                .blocking
                .expect("the unblocked reason always has a blocking period");
            let grant = input
                .unblock
                .expect("the unblocked reason always has an active unblock");
            format!(
                "{} limit reached: {}, but a temporary unblock granted by {} lets you continue until {}.",
                capitalized(period),
                usage_phrase(period, usage_of(usage, period)),
                grant.granted_by,
                format_instant(grant.expires_at)
            )
        }
        _ => "The quota decision has a reason this build does not describe.".to_owned(),
    }
}

/// `230.52M of 225M tokens used this month (102.45%)`.
fn usage_phrase(period: Period, usage: &PeriodUsage) -> String {
    let when = match period {
        Period::Daily => "today",
        Period::Monthly => "this month",
    };
    match (usage.limit, usage.percent) {
        (Some(limit), Some(percent)) => format!(
            "{} of {} tokens used {when} ({percent}%)",
            display_amount(usage.tokens),
            display_amount(limit)
        ),
        _ => format!("{} tokens used {when}", display_amount(usage.tokens)),
    }
}

fn capitalized(period: Period) -> &'static str {
    match period {
        Period::Daily => "Daily",
        Period::Monthly => "Monthly",
    }
}

/// `2025-02-01 00:00 UTC`.
pub(crate) fn format_instant(instant: DateTime<Utc>) -> String {
    instant.format("%Y-%m-%d %H:%M UTC").to_string()
}
