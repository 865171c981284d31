//! Table-driven tests of the check decision through the public API.

use chrono::{DateTime, TimeDelta, Utc};
use tollgate_quota::{
    CheckInput, CountingConfig, Decision, Enforcement, Identity, Period, Policy, PolicyKind,
    Reason, TokenUsage, UnblockDuration, UnblockGrant, decide,
};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test timestamps are RFC 3339")
        .with_timezone(&Utc)
}

const NOW: &str = "2025-01-15T10:00:00Z";

fn alice() -> Identity {
    Identity::parse("alice@example.com").expect("a valid email")
}

/// Usage of input tokens only, so the default counting counts it as is.
fn input(tokens: u64) -> TokenUsage {
    TokenUsage {
        input: tokens,
        ..TokenUsage::default()
    }
}

/// Builds a default policy of `monthly` tokens with a daily limit, created
/// at the start of the month.
fn limits(
    monthly: u64,
    monthly_enforcement: Enforcement,
    daily: Option<u64>,
    daily_enforcement: Enforcement,
) -> Policy {
    let mut policy = Policy::new(
        PolicyKind::Default,
        "default",
        monthly,
        at("2025-01-01T00:00:00Z"),
    )
    .expect("a valid default policy");
    policy.monthly_enforcement = monthly_enforcement;
    policy.daily_limit = daily;
    policy.daily_enforcement = daily_enforcement;
    policy
}

fn grant(granted_at: &str, duration: UnblockDuration) -> UnblockGrant {
    UnblockGrant::new(
        alice(),
        duration,
        "admin@example.com",
        "release week",
        at(granted_at),
        at("2025-02-01T00:00:00Z"),
    )
    .expect("a valid unblock")
}

struct Scenario {
    policies: Vec<Policy>,
    daily: u64,
    monthly: u64,
    unblock: Option<UnblockGrant>,
    now: &'static str,
}

impl Scenario {
    fn new(policies: Vec<Policy>, daily: u64, monthly: u64) -> Self {
        Scenario {
            policies,
            daily,
            monthly,
            unblock: None,
            now: NOW,
        }
    }

    fn unblocked(mut self, unblock: UnblockGrant) -> Self {
        self.unblock = Some(unblock);
        self
    }

    fn decide(&self) -> Decision {
        decide(&CheckInput {
            identity: &alice(),
            groups: &[],
            policies: &self.policies,
            daily_usage: input(self.daily),
            monthly_usage: input(self.monthly),
            counting: &CountingConfig::default(),
            unblock: self.unblock.as_ref(),
            now: at(self.now),
        })
    }
}

struct Case {
    name: &'static str,
    scenario: Scenario,
    reason: Reason,
    allowed: bool,
    blocking: Option<Period>,
    exceeded: &'static [Period],
    message: &'static [&'static str],
}

use Enforcement::{Alert, Block};

