//! Property test: for any set of policies and groups, resolution picks the
//! same policy as a plain reference model of the documented rules.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use tollgate_quota::{Enforcement, Identity, Policy, PolicyKind, Rule, resolve};

const USERS: [&str; 3] = ["alice@example.com", "bob@example.com", "carol@example.com"];
const GROUPS: [&str; 4] = ["eng", "ops", "sales", "Eng"];

fn created() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("a valid timestamp")
        .with_timezone(&Utc)
}

fn enforcement() -> impl Strategy<Value = Enforcement> {
    prop_oneof![Just(Enforcement::Alert), Just(Enforcement::Block)]
}

/// Small value ranges so ties in every sort-key component happen often.
fn policy() -> impl Strategy<Value = Policy> {
    let kind_and_id = prop_oneof![
        (0..USERS.len()).prop_map(|index| (PolicyKind::User, USERS[index])),
        (0..GROUPS.len()).prop_map(|index| (PolicyKind::Group, GROUPS[index])),
        Just((PolicyKind::Default, "default")),
    ];
    (
        kind_and_id,
        0u64..4,
        proptest::option::of(0u64..3),
        enforcement(),
        enforcement(),
        any::<bool>(),
    )
        .prop_map(
            |((kind, id), monthly, daily, monthly_enforcement, daily_enforcement, enabled)| {
                let mut policy = Policy::new(kind, id, monthly * 100, created())
                    .expect("generated identifiers are valid");
                policy.daily_limit = daily.map(|daily| daily * 10);
                policy.monthly_enforcement = monthly_enforcement;
                policy.daily_enforcement = daily_enforcement;
                policy.enabled = enabled;
                policy
            },
        )
}

/// Reports whether `a` is strictly more restrictive than `b`, written out as the
/// crate docs state the order.
fn more_restrictive(a: &Policy, b: &Policy) -> bool {
    let a_blocks_monthly = a.monthly_enforcement == Enforcement::Block;
    let b_blocks_monthly = b.monthly_enforcement == Enforcement::Block;
    if a_blocks_monthly != b_blocks_monthly {
        return a_blocks_monthly;
    }
    if a.monthly_limit != b.monthly_limit {
        return a.monthly_limit < b.monthly_limit;
    }
    match (a.daily_limit, b.daily_limit) {
        (Some(_), None) => return true,
        (None, Some(_)) => return false,
        (Some(a_daily), Some(b_daily)) => {
            let a_blocks_daily = a.daily_enforcement == Enforcement::Block;
            let b_blocks_daily = b.daily_enforcement == Enforcement::Block;
            if a_blocks_daily != b_blocks_daily {
                return a_blocks_daily;
            }
            if a_daily != b_daily {
                return a_daily < b_daily;
            }
        }
        (None, None) => {
            let a_blocks_daily = a.daily_enforcement == Enforcement::Block;
            let b_blocks_daily = b.daily_enforcement == Enforcement::Block;
            if a_blocks_daily != b_blocks_daily {
                return a_blocks_daily;
            }
        }
    }
    a.identifier < b.identifier
}

fn pick_most_restrictive<'a>(candidates: &[&'a Policy]) -> Option<&'a Policy> {
    let mut best: Option<&Policy> = None;
    for candidate in candidates {
        match best {
            None => best = Some(candidate),
            Some(current) if more_restrictive(candidate, current) => best = Some(candidate),
            Some(_) => {}
        }
    }
    best
}

/// Resolves with the reference model: user, then groups, then default,
/// enabled policies only.
fn reference(user: &str, groups: &[String], policies: &[Policy]) -> (Rule, Option<Policy>) {
    let mut users = Vec::new();
    let mut group_policies = Vec::new();
    let mut defaults = Vec::new();
    for policy in policies {
        if !policy.enabled {
            continue;
        }
        if policy.kind == PolicyKind::User && policy.identifier == user {
            users.push(policy);
        }
        if policy.kind == PolicyKind::Group && groups.contains(&policy.identifier) {
            group_policies.push(policy);
        }
        if policy.kind == PolicyKind::Default {
            defaults.push(policy);
        }
    }
    if let Some(policy) = pick_most_restrictive(&users) {
        return (Rule::UserPolicy, Some(policy.clone()));
    }
    if let Some(policy) = pick_most_restrictive(&group_policies) {
        return (Rule::MostRestrictiveGroup, Some(policy.clone()));
    }
    if let Some(policy) = pick_most_restrictive(&defaults) {
        return (Rule::DefaultPolicy, Some(policy.clone()));
    }
    (Rule::NoPolicy, None)
}

fn user_and_groups() -> impl Strategy<Value = (&'static str, Vec<String>)> {
    (
        0..USERS.len(),
        proptest::sample::subsequence(GROUPS.to_vec(), 0..=GROUPS.len()),
    )
        .prop_map(|(index, groups)| {
            (
                USERS[index],
                groups.into_iter().map(str::to_owned).collect(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn resolution_matches_reference(
        (user, groups) in user_and_groups(),
        policies in proptest::collection::vec(policy(), 0..12),
    ) {
        let identity = Identity::parse(user).expect("generated users are valid");
        let resolution = resolve(&identity, &groups, &policies);
        let (rule, expected) = reference(user, &groups, &policies);

        prop_assert_eq!(resolution.explanation.rule, rule);
        prop_assert_eq!(&resolution.policy, &expected);
        prop_assert_eq!(
            resolution.explanation.applied,
            expected.as_ref().map(Policy::policy_ref)
        );
    }

    #[test]
    fn disabled_policies_never_change_result(
        (user, groups) in user_and_groups(),
        policies in proptest::collection::vec(policy(), 0..12),
    ) {
        let identity = Identity::parse(user).expect("generated users are valid");
        let enabled: Vec<Policy> = policies.iter().filter(|policy| policy.enabled).cloned().collect();
        let with_disabled = resolve(&identity, &groups, &policies);
        let without_disabled = resolve(&identity, &groups, &enabled);
        prop_assert_eq!(with_disabled.policy, without_disabled.policy);
        prop_assert_eq!(with_disabled.explanation.rule, without_disabled.explanation.rule);
    }

    #[test]
    fn storage_order_does_not_matter(
        (user, groups) in user_and_groups(),
        policies in proptest::collection::vec(policy(), 0..12),
    ) {
        let identity = Identity::parse(user).expect("generated users are valid");
        let mut reversed = policies.clone();
        reversed.reverse();
        let forward = resolve(&identity, &groups, &policies);
        let backward = resolve(&identity, &groups, &reversed);
        prop_assert_eq!(forward.policy, backward.policy);
    }
}
