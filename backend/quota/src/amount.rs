//! Token amounts as administrators write them: `500M`, `1.5B`, `15K`, `15k`
//! or a plain integer.
//!
//! [`parse_amount`] accepts a whole number of tokens, optionally scaled by a
//! suffix `K` (thousand), `M` (million) or `B` (billion, 10^9), in either
//! case. A fraction is allowed only when the scaled value is a whole number
//! of tokens (`1.5K` is 1500, `1.2345K` is rejected).
//!
//! [`format_amount`] writes the shortest exact form: every candidate
//! (the plain integer and each suffix with a whole part of at least 1) is
//! exact, the shortest string wins, and a tie goes to the larger suffix. So
//! 1500000 is `1.5M`, 225000000 is `225M`, 1500 is `1.5K`, and 1234567 stays
//! `1234567` because `1.234567M` is longer. `parse_amount(format_amount(n))`
//! is `n` for every `u64`.
//!
//! [`display_amount`] is the approximate form for human messages
//! (`230.52M`), never parsed back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The accepted forms, repeated in every parse error.
const ACCEPTED_FORMS: &str =
    "use a whole number of tokens (1500000) or a number with K, M or B (15K, 500M, 1.5B)";

/// The suffixes, largest first, with their multipliers and the number of
/// decimal digits a fraction may have under each.
const UNITS: [(char, u64, usize); 3] = [
    ('B', 1_000_000_000, 9),
    ('M', 1_000_000, 6),
    ('K', 1_000, 3),
];

/// An invalid token amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid token amount {value:?}: {problem}; {ACCEPTED_FORMS}")]
pub struct AmountError {
    /// The text as given.
    pub value: String,
    /// The reason it is invalid.
    pub problem: AmountProblem,
}

/// The reason a token amount is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountProblem {
    #[error("the amount is empty")]
    Empty,
    #[error("negative amounts are not allowed")]
    Negative,
    #[error("it contains a character that is not a digit, a decimal point or a K, M or B suffix")]
    InvalidCharacter,
    #[error("it has more than one decimal point")]
    SeveralDecimalPoints,
    #[error("it needs digits on both sides of the decimal point")]
    MissingDigits,
    #[error("it is not a whole number of tokens")]
    NotWhole,
    #[error("it is larger than the maximum of 18446744073709551615 tokens")]
    TooLarge,
}

/// Parses a token amount such as `500M`, `1.5B`, `15k` or `2000`.
pub fn parse_amount(text: &str) -> Result<u64, AmountError> {
    parse_inner(text.trim()).map_err(|problem| AmountError {
        value: text.to_owned(),
        problem,
    })
}

fn parse_inner(text: &str) -> Result<u64, AmountProblem> {
    if text.is_empty() {
        return Err(AmountProblem::Empty);
    }
    if text.starts_with('-') {
        return Err(AmountProblem::Negative);
    }

    let (number, multiplier, max_fraction_digits) = split_suffix(text);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    if fraction.is_some_and(|fraction| fraction.contains('.')) {
        return Err(AmountProblem::SeveralDecimalPoints);
    }
    let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
    if !all_digits(whole) || !fraction.is_none_or(all_digits) {
        return Err(AmountProblem::InvalidCharacter);
    }
    if whole.is_empty() || fraction.is_some_and(str::is_empty) {
        return Err(AmountProblem::MissingDigits);
    }

    let whole_value = parse_digits(whole)?
        .checked_mul(u128::from(multiplier))
        .ok_or(AmountProblem::TooLarge)?;

    // Trailing zeros of a fraction add nothing, so `1.50M` equals `1.5M`.
    let fraction = fraction.unwrap_or("").trim_end_matches('0');
    if fraction.len() > max_fraction_digits {
        return Err(AmountProblem::NotWhole);
    }
    let fraction_value = if fraction.is_empty() {
        0
    } else {
        let scale = 10u128.pow(u32::try_from(max_fraction_digits - fraction.len()).unwrap_or(0));
        parse_digits(fraction)? * scale
    };

    let total = whole_value + fraction_value;
    u64::try_from(total).map_err(|_| AmountProblem::TooLarge)
}

