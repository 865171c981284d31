//! Checks of `~/.aws/config` and `~/.aws/credentials`: a profile must run
//! the shim through `credential_process`, and no section of the same name
//! in the credentials file may shadow it.
//!
//! botocore (the AWS CLI, boto3) and the JavaScript SDK read static keys
//! from the credentials file before they run a `credential_process`, so a
//! `[NAME]` section with `aws_access_key_id` there wins over Tollgate.
//!
//! An installer may point `credential_process` at a wrapper script that
//! runs the shim (`exec tollgate-credential-process --profile NAME "$@"`).
//! Doctor reads such a script, when it is a small executable text file,
//! and follows the line that runs the shim.

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

/// Largest wrapper script doctor reads, in bytes. A `credential_process`
/// program that is bigger is taken to be a binary, not a wrapper.
const WRAPPER_MAX_BYTES: u64 = 64 * 1024;

/// Splits a command line into words, dropping the quotes around each.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .map(|word| word.trim_matches(|c| c == '"' || c == '\''))
        .collect()
}

/// Returns the value of `--profile NAME` or `--profile=NAME` in `words`.
fn named_profile<'a>(words: &[&'a str]) -> Option<&'a str> {
    let mut named = None;
    for (index, word) in words.iter().enumerate() {
        if *word == "--profile" {
            named = words.get(index + 1).copied();
        } else if let Some(value) = word.strip_prefix("--profile=") {
            named = Some(value);
        }
    }
    named
}

/// Returns whether a `credential_process` line runs the shim for `profile`.
/// Without `--profile` the shim picks `$TOLLGATE_PROFILE` or the only
/// profile, so such a line counts too.
fn runs_shim_for(line: &str, profile: &str) -> bool {
    let words = words(line);
    if !words.first().is_some_and(|program| program.ends_with(SHIM)) {
        return false;
    }
    named_profile(&words).is_none_or(|named| named == profile)
}

/// A wrapper script's line that runs the shim.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WrapperLine {
    /// The script's line, trimmed.
    line: String,
    /// The shim as the line names it (a path, a bare name, or a shell
    /// expression such as `"$(dirname "$0")/tollgate-credential-process"`).
    shim: String,
    /// The `--profile` value, if the line passes one.
    profile: Option<String>,
}

/// Returns the lines of a shell script that run the shim, skipping
/// comments and the `#!` line.
fn wrapper_lines(script: &str) -> Vec<WrapperLine> {
    script
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let words = words(line);
            let start = words.iter().position(|word| word.ends_with(SHIM))?;
            let command = &words[start..];
            Some(WrapperLine {
                line: line.to_string(),
                shim: command[0].to_string(),
                profile: named_profile(command).map(str::to_string),
            })
        })
        .collect()
}