#[test]
fn decision_table() {
    let cases = vec![
        Case {
            name: "no policy allows",
            scenario: Scenario::new(vec![], 5_000_000, 900_000_000),
            reason: Reason::NoPolicy,
            allowed: true,
            blocking: None,
            exceeded: &[],
            message: &["No quota policy applies", "900M tokens used this month"],
        },
        Case {
            name: "within both limits",
            scenario: Scenario::new(
                vec![limits(225_000_000, Block, Some(8_250_000), Alert)],
                1_000_000,
                10_000_000,
            ),
            reason: Reason::WithinLimits,
            allowed: true,
            blocking: None,
            exceeded: &[],
            message: &[
                "10M of 225M tokens used this month (4.44%)",
                "1M of 8.25M tokens used today (12.12%)",
            ],
        },
        Case {
            name: "one below monthly limit",
            scenario: Scenario::new(vec![limits(1000, Block, None, Alert)], 0, 999),
            reason: Reason::WithinLimits,
            allowed: true,
            blocking: None,
            exceeded: &[],
            message: &[
                "999 of 1K tokens used this month (99.9%)",
                "passed 90% of your monthly limit",
            ],
        },
        Case {
            name: "monthly at limit blocks",
            scenario: Scenario::new(
                vec![limits(225_000_000, Block, Some(8_250_000), Alert)],
                0,
                225_000_000,
            ),
            reason: Reason::MonthlyLimitExceeded,
            allowed: false,
            blocking: Some(Period::Monthly),
            exceeded: &[Period::Monthly],
            message: &[
                "Monthly limit reached: 225M of 225M tokens used this month (100%)",
                "blocked until the monthly reset at 2025-02-01 00:00 UTC",
                "temporary unblock",
            ],
        },
        Case {
            name: "daily alert keeps access",
            scenario: Scenario::new(
                vec![limits(225_000_000, Block, Some(8_250_000), Alert)],
                9_000_000,
                50_000_000,
            ),
            reason: Reason::LimitAlert,
            allowed: true,
            blocking: None,
            exceeded: &[Period::Daily],
            message: &[
                "Daily limit reached: 9M of 8.25M tokens used today (109.09%)",
                "resets at 2025-01-16 00:00 UTC",
            ],
        },
        Case {
            name: "daily block under monthly alert",
            scenario: Scenario::new(
                vec![limits(225_000_000, Alert, Some(8_250_000), Block)],
                8_250_000,
                50_000_000,
            ),
            reason: Reason::DailyLimitExceeded,
            allowed: false,
            blocking: Some(Period::Daily),
            exceeded: &[Period::Daily],
            message: &[
                "Daily limit reached",
                "until the daily reset at 2025-01-16 00:00 UTC",
            ],
        },
        Case {
            name: "both blocking reports monthly",
            scenario: Scenario::new(
                vec![limits(225_000_000, Block, Some(8_250_000), Block)],
                9_000_000,
                230_000_000,
            ),
            reason: Reason::MonthlyLimitExceeded,
            allowed: false,
            blocking: Some(Period::Monthly),
            exceeded: &[Period::Daily, Period::Monthly],
            message: &[
                "Monthly limit reached: 230M of 225M",
                "2025-02-01 00:00 UTC",
                "The daily limit is also reached.",
            ],
        },
        Case {
            name: "monthly alert daily block within",
            scenario: Scenario::new(
                vec![limits(100_000_000, Alert, Some(8_000_000), Block)],
                1_000_000,
                120_000_000,
            ),
            reason: Reason::LimitAlert,
            allowed: true,
            blocking: None,
            exceeded: &[Period::Monthly],
            message: &["Monthly limit reached: 120M of 100M tokens used this month (120%)"],
        },
        Case {
            name: "both alerting lists both",
            scenario: Scenario::new(
                vec![limits(100_000_000, Alert, Some(8_000_000), Alert)],
                9_000_000,
                120_000_000,
            ),
            reason: Reason::LimitAlert,
            allowed: true,
            blocking: None,
            exceeded: &[Period::Daily, Period::Monthly],
            message: &["Monthly limit reached", "Daily limit reached"],
        },
        Case {
            name: "active unblock allows",
            scenario: Scenario::new(
                vec![limits(225_000_000, Block, None, Alert)],
                0,
                230_000_000,
            )
            .unblocked(grant("2025-01-15T09:00:00Z", UnblockDuration::Hours(24))),
            reason: Reason::Unblocked,
            allowed: true,
            blocking: Some(Period::Monthly),
            exceeded: &[Period::Monthly],
            message: &[
                "granted by admin@example.com",
                "continue until 2025-01-16 09:00 UTC",
            ],
        },
        Case {
            name: "expired unblock blocks",
            scenario: Scenario::new(
                vec![limits(225_000_000, Block, None, Alert)],
                0,
                230_000_000,
            )
            .unblocked(grant("2025-01-13T09:00:00Z", UnblockDuration::Hours(24))),
            reason: Reason::MonthlyLimitExceeded,
            allowed: false,
            blocking: Some(Period::Monthly),
            exceeded: &[Period::Monthly],
            message: &["Monthly limit reached"],
        },
        Case {
            name: "other user's unblock ignored",
            scenario: Scenario::new(
                vec![limits(225_000_000, Block, None, Alert)],
                0,
                230_000_000,
            )
            .unblocked(UnblockGrant {
                identity: Identity::parse("bob@example.com").expect("a valid email"),
                ..grant("2025-01-15T09:00:00Z", UnblockDuration::Hours(24))
            }),
            reason: Reason::MonthlyLimitExceeded,
            allowed: false,
            blocking: Some(Period::Monthly),
            exceeded: &[Period::Monthly],
            message: &["Monthly limit reached"],
        },
        Case {
            name: "unblock without block",
            scenario: Scenario::new(vec![limits(225_000_000, Block, None, Alert)], 0, 1_000)
                .unblocked(grant("2025-01-15T09:00:00Z", UnblockDuration::Hours(24))),
            reason: Reason::WithinLimits,
            allowed: true,
            blocking: None,
            exceeded: &[],
            message: &["Within limits"],
        },
        Case {
            name: "unknown enforcement fails closed",
            scenario: Scenario::new(
                vec![limits(1000, Enforcement::Unknown, None, Alert)],
                0,
                1000,
            ),
            reason: Reason::MonthlyLimitExceeded,
            allowed: false,
            blocking: Some(Period::Monthly),
            exceeded: &[Period::Monthly],
            message: &["Monthly limit reached"],
        },
        Case {
            name: "zero limit blocks at once",
            scenario: Scenario::new(vec![limits(0, Block, None, Alert)], 0, 0),
            reason: Reason::MonthlyLimitExceeded,
            allowed: false,
            blocking: Some(Period::Monthly),
            exceeded: &[Period::Monthly],
            message: &["0 of 0 tokens used this month (100%)"],
        },
    ];

    for case in cases {
        let decision = case.scenario.decide();
        let answer = &decision.answer;
        assert_eq!(answer.reason, case.reason, "{}: reason", case.name);
        assert_eq!(answer.allowed, case.allowed, "{}: allowed", case.name);
        assert_eq!(decision.blocking, case.blocking, "{}: blocking", case.name);
        assert_eq!(decision.exceeded, case.exceeded, "{}: exceeded", case.name);
        for expected in case.message {
            assert!(
                answer.message.contains(expected),
                "{}: message {:?} lacks {expected:?}",
                case.name,
                answer.message
            );
        }
        assert_eq!(answer.user, "alice@example.com", "{}", case.name);
        assert_eq!(answer.checked_at, at(case.scenario.now), "{}", case.name);
    }
}

