//! `tollgate-agent doctor`: checks each piece a working setup needs and
//! states a fix for each problem found.
//!
//! Nothing here changes the setup apart from the keyring probe, which
//! writes, reads and deletes one test entry.

mod aws_files;
mod local;
mod network;

use std::path::Path;

use crate::config::{self, ConfigError, Profile};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// Works, but something deserves attention.
    Warn,
    Fail,
    /// Not applicable, or not possible because an earlier check failed.
    Skip,
}

/// One check: what was checked, what was found, and the fix.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Pass,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn skip(name: &'static str, detail: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Skip,
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            outcome: Outcome::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Runs every check for `profile` (else `$TOLLGATE_PROFILE` as passed by
/// the caller, else the only profile) and returns them in order.
pub async fn run(profile: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    let path = config::config_path(|name| std::env::var_os(name));
    // Why the profile checks are skipped, when they are.
    let mut skip_reason = "skipped because the config is invalid";
    let profile = match config::load(&path) {
        Ok(config) => match config.default_profile(profile) {
            Ok(found) => {
                checks.push(Check::pass(
                    "config",
                    format!(
                        "`{}` is valid; checking profile `{}` (issuer {})",
                        path.display(),
                        found.name,
                        found.issuer
                    ),
                ));
                Some(found.clone())
            }
            Err(ConfigError::AmbiguousProfile { configured, .. }) => {
                skip_reason = "skipped because no profile was picked";
                checks.push(Check::warn(
                    "config",
                    format!(
                        "`{}` is valid and has {} profiles ({}); doctor checks one profile at a time",
                        path.display(),
                        configured.len(),
                        configured.join(", ")
                    ),
                    format!(
                        "run `tollgate-agent doctor --profile NAME` with NAME one of {}, or set {}",
                        configured.join(", "),
                        config::PROFILE_ENV
                    ),
                ));
                None
            }
            Err(error) => {
                skip_reason = "skipped because the requested profile is not configured";
                checks.push(Check::fail(
                    "config",
                    error.to_string(),
                    "pass --profile with one of the configured profiles",
                ));
                None
            }
        },
        Err(error) => {
            let fix = config_fix(&error, &path);
            checks.push(Check::fail("config", error.to_string(), fix));
            None
        }
    };

    checks.push(local::keyring());
    checks.extend(local::runtime_folder());

    let Some(profile) = profile else {
        for name in ["identity provider", "quota backend", "clock", "aws config"] {
            checks.push(Check::skip(name, skip_reason));
        }
        return checks;
    };
    checks.extend(profile_checks(&profile).await);
    checks
}

/// Returns the fix for a config file that failed to load. For an invalid
/// value it names the key, the profile and the advice from the message.
fn config_fix(error: &ConfigError, path: &Path) -> String {
    match error {
        ConfigError::Invalid { message, .. } => match invalid_key_advice(message) {
            Some((profile, key, advice)) => format!(
                "edit `{key}` in [profiles.{profile}] of `{}`: {advice}",
                path.display()
            ),
            None => format!("edit `{}` as the message above says", path.display()),
        },
        ConfigError::Syntax { .. } => format!(
            "edit `{}` at the line and column above, then run doctor again",
            path.display()
        ),
        _ => format!(
            "make `{}` a readable TOML file with a [profiles.NAME] table, or set {} to one",
            path.display(),
            config::CONFIG_ENV
        ),
    }
}

/// Splits the first line of a validation message, of the form
/// ``profile `P`: `KEY` ...; ADVICE``, into the profile, the key and the
/// advice.
fn invalid_key_advice(message: &str) -> Option<(&str, &str, &str)> {
    // Several invalid settings come one per line; the first one is named.
    let first = message.lines().next()?;
    let rest = first.strip_prefix("profile `")?;
    let (profile, rest) = rest.split_once("`: `")?;
    let (key, rest) = rest.split_once('`')?;
    let (_, advice) = rest.split_once("; ")?;
    Some((profile, key, advice))
}

async fn profile_checks(profile: &Profile) -> Vec<Check> {
    let mut checks = Vec::new();
    let http = match network::client() {
        Ok(http) => http,
        Err(error) => {
            checks.push(Check::fail(
                "identity provider",
                format!("could not build an HTTP client: {error}"),
                "report this as a bug",
            ));
            return checks;
        }
    };
    let mut dates = Vec::new();
    let (idp, idp_date) = network::identity_provider(&http, profile).await;
    checks.extend(idp);
    dates.extend(idp_date);
    let (backend, backend_date) = network::backend(&http, profile).await;
    checks.push(backend);
    dates.extend(backend_date);
    checks.push(network::clock(&dates));
    checks.extend(aws_files::check(profile));
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fix_names_invalid_key() {
        let error = ConfigError::Invalid {
            path: "/home/x/agent.toml".into(),
            message: "profile `bedrock`: `redirect_port` = 0 is out of range; use 1 to 65535"
                .into(),
        };
        assert_eq!(
            config_fix(&error, Path::new("/home/x/agent.toml")),
            "edit `redirect_port` in [profiles.bedrock] of `/home/x/agent.toml`: use 1 to 65535"
        );
    }
}
