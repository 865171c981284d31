//! Counting weights: the token types that count toward the limits, and
//! the weight of each.
//!
//! Claude Code reports tokens of four types: `input`, `output`, `cacheRead`
//! and `cacheCreation`. Cache reads are often most of the volume and cost a
//! fraction of input tokens, so a deployment chooses each type's weight in
//! [`CountingConfig`]. The default counts all four types with weight 1, so
//! an unconfigured deployment counts every token Claude Code reports.
//!
//! Weights have at most three decimals (0.1 is allowed, 0.0001 is not) and
//! lie in 0..=100. The counted total is `sum(tokens × weight)` computed
//! exactly in integer thousandths and rounded down to a whole token once,
//! after the sum.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tollgate_protocol::check::CountedType;

/// A token type as Claude Code's `claude_code.token.usage` metric names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TokenType {
    Input,
    Output,
    CacheRead,
    CacheCreation,
}

impl TokenType {
    pub const ALL: [TokenType; 4] = [
        TokenType::Input,
        TokenType::Output,
        TokenType::CacheRead,
        TokenType::CacheCreation,
    ];

    /// Returns the metric attribute value: `input`, `output`, `cacheRead` or
    /// `cacheCreation`.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Input => "input",
            TokenType::Output => "output",
            TokenType::CacheRead => "cacheRead",
            TokenType::CacheCreation => "cacheCreation",
        }
    }
}

impl fmt::Display for TokenType {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

impl FromStr for TokenType {
    type Err = CountingError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        TokenType::ALL
            .into_iter()
            .find(|token_type| token_type.as_str() == text.trim())
            .ok_or_else(|| CountingError::UnknownType(text.to_owned()))
    }
}

/// A counting weight in thousandths (1.0 is 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Weight(u32);

impl Weight {
    pub const ZERO: Weight = Weight(0);
    pub const ONE: Weight = Weight(1000);
    /// The largest weight, 100.
    pub const MAX: Weight = Weight(100_000);

    /// Validates a weight: finite, in 0..=100, at most three decimals.
    pub fn from_f64(weight: f64) -> Result<Self, CountingError> {
        let thousandths = weight * 1000.0;
        let rounded = thousandths.round();
        let valid = weight.is_finite()
            && (0.0..=100.0).contains(&weight)
            && (thousandths - rounded).abs() < 1e-6;
        if !valid {
            return Err(CountingError::InvalidWeight(weight.to_string()));
        }
        // In range and whole after the checks above.
        Ok(Weight(rounded as u32))
    }

    pub fn thousandths(self) -> u32 {
        self.0
    }

    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

impl Serialize for Weight {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.as_f64())
    }
}

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let weight = f64::deserialize(deserializer)?;
        Weight::from_f64(weight).map_err(serde::de::Error::custom)
    }
}

/// An invalid counting setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CountingError {
    #[error("unknown token type {0:?}; use input, output, cacheRead or cacheCreation")]
    UnknownType(String),
    #[error(
        "invalid weight {0}; use a number from 0 to 100 with at most three decimals, such as 1 or 0.1"
    )]
    InvalidWeight(String),
    #[error(
        "invalid counting entry {0:?}; write TYPE=WEIGHT pairs separated by commas, such as input=1,output=1,cacheRead=0.1,cacheCreation=1"
    )]
    InvalidEntry(String),
    #[error("token type {0} is listed twice in the counting setting; list each type once")]
    DuplicateType(TokenType),
}

/// Tokens of each type used in one period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TokenUsage {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_creation: u64,
}

impl TokenUsage {
    pub fn get(&self, token_type: TokenType) -> u64 {
        match token_type {
            TokenType::Input => self.input,
            TokenType::Output => self.output,
            TokenType::CacheRead => self.cache_read,
            TokenType::CacheCreation => self.cache_creation,
        }
    }