#[test]
fn period_usage_fields() {
    let decision = Scenario::new(
        vec![limits(1_000_000, Block, Some(100_000), Alert)],
        95_000,
        850_000,
    )
    .decide();
    let usage = &decision.answer.usage;

    assert_eq!(usage.monthly.tokens, 850_000);
    assert_eq!(usage.monthly.limit, Some(1_000_000));
    assert_eq!(usage.monthly.percent, Some(85.0));
    assert_eq!(usage.monthly.enforcement, Some(Block));
    assert_eq!(usage.monthly.warning_threshold, Some(80));
    assert_eq!(usage.monthly.resets_at, at("2025-02-01T00:00:00Z"));

    assert_eq!(usage.daily.tokens, 95_000);
    assert_eq!(usage.daily.limit, Some(100_000));
    assert_eq!(usage.daily.percent, Some(95.0));
    assert_eq!(usage.daily.enforcement, Some(Alert));
    assert_eq!(usage.daily.warning_threshold, Some(90));
    assert_eq!(usage.daily.resets_at, at("2025-01-16T00:00:00Z"));
}

#[test]
fn no_daily_limit_leaves_daily_open() {
    let decision =
        Scenario::new(vec![limits(1_000_000, Block, None, Block)], 5_000_000, 10).decide();
    let daily = &decision.answer.usage.daily;
    assert_eq!(decision.answer.reason, Reason::WithinLimits);
    assert_eq!(daily.tokens, 5_000_000);
    assert_eq!(daily.limit, None);
    assert_eq!(daily.percent, None);
    assert_eq!(daily.enforcement, None);
    assert_eq!(daily.warning_threshold, None);
    assert_eq!(daily.resets_at, at("2025-01-16T00:00:00Z"));
}

#[test]
fn no_policy_reports_usage_without_limits() {
    let decision = Scenario::new(vec![], 3, 7).decide();
    let answer = &decision.answer;
    assert_eq!(answer.policy, None);
    assert_eq!(answer.usage.monthly.tokens, 7);
    assert_eq!(answer.usage.monthly.limit, None);
    assert_eq!(answer.usage.monthly.percent, None);
    assert_eq!(answer.usage.daily.tokens, 3);
    assert_eq!(decision.policy, None);
}

#[test]
fn percent_truncates_below_limit() {
    // 99.999 % must not read as 100 %.
    let decision = Scenario::new(vec![limits(100_000, Block, None, Alert)], 0, 99_999).decide();
    assert_eq!(decision.answer.reason, Reason::WithinLimits);
    assert_eq!(decision.answer.usage.monthly.percent, Some(99.99));
}

