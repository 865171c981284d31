//! Policy resolution: the policy that applies to a user, and the reason.
//!
//! Precedence: an enabled user policy for the identity, else the most
//! restrictive enabled policy among the user's groups, else the enabled
//! default policy, else none. A disabled policy is skipped, so resolution
//! falls through to the next kind.
//!
//! "Most restrictive" compares whole policies, so the chosen group's limits
//! and enforcement modes apply together and one group is named as the
//! winner. Policies are ordered by, in turn:
//!
//! 1. blocking at the monthly limit before only alerting at it,
//! 2. the lower monthly limit,
//! 3. having a daily limit before having none,
//! 4. blocking at the daily limit before only alerting at it,
//! 5. the lower daily limit,
//! 6. the group name in byte order, so the choice never depends on the
//!    order policies were stored in.
//!
//! Blocking ranks first because a policy that only alerts never stops
//! usage: a user in a 10M `block` group and a 5M `alert` group is stopped
//! at 10M. An enforcement mode this build does not know ranks as `block`,
//! the same way [`crate::decide`] enforces it. The same order picks among
//! duplicates of the user or default policy, should a store hold any.

use std::cmp::Ordering;
use std::fmt;

use serde::Serialize;
use tollgate_protocol::check::{Enforcement, PolicyKind, PolicyRef};

use crate::amount::format_amount;
use crate::identity::Identity;
use crate::policy::{Policy, enforcement_name, policy_kind_name};

/// The outcome of resolution: the policy that applies, if any, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    pub policy: Option<Policy>,
    pub explanation: Explanation,
}

/// Why a policy applies: the rule that chose it, the group candidates it was
/// chosen from, and matching policies that were skipped because they are
/// disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub rule: Rule,
    /// The applied policy, absent under [`Rule::NoPolicy`].
    pub applied: Option<PolicyRef>,
    /// Enabled policies of the user's groups, most restrictive first.
    /// Filled only under [`Rule::MostRestrictiveGroup`].
    pub group_candidates: Vec<Candidate>,
    /// Policies that match the user but are disabled, in precedence order.
    pub disabled: Vec<PolicyRef>,
}

/// A group policy that competed under [`Rule::MostRestrictiveGroup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub group: String,
    pub monthly_limit: u64,
    pub monthly_enforcement: Enforcement,
    pub daily_limit: Option<u64>,
    pub daily_enforcement: Enforcement,
}

/// The precedence rule that picked the applied policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// An enabled user policy exists for the identity.
    UserPolicy,
    /// No enabled user policy, and at least one of the user's groups has an
    /// enabled policy.
    MostRestrictiveGroup,
    /// No enabled user or group policy, and the default policy is enabled.
    DefaultPolicy,
    /// No enabled policy matches.
    NoPolicy,
}

/// Resolves the policy for a user in the given groups (names as the group
/// claim sent them, compared exactly).
pub fn resolve(identity: &Identity, groups: &[String], policies: &[Policy]) -> Resolution {
    let mut disabled = Vec::new();

    let user_policies = matching(policies, PolicyKind::User, |id| id == identity.as_str());
    let group_policies = matching(policies, PolicyKind::Group, |id| {
        groups.iter().any(|group| group == id)
    });
    let default_policies = matching(policies, PolicyKind::Default, |_| true);

    for (rule, candidates) in [
        (Rule::UserPolicy, user_policies),
        (Rule::MostRestrictiveGroup, group_policies),
        (Rule::DefaultPolicy, default_policies),
    ] {
        let (mut enabled, skipped): (Vec<&Policy>, Vec<&Policy>) =
            candidates.into_iter().partition(|policy| policy.enabled);
        let mut skipped: Vec<PolicyRef> =
            skipped.iter().map(|policy| policy.policy_ref()).collect();
        skipped.sort_by(|a, b| a.id.cmp(&b.id));
        disabled.extend(skipped);

        enabled.sort_by(|a, b| compare_restrictiveness(a, b));
        let Some(winner) = enabled.first() else {
            continue;
        };
        let group_candidates = if rule == Rule::MostRestrictiveGroup {
            enabled.iter().map(|policy| candidate(policy)).collect()
        } else {
            Vec::new()
        };
        return Resolution {
            policy: Some((*winner).clone()),
            explanation: Explanation {
                rule,
                applied: Some(winner.policy_ref()),
                group_candidates,
                disabled,
            },
        };
    }

    Resolution {
        policy: None,
        explanation: Explanation {
            rule: Rule::NoPolicy,
            applied: None,
            group_candidates: Vec::new(),
            disabled,
        },
    }
}

