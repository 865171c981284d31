//! User identities and group claims.
//!
//! An identity is the value of the server's identity claim, trimmed and
//! lower-cased, so `" Alice@Example.COM "` and `alice@example.com` are the
//! same user. When the claim is `email` (the default) the value must also
//! look like an email address; any other claim (`sub`, `upn`, a custom
//! claim) only needs to be non-empty text without whitespace or control
//! characters, because providers put opaque ids such as `00u1ab2c3d` or
//! `auth0|65f0c1` there. [`IdentityFormat`] names the two rules.
//!
//! Group names are only trimmed: identity providers treat them as
//! case-sensitive, so a group policy matches a claim exactly.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest identity accepted, in bytes. Provider ids and email
/// addresses are far shorter; the cap keeps a hostile claim out of keys.
pub const MAX_IDENTITY_BYTES: usize = 320;

/// The claim whose values must be email addresses.
pub const EMAIL_CLAIM: &str = "email";

/// How an identity value is checked after trimming and lower-casing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityFormat {
    /// An email address: one `@`, a non-empty local part and a dotted
    /// domain.
    Email,
    /// Any non-empty text without whitespace or control characters, such
    /// as an OIDC `sub`.
    Opaque,
}

impl IdentityFormat {
    /// Returns the format of values of `claim`: [`IdentityFormat::Email`]
    /// for `email`, [`IdentityFormat::Opaque`] for every other claim.
    pub fn for_claim(claim: &str) -> Self {
        if claim.trim() == EMAIL_CLAIM {
            IdentityFormat::Email
        } else {
            IdentityFormat::Opaque
        }
    }
}

/// A normalised user identity: trimmed, lower-cased, non-empty, without
/// whitespace or control characters, at most [`MAX_IDENTITY_BYTES`] long.
/// An identity built with [`Identity::parse_email`] is also an email
/// address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Identity(String);

impl Identity {
    /// Normalises an identity of any claim ([`IdentityFormat::Opaque`]).
    pub fn parse(text: &str) -> Result<Self, IdentityError> {
        Self::parse_as(text, IdentityFormat::Opaque)
    }

    /// Normalises and validates an email address.
    pub fn parse_email(text: &str) -> Result<Self, IdentityError> {
        Self::parse_as(text, IdentityFormat::Email)
    }

    /// Normalises `text` and checks it against `format`.
    pub fn parse_as(text: &str, format: IdentityFormat) -> Result<Self, IdentityError> {
        normalize_identity_as(text, format).map(Identity)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl TryFrom<String> for Identity {
    type Error = IdentityError;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Identity::parse(&text)
    }
}

impl From<Identity> for String {
    fn from(identity: Identity) -> Self {
        identity.0
    }
}

/// An identity that does not satisfy its [`IdentityFormat`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {value:?}: {problem}; {}", fix(*.format))]
pub struct IdentityError {
    /// The text as given.
    pub value: String,
    pub problem: IdentityProblem,
    /// The format the text was checked against.
    pub format: IdentityFormat,
}

fn fix(format: IdentityFormat) -> &'static str {
    match format {
        IdentityFormat::Email => "use an email address such as alice@example.com",
        IdentityFormat::Opaque => {
            "use the user's identity claim value, such as alice@example.com or 00u1ab2c3d"
        }
    }
}

/// The reason an identity is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityProblem {
    #[error("it is empty")]
    Empty,
    #[error("it contains whitespace or a control character")]
    InvalidCharacter,
    #[error("it is longer than 320 bytes")]
    TooLong,
    #[error("it needs exactly one @")]
    NotOneAt,
    #[error("the part before the @ is empty")]
    EmptyLocalPart,
    #[error("the domain after the @ needs at least one dot and no empty labels")]
    InvalidDomain,
}

/// Trims and lower-cases an identity of any claim and checks that it is
/// non-empty, at most [`MAX_IDENTITY_BYTES`] long and free of whitespace
/// and control characters.
pub fn normalize_identity(text: &str) -> Result<String, IdentityError> {
    normalize_identity_as(text, IdentityFormat::Opaque)
}

/// Trims, lower-cases and checks the shape of an email address: the checks
/// of [`normalize_identity`], plus exactly one `@`, a non-empty local part,
/// and a domain of non-empty dot-separated labels with at least one dot.
pub fn normalize_email(text: &str) -> Result<String, IdentityError> {
    normalize_identity_as(text, IdentityFormat::Email)
}

/// Normalises `text` and checks it against `format`.
pub fn normalize_identity_as(text: &str, format: IdentityFormat) -> Result<String, IdentityError> {
    let normalized = text.trim().to_lowercase();
    let checked = check_opaque_shape(&normalized).and_then(|()| match format {
        IdentityFormat::Email => check_email_shape(&normalized),
        IdentityFormat::Opaque => Ok(()),
    });
    checked
        .map(|()| normalized)
        .map_err(|problem| IdentityError {
            value: text.to_owned(),
            problem,
            format,
        })
}