    /// Adds tokens of one type, saturating at `u64::MAX`.
    pub fn add(&mut self, token_type: TokenType, tokens: u64) {
        let slot = match token_type {
            TokenType::Input => &mut self.input,
            TokenType::Output => &mut self.output,
            TokenType::CacheRead => &mut self.cache_read,
            TokenType::CacheCreation => &mut self.cache_creation,
        };
        *slot = slot.saturating_add(tokens);
    }
}

/// The token types that count and their weights. A type that is absent has
/// weight 0 and does not count.
///
/// Serialised as a map from type to weight, such as
/// `{"input": 1, "output": 1, "cacheRead": 0.1, "cacheCreation": 1}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CountingConfig {
    weights: BTreeMap<TokenType, Weight>,
}

impl Default for CountingConfig {
    /// All four types with weight 1.
    fn default() -> Self {
        CountingConfig {
            weights: TokenType::ALL
                .into_iter()
                .map(|token_type| (token_type, Weight::ONE))
                .collect(),
        }
    }
}

impl CountingConfig {
    /// Builds a setting with the given weights. Absent types do not count.
    pub fn new(weights: impl IntoIterator<Item = (TokenType, Weight)>) -> Self {
        CountingConfig {
            weights: weights.into_iter().collect(),
        }
    }

    pub fn weight(&self, token_type: TokenType) -> Weight {
        self.weights
            .get(&token_type)
            .copied()
            .unwrap_or(Weight::ZERO)
    }

    /// Computes the weighted total of `usage`, rounded down to a whole token and
    /// saturating at `u64::MAX`.
    pub fn count(&self, usage: &TokenUsage) -> u64 {
        let thousandths: u128 = TokenType::ALL
            .into_iter()
            .map(|token_type| {
                u128::from(usage.get(token_type))
                    * u128::from(self.weight(token_type).thousandths())
            })
            .sum();
        u64::try_from(thousandths / 1000).unwrap_or(u64::MAX)
    }

    /// Lists the types that count (weight above 0) with their weights, in the
    /// order input, output, cacheRead, cacheCreation, as the check answer
    /// states them.
    pub fn counted_types(&self) -> Vec<CountedType> {
        TokenType::ALL
            .into_iter()
            .filter(|token_type| self.weight(*token_type) > Weight::ZERO)
            .map(|token_type| CountedType {
                token_type: token_type.as_str().to_owned(),
                weight: self.weight(token_type).as_f64(),
            })
            .collect()
    }
}

impl FromStr for CountingConfig {
    type Err = CountingError;

    /// Parses `TYPE=WEIGHT` pairs separated by commas, such as
    /// `input=1,output=1,cacheRead=0.1,cacheCreation=1`. A type left out
    /// does not count.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut weights = BTreeMap::new();
        for entry in text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
        {
            let (name, weight) = entry
                .split_once('=')
                .ok_or_else(|| CountingError::InvalidEntry(entry.to_owned()))?;
            let token_type: TokenType = name.parse()?;
            let weight: f64 = weight
                .trim()
                .parse()
                .map_err(|_| CountingError::InvalidWeight(weight.trim().to_owned()))?;
            if weights
                .insert(token_type, Weight::from_f64(weight)?)
                .is_some()
            {
                return Err(CountingError::DuplicateType(token_type));
            }
        }
        Ok(CountingConfig { weights })
    }
}

