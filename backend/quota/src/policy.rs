//! Quota policies: who they apply to, their limits, enforcement modes and
//! warning thresholds, and the derivation of a daily limit from a monthly
//! one.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tollgate_protocol::check::{Enforcement, PolicyKind, PolicyRef};

use crate::identity::normalize_identity;

/// The identifier of the one default policy.
pub const DEFAULT_IDENTIFIER: &str = "default";

/// The maximum length of a group name in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 256;

/// The monthly limit of the recommended default policy, 225M tokens.
pub const RECOMMENDED_MONTHLY_LIMIT: u64 = 225_000_000;

/// A quota policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub kind: PolicyKind,
    /// The normalised identity for a user policy, the group name for a group
    /// policy, `default` for the default policy.
    pub identifier: String,
    /// Counted tokens allowed per UTC calendar month.
    pub monthly_limit: u64,
    /// Counted tokens allowed per UTC day, if the policy limits days.
    #[serde(default)]
    pub daily_limit: Option<u64>,
    /// The burst the daily limit was derived with from the monthly limit,
    /// absent when the daily limit was set as an amount. While present, a
    /// new monthly limit derives a new daily limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_burst: Option<BurstPercent>,
    pub monthly_enforcement: Enforcement,
    pub daily_enforcement: Enforcement,
    #[serde(default)]
    pub warning_thresholds: WarningThresholds,
    /// A disabled policy is skipped, and resolution falls through to the
    /// next kind.
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Policy {
    /// Builds an enabled policy with a normalised identifier, no daily
    /// limit, monthly enforcement `block`, daily enforcement `alert` and the
    /// default warning thresholds.
    pub fn new(
        kind: PolicyKind,
        identifier: &str,
        monthly_limit: u64,
        now: DateTime<Utc>,
    ) -> Result<Self, PolicyError> {
        Ok(Policy {
            kind,
            identifier: normalize_identifier(kind, identifier)?,
            monthly_limit,
            daily_limit: None,
            daily_burst: None,
            monthly_enforcement: Enforcement::Block,
            daily_enforcement: Enforcement::Alert,
            warning_thresholds: WarningThresholds::default(),
            enabled: true,
            created_at: now,
            updated_at: now,
        })
    }

    /// Builds the policy an administrator starts from: default kind, 225M tokens a
    /// month blocked, a daily limit derived with a 10 % burst in alert mode,
    /// warnings at 80 % and 90 %.
    pub fn recommended_default(now: DateTime<Utc>) -> Self {
        let mut policy = Policy::new(
            PolicyKind::Default,
            DEFAULT_IDENTIFIER,
            RECOMMENDED_MONTHLY_LIMIT,
            now,
        )
        .expect("the default identifier is valid for the default kind");
        policy.derive_daily(BurstPercent::default());
        policy
    }

    /// Sets the daily limit to the one derived from the monthly limit with
    /// `burst`, and records the burst so a new monthly limit re-derives it.
    pub fn derive_daily(&mut self, burst: BurstPercent) {
        self.daily_limit = Some(derive_daily_limit(self.monthly_limit, burst));
        self.daily_burst = Some(burst);
    }

    /// Sets the daily limit to an amount (or none), which stops it from
    /// following the monthly limit.
    pub fn set_daily(&mut self, daily_limit: Option<u64>) {
        self.daily_limit = daily_limit;
        self.daily_burst = None;
    }

    /// Sets the monthly limit, re-deriving a derived daily limit.
    pub fn set_monthly(&mut self, monthly_limit: u64) {
        self.monthly_limit = monthly_limit;
        if let Some(burst) = self.daily_burst {
            self.derive_daily(burst);
        }
    }

    /// Checks what serde cannot: a known kind and enforcement modes, an
    /// identifier in normal form for its kind, a daily limit no higher than
    /// the monthly one, and a derived daily limit that matches its burst.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let normalized = normalize_identifier(self.kind, &self.identifier)?;
        if normalized != self.identifier {
            return Err(PolicyError::IdentifierNotNormalized {
                identifier: self.identifier.clone(),
                normalized,
            });
        }
        for enforcement in [self.monthly_enforcement, self.daily_enforcement] {
            if !matches!(enforcement, Enforcement::Alert | Enforcement::Block) {
                return Err(PolicyError::UnknownEnforcement(format!("{enforcement:?}")));
            }
        }
        if let Some(daily) = self.daily_limit
            && daily > self.monthly_limit
        {
            return Err(PolicyError::DailyAboveMonthly {
                daily,
                monthly: self.monthly_limit,
            });
        }
        if let Some(burst) = self.daily_burst {
            let derived = derive_daily_limit(self.monthly_limit, burst);
            if self.daily_limit != Some(derived) {
                return Err(PolicyError::DerivedDailyMismatch {
                    burst: burst.percent(),
                    expected: derived,
                });
            }
        }
        Ok(())
    }

    /// Returns the reference the check answer carries.
    pub fn policy_ref(&self) -> PolicyRef {
        PolicyRef {
            kind: self.kind,
            id: self.identifier.clone(),
        }
    }

    /// Returns the enforcement mode of one period's limit.
    pub fn enforcement(&self, period: crate::Period) -> Enforcement {
        match period {
            crate::Period::Daily => self.daily_enforcement,
            crate::Period::Monthly => self.monthly_enforcement,
        }
    }

    /// Returns the limit of one period, absent for a daily period without
    /// a limit.
    pub fn limit(&self, period: crate::Period) -> Option<u64> {
        match period {
            crate::Period::Daily => self.daily_limit,
            crate::Period::Monthly => Some(self.monthly_limit),
        }
    }
}