/// Splits off a K, M or B suffix, returning the number, the multiplier and
/// how many fraction digits the multiplier allows.
fn split_suffix(text: &str) -> (&str, u64, usize) {
    let Some(last) = text.chars().last() else {
        return (text, 1, 0);
    };
    for (suffix, multiplier, digits) in UNITS {
        if last.eq_ignore_ascii_case(&suffix) {
            return (&text[..text.len() - 1], multiplier, digits);
        }
    }
    (text, 1, 0)
}

/// Parses ASCII digits into a `u128`, reporting overflow as too large.
fn parse_digits(digits: &str) -> Result<u128, AmountProblem> {
    digits.bytes().try_fold(0u128, |value, byte| {
        value
            .checked_mul(10)
            .and_then(|value| value.checked_add(u128::from(byte - b'0')))
            .ok_or(AmountProblem::TooLarge)
    })
}

/// Formats a token amount in its shortest exact form (see the module docs).
pub fn format_amount(tokens: u64) -> String {
    let mut best = tokens.to_string();
    for (suffix, multiplier, digits) in UNITS {
        let whole = tokens / multiplier;
        if whole == 0 {
            continue;
        }
        let remainder = tokens % multiplier;
        let candidate = if remainder == 0 {
            format!("{whole}{suffix}")
        } else {
            let fraction = format!("{remainder:0digits$}");
            format!("{whole}.{}{suffix}", fraction.trim_end_matches('0'))
        };
        // Larger suffixes come first, so a tie keeps the larger one.
        if candidate.len() < best.len()
            || (candidate.len() == best.len() && !best.ends_with(['K', 'M', 'B']))
        {
            best = candidate;
        }
    }
    best
}

/// Formats a token amount for people: the largest suffix the amount reaches,
/// truncated to two decimals (`230.52M`). Truncation never overstates usage.
pub fn display_amount(tokens: u64) -> String {
    for (suffix, multiplier, _) in UNITS {
        if tokens >= multiplier {
            let hundredths = u128::from(tokens) * 100 / u128::from(multiplier);
            let whole = hundredths / 100;
            let fraction = hundredths % 100;
            return if fraction == 0 {
                format!("{whole}{suffix}")
            } else {
                let fraction = format!("{fraction:02}");
                format!("{whole}.{}{suffix}", fraction.trim_end_matches('0'))
            };
        }
    }
    tokens.to_string()
}

/// A token amount that parses with [`parse_amount`] and formats with
/// [`format_amount`]. Serde writes it as a string such as `"225M"` and also
/// reads a JSON integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TokenAmount(pub u64);

impl TokenAmount {
    /// Returns the number of tokens.
    pub fn tokens(self) -> u64 {
        self.0
    }
}

impl FromStr for TokenAmount {
    type Err = AmountError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_amount(text).map(TokenAmount)
    }
}

impl fmt::Display for TokenAmount {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&format_amount(self.0))
    }
}

impl From<u64> for TokenAmount {
    fn from(tokens: u64) -> Self {
        TokenAmount(tokens)
    }
}

