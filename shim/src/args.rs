//! Command-line and environment parsing.
//!
//! The shim takes a handful of flags, so it parses them with `lexopt`
//! instead of a full argument framework: the parser adds no measurable
//! start-up work, and start-up is paid on every credential request.

use std::ffi::OsString;
use std::time::Duration;

use lexopt::prelude::*;

/// The environment variable that names the profile when `--profile` is absent.
pub const PROFILE_ENV: &str = "TOLLGATE_PROFILE";

/// The environment variable that sets the timeout when `--timeout` is absent.
pub const TIMEOUT_ENV: &str = "TOLLGATE_SHIM_TIMEOUT";

/// The idle timeout when neither `--timeout` nor `TOLLGATE_SHIM_TIMEOUT` is set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(50);

/// The largest accepted `--timeout`, one hour.
const MAX_TIMEOUT_SECS: f64 = 3600.0;

/// The help text printed by `--help`.
pub const HELP: &str = "\
tollgate-credential-process: prints AWS credentials from the Tollgate agent

Usage:
  tollgate-credential-process --profile NAME [--timeout SECS] [--format FORMAT]
  tollgate-credential-process --profile NAME --otel-headers

Options:
  --profile NAME     The agent profile to request credentials for
                     (default: $TOLLGATE_PROFILE).
  --timeout SECS     How long to wait for the next line from the agent, in
                     seconds; decimals allowed (default: $TOLLGATE_SHIM_TIMEOUT,
                     else 50). Each progress line from the agent restarts the
                     wait, and the whole run never exceeds twice this value.
  --format FORMAT    credential-process (default): the AWS credential_process
                     JSON. aws-credential-export: the JSON that Claude Code's
                     awsCredentialExport setting reads.
  --otel-headers     Print {\"Authorization\":\"Bearer <ID token>\"} for Claude
                     Code's otelHeadersHelper. Never starts a login.
  -h, --help         Print this help.
  -V, --version      Print the version.

The agent is reached through its socket in $TOLLGATE_RUNTIME_DIR, else
$XDG_RUNTIME_DIR/tollgate, else $TMPDIR/tollgate-<uid>. When no agent listens,
the shim starts `tollgate-agent run` ($TOLLGATE_AGENT_BIN, else next to this
program, else on PATH) and waits up to 5 seconds for it.

Exit status:
  0  credentials (or headers) printed on stdout
  1  the agent refused the request or it failed (quota, login, STS, protocol)
  2  usage error, or run from inside the agent (TOLLGATE_INSIDE_AGENT is set)
  3  no agent could be reached or started
  4  the agent did not respond in time
";

/// The document format printed on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The AWS `credential_process` JSON.
    CredentialProcess,
    /// Claude Code's `awsCredentialExport` JSON.
    AwsCredentialExport,
    /// Claude Code's `otelHeadersHelper` JSON with the ID token.
    OtelHeaders,
}

/// A validated request to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub profile: String,
    /// The maximum wait for the next line from the agent.
    pub timeout: Duration,
    pub output: Output,
}

/// The action the command line selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
    Version,
}

/// An invalid command line or environment, with the fix in the message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

impl From<lexopt::Error> for UsageError {
    fn from(error: lexopt::Error) -> Self {
        UsageError(format!("{error}; run with --help for the options"))
    }
}

/// Parses the arguments (without the program name), reading fallbacks
/// through `env`.
pub fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Command, UsageError> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut profile: Option<String> = None;
    let mut timeout: Option<Duration> = None;
    let mut format: Option<Output> = None;
    let mut otel_headers = false;

    while let Some(arg) = parser.next()? {
        match arg {
            Long("profile") => profile = Some(parser.value()?.string()?),
            Long("timeout") => {
                let value = parser.value()?.string()?;
                timeout = Some(parse_timeout(&value, "--timeout")?);
            }
            Long("format") => {
                let value = parser.value()?.string()?;
                format = Some(parse_format(&value)?);
            }
            Long("otel-headers") => otel_headers = true,
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            _ => return Err(arg.unexpected().into()),
        }
    }

    let output = match (format, otel_headers) {
        (Some(_), true) => {
            return Err(UsageError(
                "--format and --otel-headers cannot be combined; pass one of them".into(),
            ));
        }
        (_, true) => Output::OtelHeaders,
        (Some(format), false) => format,
        (None, false) => Output::CredentialProcess,
    };

    let profile = match profile {
        Some(profile) => profile,
        None => env_string(&env, PROFILE_ENV)?.unwrap_or_default(),
    };
    if profile.is_empty() {
        return Err(UsageError(format!(
            "no profile given; pass --profile NAME or set {PROFILE_ENV}"
        )));
    }

    let timeout = match timeout {
        Some(timeout) => timeout,
        None => match env_string(&env, TIMEOUT_ENV)?.filter(|value| !value.is_empty()) {
            Some(value) => parse_timeout(&value, TIMEOUT_ENV)?,
            None => DEFAULT_TIMEOUT,
        },
    };

    Ok(Command::Run(Options {
        profile,
        timeout,
        output,
    }))
}