/// Normalises a policy identifier for its kind: a normalised identity
/// ([`normalize_identity`]: trimmed, lower-cased, no whitespace) for a
/// user, a trimmed non-empty name for a group, `default` for the default
/// policy. Whether a user identifier must be an email address depends on
/// the deployment's identity claim, so callers that know it check that.
pub fn normalize_identifier(kind: PolicyKind, identifier: &str) -> Result<String, PolicyError> {
    match kind {
        PolicyKind::User => Ok(normalize_identity(identifier)?),
        PolicyKind::Group => {
            let name = identifier.trim();
            if name.is_empty() {
                Err(PolicyError::EmptyGroupName)
            } else {
                Ok(name.to_owned())
            }
        }
        PolicyKind::Default => {
            let name = identifier.trim();
            if name.is_empty() || name.eq_ignore_ascii_case(DEFAULT_IDENTIFIER) {
                Ok(DEFAULT_IDENTIFIER.to_owned())
            } else {
                Err(PolicyError::DefaultIdentifier(identifier.to_owned()))
            }
        }
        _ => Err(PolicyError::UnknownKind(format!("{kind:?}"))),
    }
}

/// Checks a trimmed group name for a new policy: non-empty, at most
/// [`MAX_GROUP_NAME_BYTES`] long, without control characters or commas,
/// and not starting with `=`, `+`, `-` or `@`. Names identity providers
/// use, such as `eng-platform`, `Engineering Platform`, `ai:admins` or a
/// GUID, pass. Stored policies are not re-checked, so a policy created
/// before these rules still loads.
pub fn validate_group_name(name: &str) -> Result<(), PolicyError> {
    let problem = if name.is_empty() {
        return Err(PolicyError::EmptyGroupName);
    } else if let Some(first) = name.chars().next().filter(|c| "=+-@".contains(*c)) {
        GroupNameProblem::FormulaPrefix(first)
    } else if name.chars().any(char::is_control) {
        GroupNameProblem::ControlCharacter
    } else if name.contains(',') {
        GroupNameProblem::Comma
    } else if name.len() > MAX_GROUP_NAME_BYTES {
        GroupNameProblem::TooLong
    } else {
        return Ok(());
    };
    Err(PolicyError::InvalidGroupName {
        name: name.to_owned(),
        problem,
    })
}

/// The reason a group name is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupNameProblem {
    #[error("it contains a control character such as a newline or a tab")]
    ControlCharacter,
    #[error(
        "it contains a comma, which separates names in --groups and in comma-separated group claims"
    )]
    Comma,
    #[error("it is longer than 256 bytes")]
    TooLong,
    #[error(
        "it starts with {0:?}, and spreadsheets run a cell starting with =, +, - or @ as a \
         formula when they open the CSV export"
    )]
    FormulaPrefix(char),
}

/// Parses a policy kind: `user`, `group` or `default`.
pub fn parse_policy_kind(text: &str) -> Result<PolicyKind, PolicyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "user" => Ok(PolicyKind::User),
        "group" => Ok(PolicyKind::Group),
        "default" => Ok(PolicyKind::Default),
        _ => Err(PolicyError::UnknownKind(text.to_owned())),
    }
}