fn check_opaque_shape(identity: &str) -> Result<(), IdentityProblem> {
    if identity.is_empty() {
        return Err(IdentityProblem::Empty);
    }
    if identity
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(IdentityProblem::InvalidCharacter);
    }
    if identity.len() > MAX_IDENTITY_BYTES {
        return Err(IdentityProblem::TooLong);
    }
    Ok(())
}

fn check_email_shape(email: &str) -> Result<(), IdentityProblem> {
    let mut parts = email.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(IdentityProblem::NotOneAt);
    };
    if local.is_empty() {
        return Err(IdentityProblem::EmptyLocalPart);
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        return Err(IdentityProblem::InvalidDomain);
    }
    Ok(())
}

/// A group claim that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid group claim {value:?}: {problem}; send a JSON list of strings, a comma-separated string or a bracketed string such as [admins developers]"
)]
pub struct GroupClaimError {
    pub value: String,
    pub problem: String,
}

/// Parses a group claim that arrived as a string, in any of the forms
/// identity providers and gateways send:
///
/// - JSON list text: `["admins", "developers"]`
/// - comma-separated: `admins, developers`
/// - bracketed and space-separated, as API Gateway flattens a list:
///   `[admins developers]`
///
/// Names are trimmed, empty names dropped, duplicates removed keeping the
/// first. An empty string is no groups.
pub fn parse_group_claim(text: &str) -> Result<Vec<String>, GroupClaimError> {
    let trimmed = text.trim();
    let names: Vec<String> = if trimmed.starts_with('[') && trimmed.contains('"') {
        serde_json::from_str::<Vec<String>>(trimmed).map_err(|error| GroupClaimError {
            value: text.to_owned(),
            problem: format!("it looks like a JSON list but is not one ({error})"),
        })?
    } else if let Some(inner) = trimmed.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(|| GroupClaimError {
            value: text.to_owned(),
            problem: "the opening [ has no closing ]".to_owned(),
        })?;
        inner
            .split(|c: char| c.is_whitespace() || c == ',')
            .map(str::to_owned)
            .collect()
    } else {
        trimmed.split(',').map(str::to_owned).collect()
    };
    Ok(clean_group_names(names))
}

/// Trims group names, drops empty and invalid ones
/// ([`crate::validate_group_name`]) and removes duplicates, keeping the
/// first occurrence. Use it on a claim that arrived as a JSON list. An
/// invalid name cannot name a new group policy, so a token that carries
/// one keeps its other groups and is not rejected.
pub fn clean_group_names<I, S>(names: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut cleaned: Vec<String> = Vec::new();
    for name in names {
        let name = name.as_ref().trim();
        if crate::policy::validate_group_name(name).is_ok()
            && !cleaned.iter().any(|seen| seen == name)
        {
            cleaned.push(name.to_owned());
        }
    }
    cleaned
}

/// A group claim as it appears in a token's JSON: a list of strings or a
/// single string in one of the forms of [`parse_group_claim`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupClaim(pub Vec<String>);