/// Reads `path` as a wrapper script: an executable file of at most
/// [`WRAPPER_MAX_BYTES`] that is UTF-8 text without NUL bytes. Returns
/// `None` for anything else, such as the shim binary itself.
fn read_wrapper(path: &Path) -> Option<String> {
    let metadata = std::fs::metadata(path).ok()?;
    if !is_executable(path) || metadata.len() > WRAPPER_MAX_BYTES {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    if bytes.contains(&0) {
        return None;
    }
    String::from_utf8(bytes).ok()
}

/// The program behind an AWS profile's `credential_process`, as seen
/// from one Tollgate profile.
#[derive(Debug)]
enum Runs {
    /// The shim for this profile, named on the line itself.
    Shim,
    /// A wrapper script with a line that runs the shim for this profile.
    Wrapper { script: PathBuf, found: WrapperLine },
    /// A wrapper script that runs the shim, but only for other profiles.
    WrapperForOther { script: PathBuf, found: WrapperLine },
    /// Something else, or nothing doctor can read.
    Other,
}

fn classify(line: &str, profile: &str) -> Runs {
    if runs_shim_for(line, profile) {
        return Runs::Shim;
    }
    // A direct shim line for another profile belongs to that profile.
    if words(line)
        .first()
        .is_none_or(|program| program.ends_with(SHIM))
    {
        return Runs::Other;
    }
    let Some(script) = program_path(line) else {
        return Runs::Other;
    };
    let Some(text) = read_wrapper(&script) else {
        return Runs::Other;
    };
    let found = wrapper_lines(&text);
    if let Some(matching) = found.iter().find(|found| {
        found
            .profile
            .as_deref()
            .is_none_or(|named| named == profile || named.contains('$'))
    }) {
        return Runs::Wrapper {
            script,
            found: matching.clone(),
        };
    }
    match found.into_iter().next() {
        Some(found) => Runs::WrapperForOther { script, found },
        None => Runs::Other,
    }
}

/// Checks the shim a wrapper script runs: a path must be an executable
/// file and a bare name must be on `PATH`. A name built by the shell
/// (containing `$`) cannot be resolved here and passes.
fn check_wrapper(name: &str, line: &str, script: &Path, found: &WrapperLine) -> Check {
    const CONFIG: &str = "aws config";
    let mut detail = format!(
        "AWS profile `{name}` runs `{line}`, a wrapper script that runs `{}`",
        found.line
    );
    if found
        .profile
        .as_deref()
        .is_some_and(|named| named.contains('$'))
    {
        detail.push_str(" (the shell sets its --profile value, so doctor cannot check it)");
    }
    if found.shim.contains('$') {
        return Check::pass(CONFIG, detail);
    }
    match program_path(&found.shim) {
        Some(shim) if is_executable(&shim) => {
            Check::pass(CONFIG, format!("{detail} ({})", shim.display()))
        }
        Some(shim) => Check::fail(
            CONFIG,
            format!(
                "{detail}, but `{}` is not an executable file",
                shim.display()
            ),
            format!(
                "point `{}` at the installed tollgate-credential-process",
                script.display()
            ),
        ),
        None => Check::fail(
            CONFIG,
            format!("{detail}, but `{SHIM}` is not on PATH"),
            format!(
                "use the absolute path of tollgate-credential-process in `{}`",
                script.display()
            ),
        ),
    }
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
    let mut matching: Vec<(String, String, Runs)> = Vec::new();
    let mut for_others: Vec<(String, String, Runs)> = Vec::new();
    for (section, properties) in config.iter() {
        let Some(name) = section.and_then(profile_name) else {
            continue;
        };
        let Some(line) = properties.get("credential_process") else {
            continue;
        };
        let entry = (
            name.to_string(),
            line.to_string(),
            classify(line, &profile.name),
        );
        match entry.2 {
            Runs::Shim | Runs::Wrapper { .. } => matching.push(entry),
            Runs::WrapperForOther { .. } => for_others.push(entry),
            Runs::Other => {}
        }
    }
    if matching.is_empty() {
        let mut checks = Vec::new();
        for (name, line, runs) in &for_others {
            if let Runs::WrapperForOther { script, found } = runs {
                checks.push(Check::fail(
                    CONFIG,
                    format!(
                        "AWS profile `{name}` runs `{line}`, a wrapper script whose line `{}` runs the shim for Tollgate profile `{}`, not `{}`",
                        found.line,
                        found.profile.as_deref().unwrap_or_default(),
                        profile.name
                    ),
                    format!(
                        "make `{}` run `{SHIM} --profile {} \"$@\"`, or {add_fix}",
                        script.display(),
                        profile.name
                    ),
                ));
            }
        }
        if checks.is_empty() {
            checks.push(Check::fail(
                CONFIG,
                format!(
                    "no profile in `{}` runs `{SHIM} --profile {}` as credential_process",
                    config_path.display(),
                    profile.name
                ),
                add_fix,
            ));
        }
        return checks;
    }
    let mut checks = Vec::new();
    for (name, line, runs) in &matching {
        if let Runs::Wrapper { script, found } = runs {
            checks.push(check_wrapper(name, line, script, found));
            continue;
        }
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
        && !matching.iter().any(|(name, _, _)| *name == selected)
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
    for (name, _, _) in &matching {
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

    #[test]
    fn wrapper_script_lines() {
        let script = "#!/bin/sh\n# Runs tollgate-credential-process for Bedrock.\nset -eu\nexport TOLLGATE_LOG=warn\nexec /opt/tollgate/bin/tollgate-credential-process --profile bedrock \"$@\"\n";
        assert_eq!(
            wrapper_lines(script),
            vec![WrapperLine {
                line: "exec /opt/tollgate/bin/tollgate-credential-process --profile bedrock \"$@\""
                    .into(),
                shim: "/opt/tollgate/bin/tollgate-credential-process".into(),
                profile: Some("bedrock".into()),
            }]
        );
        let found =
            wrapper_lines("exec \"$(dirname \"$0\")/tollgate-credential-process\" \"$@\"\n");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].profile, None);
        assert!(
            wrapper_lines("#!/bin/sh\nexec /usr/bin/other-helper --profile bedrock\n").is_empty()
        );
    }
}