#[test]
fn counted_types_follow_config() {
    let policies = vec![limits(1000, Block, None, Alert)];
    let counting: CountingConfig = "input=1,output=1,cacheRead=0,cacheCreation=1"
        .parse()
        .expect("a valid counting setting");
    let usage = TokenUsage {
        input: 100,
        output: 200,
        cache_read: 5_000,
        cache_creation: 50,
    };
    let decision = decide(&CheckInput {
        identity: &alice(),
        groups: &[],
        policies: &policies,
        daily_usage: usage,
        monthly_usage: usage,
        counting: &counting,
        unblock: None,
        now: at(NOW),
    });
    let answer = decision.answer;
    assert_eq!(answer.usage.monthly.tokens, 350);
    assert_eq!(answer.reason, Reason::WithinLimits);
    let counted: Vec<&str> = answer
        .usage
        .counted_types
        .iter()
        .map(|counted| counted.token_type.as_str())
        .collect();
    assert_eq!(counted, ["input", "output", "cacheCreation"]);

    // Counting cache reads puts the same usage over the limit.
    let all = decide(&CheckInput {
        identity: &alice(),
        groups: &[],
        policies: &policies,
        daily_usage: usage,
        monthly_usage: usage,
        counting: &CountingConfig::default(),
        unblock: None,
        now: at(NOW),
    });
    assert_eq!(all.answer.usage.monthly.tokens, 5_350);
    assert_eq!(all.answer.reason, Reason::MonthlyLimitExceeded);
}

#[test]
fn unblock_expires_between_checks() {
    let unblock = grant("2025-01-15T10:00:00Z", UnblockDuration::Hours(1));
    let mut scenario =
        Scenario::new(vec![limits(1000, Block, None, Alert)], 0, 2000).unblocked(unblock);

    scenario.now = "2025-01-15T10:30:00Z";
    let first = scenario.decide();
    assert_eq!(first.answer.reason, Reason::Unblocked);
    assert!(first.answer.allowed);
    let active = first
        .answer
        .unblock
        .as_ref()
        .expect("the answer includes the active unblock");
    assert_eq!(active.expires_at, at("2025-01-15T11:00:00Z"));
    assert_eq!(active.granted_by, "admin@example.com");
    assert_eq!(active.reason, "release week");

    scenario.now = "2025-01-15T11:00:00Z";
    let second = scenario.decide();
    assert_eq!(second.answer.reason, Reason::MonthlyLimitExceeded);
    assert!(!second.answer.allowed);
    assert_eq!(second.answer.unblock, None);
}

#[test]
fn until_reset_unblock_follows_blocking_limit() {
    let blocked_daily = Scenario::new(
        vec![limits(225_000_000, Alert, Some(1000), Block)],
        1000,
        1000,
    )
    .decide();
    assert_eq!(blocked_daily.blocking, Some(Period::Daily));
    assert_eq!(
        blocked_daily.blocking_reset_at(),
        at("2025-01-16T00:00:00Z")
    );
    let grant = UnblockGrant::new(
        alice(),
        UnblockDuration::UntilReset,
        "admin",
        "demo day",
        at(NOW),
        blocked_daily.blocking_reset_at(),
    )
    .expect("a valid unblock");
    assert_eq!(grant.expires_at, at("2025-01-16T00:00:00Z"));

    let blocked_monthly = Scenario::new(vec![limits(1000, Block, None, Alert)], 0, 1000).decide();
    assert_eq!(
        blocked_monthly.blocking_reset_at(),
        at("2025-02-01T00:00:00Z")
    );
    let grant = UnblockGrant::new(
        alice(),
        UnblockDuration::UntilReset,
        "admin",
        "demo day",
        at(NOW),
        blocked_monthly.blocking_reset_at(),
    )
    .expect("a valid unblock");
    assert_eq!(grant.expires_at, at(NOW) + TimeDelta::days(7));
}

#[test]
fn policy_created_mid_month_keeps_usage() {
    let early = limits(100_000_000, Block, None, Alert);
    let mut late = early.clone();
    late.created_at = at("2025-01-14T18:00:00Z");
    late.updated_at = late.created_at;

    let with_early = Scenario::new(vec![early], 0, 95_000_000).decide();
    let with_late = Scenario::new(vec![late], 0, 95_000_000).decide();

    assert_eq!(with_late.answer.usage.monthly.tokens, 95_000_000);
    assert_eq!(with_late.answer.usage.monthly.percent, Some(95.0));
    assert_eq!(with_late.answer.usage.monthly.warning_threshold, Some(90));
    assert_eq!(with_late.answer.usage, with_early.answer.usage);
    assert_eq!(with_late.answer.reason, with_early.answer.reason);
}

