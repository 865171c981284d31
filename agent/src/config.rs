//! The agent's configuration file: where it lives, its TOML shape, and the
//! validation that turns a bad value into a message naming the file, the
//! key and the fix.
//!
//! [`ConfigSource`] re-reads the file when its modification time changes, so
//! editing the file takes effect on the next request without a restart.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;
use url::Url;

/// The environment variable that names the config file.
pub const CONFIG_ENV: &str = "TOLLGATE_CONFIG";

/// The environment variable that picks the profile when none is given.
pub const PROFILE_ENV: &str = "TOLLGATE_PROFILE";

/// An invalid or unreadable configuration. The message names the file, the
/// key and the fix.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "`{path}` does not exist; create it with a [profiles.NAME] table (issuer, client_id, role_arn, region) or set {CONFIG_ENV} to the config file",
        path = path.display()
    )]
    Missing { path: PathBuf },
    #[error("`{path}` could not be read: {cause}", path = path.display())]
    Unreadable { path: PathBuf, cause: String },
    #[error("`{path}` is not valid TOML for the agent: {cause}", path = path.display())]
    Syntax { path: PathBuf, cause: String },
    #[error("`{path}`: {message}", path = path.display())]
    Invalid { path: PathBuf, message: String },
    #[error(
        "`{path}` has no profiles; add a [profiles.NAME] table with issuer, client_id, role_arn and region",
        path = path.display()
    )]
    NoProfiles { path: PathBuf },
    #[error(
        "profile `{requested}` is not in `{path}`; configured profiles: {known}",
        path = path.display(),
        known = list_or_none(configured)
    )]
    UnknownProfile {
        requested: String,
        path: PathBuf,
        configured: Vec<String>,
    },
    #[error(
        "no profile given and `{path}` has {count} profiles ({known}); pass --profile NAME or set {PROFILE_ENV}",
        path = path.display(),
        count = configured.len(),
        known = list_or_none(configured)
    )]
    AmbiguousProfile {
        path: PathBuf,
        configured: Vec<String>,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The action when the quota check cannot be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FailMode {
    /// Hand out credentials and log a warning.
    Open,
    /// Refuse credentials with [`tollgate_protocol::agent::ErrorKind::QuotaCheckFailed`].
    #[default]
    Closed,
}

impl FailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// How the agent logs a user in when a credential request needs a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoginMethod {
    /// The device code login on SSH sessions, on WSL without `$BROWSER`
    /// and on Linux without a display; the browser login elsewhere.
    #[default]
    Auto,
    /// Always the browser login (authorization code with PKCE).
    Browser,
    /// Always the device code login (RFC 8628).
    DeviceCode,
}

/// One validated profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    /// The issuer exactly as configured: ID tokens must carry this `iss`.
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub redirect_port: u16,
    pub role_arn: String,
    pub region: String,
    pub session_duration_minutes: u32,
    pub sts_endpoint: Option<String>,
    /// The quota backend's base URL, without a trailing slash.
    pub quota_url: Option<String>,
    pub quota_recheck_minutes: u32,
    pub fail_mode: FailMode,
    pub identity_claim: String,
    pub login_timeout_seconds: u64,
    pub login: LoginMethod,
    /// Whom a blocked user should ask to raise the limit, for example a
    /// team channel or an email address.
    pub support_contact: Option<String>,
}

impl Profile {
    /// The loopback redirect URI registered with the identity provider.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.redirect_port)
    }

    /// Whether a change from `other` to `self` invalidates the cached ID and
    /// refresh tokens (they belong to one issuer and client).
    pub fn same_identity_provider(&self, other: &Profile) -> bool {
        self.issuer == other.issuer && self.client_id == other.client_id
    }

    /// Whether a change from `other` to `self` invalidates the cached STS
    /// credentials.
    pub fn same_role(&self, other: &Profile) -> bool {
        self.same_identity_provider(other)
            && self.role_arn == other.role_arn
            && self.region == other.region
            && self.sts_endpoint == other.sts_endpoint
            && self.identity_claim == other.identity_claim
    }
}