impl<'de> Deserialize<'de> for GroupClaim {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Text(String),
        }

        match Raw::deserialize(deserializer)? {
            Raw::List(names) => Ok(GroupClaim(clean_group_names(names))),
            Raw::Text(text) => parse_group_claim(&text)
                .map(GroupClaim)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_normalised() {
        let cases: &[(&str, &str)] = &[
            ("alice@example.com", "alice@example.com"),
            ("  Alice@Example.COM ", "alice@example.com"),
            (
                "BOB.SMITH+quota@corp.example.org",
                "bob.smith+quota@corp.example.org",
            ),
            ("\tcarol@example.co.uk\n", "carol@example.co.uk"),
        ];
        for (text, expected) in cases {
            assert_eq!(normalize_email(text).as_deref(), Ok(*expected), "{text:?}");
            assert_eq!(
                normalize_identity(text).as_deref(),
                Ok(*expected),
                "{text:?}"
            );
        }
    }

    #[test]
    fn opaque_identities_need_no_at() {
        let cases: &[(&str, &str)] = &[
            ("00u1AB2c3D", "00u1ab2c3d"),
            (" auth0|65F0c1 ", "auth0|65f0c1"),
            ("alice", "alice"),
            ("a@b@example.com", "a@b@example.com"),
        ];
        for (text, expected) in cases {
            assert_eq!(
                normalize_identity(text).as_deref(),
                Ok(*expected),
                "{text:?}"
            );
        }
        let too_long = "a".repeat(MAX_IDENTITY_BYTES + 1);
        let rejected: &[(&str, IdentityProblem)] = &[
            ("", IdentityProblem::Empty),
            (" \t ", IdentityProblem::Empty),
            ("al ice", IdentityProblem::InvalidCharacter),
            ("al\u{0}ice", IdentityProblem::InvalidCharacter),
            (&too_long, IdentityProblem::TooLong),
        ];
        for (text, expected) in rejected {
            let error = normalize_identity(text).expect_err(text);
            assert_eq!(error.problem, *expected, "{text:?}");
            assert_eq!(error.format, IdentityFormat::Opaque);
        }
    }

    #[test]
    fn claim_decides_format() {
        assert_eq!(IdentityFormat::for_claim("email"), IdentityFormat::Email);
        assert_eq!(IdentityFormat::for_claim("sub"), IdentityFormat::Opaque);
        assert_eq!(IdentityFormat::for_claim("upn"), IdentityFormat::Opaque);
        assert!(Identity::parse_as("00u1", IdentityFormat::for_claim("email")).is_err());
        assert!(Identity::parse_as("00u1", IdentityFormat::for_claim("sub")).is_ok());
    }

    #[test]
    fn invalid_identities_are_rejected() {
        let cases: &[(&str, IdentityProblem)] = &[
            ("", IdentityProblem::Empty),
            ("   ", IdentityProblem::Empty),
            ("alice", IdentityProblem::NotOneAt),
            ("alice@@example.com", IdentityProblem::NotOneAt),
            ("a@b@example.com", IdentityProblem::NotOneAt),
            ("@example.com", IdentityProblem::EmptyLocalPart),
            ("alice@", IdentityProblem::InvalidDomain),
            ("alice@localhost", IdentityProblem::InvalidDomain),
            ("alice@example.", IdentityProblem::InvalidDomain),
            ("alice@.example.com", IdentityProblem::InvalidDomain),
            ("alice@example..com", IdentityProblem::InvalidDomain),
            ("al ice@example.com", IdentityProblem::InvalidCharacter),
            ("alice@exa\u{7}mple.com", IdentityProblem::InvalidCharacter),
        ];
        for (text, expected) in cases {
            let error = normalize_email(text).expect_err(text);
            assert_eq!(error.problem, *expected, "{text:?}");
        }
    }

    #[test]
    fn identity_error_names_value_and_fix() {
        let message = Identity::parse_email("alice").unwrap_err().to_string();
        assert!(message.contains("\"alice\""), "{message}");
        assert!(message.contains("alice@example.com"), "{message}");
    }

    #[test]
    fn identity_deserializes_normalised() {
        let identity: Identity = serde_json::from_str("\" Alice@Example.com\"").unwrap();
        assert_eq!(identity.as_str(), "alice@example.com");
        assert!(serde_json::from_str::<Identity>("\"no body\"").is_err());
    }

    #[test]
    fn group_claim_forms_parse() {
        let cases: &[(&str, &[&str])] = &[
            (r#"["admins", "developers"]"#, &["admins", "developers"]),
            (r#"[ "admins" ]"#, &["admins"]),
            ("admins,developers", &["admins", "developers"]),
            (" admins , developers ,", &["admins", "developers"]),
            ("[admins developers]", &["admins", "developers"]),
            ("[admins]", &["admins"]),
            ("[]", &[]),
            ("", &[]),
            ("admins", &["admins"]),
            ("Admins,admins,Admins", &["Admins", "admins"]),
            ("[a,b c]", &["a", "b", "c"]),
        ];
        for (text, expected) in cases {
            let parsed = parse_group_claim(text).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(parsed, *expected, "{text:?}");
        }
    }

    #[test]
    fn malformed_group_claims_are_rejected() {
        for text in [r#"["admins", 3]"#, r#"["admins""#, "[admins developers"] {
            let error = parse_group_claim(text).expect_err(text);
            assert_eq!(error.value, text);
            assert!(error.to_string().contains("JSON list"), "{error}");
        }
    }

    #[test]
    fn group_claim_deserializes_list_or_text() {
        let cases: &[(&str, &[&str])] = &[
            (
                r#"["admins", " developers ", ""]"#,
                &["admins", "developers"],
            ),
            (r#""[admins developers]""#, &["admins", "developers"]),
            (r#""admins,developers""#, &["admins", "developers"]),
            (r#""[\"admins\"]""#, &["admins"]),
        ];
        for (json, expected) in cases {
            let claim: GroupClaim = serde_json::from_str(json).unwrap();
            assert_eq!(claim.0, *expected, "{json}");
        }
        assert!(serde_json::from_str::<GroupClaim>("42").is_err());
    }
}