#[test]
fn month_boundary_resets() {
    let mut scenario = Scenario::new(vec![limits(1000, Block, Some(100), Block)], 0, 0);
    scenario.now = "2025-01-31T23:59:59.999Z";
    let january = scenario.decide();
    assert_eq!(
        january.answer.usage.daily.resets_at,
        at("2025-02-01T00:00:00Z")
    );
    assert_eq!(
        january.answer.usage.monthly.resets_at,
        at("2025-02-01T00:00:00Z")
    );

    scenario.now = "2025-02-01T00:00:00Z";
    let february = scenario.decide();
    assert_eq!(
        february.answer.usage.daily.resets_at,
        at("2025-02-02T00:00:00Z")
    );
    assert_eq!(
        february.answer.usage.monthly.resets_at,
        at("2025-03-01T00:00:00Z")
    );

    scenario.now = "2024-02-29T12:00:00Z";
    let leap = scenario.decide();
    assert_eq!(
        leap.answer.usage.daily.resets_at,
        at("2024-03-01T00:00:00Z")
    );
    assert_eq!(
        leap.answer.usage.monthly.resets_at,
        at("2024-03-01T00:00:00Z")
    );
}

#[test]
fn answer_names_applied_policy() {
    let mut user = Policy::new(PolicyKind::User, "Alice@Example.com", 5000, at(NOW))
        .expect("a valid user policy");
    user.enabled = false;
    let policies = vec![user, limits(1000, Block, None, Alert)];
    let decision = Scenario::new(policies, 0, 10).decide();
    let applied = decision.answer.policy.expect("the default applies");
    assert_eq!(applied.kind, PolicyKind::Default);
    assert_eq!(applied.id, "default");
    assert_eq!(decision.explanation.disabled.len(), 1);
    assert!(
        decision
            .explanation
            .to_string()
            .contains("Skipped as disabled: user alice@example.com."),
        "{}",
        decision.explanation
    );
}

mod invariants {
    use super::*;
    use proptest::prelude::*;

    fn enforcement() -> impl Strategy<Value = Enforcement> {
        prop_oneof![Just(Alert), Just(Block)]
    }

    proptest! {
        #[test]
        fn decision_agrees_with_usage(
            monthly_limit in 0u64..2_000,
            daily_limit in proptest::option::of(0u64..200),
            monthly_enforcement in enforcement(),
            daily_enforcement in enforcement(),
            free_monthly_tokens in 0u64..3_000,
            free_daily_tokens in 0u64..300,
            monthly_offset in proptest::option::of(-3i64..=3),
            daily_offset in proptest::option::of(-3i64..=3),
            unblock_minutes in proptest::option::of(-120i64..120),
        ) {
            // Usage near each limit half the time, so usage == limit is common.
            let near = |limit: u64, offset: Option<i64>, free: u64| {
                offset.map_or(free, |offset| limit.saturating_add_signed(offset))
            };
            let monthly_tokens = near(monthly_limit, monthly_offset, free_monthly_tokens);
            let daily_tokens = near(daily_limit.unwrap_or(0), daily_offset, free_daily_tokens);
            let policy = limits(monthly_limit, monthly_enforcement, daily_limit, daily_enforcement);
            let mut scenario = Scenario::new(vec![policy], daily_tokens, monthly_tokens);
            // A grant whose expiry is `unblock_minutes` from now; negative is expired.
            scenario.unblock = unblock_minutes.map(|minutes| UnblockGrant {
                expires_at: at(NOW) + TimeDelta::minutes(minutes),
                ..grant("2025-01-15T07:00:00Z", UnblockDuration::Hours(1))
            });
            let decision = scenario.decide();
            let answer = &decision.answer;

            let monthly_over = monthly_tokens >= monthly_limit;
            let daily_over = daily_limit.is_some_and(|limit| daily_tokens >= limit);
            let monthly_blocks = monthly_over && monthly_enforcement == Block;
            let daily_blocks = daily_over && daily_enforcement == Block;
            let unblocked = unblock_minutes.is_some_and(|minutes| minutes > 0);

            let expected = if (monthly_blocks || daily_blocks) && unblocked {
                Reason::Unblocked
            } else if monthly_blocks {
                Reason::MonthlyLimitExceeded
            } else if daily_blocks {
                Reason::DailyLimitExceeded
            } else if monthly_over || daily_over {
                Reason::LimitAlert
            } else {
                Reason::WithinLimits
            };
            prop_assert_eq!(answer.reason, expected);
            prop_assert_eq!(
                answer.allowed,
                !(monthly_blocks || daily_blocks) || unblocked
            );
            prop_assert_eq!(answer.unblock.is_some(), unblocked);

            for usage in [&answer.usage.monthly, &answer.usage.daily] {
                if let (Some(limit), Some(percent)) = (usage.limit, usage.percent) {
                    prop_assert_eq!(percent >= 100.0, usage.tokens >= limit);
                }
                if let (Some(threshold), Some(percent)) = (usage.warning_threshold, usage.percent) {
                    prop_assert!(f64::from(threshold) <= percent);
                }
            }
        }
    }
}
