//! Checks of `~/.aws/config` and `~/.aws/credentials`: a profile must run
//! the shim through `credential_process`, and no section of the same name
//! in the credentials file may shadow it.
//!
//! botocore (the AWS CLI, boto3) and the JavaScript SDK read static keys
//! from the credentials file before they run a `credential_process`, so a
//! `[NAME]` section with `aws_access_key_id` there wins over Tollgate.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ini::Ini;

use super::Check;
use crate::config::Profile;

const SHIM: &str = "tollgate-credential-process";

fn aws_file(variable: &str, default_name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(variable).filter(|path| !path.is_empty()) {
        return PathBuf::from(path);
    }
    directories::BaseDirs::new()
        .map(|dirs| dirs.home_dir().join(".aws").join(default_name))
        .unwrap_or_else(|| PathBuf::from(".aws").join(default_name))
}

/// Returns the AWS profile name of a `~/.aws/config` section name.
fn profile_name(section: &str) -> Option<&str> {
    if section == "default" {
        return Some("default");
    }
    section
        .strip_prefix("profile")
        .filter(|rest| rest.starts_with(char::is_whitespace))
        .map(str::trim)
}

/// Whether a `credential_process` line runs the shim for `profile`.
/// Without `--profile` the shim picks `$TOLLGATE_PROFILE` or the only
/// profile, so such a line counts too.
fn runs_shim_for(line: &str, profile: &str) -> bool {
    let words: Vec<&str> = line
        .split_whitespace()
        .map(|word| word.trim_matches(|c| c == '"' || c == '\''))
        .collect();
    if !words.first().is_some_and(|program| program.ends_with(SHIM)) {
        return false;
    }
    let mut named = None;
    for (index, word) in words.iter().enumerate() {
        if *word == "--profile" {
            named = words.get(index + 1).copied();
        } else if let Some(value) = word.strip_prefix("--profile=") {
            named = Some(value);
        }
    }
    named.is_none_or(|named| named == profile)
}