/// Parses an enforcement mode: `alert` or `block`.
pub fn parse_enforcement(text: &str) -> Result<Enforcement, PolicyError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "alert" => Ok(Enforcement::Alert),
        "block" => Ok(Enforcement::Block),
        _ => Err(PolicyError::UnknownEnforcement(text.to_owned())),
    }
}

/// `alert` or `block` (`unknown` for a mode this build does not know).
pub fn enforcement_name(enforcement: Enforcement) -> &'static str {
    match enforcement {
        Enforcement::Alert => "alert",
        Enforcement::Block => "block",
        _ => "unknown",
    }
}

/// `user`, `group` or `default` (`unknown` for a kind this build does not
/// know).
pub fn policy_kind_name(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::User => "user",
        PolicyKind::Group => "group",
        PolicyKind::Default => "default",
        _ => "unknown",
    }
}

/// An invalid policy or policy setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(
        "invalid group name: it is empty; use the group name as the identity provider sends it"
    )]
    EmptyGroupName,
    #[error(
        "invalid default policy identifier {0:?}; the default policy's identifier is always \"default\""
    )]
    DefaultIdentifier(String),
    #[error(
        "invalid group name {name:?}: {problem}; use the group name as the identity provider \
         sends it, such as eng-platform or Engineering Platform"
    )]
    InvalidGroupName {
        name: String,
        problem: GroupNameProblem,
    },
    #[error("policy identifier {identifier:?} is not in normal form; use {normalized:?}")]
    IdentifierNotNormalized {
        identifier: String,
        normalized: String,
    },
    #[error("unknown policy kind {0:?}; use user, group or default")]
    UnknownKind(String),
    #[error("unknown enforcement mode {0:?}; use alert or block")]
    UnknownEnforcement(String),
    #[error("invalid warning threshold {0:?}; use whole percentages from 1 to 100, such as 80,90")]
    InvalidThreshold(String),
    #[error("invalid burst {0:?}; use a whole percentage from 5 to 25 (default 10)")]
    InvalidBurst(String),
    #[error(
        "the daily limit {} is above the monthly limit {}; lower the daily limit or raise the monthly limit",
        crate::format_amount(*daily),
        crate::format_amount(*monthly)
    )]
    DailyAboveMonthly { daily: u64, monthly: u64 },
    #[error(
        "the daily limit does not match the one derived with a {burst}% burst ({}); set the daily limit again",
        crate::format_amount(*expected)
    )]
    DerivedDailyMismatch { burst: u8, expected: u64 },
}

/// Warning thresholds in percent of a limit: sorted, without duplicates,
/// each in 1..=100. The default is 80 and 90. An empty list sends no
/// warnings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<u8>", into = "Vec<u8>")]
pub struct WarningThresholds(Vec<u8>);

impl WarningThresholds {
    /// Sorts and deduplicates thresholds, rejecting any outside 1..=100.
    pub fn new(thresholds: impl IntoIterator<Item = u8>) -> Result<Self, PolicyError> {
        let mut thresholds: Vec<u8> = thresholds.into_iter().collect();
        if let Some(bad) = thresholds
            .iter()
            .find(|percent| !(1..=100).contains(*percent))
        {
            return Err(PolicyError::InvalidThreshold(bad.to_string()));
        }
        thresholds.sort_unstable();
        thresholds.dedup();
        Ok(WarningThresholds(thresholds))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Finds the highest threshold that `tokens` reaches against `limit`,
    /// that is the highest `t` with `tokens / limit × 100 ≥ t`, computed exactly.
    /// A limit of 0 is reached by any usage.
    pub fn reached(&self, tokens: u64, limit: u64) -> Option<u8> {
        self.0
            .iter()
            .rev()
            .copied()
            .find(|threshold| threshold_reached(tokens, limit, *threshold))
    }
}

/// Reports whether `tokens` is at least `percent` % of `limit`, in exact
/// integer arithmetic.
pub fn threshold_reached(tokens: u64, limit: u64, percent: u8) -> bool {
    u128::from(tokens) * 100 >= u128::from(limit) * u128::from(percent)
}

impl Default for WarningThresholds {
    fn default() -> Self {
        WarningThresholds(vec![80, 90])
    }
}

impl TryFrom<Vec<u8>> for WarningThresholds {
    type Error = PolicyError;