fn matching(policies: &[Policy], kind: PolicyKind, matches: impl Fn(&str) -> bool) -> Vec<&Policy> {
    policies
        .iter()
        .filter(|policy| policy.kind == kind && matches(&policy.identifier))
        .collect()
}

fn candidate(policy: &Policy) -> Candidate {
    Candidate {
        group: policy.identifier.clone(),
        monthly_limit: policy.monthly_limit,
        monthly_enforcement: policy.monthly_enforcement,
        daily_limit: policy.daily_limit,
        daily_enforcement: policy.daily_enforcement,
    }
}

/// Orders policies from most to least restrictive (see the module docs).
pub fn compare_restrictiveness(a: &Policy, b: &Policy) -> Ordering {
    restrictiveness_key(a).cmp(&restrictiveness_key(b))
}

/// Builds the sort key of the module docs' order. Lower sorts first.
fn restrictiveness_key(policy: &Policy) -> (bool, u64, bool, bool, u64, &str) {
    let only_alerts = |enforcement| enforcement == Enforcement::Alert;
    (
        only_alerts(policy.monthly_enforcement),
        policy.monthly_limit,
        policy.daily_limit.is_none(),
        only_alerts(policy.daily_enforcement),
        policy.daily_limit.unwrap_or(u64::MAX),
        &policy.identifier,
    )
}

impl fmt::Display for Explanation {
    /// Writes the explanation as sentences for administrators.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.rule, &self.applied) {
            (Rule::UserPolicy, Some(applied)) => write!(
                formatter,
                "The user policy {} applies because a user policy takes precedence over group and default policies.",
                applied.id
            )?,
            (Rule::MostRestrictiveGroup, Some(applied)) => {
                write!(
                    formatter,
                    "The group policy {} applies because no enabled user policy exists and it is the most restrictive of the user's enabled group policies",
                    applied.id
                )?;
                write!(
                    formatter,
                    ". Blocking ranks before alerting, then the lower monthly limit, then the daily limit, then the group name."
                )?;
                if self.group_candidates.len() > 1 {
                    let listed: Vec<String> = self
                        .group_candidates
                        .iter()
                        .map(describe_candidate)
                        .collect();
                    write!(
                        formatter,
                        " Candidates, most restrictive first: {}.",
                        listed.join(", ")
                    )?;
                }
            }
            (Rule::DefaultPolicy, Some(_)) => write!(
                formatter,
                "The default policy applies because no enabled user or group policy matches."
            )?,
            _ => write!(
                formatter,
                "No policy applies because no enabled user, group or default policy matches, so usage is not limited."
            )?,
        }
        if !self.disabled.is_empty() {
            let listed: Vec<String> = self
                .disabled
                .iter()
                .map(|policy| format!("{} {}", policy_kind_name(policy.kind), policy.id))
                .collect();
            write!(formatter, " Skipped as disabled: {}.", listed.join(", "))?;
        }
        Ok(())
    }
}