/// The whole validated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub path: PathBuf,
    pub profiles: BTreeMap<String, Profile>,
}

impl Config {
    /// Returns the named profile or an error naming the configured ones.
    pub fn profile(&self, name: &str) -> Result<&Profile, ConfigError> {
        self.profiles
            .get(name)
            .ok_or_else(|| ConfigError::UnknownProfile {
                requested: name.to_string(),
                path: self.path.clone(),
                configured: self.profile_names(),
            })
    }

    pub fn profile_names(&self) -> Vec<String> {
        self.profiles.keys().cloned().collect()
    }

    /// Picks the profile for a command: `requested` (from `--profile` or
    /// `TOLLGATE_PROFILE`), else the only configured profile.
    pub fn default_profile(&self, requested: Option<&str>) -> Result<&Profile, ConfigError> {
        if let Some(name) = requested {
            return self.profile(name);
        }
        let mut profiles = self.profiles.values();
        match (profiles.next(), profiles.next()) {
            (Some(only), None) => Ok(only),
            _ => Err(ConfigError::AmbiguousProfile {
                path: self.path.clone(),
                configured: self.profile_names(),
            }),
        }
    }
}

/// Returns the config file path: `$TOLLGATE_CONFIG`, else
/// `<config dir>/tollgate/agent.toml` (Linux: `$XDG_CONFIG_HOME` or
/// `~/.config`).
pub fn config_path(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    if let Some(path) = env(CONFIG_ENV).filter(|path| !path.is_empty()) {
        return PathBuf::from(path);
    }
    let base = directories::BaseDirs::new()
        .map(|dirs| dirs.config_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from(".config"));
    base.join("tollgate").join("agent.toml")
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            ConfigError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ConfigError::Unreadable {
                path: path.to_path_buf(),
                cause: error.to_string(),
            }
        }
    })?;
    parse(path, &text)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    issuer: String,
    client_id: String,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
    #[serde(default = "default_redirect_port")]
    redirect_port: i64,
    role_arn: String,
    region: String,
    #[serde(default = "default_session_minutes")]
    session_duration_minutes: i64,
    sts_endpoint: Option<String>,
    quota_url: Option<String>,
    #[serde(default = "default_recheck_minutes")]
    quota_recheck_minutes: i64,
    #[serde(default)]
    fail_mode: FailMode,
    #[serde(default = "default_identity_claim")]
    identity_claim: String,
    #[serde(default = "default_login_timeout")]
    login_timeout_seconds: i64,
    #[serde(default)]
    login: LoginMethod,
    support_contact: Option<String>,
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "offline_access"]
        .map(String::from)
        .to_vec()
}
fn default_redirect_port() -> i64 {
    8400
}
fn default_session_minutes() -> i64 {
    60
}
fn default_recheck_minutes() -> i64 {
    30
}
fn default_identity_claim() -> String {
    "email".to_string()
}
fn default_login_timeout() -> i64 {
    300
}

/// Parses and validates `text` as the contents of `path`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let raw: RawFile = toml::from_str(text).map_err(|error| ConfigError::Syntax {
        path: path.to_path_buf(),
        cause: describe_toml_error(text, &error),
    })?;
    if raw.profiles.is_empty() {
        return Err(ConfigError::NoProfiles {
            path: path.to_path_buf(),
        });
    }
    let mut profiles = BTreeMap::new();
    let mut errors = Vec::new();
    for (name, raw_profile) in raw.profiles {
        match validate_profile(&name, raw_profile) {
            Ok(profile) => {
                profiles.insert(name, profile);
            }
            Err(messages) => errors.extend(
                messages
                    .into_iter()
                    .map(|message| format!("profile `{name}`: {message}")),
            ),
        }
    }
    if !errors.is_empty() {
        // One line per invalid setting, so that one edit can fix them all.
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            message: errors.join("\n"),
        });
    }
    Ok(Config {
        path: path.to_path_buf(),
        profiles,
    })
}