    fn try_from(thresholds: Vec<u8>) -> Result<Self, Self::Error> {
        WarningThresholds::new(thresholds)
    }
}

impl From<WarningThresholds> for Vec<u8> {
    fn from(thresholds: WarningThresholds) -> Self {
        thresholds.0
    }
}

impl FromStr for WarningThresholds {
    type Err = PolicyError;

    /// Parses comma-separated percentages such as `80,90` or `50, 75, 90`.
    /// An empty string is no thresholds.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let thresholds = text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.trim_end_matches('%')
                    .parse::<u8>()
                    .map_err(|_| PolicyError::InvalidThreshold(part.to_owned()))
            })
            .collect::<Result<Vec<u8>, _>>()?;
        WarningThresholds::new(thresholds)
    }
}

impl fmt::Display for WarningThresholds {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u8::to_string).collect();
        formatter.write_str(&parts.join(","))
    }
}

/// The extra share of the even daily amount a derived daily limit allows,
/// in percent: 5..=25, default 10.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct BurstPercent(u8);

impl BurstPercent {
    pub const MIN: u8 = 5;
    pub const MAX: u8 = 25;

    pub fn new(percent: u8) -> Result<Self, PolicyError> {
        if (Self::MIN..=Self::MAX).contains(&percent) {
            Ok(BurstPercent(percent))
        } else {
            Err(PolicyError::InvalidBurst(percent.to_string()))
        }
    }

    pub fn percent(self) -> u8 {
        self.0
    }
}

impl Default for BurstPercent {
    fn default() -> Self {
        BurstPercent(10)
    }
}

impl TryFrom<u8> for BurstPercent {
    type Error = PolicyError;

    fn try_from(percent: u8) -> Result<Self, Self::Error> {
        BurstPercent::new(percent)
    }
}

impl From<BurstPercent> for u8 {
    fn from(burst: BurstPercent) -> Self {
        burst.0
    }
}

impl FromStr for BurstPercent {
    type Err = PolicyError;

    /// Parses `10` or `10%`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let percent = text
            .trim()
            .trim_end_matches('%')
            .parse::<u8>()
            .map_err(|_| PolicyError::InvalidBurst(text.to_owned()))?;
        BurstPercent::new(percent).map_err(|_| PolicyError::InvalidBurst(text.to_owned()))
    }
}

