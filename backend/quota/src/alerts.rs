//! What a usage increase newly crossed, for alerts sent once per user,
//! limit, threshold and period.
//!
//! [`newly_crossed`] compares the counted totals of one period before and
//! after new usage arrives, against one policy. A warning threshold is
//! crossed when the earlier total was below it and the later one is at or
//! above it, in exact integer arithmetic. The limit is crossed the same way,
//! with usage ≥ limit. A jump past several thresholds returns each of them.
//! Each crossing is returned only for the change that crosses it, and
//! [`Crossing::dedup_key`] names it, so a store that records the keys it has
//! sent can alert once per period even when a change is processed twice.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tollgate_protocol::check::Enforcement;

use crate::identity::Identity;
use crate::period::Period;
use crate::policy::{Policy, threshold_reached};

/// A threshold or limit crossed by a usage increase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Crossing {
    pub period: Period,
    pub mark: Mark,
    /// The limit of `period` in the policy.
    pub limit: u64,
    /// The enforcement mode of the period's limit.
    pub enforcement: Enforcement,
}

/// The kind of mark crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "percent")]
pub enum Mark {
    /// A warning threshold, in percent of the limit.
    Threshold(u8),
    /// The limit itself.
    Limit,
}

impl Crossing {
    /// Builds a key unique per user, period instance, limit and threshold, such as
    /// `alice@example.com/monthly/2025-01/threshold-80` or
    /// `alice@example.com/daily/2025-01-31/limit`. `at` is any instant in
    /// the period of the usage.
    pub fn dedup_key(&self, identity: &Identity, at: DateTime<Utc>) -> String {
        let mark = match self.mark {
            Mark::Threshold(percent) => format!("threshold-{percent}"),
            Mark::Limit => "limit".to_owned(),
        };
        format!(
            "{identity}/{}/{}/{mark}",
            self.period.as_str(),
            self.period.key(at)
        )
    }
}

/// Counted totals of one period, before and after new usage, for
/// [`newly_crossed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TotalsChange {
    pub before: u64,
    pub after: u64,
}

impl TotalsChange {
    /// Reports whether `reached` is false before the change and true after
    /// it.
    fn crossed(self, reached: impl Fn(u64) -> bool) -> bool {
        !reached(self.before) && reached(self.after)
    }
}

/// Lists the thresholds and limits of `policy` that `daily` and `monthly`
/// newly crossed, daily first, thresholds ascending, each period's limit
/// after its thresholds. Totals that fell (a new period) cross nothing.
pub fn newly_crossed(policy: &Policy, daily: TotalsChange, monthly: TotalsChange) -> Vec<Crossing> {
    let mut crossings = Vec::new();
    for (period, change) in [(Period::Daily, daily), (Period::Monthly, monthly)] {
        let Some(limit) = policy.limit(period) else {
            continue;
        };
        let enforcement = policy.enforcement(period);
        for &percent in policy.warning_thresholds.as_slice() {
            if change.crossed(|tokens| threshold_reached(tokens, limit, percent)) {
                crossings.push(Crossing {
                    period,
                    mark: Mark::Threshold(percent),
                    limit,
                    enforcement,
                });
            }
        }
        if change.crossed(|tokens| tokens >= limit) {
            crossings.push(Crossing {
                period,
                mark: Mark::Limit,
                limit,
                enforcement,
            });
        }
    }
    crossings
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_protocol::check::PolicyKind;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn policy() -> Policy {
        let mut policy = Policy::new(
            PolicyKind::Default,
            "default",
            1000,
            at("2025-01-01T00:00:00Z"),
        )
        .unwrap();
        policy.daily_limit = Some(100);
        policy
    }

    fn change(before: u64, after: u64) -> TotalsChange {
        TotalsChange { before, after }
    }

    fn marks(crossings: &[Crossing]) -> Vec<(Period, Mark)> {
        crossings
            .iter()
            .map(|crossing| (crossing.period, crossing.mark))
            .collect()
    }

    #[test]
    fn crossings_table() {
        use Mark::{Limit, Threshold};
        use Period::{Daily, Monthly};
        type Case = (
            &'static str,
            TotalsChange,
            TotalsChange,
            &'static [(Period, Mark)],
        );
        let cases: &[Case] = &[
            ("nothing crossed", change(0, 10), change(0, 10), &[]),
            (
                "monthly 80",
                change(0, 0),
                change(799, 800),
                &[(Monthly, Threshold(80))],
            ),
            ("already past 80", change(0, 0), change(800, 850), &[]),
            (
                "jump past both",
                change(0, 0),
                change(0, 950),
                &[(Monthly, Threshold(80)), (Monthly, Threshold(90))],
            ),
            (
                "limit exactly",
                change(0, 0),
                change(999, 1000),
                &[(Monthly, Limit)],
            ),
            (
                "zero to over",
                change(0, 0),
                change(0, 5000),
                &[
                    (Monthly, Threshold(80)),
                    (Monthly, Threshold(90)),
                    (Monthly, Limit),
                ],
            ),
            (
                "daily and monthly",
                change(79, 100),
                change(899, 900),
                &[
                    (Daily, Threshold(80)),
                    (Daily, Threshold(90)),
                    (Daily, Limit),
                    (Monthly, Threshold(90)),
                ],
            ),
            ("no change", change(90, 90), change(1000, 1000), &[]),
            ("new period drop", change(120, 5), change(0, 0), &[]),
        ];
        for (name, daily, monthly, expected) in cases {
            let crossings = newly_crossed(&policy(), *daily, *monthly);
            assert_eq!(marks(&crossings), *expected, "{name}");
        }
    }

    #[test]
    fn crossing_carries_limit_and_enforcement() {
        let crossings = newly_crossed(&policy(), change(0, 100), change(0, 0));
        let limit = crossings.last().unwrap();
        assert_eq!(limit.mark, Mark::Limit);
        assert_eq!(limit.limit, 100);
        assert_eq!(limit.enforcement, Enforcement::Alert);
    }

    #[test]
    fn no_daily_limit_no_daily_crossings() {
        let mut policy = policy();
        policy.daily_limit = None;
        assert!(newly_crossed(&policy, change(0, u64::MAX), change(0, 0)).is_empty());
    }

    #[test]
    fn dedup_keys_name_period_instance() {
        let alice = Identity::parse("alice@example.com").unwrap();
        let crossings = newly_crossed(&policy(), change(0, 100), change(0, 800));
        let keys: Vec<String> = crossings
            .iter()
            .map(|crossing| crossing.dedup_key(&alice, at("2025-01-31T23:59:59Z")))
            .collect();
        assert_eq!(
            keys,
            [
                "alice@example.com/daily/2025-01-31/threshold-80",
                "alice@example.com/daily/2025-01-31/threshold-90",
                "alice@example.com/daily/2025-01-31/limit",
                "alice@example.com/monthly/2025-01/threshold-80",
            ]
        );
    }
}
