//! The `tollgate` command line: `serve`, the `quota` admin commands and the
//! `usage record` correction tool.
//!
//! Read commands print a table for people and JSON with `--json` for
//! scripts.
//!
//! Exit codes: 0 on success, 1 for a user error (bad arguments or values,
//! which change nothing), 2 for anything unexpected (a store or network
//! failure).

mod identity;
mod output;
mod quota;
mod serve;
mod table;
mod usage;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// The exit code of a user error.
pub const EXIT_USER_ERROR: u8 = 1;
/// The exit code of an unexpected failure.
pub const EXIT_FAILURE: u8 = 2;

/// A mistake in what the user asked for. Commands return it (inside an
/// `anyhow::Error`) before changing anything, and it exits with code 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UserError(pub String);

/// Wraps `message` as a [`UserError`].
pub fn user_error(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError(message.into()))
}

#[derive(Debug, Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Tollgate quota backend: the quota check server and its admin commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the quota API server (GET /health, GET /v1/check, POST /v1/metrics).
    Serve(serve::ServeArgs),
    /// Manage quota policies.
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
    /// Correct recorded usage by hand.
    #[command(subcommand)]
    Usage(usage::UsageCommand),
}

/// The store file option shared by every command that opens the store.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The SQLite store file [default: <data dir>/tollgate/tollgate.db, on
    /// Linux ~/.local/share/tollgate/tollgate.db].
    #[arg(long, env = "TOLLGATE_DB", value_name = "PATH", value_parser = parse_db_path)]
    pub db: Option<PathBuf>,
}

/// Parses `--db` or `TOLLGATE_DB`. An empty value usually comes from
/// `TOLLGATE_DB=` in a shell or service file, so the message names it.
fn parse_db_path(text: &str) -> Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err(
            "the store path is empty (TOLLGATE_DB is set to an empty value, or --db is \
                    given \"\"); set TOLLGATE_DB or --db to the store file, or unset TOLLGATE_DB \
                    to use the default location"
                .to_owned(),
        );
    }
    Ok(PathBuf::from(text))
}

impl StoreArgs {
    /// Returns the store file to open: `--db`, `TOLLGATE_DB`, or the default.
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.db {
            Some(path) => Ok(path.clone()),
            None => default_db_path().ok_or_else(|| {
                user_error(
                    "cannot find a data folder for the default store file (no home folder); \
                     pass --db PATH or set TOLLGATE_DB",
                )
            }),
        }
    }

    /// Returns the store file a write command opens, which
    /// [`SqliteStore::open`](crate::store::sqlite::SqliteStore::open)
    /// creates when missing. Only the default location gets its folders
    /// created: the folder of an explicit `--db` or `TOLLGATE_DB` must
    /// exist, so a mistyped path fails instead of creating folders.
    pub fn writable_path(&self) -> anyhow::Result<PathBuf> {
        let path = self.path()?;
        if self.db.is_none() {
            return Ok(path);
        }
        let Some(folder) = path
            .parent()
            .filter(|folder| !folder.as_os_str().is_empty())
        else {
            return Ok(path);
        };
        // A file in the folder's place is reported when the store opens.
        if folder.exists() {
            return Ok(path);
        }
        Err(user_error(format!(
            "the folder {} of the store file {} does not exist; check --db or TOLLGATE_DB, or \
             create the folder first (mkdir -p {})",
            folder.display(),
            path.display(),
            folder.display()
        )))
    }
}

/// The deployment settings that the admin commands share with `tollgate
/// serve`, read from the same environment variables, so that the CLI
/// checks identities and counts tokens as the server does.
#[derive(Debug, Clone, clap::Args)]
pub struct DeploymentArgs {
    /// The token claim the server identifies users by. With `email` (the
    /// default) user identities must be email addresses; with any other
    /// claim, such as `sub`, any text without whitespace is accepted, and
    /// input containing an @ must still be a valid email address.
    #[arg(
        long,
        env = "TOLLGATE_IDENTITY_CLAIM",
        default_value = "email",
        value_name = "CLAIM"
    )]
    pub identity_claim: String,

    /// The token types that count toward limits, with weights, as
    /// TYPE=WEIGHT pairs such as input=1,output=1,cacheRead=0.1; a type
    /// left out does not count.
    #[arg(
        long,
        env = "TOLLGATE_COUNTED_TYPES",
        default_value = "input=1,output=1,cacheRead=1,cacheCreation=1",
        value_name = "WEIGHTS",
        value_parser = parse_counting
    )]
    pub counted_types: tollgate_quota::CountingConfig,
}

fn parse_counting(text: &str) -> Result<tollgate_quota::CountingConfig, String> {
    text.parse()
        .map_err(|error: tollgate_quota::CountingError| error.to_string())
}

/// `<data dir>/tollgate/tollgate.db`, the store file `serve` and the admin
/// commands use when none is given.
pub fn default_db_path() -> Option<PathBuf> {
    directories::BaseDirs::new().map(|dirs| dirs.data_dir().join("tollgate").join("tollgate.db"))
}

/// Parses the arguments, runs the command and returns its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() {
                EXIT_USER_ERROR
            } else {
                0
            };
            // clap prints help and version to stdout and errors to stderr.
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    init_logging(matches!(cli.command, Command::Serve(_)));

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error(&format!("cannot start the async runtime: {error}"));
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args).await,
            Command::Quota(command) => quota::run(command).await,
            Command::Usage(command) => usage::run(command).await,
        }
    });

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            output::error(&format!("{error:#}"));
            if error.downcast_ref::<UserError>().is_some() {
                ExitCode::from(EXIT_USER_ERROR)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

/// Logs to stderr at the level in `TOLLGATE_LOG` (EnvFilter syntax), by
/// default `info` for the server and `warn` for the admin commands.
fn init_logging(server: bool) {
    let default = if server { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