/// Describes a TOML or type error in user words, with the line and column,
/// the profile and the key where the error is.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim();
    let Some(span) = error.span() else {
        return message.to_string();
    };
    let offset = span.start.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    let line_end = text[offset..]
        .find('\n')
        .map_or(text.len(), |index| offset + index);
    let line_text = &text[line_start..line_end];

    // The profile is the last [profiles.NAME] header at or before the error.
    let profile = text[..line_end]
        .lines()
        .filter_map(|text_line| {
            let header = text_line.trim().strip_prefix("[profiles.")?;
            let name = header.strip_suffix(']')?.trim().trim_matches('"');
            Some(name.to_string())
        })
        .next_back();
    let key = line_text
        .split_once('=')
        .map(|(key, _)| key.trim().trim_matches('"').to_string())
        .filter(|key| !key.is_empty() && !key.starts_with('['));

    let mut location = format!("line {line}, column {column}");
    if let Some(profile) = &profile {
        location.push_str(&format!(": profile `{profile}`"));
    }
    let plain = match &key {
        Some(key) if message.starts_with("duplicate key") => {
            Some(format!("`{key}` is set twice; keep one of the lines"))
        }
        Some(key) => describe_type_error(key, message),
        None if message.starts_with("duplicate key") => Some(format!(
            "the table `{}` appears twice; merge the two tables",
            line_text.trim()
        )),
        None => None,
    };
    let plain = plain.or_else(|| {
        let field = message
            .strip_prefix("missing field `")?
            .split('`')
            .next()?
            .to_string();
        Some(format!(
            "`{field}` is missing; add it to the profile, for example {}",
            example_setting(&field)
        ))
    });
    format!(
        "{location}: {}",
        plain.unwrap_or_else(|| message.to_string())
    )
}

/// Rewords serde's "invalid type: ..., expected ..." for `key`.
fn describe_type_error(key: &str, message: &str) -> Option<String> {
    let rest = message.strip_prefix("invalid type: ")?;
    let (found, expected) = rest.split_once(", expected ")?;
    let requirement = if expected.starts_with('i') || expected.starts_with('u') {
        "a whole number"
    } else if expected.contains("string") {
        "text in double quotes"
    } else if expected.contains("sequence") {
        "a list such as [\"openid\", \"email\"]"
    } else if expected.contains("bool") {
        "true or false"
    } else {
        expected
    };
    Some(format!("`{key}` must be {requirement}, not {found}"))
}

/// An example line for a required key, used when the key is missing.
fn example_setting(key: &str) -> String {
    match key {
        "issuer" => "issuer = \"https://login.example.com\"".to_string(),
        "client_id" => "client_id = \"tollgate-cli\"".to_string(),
        "role_arn" => "role_arn = \"arn:aws:iam::123456789012:role/ClaudeCodeBedrock\"".to_string(),
        "region" => "region = \"us-east-1\"".to_string(),
        other => format!("{other} = ..."),
    }
}

/// An example URL that fits `key`, for error messages.
fn example_url(key: &str) -> &'static str {
    match key {
        "quota_url" => "https://quota.example.com",
        "sts_endpoint" => "https://sts.us-east-1.amazonaws.com",
        _ => "https://login.example.com",
    }
}

/// Keeps the value of a passed check, or adds the failed check's message to
/// `errors`.
fn collect<T>(errors: &mut Vec<String>, result: Result<T, String>) -> Option<T> {
    result.map_err(|error| errors.push(error)).ok()
}