impl Serialize for TokenAmount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format_amount(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenAmount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;

        impl serde::de::Visitor<'_> for AmountVisitor {
            type Value = TokenAmount;

            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a token amount such as 225M, 1.5B, 15K or 2000")
            }

            fn visit_u64<E: serde::de::Error>(self, tokens: u64) -> Result<TokenAmount, E> {
                Ok(TokenAmount(tokens))
            }

            fn visit_i64<E: serde::de::Error>(self, tokens: i64) -> Result<TokenAmount, E> {
                u64::try_from(tokens).map(TokenAmount).map_err(|_| {
                    E::custom(format!(
                        "invalid token amount {tokens}: negative amounts are not allowed"
                    ))
                })
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TokenAmount, E> {
                parse_amount(text).map(TokenAmount).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(AmountVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_accepts_documented_forms() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("2000", 2000),
            ("15K", 15_000),
            ("15k", 15_000),
            ("500M", 500_000_000),
            ("500m", 500_000_000),
            ("1.5B", 1_500_000_000),
            ("1.5b", 1_500_000_000),
            ("225M", 225_000_000),
            ("1.50M", 1_500_000),
            ("1.234567M", 1_234_567),
            ("0.5K", 500),
            ("1.0", 1),
            ("  42M ", 42_000_000),
            ("007", 7),
            ("18446744073709551615", u64::MAX),
            ("18446744073.709551615B", u64::MAX),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_amount(text), Ok(*expected), "parsing {text:?}");
        }
    }

    #[test]
    fn parse_rejects_invalid_forms() {
        let cases: &[(&str, AmountProblem)] = &[
            ("", AmountProblem::Empty),
            ("   ", AmountProblem::Empty),
            ("12Q", AmountProblem::InvalidCharacter),
            ("-5", AmountProblem::Negative),
            ("-5M", AmountProblem::Negative),
            ("+5", AmountProblem::InvalidCharacter),
            ("1.5.5M", AmountProblem::SeveralDecimalPoints),
            ("1,000", AmountProblem::InvalidCharacter),
            ("1 000", AmountProblem::InvalidCharacter),
            ("M", AmountProblem::MissingDigits),
            (".5M", AmountProblem::MissingDigits),
            ("5.M", AmountProblem::MissingDigits),
            ("1.5", AmountProblem::NotWhole),
            ("1.2345K", AmountProblem::NotWhole),
            ("1MM", AmountProblem::InvalidCharacter),
            ("18446744073709551616", AmountProblem::TooLarge),
            ("18446744074B", AmountProblem::TooLarge),
            (
                "99999999999999999999999999999999999999999",
                AmountProblem::TooLarge,
            ),
        ];
        for (text, expected) in cases {
            let error = parse_amount(text).expect_err(text);
            assert_eq!(error.problem, *expected, "parsing {text:?}");
            assert_eq!(error.value, *text);
        }
    }

    #[test]
    fn parse_error_names_value_and_forms() {
        let message = parse_amount("12Q").unwrap_err().to_string();
        assert!(message.contains("\"12Q\""), "{message}");
        assert!(message.contains("500M"), "{message}");
        assert!(message.contains("1.5B"), "{message}");
    }

    #[test]
    fn format_writes_shortest_exact_form() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (7, "7"),
            (999, "999"),
            (1_000, "1K"),
            (1_500, "1.5K"),
            (15_000, "15K"),
            (100_000, "100K"),
            (1_000_000, "1M"),
            (1_500_000, "1.5M"),
            (1_234_567, "1234567"),
            (1_234_000, "1234K"),
            (8_250_000, "8.25M"),
            (225_000_000, "225M"),
            (1_500_000_000, "1.5B"),
            (1_000_000_000_000, "1000B"),
            (u64::MAX, "18446744073709551615"),
        ];
        for (tokens, expected) in cases {
            assert_eq!(format_amount(*tokens), *expected, "formatting {tokens}");
        }
    }

    #[test]
    fn display_truncates_to_two_decimals() {
        let cases: &[(u64, &str)] = &[
            (0, "0"),
            (999, "999"),
            (1_234, "1.23K"),
            (1_239, "1.23K"),
            (230_520_000, "230.52M"),
            (224_999_999, "224.99M"),
            (225_000_000, "225M"),
            (1_500_000_000, "1.5B"),
        ];
        for (tokens, expected) in cases {
            assert_eq!(display_amount(*tokens), *expected, "displaying {tokens}");
        }
    }

    #[test]
    fn token_amount_serde_uses_text_form() {
        let json = serde_json::to_string(&TokenAmount(225_000_000)).unwrap();
        assert_eq!(json, "\"225M\"");
        let parsed: TokenAmount = serde_json::from_str("\"1.5B\"").unwrap();
        assert_eq!(parsed, TokenAmount(1_500_000_000));
        let parsed: TokenAmount = serde_json::from_str("2000").unwrap();
        assert_eq!(parsed, TokenAmount(2000));
        assert!(serde_json::from_str::<TokenAmount>("\"12Q\"").is_err());
        assert!(serde_json::from_str::<TokenAmount>("-5").is_err());
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(tokens in any::<u64>()) {
            prop_assert_eq!(parse_amount(&format_amount(tokens)), Ok(tokens));
        }

        #[test]
        fn round_numbers_round_trip(whole in 1u64..100_000, unit in 0usize..3) {
            let tokens = whole * UNITS[unit].1;
            let text = format_amount(tokens);
            prop_assert!(text.len() <= tokens.to_string().len());
            prop_assert_eq!(parse_amount(&text), Ok(tokens));
        }

        #[test]
        fn format_is_never_longer_than_plain(tokens in any::<u64>()) {
            prop_assert!(format_amount(tokens).len() <= tokens.to_string().len());
        }
    }
}