fn describe_candidate(candidate: &Candidate) -> String {
    let mut text = format!(
        "{} with {} a month ({})",
        candidate.group,
        format_amount(candidate.monthly_limit),
        enforcement_name(candidate.monthly_enforcement)
    );
    if let Some(daily) = candidate.daily_limit {
        text.push_str(&format!(
            " and {} a day ({})",
            format_amount(daily),
            enforcement_name(candidate.daily_enforcement)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-15T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn policy(kind: PolicyKind, id: &str, monthly: u64) -> Policy {
        Policy::new(kind, id, monthly, now()).unwrap()
    }

    fn user(id: &str, monthly: u64) -> Policy {
        policy(PolicyKind::User, id, monthly)
    }

    fn group(id: &str, monthly: u64) -> Policy {
        policy(PolicyKind::Group, id, monthly)
    }

    fn default(monthly: u64) -> Policy {
        policy(PolicyKind::Default, "default", monthly)
    }

    fn disabled(mut policy: Policy) -> Policy {
        policy.enabled = false;
        policy
    }

    fn alerting(mut policy: Policy) -> Policy {
        policy.monthly_enforcement = Enforcement::Alert;
        policy
    }

    fn with_daily(mut policy: Policy, daily: u64, enforcement: Enforcement) -> Policy {
        policy.daily_limit = Some(daily);
        policy.daily_enforcement = enforcement;
        policy
    }

    fn alice() -> Identity {
        Identity::parse("alice@example.com").unwrap()
    }

    fn groups(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    struct Case {
        name: &'static str,
        groups: &'static [&'static str],
        policies: Vec<Policy>,
        rule: Rule,
        applied: Option<(PolicyKind, &'static str)>,
        disabled: &'static [&'static str],
    }

    #[test]
    fn precedence_table() {
        let cases = vec![
            Case {
                name: "user beats group and default",
                groups: &["eng"],
                policies: vec![default(1), group("eng", 1), user("alice@example.com", 500)],
                rule: Rule::UserPolicy,
                applied: Some((PolicyKind::User, "alice@example.com")),
                disabled: &[],
            },
            Case {
                name: "other user's policy is ignored",
                groups: &[],
                policies: vec![user("bob@example.com", 1), default(100)],
                rule: Rule::DefaultPolicy,
                applied: Some((PolicyKind::Default, "default")),
                disabled: &[],
            },
            Case {
                name: "disabled user falls to group",
                groups: &["eng"],
                policies: vec![
                    disabled(user("alice@example.com", 1)),
                    group("eng", 300),
                    default(100),
                ],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "eng")),
                disabled: &["alice@example.com"],
            },
            Case {
                name: "lowest monthly group wins",
                groups: &["eng", "ops", "sales"],
                policies: vec![
                    group("eng", 300),
                    group("ops", 200),
                    group("sales", 400),
                    default(1),
                ],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "ops")),
                disabled: &[],
            },
            Case {
                name: "group not in claim is ignored",
                groups: &["eng"],
                policies: vec![group("eng", 300), group("ops", 200)],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "eng")),
                disabled: &[],
            },
            Case {
                name: "group names match exactly",
                groups: &["Eng"],
                policies: vec![group("eng", 300), default(100)],
                rule: Rule::DefaultPolicy,
                applied: Some((PolicyKind::Default, "default")),
                disabled: &[],
            },
            Case {
                name: "blocking group beats lower alerting group",
                groups: &["interns", "pilot"],
                policies: vec![group("interns", 10), alerting(group("pilot", 5))],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "interns")),
                disabled: &[],
            },
            Case {
                name: "daily limit breaks monthly tie",
                groups: &["a", "b"],
                policies: vec![
                    group("a", 100),
                    with_daily(group("b", 100), 50, Enforcement::Alert),
                ],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "b")),
                disabled: &[],
            },
            Case {
                name: "daily block beats lower daily alert",
                groups: &["a", "b"],
                policies: vec![
                    with_daily(group("a", 100), 5, Enforcement::Alert),
                    with_daily(group("b", 100), 9, Enforcement::Block),
                ],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "b")),
                disabled: &[],
            },
            Case {
                name: "lower daily limit breaks tie",
                groups: &["a", "b"],
                policies: vec![
                    with_daily(group("a", 100), 9, Enforcement::Block),
                    with_daily(group("b", 100), 5, Enforcement::Block),
                ],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "b")),
                disabled: &[],
            },
            Case {
                name: "full tie goes to first name",
                groups: &["zeta", "alpha"],
                policies: vec![group("zeta", 100), group("alpha", 100)],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "alpha")),
                disabled: &[],
            },
            Case {
                name: "disabled group is skipped",
                groups: &["eng", "ops"],
                policies: vec![group("eng", 300), disabled(group("ops", 1)), default(100)],
                rule: Rule::MostRestrictiveGroup,
                applied: Some((PolicyKind::Group, "eng")),
                disabled: &["ops"],
            },
            Case {
                name: "all groups disabled falls to default",
                groups: &["eng"],
                policies: vec![disabled(group("eng", 1)), default(100)],
                rule: Rule::DefaultPolicy,
                applied: Some((PolicyKind::Default, "default")),
                disabled: &["eng"],
            },
            Case {
                name: "disabled default means no policy",
                groups: &["eng"],
                policies: vec![disabled(default(100)), disabled(group("eng", 5))],
                rule: Rule::NoPolicy,
                applied: None,
                disabled: &["eng", "default"],
            },
            Case {
                name: "no policies at all",
                groups: &[],
                policies: vec![],
                rule: Rule::NoPolicy,
                applied: None,
                disabled: &[],
            },
            Case {
                name: "group policy without groups",
                groups: &[],
                policies: vec![group("eng", 5)],
                rule: Rule::NoPolicy,
                applied: None,
                disabled: &[],
            },
        ];

        for case in cases {
            let resolution = resolve(&alice(), &groups(case.groups), &case.policies);
            let explanation = &resolution.explanation;
            assert_eq!(explanation.rule, case.rule, "{}", case.name);
            let applied = explanation
                .applied
                .as_ref()
                .map(|applied| (applied.kind, applied.id.as_str()));
            assert_eq!(applied, case.applied, "{}", case.name);
            let policy_ref = resolution.policy.as_ref().map(Policy::policy_ref);
            assert_eq!(policy_ref, explanation.applied, "{}", case.name);
            let disabled: Vec<&str> = explanation.disabled.iter().map(|p| p.id.as_str()).collect();
            assert_eq!(disabled, case.disabled, "{}", case.name);
        }
    }

    #[test]
    fn explanation_lists_group_candidates() {
        let policies = vec![
            group("eng", 300_000_000),
            with_daily(group("ops", 200_000_000), 7_000_000, Enforcement::Block),
        ];
        let resolution = resolve(&alice(), &groups(&["eng", "ops"]), &policies);
        let explanation = resolution.explanation;
        let names: Vec<&str> = explanation
            .group_candidates
            .iter()
            .map(|candidate| candidate.group.as_str())
            .collect();
        assert_eq!(names, ["ops", "eng"]);
        let text = explanation.to_string();
        assert!(text.starts_with("The group policy ops applies"), "{text}");
        assert!(
            text.contains(
                "ops with 200M a month (block) and 7M a day (block), eng with 300M a month (block)."
            ),
            "{text}"
        );
    }

    #[test]
    fn explanation_text_per_rule() {
        let cases: Vec<(Vec<Policy>, &str)> = vec![
            (
                vec![user("alice@example.com", 1)],
                "The user policy alice@example.com applies",
            ),
            (vec![default(1)], "The default policy applies"),
            (vec![], "No policy applies"),
            (
                vec![disabled(user("alice@example.com", 1)), default(1)],
                "Skipped as disabled: user alice@example.com.",
            ),
        ];
        for (policies, expected) in cases {
            let text = resolve(&alice(), &[], &policies).explanation.to_string();
            assert!(text.contains(expected), "{text:?} lacks {expected:?}");
        }
    }
}