/// Validates one profile and returns every invalid setting's message, not
/// only the first.
fn validate_profile(name: &str, raw: RawProfile) -> Result<Profile, Vec<String>> {
    let mut errors = Vec::new();
    collect(&mut errors, parse_http_url("issuer", &raw.issuer));
    if let Some(endpoint) = &raw.sts_endpoint {
        collect(&mut errors, parse_http_url("sts_endpoint", endpoint));
    }
    if let Some(quota_url) = &raw.quota_url {
        collect(&mut errors, parse_http_url("quota_url", quota_url));
    }
    if raw.client_id.trim().is_empty() {
        errors.push(
            "`client_id` is empty; set it to the client id registered with the identity provider"
                .into(),
        );
    }
    if !raw.scopes.iter().any(|scope| scope == "openid") {
        errors.push(format!(
            "`scopes` = {:?} lacks \"openid\"; an ID token is only issued for the openid scope, so add it",
            raw.scopes
        ));
    }
    collect(&mut errors, validate_role_arn(&raw.role_arn));
    collect(&mut errors, validate_region(&raw.region));
    let redirect_port = collect(
        &mut errors,
        in_range(
            "redirect_port",
            raw.redirect_port,
            1,
            65535,
            "use 1 to 65535",
        ),
    );
    let session_duration_minutes = collect(
        &mut errors,
        in_range(
            "session_duration_minutes",
            raw.session_duration_minutes,
            15,
            720,
            "use 15 to 720 (STS allows 15 minutes to 12 hours, and the role's maximum session duration must allow it)",
        ),
    );
    let quota_recheck_minutes = collect(
        &mut errors,
        in_range(
            "quota_recheck_minutes",
            raw.quota_recheck_minutes,
            0,
            60,
            "use 0 to 60",
        ),
    );
    let login_timeout_seconds = collect(
        &mut errors,
        in_range(
            "login_timeout_seconds",
            raw.login_timeout_seconds,
            10,
            3600,
            "use 10 to 3600",
        ),
    );
    if raw.identity_claim.trim().is_empty() {
        errors.push(
            "`identity_claim` is empty; use a claim of the ID token such as \"email\" or \"sub\""
                .into(),
        );
    }
    let (
        Some(redirect_port),
        Some(session_duration_minutes),
        Some(quota_recheck_minutes),
        Some(login_timeout_seconds),
    ) = (
        redirect_port,
        session_duration_minutes,
        quota_recheck_minutes,
        login_timeout_seconds,
    )
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Profile {
        name: name.to_string(),
        issuer: raw.issuer,
        client_id: raw.client_id,
        scopes: raw.scopes,
        redirect_port: u16::try_from(redirect_port).expect("range checked to 1..=65535"),
        role_arn: raw.role_arn,
        region: raw.region,
        session_duration_minutes: u32::try_from(session_duration_minutes)
            .expect("range checked to 15..=720"),
        sts_endpoint: raw.sts_endpoint,
        quota_url: raw
            .quota_url
            .map(|url| url.trim_end_matches('/').to_string()),
        quota_recheck_minutes: u32::try_from(quota_recheck_minutes)
            .expect("range checked to 0..=60"),
        fail_mode: raw.fail_mode,
        identity_claim: raw.identity_claim,
        login_timeout_seconds: u64::try_from(login_timeout_seconds)
            .expect("range checked to 10..=3600"),
        login: raw.login,
        support_contact: raw
            .support_contact
            .map(|contact| contact.trim().to_string())
            .filter(|contact| !contact.is_empty()),
    })
}

fn in_range(key: &str, value: i64, min: i64, max: i64, fix: &str) -> Result<i64, String> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(format!("`{key}` = {value} is out of range; {fix}"))
    }
}