/// Derives a daily limit from a monthly one: `monthly / 30 × (1 + burst%)`,
/// computed exactly as `monthly × (100 + burst) / 3000` and rounded down to
/// a whole token. 225M with a 10 % burst is 8.25M; 100 with a 10 % burst is
/// 3 (3.67 rounded down).
pub fn derive_daily_limit(monthly_limit: u64, burst: BurstPercent) -> u64 {
    let daily = u128::from(monthly_limit) * (100 + u128::from(burst.0)) / 3000;
    // monthly × 125 / 3000 is below monthly, so it always fits.
    u64::try_from(daily).expect("a derived daily limit is below the monthly limit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Period;

    #[test]
    fn group_names_from_identity_providers_pass() {
        let guid = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";
        let longest = "g".repeat(MAX_GROUP_NAME_BYTES);
        for name in [
            "eng-platform",
            "Engineering Platform",
            "ai:admins",
            guid,
            "Ünïcode Grüppe",
            &longest,
        ] {
            assert_eq!(validate_group_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn invalid_group_names_are_rejected() {
        let too_long = "g".repeat(MAX_GROUP_NAME_BYTES + 1);
        let cases: [(&str, &str); 9] = [
            ("line\nbreak", "control character"),
            ("tab\there", "control character"),
            ("a,b", "comma"),
            (&too_long, "longer than 256 bytes"),
            ("=HYPERLINK(\"http://x\",\"y\")", "formula"),
            ("+cmd", "formula"),
            ("-2+3", "formula"),
            ("@SUM(A1)", "formula"),
            ("", "empty"),
        ];
        for (name, phrase) in cases {
            let error = validate_group_name(name).expect_err(name);
            let message = error.to_string();
            assert!(message.contains(phrase), "{name:?}: {message}");
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-15T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn identifiers_normalise_per_kind() {
        let cases: &[(PolicyKind, &str, &str)] = &[
            (PolicyKind::User, " Alice@Example.com ", "alice@example.com"),
            (PolicyKind::Group, " Engineering ", "Engineering"),
            (PolicyKind::Default, "default", "default"),
            (PolicyKind::Default, "", "default"),
            (PolicyKind::Default, "DEFAULT", "default"),
        ];
        for (kind, identifier, expected) in cases {
            let normalized = normalize_identifier(*kind, identifier).unwrap();
            assert_eq!(normalized, *expected, "{kind:?} {identifier:?}");
        }
    }

    #[test]
    fn invalid_identifiers_are_rejected() {
        assert!(matches!(
            normalize_identifier(PolicyKind::User, "al ice"),
            Err(PolicyError::Identity(_))
        ));
        assert_eq!(
            normalize_identifier(PolicyKind::User, " 00U1ab "),
            Ok("00u1ab".to_owned()),
            "a user policy may name a non-email identity"
        );
        assert_eq!(
            normalize_identifier(PolicyKind::Group, "  "),
            Err(PolicyError::EmptyGroupName)
        );
        assert_eq!(
            normalize_identifier(PolicyKind::Default, "everyone"),
            Err(PolicyError::DefaultIdentifier("everyone".into()))
        );
        assert!(matches!(
            normalize_identifier(PolicyKind::Unknown, "x"),
            Err(PolicyError::UnknownKind(_))
        ));
    }

    #[test]
    fn new_policy_has_documented_defaults() {
        let policy =
            Policy::new(PolicyKind::User, "Alice@example.com", 500_000_000, now()).unwrap();
        assert_eq!(policy.identifier, "alice@example.com");
        assert_eq!(policy.daily_limit, None);
        assert_eq!(policy.monthly_enforcement, Enforcement::Block);
        assert_eq!(policy.daily_enforcement, Enforcement::Alert);
        assert_eq!(policy.warning_thresholds.as_slice(), &[80, 90]);
        assert!(policy.enabled);
        assert_eq!(policy.created_at, now());
        assert_eq!(policy.updated_at, now());
        assert_eq!(policy.validate(), Ok(()));
    }

    #[test]
    fn recommended_default_matches_design() {
        let policy = Policy::recommended_default(now());
        assert_eq!(policy.kind, PolicyKind::Default);
        assert_eq!(policy.identifier, "default");
        assert_eq!(policy.monthly_limit, 225_000_000);
        assert_eq!(policy.daily_limit, Some(8_250_000));
        assert_eq!(policy.limit(Period::Daily), Some(8_250_000));
        assert_eq!(policy.enforcement(Period::Monthly), Enforcement::Block);
        assert_eq!(policy.enforcement(Period::Daily), Enforcement::Alert);
    }

    #[test]
    fn derived_daily_follows_monthly() {
        let mut policy = Policy::new(PolicyKind::User, "a@example.com", 300, now()).unwrap();
        policy.derive_daily(BurstPercent::new(20).unwrap());
        assert_eq!(policy.daily_limit, Some(12));
        assert_eq!(policy.daily_burst, Some(BurstPercent::new(20).unwrap()));
        policy.set_monthly(3000);
        assert_eq!(policy.daily_limit, Some(120), "re-derived from 3000");
        assert_eq!(policy.validate(), Ok(()));

        policy.set_daily(Some(50));
        assert_eq!(policy.daily_burst, None);
        policy.set_monthly(6000);
        assert_eq!(policy.daily_limit, Some(50), "an amount stays as set");
    }

    #[test]
    fn validate_rejects_inconsistent_limits() {
        let mut policy = Policy::new(PolicyKind::User, "a@example.com", 100, now()).unwrap();
        policy.daily_limit = Some(101);
        assert_eq!(
            policy.validate(),
            Err(PolicyError::DailyAboveMonthly {
                daily: 101,
                monthly: 100
            })
        );
        policy.daily_limit = Some(100);
        assert_eq!(
            policy.validate(),
            Ok(()),
            "daily equal to monthly is allowed"
        );
        policy.daily_burst = Some(BurstPercent::default());
        assert_eq!(
            policy.validate(),
            Err(PolicyError::DerivedDailyMismatch {
                burst: 10,
                expected: 3
            })
        );
    }

    #[test]
    fn validate_rejects_unnormalised_and_unknown() {
        let mut policy = Policy::new(PolicyKind::User, "alice@example.com", 1, now()).unwrap();
        policy.identifier = "Alice@example.com".into();
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::IdentifierNotNormalized { .. })
        ));
        policy.identifier = "alice@example.com".into();
        policy.daily_enforcement = Enforcement::Unknown;
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::UnknownEnforcement(_))
        ));
    }

    #[test]
    fn kinds_and_modes_parse() {
        assert_eq!(parse_policy_kind("User"), Ok(PolicyKind::User));
        assert_eq!(parse_policy_kind("group"), Ok(PolicyKind::Group));
        assert_eq!(parse_policy_kind("default"), Ok(PolicyKind::Default));
        assert!(parse_policy_kind("team").is_err());
        assert_eq!(parse_enforcement("alert"), Ok(Enforcement::Alert));
        assert_eq!(parse_enforcement(" BLOCK"), Ok(Enforcement::Block));
        let error = parse_enforcement("warn").unwrap_err().to_string();
        assert!(
            error.contains("\"warn\"") && error.contains("alert or block"),
            "{error}"
        );
    }

    #[test]
    fn daily_limit_derivation() {
        let cases: &[(u64, u8, u64)] = &[
            (225_000_000, 10, 8_250_000),
            (225_000_000, 5, 7_875_000),
            (225_000_000, 25, 9_375_000),
            (30_000, 10, 1_100),
            (100, 10, 3),
            (29, 5, 1),
            (0, 10, 0),
            (u64::MAX, 25, 768_614_336_404_564_650),
        ];
        for (monthly, burst, expected) in cases {
            let burst = BurstPercent::new(*burst).unwrap();
            assert_eq!(
                derive_daily_limit(*monthly, burst),
                *expected,
                "{monthly} {burst:?}"
            );
        }
    }

    #[test]
    fn burst_range_is_enforced() {
        assert_eq!(BurstPercent::default().percent(), 10);
        for percent in [5, 10, 25] {
            assert!(BurstPercent::new(percent).is_ok(), "{percent}");
        }
        for percent in [0, 4, 26, 100] {
            assert_eq!(
                BurstPercent::new(percent),
                Err(PolicyError::InvalidBurst(percent.to_string()))
            );
        }
        assert_eq!(
            "15%".parse::<BurstPercent>().map(BurstPercent::percent),
            Ok(15)
        );
        assert!("ten".parse::<BurstPercent>().is_err());
        assert!("30".parse::<BurstPercent>().is_err());
    }

    #[test]
    fn thresholds_parse_and_sort() {
        let cases: &[(&str, &[u8])] = &[
            ("80,90", &[80, 90]),
            ("90, 80, 80", &[80, 90]),
            ("50%,75%,100%", &[50, 75, 100]),
            ("", &[]),
        ];
        for (text, expected) in cases {
            let thresholds: WarningThresholds = text.parse().unwrap();
            assert_eq!(thresholds.as_slice(), *expected, "{text:?}");
        }
        for text in ["0", "101", "eighty", "80,,x", "-5"] {
            assert!(text.parse::<WarningThresholds>().is_err(), "{text:?}");
        }
        assert!(serde_json::from_str::<WarningThresholds>("[80, 0]").is_err());
    }

    #[test]
    fn highest_reached_threshold() {
        let thresholds = WarningThresholds::default();
        let cases: &[(u64, u64, Option<u8>)] = &[
            (0, 1000, None),
            (799, 1000, None),
            (800, 1000, Some(80)),
            (899, 1000, Some(80)),
            (900, 1000, Some(90)),
            (1000, 1000, Some(90)),
            (5000, 1000, Some(90)),
            // 79.999... % is not 80 %.
            (7_999_999, 10_000_000, None),
            (0, 0, Some(90)),
            (u64::MAX, u64::MAX, Some(90)),
        ];
        for (tokens, limit, expected) in cases {
            assert_eq!(
                thresholds.reached(*tokens, *limit),
                *expected,
                "{tokens} of {limit}"
            );
        }
        assert_eq!(
            WarningThresholds::new([]).unwrap().reached(1000, 1000),
            None
        );
    }

    #[test]
    fn policy_serde_round_trips() {
        let policy = Policy::recommended_default(now());
        let json = serde_json::to_string(&policy).unwrap();
        assert!(json.contains("\"monthly_enforcement\":\"block\""), "{json}");
        assert!(json.contains("\"warning_thresholds\":[80,90]"), "{json}");
        let back: Policy = serde_json::from_str(&json).unwrap();
        assert_eq!(back, policy);
    }
}