impl fmt::Display for CountingConfig {
    /// Writes the form [`FromStr`] reads, listing types with weight above 0.
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let entries: Vec<String> = self
            .counted_types()
            .into_iter()
            .map(|counted| format!("{}={}", counted.token_type, counted.weight))
            .collect();
        formatter.write_str(&entries.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(input: u64, output: u64, cache_read: u64, cache_creation: u64) -> TokenUsage {
        TokenUsage {
            input,
            output,
            cache_read,
            cache_creation,
        }
    }

    #[test]
    fn weighted_totals() {
        let cases: &[(&str, TokenUsage, u64)] = &[
            (
                "input=1,output=1,cacheRead=1,cacheCreation=1",
                usage(10, 20, 300, 4),
                334,
            ),
            (
                "input=1,output=1,cacheRead=0,cacheCreation=1",
                usage(10, 20, 300, 4),
                34,
            ),
            (
                "input=1,output=1,cacheCreation=1",
                usage(10, 20, 300, 4),
                34,
            ),
            (
                "input=1,output=1,cacheRead=0.1,cacheCreation=1.25",
                usage(10, 20, 300, 4),
                65,
            ),
            // 0.001 × 999 is 0.999, rounded down once after the sum.
            ("cacheRead=0.001", usage(0, 0, 999, 0), 0),
            ("cacheRead=0.001,input=0.001", usage(1, 0, 999, 0), 1),
            ("output=5", usage(10, 20, 300, 4), 100),
            ("", usage(10, 20, 300, 4), 0),
            ("input=100", usage(u64::MAX, 0, 0, 0), u64::MAX),
        ];
        for (setting, usage, expected) in cases {
            let config: CountingConfig = setting.parse().unwrap();
            assert_eq!(config.count(usage), *expected, "{setting} on {usage:?}");
        }
    }

    #[test]
    fn default_counts_all_types_once() {
        let config = CountingConfig::default();
        assert_eq!(config.count(&usage(1, 2, 3, 4)), 10);
        let names: Vec<String> = config
            .counted_types()
            .into_iter()
            .map(|counted| counted.token_type)
            .collect();
        assert_eq!(names, ["input", "output", "cacheRead", "cacheCreation"]);
    }

    #[test]
    fn counted_types_omit_zero_weights() {
        let config: CountingConfig = "cacheCreation=1,input=1,cacheRead=0,output=2"
            .parse()
            .unwrap();
        let counted = config.counted_types();
        assert_eq!(
            counted,
            vec![
                CountedType {
                    token_type: "input".into(),
                    weight: 1.0
                },
                CountedType {
                    token_type: "output".into(),
                    weight: 2.0
                },
                CountedType {
                    token_type: "cacheCreation".into(),
                    weight: 1.0
                },
            ]
        );
        assert_eq!(config.to_string(), "input=1,output=2,cacheCreation=1");
    }

    #[test]
    fn invalid_settings_are_rejected() {
        let cases: &[(&str, CountingError)] = &[
            ("input", CountingError::InvalidEntry("input".into())),
            ("tokens=1", CountingError::UnknownType("tokens".into())),
            ("input=-1", CountingError::InvalidWeight("-1".into())),
            ("input=101", CountingError::InvalidWeight("101".into())),
            (
                "input=0.0001",
                CountingError::InvalidWeight("0.0001".into()),
            ),
            ("input=NaN", CountingError::InvalidWeight("NaN".into())),
            ("input=lots", CountingError::InvalidWeight("lots".into())),
            (
                "input=1,input=0",
                CountingError::DuplicateType(TokenType::Input),
            ),
        ];
        for (setting, expected) in cases {
            let error = setting.parse::<CountingConfig>().expect_err(setting);
            assert_eq!(error, *expected, "{setting}");
        }
    }

    #[test]
    fn config_serde_is_a_weight_map() {
        let config: CountingConfig =
            serde_json::from_str(r#"{"input": 1, "output": 1, "cacheRead": 0.1}"#).unwrap();
        assert_eq!(config.weight(TokenType::CacheRead), Weight(100));
        assert_eq!(config.weight(TokenType::CacheCreation), Weight::ZERO);
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(json, r#"{"input":1.0,"output":1.0,"cacheRead":0.1}"#);
        assert!(serde_json::from_str::<CountingConfig>(r#"{"input": 0.00001}"#).is_err());
        assert!(serde_json::from_str::<CountingConfig>(r#"{"tokens": 1}"#).is_err());
    }
}
