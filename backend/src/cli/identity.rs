//! User identities given on the command line or in an import file.
//!
//! The CLI normalises an identity as the server does (trimmed,
//! lower-cased). It checks the email shape when the deployment's identity
//! claim is `email`, and also for any input that contains an `@`, because
//! such input is clearly meant as an email address: `ann@@example.com` is a
//! typo even where users are identified by `sub`.

use tollgate_quota::{Identity, IdentityError, IdentityFormat};

use super::DeploymentArgs;

/// Returns the format a user identity given to the CLI must have.
pub fn format_for(text: &str, deployment: &DeploymentArgs) -> IdentityFormat {
    let claim_format = IdentityFormat::for_claim(&deployment.identity_claim);
    if claim_format == IdentityFormat::Email || text.contains('@') {
        IdentityFormat::Email
    } else {
        IdentityFormat::Opaque
    }
}

/// Normalises and checks a user identity given to the CLI.
pub fn parse_user(text: &str, deployment: &DeploymentArgs) -> Result<Identity, String> {
    Identity::parse_as(text, format_for(text, deployment))
        .map_err(|error| describe_error(&error, deployment))
}

/// Describes an identity error, adding the `--identity-claim` hint when the
/// email rule came from the claim setting.
pub fn describe_error(error: &IdentityError, deployment: &DeploymentArgs) -> String {
    let claim_format = IdentityFormat::for_claim(&deployment.identity_claim);
    if error.format == IdentityFormat::Email
        && claim_format == IdentityFormat::Email
        && !error.value.contains('@')
    {
        format!(
            "{error} (users are identified by the email claim; if the server uses another \
             claim, such as sub, pass the same --identity-claim or set TOLLGATE_IDENTITY_CLAIM)"
        )
    } else {
        error.to_string()
    }
}
