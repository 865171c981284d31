//! The identity and groups a validated token carries.
//!
//! The identity is the configured claim (default `email`) normalised by
//! [`tollgate_quota::Identity::parse_as`]: trimmed and lower-cased, so that
//! `Ann@Example.com ` and `ann@example.com` share one policy and one usage
//! counter, exactly as the admin CLI stores them. Values of the `email`
//! claim must look like email addresses; values of any other claim (such
//! as `sub`) only need to be non-empty text without whitespace. Groups come from each
//! configured group claim, in any form [`tollgate_quota::GroupClaim`]
//! reads: a JSON list, a comma-separated string, or API Gateway's rendering
//! of a list as `[a b]`.

use serde_json::{Map, Value};
use tollgate_quota::{GroupClaim, Identity, IdentityFormat, clean_group_names};

use super::{AuthConfig, AuthError};

/// The user a validated token belongs to, with their groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The normalised identity: trimmed and lower-cased.
    pub identity: Identity,
    /// The group names, trimmed, without duplicates, in claim order.
    pub groups: Vec<String>,
}

/// Reads the identity and groups from validated claims.
pub fn caller_from_claims(
    claims: &Map<String, Value>,
    config: &AuthConfig,
) -> Result<Caller, AuthError> {
    let claim = &config.identity_claim;
    let raw = claims
        .get(claim)
        .and_then(Value::as_str)
        .ok_or_else(|| AuthError::MissingIdentity(claim.clone()))?;
    let identity = Identity::parse_as(raw, IdentityFormat::for_claim(claim))
        .map_err(|error| AuthError::InvalidIdentity(claim.clone(), error.problem.to_string()))?;

    let mut groups: Vec<String> = Vec::new();
    for claim in &config.group_claims {
        let Some(value) = claims.get(claim) else {
            continue;
        };
        match serde_json::from_value::<GroupClaim>(value.clone()) {
            Ok(GroupClaim(names)) => groups.extend(names),
            // A malformed group claim costs the user their group policies,
            // not their access: the user and default policies still apply.
            Err(error) => {
                tracing::debug!(claim, %error, "ignored a group claim that does not parse")
            }
        }
    }
    Ok(Caller {
        identity,
        groups: clean_group_names(groups),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> AuthConfig {
        AuthConfig::new("http://127.0.0.1:1", "tollgate-cli")
    }

    fn claims(value: Value) -> Map<String, Value> {
        value
            .as_object()
            .expect("the test claims are an object")
            .clone()
    }

    fn groups_of(claim: Value) -> Vec<String> {
        caller_from_claims(
            &claims(json!({"email": "a@example.com", "groups": claim})),
            &config(),
        )
        .expect("the claims carry a valid email")
        .groups
    }

    #[test]
    fn identity_is_trimmed_and_lowercased() {
        let identity =
            caller_from_claims(&claims(json!({"email": "  Ann@Example.COM "})), &config()).unwrap();
        assert_eq!(identity.identity.as_str(), "ann@example.com");
        assert!(identity.groups.is_empty());
    }

    #[test]
    fn missing_identity_claim_is_rejected() {
        let error = caller_from_claims(&claims(json!({"sub": "123"})), &config()).unwrap_err();
        assert_eq!(error.code(), "missing_identity");
        assert!(error.to_string().contains("\"email\""), "{error}");

        let error = caller_from_claims(&claims(json!({"email": 42})), &config()).unwrap_err();
        assert_eq!(error.code(), "missing_identity");
    }

    #[test]
    fn malformed_identity_is_rejected() {
        for raw in ["   ", "not-an-email", "a@b@example.com"] {
            let error = caller_from_claims(&claims(json!({"email": raw})), &config()).unwrap_err();
            assert_eq!(error.code(), "invalid_identity", "{raw:?}");
        }
    }

    #[test]
    fn configured_identity_claim_is_used() {
        let mut config = config();
        config.identity_claim = "upn".to_owned();
        let identity = caller_from_claims(
            &claims(json!({"email": "a@example.com", "upn": "Bob@Corp.Example"})),
            &config,
        )
        .unwrap();
        assert_eq!(identity.identity.as_str(), "bob@corp.example");
    }

    #[test]
    fn non_email_claim_needs_no_at() {
        let mut config = config();
        config.identity_claim = "sub".to_owned();
        let caller = caller_from_claims(
            &claims(json!({"email": "a@example.com", "sub": " 00U1AbC "})),
            &config,
        )
        .unwrap();
        assert_eq!(caller.identity.as_str(), "00u1abc");

        let error = caller_from_claims(&claims(json!({"sub": "two words"})), &config).unwrap_err();
        assert_eq!(error.code(), "invalid_identity");
    }

    #[test]
    fn groups_parse_all_three_forms() {
        assert_eq!(groups_of(json!(["admins", " devs "])), ["admins", "devs"]);
        assert_eq!(groups_of(json!("admins, devs")), ["admins", "devs"]);
        assert_eq!(groups_of(json!("[admins devs]")), ["admins", "devs"]);
        assert_eq!(groups_of(json!("admins")), ["admins"]);
        assert_eq!(groups_of(json!("[]")), Vec::<String>::new());
        assert_eq!(groups_of(json!("")), Vec::<String>::new());
    }

    #[test]
    fn invalid_group_names_are_ignored() {
        let long_name = "g".repeat(300);
        let groups = groups_of(json!([
            "eng-platform",
            "Engineering Platform",
            "ai:admins",
            "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
            "a,b",
            "line\nbreak",
            "=HYPERLINK(\"http://x\",\"y\")",
            "@admins",
            long_name,
        ]));
        assert_eq!(
            groups,
            [
                "eng-platform",
                "Engineering Platform",
                "ai:admins",
                "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
            ]
        );
    }

    #[test]
    fn malformed_group_claim_gives_no_groups() {
        assert_eq!(groups_of(json!(7)), Vec::<String>::new());
        assert_eq!(groups_of(json!("[admins")), Vec::<String>::new());
    }

    #[test]
    fn groups_merge_across_claims_without_duplicates() {
        let identity = caller_from_claims(
            &claims(json!({
                "email": "a@example.com",
                "groups": ["devs", "ops"],
                "cognito:groups": "[ops admins]",
            })),
            &config(),
        )
        .unwrap();
        assert_eq!(identity.groups, ["devs", "ops", "admins"]);
    }
}