/// Finds the program of a command line, searching `PATH` for a bare name.
fn program_path(line: &str) -> Option<PathBuf> {
    let program = line
        .split_whitespace()
        .next()?
        .trim_matches(|c| c == '"' || c == '\'');
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|folder| folder.join(program))
        .find(|candidate| candidate.is_file())
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// Runs the AWS config and credentials file checks.
pub fn check(profile: &Profile) -> Vec<Check> {
    const CONFIG: &str = "aws config";
    const CREDENTIALS: &str = "aws credentials";
    let config_path = aws_file("AWS_CONFIG_FILE", "config");
    let add_fix = format!(
        "add to `{}`:\n       [profile {name}]\n       credential_process = {SHIM} --profile {name}\n       region = {region}",
        config_path.display(),
        name = profile.name,
        region = profile.region
    );
    let config = match Ini::load_from_file_noescape(&config_path) {
        Ok(config) => config,
        Err(ini::Error::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::fail(
                CONFIG,
                format!("`{}` does not exist", config_path.display()),
                add_fix,
            )];
        }
        Err(error) => {
            return vec![Check::fail(
                CONFIG,
                format!("`{}` could not be read: {error}", config_path.display()),
                format!("fix the syntax of `{}`", config_path.display()),
            )];
        }
    };
    let matching: Vec<(String, String)> = config
        .iter()
        .filter_map(|(section, properties)| {
            let name = profile_name(section?)?;
            let line = properties.get("credential_process")?;
            runs_shim_for(line, &profile.name).then(|| (name.to_string(), line.to_string()))
        })
        .collect();
    if matching.is_empty() {
        return vec![Check::fail(
            CONFIG,
            format!(
                "no profile in `{}` runs `{SHIM} --profile {}` as credential_process",
                config_path.display(),
                profile.name
            ),
            add_fix,
        )];
    }
    let mut checks = Vec::new();
    for (name, line) in &matching {
        checks.push(match program_path(line) {
            Some(program) if is_executable(&program) => Check::pass(
                CONFIG,
                format!("AWS profile `{name}` runs `{line}` ({})", program.display()),
            ),
            Some(program) => Check::fail(
                CONFIG,
                format!(
                    "AWS profile `{name}` runs `{line}`, but `{}` is not an executable file",
                    program.display()
                ),
                "point credential_process at the installed tollgate-credential-process",
            ),
            None => Check::fail(
                CONFIG,
                format!("AWS profile `{name}` runs `{line}`, but `{SHIM}` is not on PATH"),
                "use the absolute path of tollgate-credential-process in credential_process",
            ),
        });
    }
    if let Some(selected) = std::env::var("AWS_PROFILE")
        .ok()
        .filter(|name| !name.is_empty())
        && !matching.iter().any(|(name, _)| *name == selected)
    {
        checks.push(Check::warn(
            CONFIG,
            format!("AWS_PROFILE is `{selected}`, which does not run the shim for this profile"),
            format!(
                "set AWS_PROFILE={} (in Claude Code's settings `env`, too)",
                matching[0].0
            ),
        ));
    }

    let credentials_path = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let credentials = match Ini::load_from_file_noescape(&credentials_path) {
        Ok(credentials) => credentials,
        Err(ini::Error::Io(error)) if error.kind() == std::io::ErrorKind::NotFound => {
            checks.push(Check::pass(
                CREDENTIALS,
                format!(
                    "`{}` does not exist, so nothing shadows the profile",
                    credentials_path.display()
                ),
            ));
            return checks;
        }
        Err(error) => {
            checks.push(Check::warn(
                CREDENTIALS,
                format!(
                    "`{}` could not be read: {error}",
                    credentials_path.display()
                ),
                format!("fix the syntax of `{}`", credentials_path.display()),
            ));
            return checks;
        }
    };
    let mut shadowed = false;
    for (name, _) in &matching {
        if let Some(section) = credentials.section(Some(name.as_str())) {
            shadowed = true;
            if section.contains_key("aws_access_key_id") {
                checks.push(Check::fail(
                    CREDENTIALS,
                    format!(
                        "`{}` has a [{name}] section with aws_access_key_id; the AWS CLI, boto3 and the JavaScript SDK use those keys and never run Tollgate",
                        credentials_path.display()
                    ),
                    format!(
                        "delete the [{name}] section from `{}`",
                        credentials_path.display()
                    ),
                ));
            } else {
                checks.push(Check::warn(
                    CREDENTIALS,
                    format!(
                        "`{}` has a [{name}] section without keys; its settings are merged into the profile",
                        credentials_path.display()
                    ),
                    format!(
                        "delete the [{name}] section from `{}`",
                        credentials_path.display()
                    ),
                ));
            }
        }
    }
    if !shadowed {
        checks.push(Check::pass(
            CREDENTIALS,
            format!(
                "no section of `{}` shadows the profile",
                credentials_path.display()
            ),
        ));
    }
    checks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_names() {
        assert_eq!(profile_name("profile bedrock"), Some("bedrock"));
        assert_eq!(profile_name("default"), Some("default"));
        assert_eq!(profile_name("sso-session corp"), None);
        assert_eq!(profile_name("profilebedrock"), None);
    }

    #[test]
    fn shim_lines() {
        assert!(runs_shim_for(
            "/usr/bin/tollgate-credential-process --profile bedrock",
            "bedrock"
        ));
        assert!(runs_shim_for(
            "tollgate-credential-process --profile=bedrock",
            "bedrock"
        ));
        assert!(runs_shim_for("tollgate-credential-process", "bedrock"));
        assert!(!runs_shim_for(
            "tollgate-credential-process --profile other",
            "bedrock"
        ));
        assert!(!runs_shim_for(
            "/usr/bin/other-helper --profile bedrock",
            "bedrock"
        ));
    }
}