fn env_string(
    env: &impl Fn(&str) -> Option<OsString>,
    name: &str,
) -> Result<Option<String>, UsageError> {
    env(name)
        .map(|value| {
            value
                .into_string()
                .map_err(|_| UsageError(format!("{name} is not valid UTF-8; set it to plain text")))
        })
        .transpose()
}

fn parse_timeout(value: &str, source: &str) -> Result<Duration, UsageError> {
    let invalid = || {
        UsageError(format!(
            "invalid {source} value {value:?}: expected a number of seconds \
             greater than 0 and at most {MAX_TIMEOUT_SECS}, such as 50 or 2.5"
        ))
    };
    let seconds: f64 = value.trim().parse().map_err(|_| invalid())?;
    if !(seconds > 0.0 && seconds <= MAX_TIMEOUT_SECS) {
        return Err(invalid());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| invalid())
}

fn parse_format(value: &str) -> Result<Output, UsageError> {
    match value {
        "credential-process" => Ok(Output::CredentialProcess),
        "aws-credential-export" => Ok(Output::AwsCredentialExport),
        other => Err(UsageError(format!(
            "invalid --format value {other:?}: expected credential-process or \
             aws-credential-export"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn run_options(command: Command) -> Options {
        match command {
            Command::Run(options) => options,
            other => panic!("expected options, got {other:?}"),
        }
    }

    #[test]
    fn profile_flag_and_defaults() {
        let options = run_options(parse(args(&["--profile", "bedrock"]), no_env).unwrap());
        assert_eq!(options.profile, "bedrock");
        assert_eq!(options.timeout, DEFAULT_TIMEOUT);
        assert_eq!(options.output, Output::CredentialProcess);
    }

    #[test]
    fn equals_form_is_accepted() {
        let options = run_options(parse(args(&["--profile=p", "--timeout=2.5"]), no_env).unwrap());
        assert_eq!(options.profile, "p");
        assert_eq!(options.timeout, Duration::from_millis(2500));
    }

    #[test]
    fn environment_fills_missing_flags() {
        let env = |name: &str| match name {
            PROFILE_ENV => Some(OsString::from("from-env")),
            TIMEOUT_ENV => Some(OsString::from("7")),
            _ => None,
        };
        let options = run_options(parse(args(&[]), env).unwrap());
        assert_eq!(options.profile, "from-env");
        assert_eq!(options.timeout, Duration::from_secs(7));
    }

    #[test]
    fn flags_win_over_environment() {
        let env = |name: &str| match name {
            PROFILE_ENV => Some(OsString::from("from-env")),
            TIMEOUT_ENV => Some(OsString::from("7")),
            _ => None,
        };
        let options =
            run_options(parse(args(&["--profile", "flag", "--timeout", "3"]), env).unwrap());
        assert_eq!(options.profile, "flag");
        assert_eq!(options.timeout, Duration::from_secs(3));
    }

    #[test]
    fn missing_profile_names_both_sources() {
        let error = parse(args(&[]), no_env).unwrap_err().to_string();
        assert!(error.contains("--profile"), "{error}");
        assert!(error.contains(PROFILE_ENV), "{error}");
    }

    #[test]
    fn invalid_timeouts_are_rejected() {
        for value in ["0", "-1", "abc", "NaN", "inf", "3601"] {
            let result = parse(args(&["--profile", "p", "--timeout", value]), no_env);
            let error = result.unwrap_err().to_string();
            assert!(error.contains("--timeout"), "{value}: {error}");
        }
    }

    #[test]
    fn invalid_timeout_env_names_variable() {
        let env = |name: &str| (name == TIMEOUT_ENV).then(|| OsString::from("soon"));
        let error = parse(args(&["--profile", "p"]), env)
            .unwrap_err()
            .to_string();
        assert!(error.contains(TIMEOUT_ENV), "{error}");
    }

    #[test]
    fn formats_are_parsed() {
        let options = run_options(
            parse(
                args(&["--profile", "p", "--format", "aws-credential-export"]),
                no_env,
            )
            .unwrap(),
        );
        assert_eq!(options.output, Output::AwsCredentialExport);
        let options =
            run_options(parse(args(&["--profile", "p", "--otel-headers"]), no_env).unwrap());
        assert_eq!(options.output, Output::OtelHeaders);
        let error = parse(args(&["--profile", "p", "--format", "xml"]), no_env).unwrap_err();
        assert!(error.to_string().contains("xml"), "{error}");
    }

    #[test]
    fn format_and_otel_headers_conflict() {
        let result = parse(
            args(&[
                "--profile",
                "p",
                "--otel-headers",
                "--format",
                "credential-process",
            ]),
            no_env,
        );
        assert!(result.is_err());
    }

    #[test]
    fn unknown_flag_is_named() {
        let error = parse(args(&["--profile", "p", "--region", "x"]), no_env).unwrap_err();
        assert!(error.to_string().contains("--region"), "{error}");
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(args(&["--help"]), no_env).unwrap(), Command::Help);
        assert_eq!(parse(args(&["-V"]), no_env).unwrap(), Command::Version);
    }
}