fn parse_http_url(key: &str, value: &str) -> Result<(), String> {
    let url = Url::parse(value).map_err(|error| {
        format!(
            "`{key}` = \"{value}\" is not a valid URL ({error}); use a full URL such as \"{}\"",
            example_url(key)
        )
    })?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!(
            "`{key}` = \"{value}\" has scheme `{}`; use an https:// (or, for local testing, http://) URL",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{key}` = \"{value}\" has no host; use a full URL such as \"{}\"",
            example_url(key)
        ));
    }
    Ok(())
}

/// Checks the shape `arn:<partition>:iam::<12-digit account>:role/<path/name>`.
fn validate_role_arn(arn: &str) -> Result<(), String> {
    let fix = "use the form arn:aws:iam::123456789012:role/NAME";
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let valid = parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[3].is_empty()
        && parts[4].len() == 12
        && parts[4].bytes().all(|byte| byte.is_ascii_digit())
        && parts[5]
            .strip_prefix("role/")
            .is_some_and(|name| !name.is_empty() && !name.ends_with('/'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`role_arn` = \"{arn}\" is not an IAM role ARN; {fix}"
        ))
    }
}

fn validate_region(region: &str) -> Result<(), String> {
    let valid = !region.is_empty()
        && region
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && region.contains('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`region` = \"{region}\" is not an AWS region name; use a name such as \"us-east-1\""
        ))
    }
}

/// The config file, re-read whenever its modification time changes.
pub struct ConfigSource {
    path: PathBuf,
    cached: Mutex<Option<(Option<SystemTime>, Arc<Config>)>>,
}

impl ConfigSource {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the current configuration, reading the file again when its
    /// modification time differs from the last read. An invalid file is an
    /// error on every call until it is fixed. The last good configuration is
    /// not used in its place, so the user sees the mistake at once.
    pub fn current(&self) -> Result<Arc<Config>, ConfigError> {
        let modified = std::fs::metadata(&self.path)
            .and_then(|metadata| metadata.modified())
            .ok();
        let mut cached = self
            .cached
            .lock()
            .expect("config cache lock is never poisoned");
        if let Some((seen, config)) = cached.as_ref()
            && *seen == modified
            && modified.is_some()
        {
            return Ok(config.clone());
        }
        let config = Arc::new(load(&self.path)?);
        tracing::info!(path = %self.path.display(), profiles = ?config.profile_names(), "read the config file");
        *cached = Some((modified, config.clone()));
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"
[profiles.bedrock]
issuer = "http://127.0.0.1:9400"
client_id = "tollgate-cli"
redirect_port = 8400
role_arn = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
region = "us-east-1"
session_duration_minutes = 60
sts_endpoint = "http://127.0.0.1:5000"
quota_url = "http://127.0.0.1:8080"
quota_recheck_minutes = 30
fail_mode = "closed"
"#;

    fn path() -> PathBuf {
        PathBuf::from("/home/x/.config/tollgate/agent.toml")
    }

    fn error_for(replace: &str, with: &str) -> String {
        let text = VALID.replace(replace, with);
        assert_ne!(
            text, VALID,
            "the replacement `{replace}` must change the file"
        );
        parse(&path(), &text).unwrap_err().to_string()
    }

    #[test]
    fn valid_file_parses_with_defaults() {
        let config = parse(&path(), VALID).unwrap();
        let profile = config.profile("bedrock").unwrap();
        assert_eq!(profile.scopes, ["openid", "email", "offline_access"]);
        assert_eq!(profile.identity_claim, "email");
        assert_eq!(profile.login_timeout_seconds, 300);
        assert_eq!(profile.fail_mode, FailMode::Closed);
        assert_eq!(profile.redirect_uri(), "http://127.0.0.1:8400/callback");
        assert_eq!(
            profile.sts_endpoint.as_deref(),
            Some("http://127.0.0.1:5000")
        );
    }

    #[test]
    fn recheck_out_of_range() {
        assert_eq!(
            error_for("quota_recheck_minutes = 30", "quota_recheck_minutes = 90"),
            "`/home/x/.config/tollgate/agent.toml`: profile `bedrock`: `quota_recheck_minutes` = 90 is out of range; use 0 to 60"
        );
    }

    #[test]
    fn session_duration_out_of_range() {
        for bad in ["14", "721", "-1"] {
            let message = error_for(
                "session_duration_minutes = 60",
                &format!("session_duration_minutes = {bad}"),
            );
            assert!(
                message.contains(&format!(
                    "`session_duration_minutes` = {bad} is out of range; use 15 to 720"
                )),
                "{message}"
            );
        }
    }

    #[test]
    fn several_invalid_settings_listed() {
        let text = VALID
            .replace("redirect_port = 8400", "redirect_port = 0")
            .replace("quota_recheck_minutes = 30", "quota_recheck_minutes = 90");
        let message = parse(&path(), &text).unwrap_err().to_string();
        assert!(message.contains("`redirect_port` = 0"), "{message}");
        assert!(
            message.contains("`quota_recheck_minutes` = 90"),
            "{message}"
        );
    }

    #[test]
    fn duplicate_key_named() {
        let message = error_for(
            "region = \"us-east-1\"",
            "region = \"us-east-1\"\nregion = \"eu-west-1\"",
        );
        assert!(message.contains("`region`"), "{message}");
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn port_out_of_range() {
        for bad in ["0", "65536"] {
            let message = error_for("redirect_port = 8400", &format!("redirect_port = {bad}"));
            assert!(
                message.contains(&format!(
                    "`redirect_port` = {bad} is out of range; use 1 to 65535"
                )),
                "{message}"
            );
        }
    }

    #[test]
    fn fail_mode_unknown_value() {
        let message = error_for("fail_mode = \"closed\"", "fail_mode = \"maybe\"");
        assert!(
            message.starts_with("`/home/x/.config/tollgate/agent.toml` is not valid TOML"),
            "{message}"
        );
        assert!(message.contains("maybe"), "{message}");
        assert!(
            message.contains("open") && message.contains("closed"),
            "{message}"
        );
    }

    #[test]
    fn issuer_not_a_url() {
        let message = error_for("\"http://127.0.0.1:9400\"", "\"not a url\"");
        assert!(
            message.contains("profile `bedrock`: `issuer` = \"not a url\" is not a valid URL"),
            "{message}"
        );
    }

    #[test]
    fn quota_url_wrong_scheme() {
        let message = error_for("\"http://127.0.0.1:8080\"", "\"ftp://127.0.0.1:8080\"");
        assert!(
            message.contains("`quota_url` = \"ftp://127.0.0.1:8080\" has scheme `ftp`"),
            "{message}"
        );
    }

    #[test]
    fn role_arn_shapes() {
        for bad in [
            "ClaudeCodeBedrock",
            "arn:aws:iam::12345:role/X",
            "arn:aws:iam::123456789012:user/X",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:s3:::bucket",
        ] {
            let message = error_for(
                "\"arn:aws:iam::123456789012:role/ClaudeCodeBedrock\"",
                &format!("\"{bad}\""),
            );
            assert!(
                message.contains(&format!("`role_arn` = \"{bad}\" is not an IAM role ARN; use the form arn:aws:iam::123456789012:role/NAME")),
                "{message}"
            );
        }
        let gov = VALID.replace(
            "arn:aws:iam::123456789012:role/ClaudeCodeBedrock",
            "arn:aws-us-gov:iam::123456789012:role/team/Bedrock",
        );
        assert!(parse(&path(), &gov).is_ok());
    }

    #[test]
    fn region_shape() {
        let message = error_for("region = \"us-east-1\"", "region = \"US East\"");
        assert!(
            message.contains("`region` = \"US East\" is not an AWS region name"),
            "{message}"
        );
    }

    #[test]
    fn missing_key_named() {
        let message = error_for(
            "role_arn = \"arn:aws:iam::123456789012:role/ClaudeCodeBedrock\"\n",
            "",
        );
        assert!(message.contains("profile `bedrock`"), "{message}");
        assert!(message.contains("`role_arn` is missing"), "{message}");
        assert!(
            message.contains("role_arn = \"arn:aws:iam::"),
            "gives an example: {message}"
        );
        assert!(message.contains("line "), "{message}");
    }

    #[test]
    fn type_error_names_line_profile_key() {
        let message = error_for("redirect_port = 8400", "redirect_port = \"8400\"");
        assert!(
            message.starts_with("`/home/x/.config/tollgate/agent.toml`"),
            "names the file: {message}"
        );
        // VALID starts with a blank line, so redirect_port is on line 5
        // and its value starts at column 17.
        assert!(
            message.contains("line 5, column 17: profile `bedrock`:"),
            "names the line, column and profile: {message}"
        );
        assert!(
            message.contains("`redirect_port` must be a whole number"),
            "names the key in user words: {message}"
        );
        assert!(!message.contains("i64"), "no Rust type names: {message}");
    }

    #[test]
    fn type_error_in_second_profile() {
        let text = format!(
            "{VALID}\n[profiles.other]\nissuer = \"http://127.0.0.1:9400\"\nclient_id = 5\n"
        );
        let message = parse(&path(), &text).unwrap_err().to_string();
        let line = text
            .lines()
            .position(|line| line.starts_with("client_id = 5"))
            .expect("the bad line")
            + 1;
        assert!(
            message.contains(&format!("line {line}, column 13: profile `other`:")),
            "{message}"
        );
        assert!(
            message.contains("`client_id` must be text in double quotes"),
            "{message}"
        );
    }

    #[test]
    fn scopes_must_be_a_list() {
        let message = error_for("fail_mode = \"closed\"", "scopes = \"openid\"");
        assert!(message.contains("`scopes` must be a list"), "{message}");
    }

    #[test]
    fn url_examples_match_the_key() {
        let message = error_for("\"http://127.0.0.1:8080\"", "\"quota\"");
        assert!(
            message.contains("such as \"https://quota.example.com\""),
            "{message}"
        );
        let message = error_for("\"http://127.0.0.1:5000\"", "\"sts\"");
        assert!(
            message.contains("such as \"https://sts.us-east-1.amazonaws.com\""),
            "{message}"
        );
        let message = error_for("\"http://127.0.0.1:9400\"", "\"login\"");
        assert!(
            message.contains("such as \"https://login.example.com\""),
            "{message}"
        );
    }

    #[test]
    fn unknown_key_rejected() {
        let message = error_for(
            "region = \"us-east-1\"",
            "region = \"us-east-1\"\nregoin = \"x\"",
        );
        assert!(message.contains("regoin"), "{message}");
    }

    #[test]
    fn scopes_need_openid() {
        let message = error_for(
            "client_id = \"tollgate-cli\"",
            "client_id = \"tollgate-cli\"\nscopes = [\"email\"]",
        );
        assert!(message.contains("lacks \"openid\""), "{message}");
    }

    #[test]
    fn no_profiles_rejected() {
        let message = parse(&path(), "").unwrap_err().to_string();
        assert!(message.contains("has no profiles"), "{message}");
    }

    #[test]
    fn unknown_profile_names_configured() {
        let config = parse(&path(), VALID).unwrap();
        let message = config.profile("other").unwrap_err().to_string();
        assert_eq!(
            message,
            "profile `other` is not in `/home/x/.config/tollgate/agent.toml`; configured profiles: bedrock"
        );
    }

    #[test]
    fn default_profile_choice() {
        let config = parse(&path(), VALID).unwrap();
        assert_eq!(config.default_profile(None).unwrap().name, "bedrock");
        let two = format!(
            "{VALID}\n{}",
            VALID.replace("profiles.bedrock", "profiles.second")
        );
        let config = parse(&path(), &two).unwrap();
        let message = config.default_profile(None).unwrap_err().to_string();
        assert!(
            message.contains("has 2 profiles (bedrock, second)"),
            "{message}"
        );
        assert_eq!(
            config.default_profile(Some("second")).unwrap().name,
            "second"
        );
    }

    #[test]
    fn source_rereads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("agent.toml");
        std::fs::write(&file, VALID).unwrap();
        let source = ConfigSource::new(file.clone());
        assert_eq!(
            source
                .current()
                .unwrap()
                .profile("bedrock")
                .unwrap()
                .quota_recheck_minutes,
            30
        );
        std::fs::write(
            &file,
            VALID.replace("quota_recheck_minutes = 30", "quota_recheck_minutes = 5"),
        )
        .unwrap();
        // Give the file a modification time that differs from the first write
        // even on file systems with coarse timestamps.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(
            source
                .current()
                .unwrap()
                .profile("bedrock")
                .unwrap()
                .quota_recheck_minutes,
            5
        );
    }

    #[test]
    fn missing_file_message() {
        let message = load(Path::new("/nonexistent/agent.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("`/nonexistent/agent.toml` does not exist"),
            "{message}"
        );
    }
}
