//! `tollgate serve`: binds the listening address, opens the store, prepares
//! token validation, starts the alert webhook sender when configured, and
//! runs the HTTP API until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tollgate_quota::CountingConfig;

use super::{StoreArgs, user_error};
use crate::alerts::deliver::{WebhookSender, WebhookSettings};
use crate::auth::{AuthConfig, TokenValidator};
use crate::ingest::{IngestSettings, TypeMapping};
use crate::server::{self, AppState};
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use tokio::sync::Notify;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on, as IP:PORT (localhost:PORT means
    /// 127.0.0.1:PORT); port 0 picks a free port (see --port-file).
    #[arg(
        long,
        env = "TOLLGATE_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "IP:PORT",
        value_parser = parse_listen
    )]
    listen: SocketAddr,

    #[command(flatten)]
    store: StoreArgs,

    /// The OIDC issuer URL; its discovery document is at
    /// <issuer>/.well-known/openid-configuration.
    #[arg(long, env = "TOLLGATE_ISSUER")]
    issuer: String,

    /// The expected `aud` claim of ID tokens: the OIDC client id.
    #[arg(long, env = "TOLLGATE_AUDIENCE")]
    audience: String,

    /// The token claim that identifies the user. Values of `email` must be
    /// email addresses; values of other claims, such as `sub`, any text
    /// without whitespace. Identities are trimmed and lower-cased.
    #[arg(long, env = "TOLLGATE_IDENTITY_CLAIM", default_value = "email")]
    identity_claim: String,

    /// The token claims that list the user's groups, comma-separated.
    #[arg(
        long,
        env = "TOLLGATE_GROUP_CLAIMS",
        default_value = "groups,cognito:groups",
        value_delimiter = ','
    )]
    group_claims: Vec<String>,

    /// The maximum time in seconds between two downloads of the issuer's
    /// JWKS, from 1 to 86400, and so the maximum time a signing key the
    /// issuer withdrew is still accepted. A shorter Cache-Control max-age
    /// on the JWKS response shortens it, but a max-age never brings it
    /// below 10 seconds.
    #[arg(
        long,
        env = "TOLLGATE_JWKS_REFRESH_SECONDS",
        value_name = "SECONDS",
        default_value_t = crate::auth::DEFAULT_JWKS_REFRESH_INTERVAL.as_secs(),
        value_parser = parse_refresh_seconds,
        allow_negative_numbers = true
    )]
    jwks_refresh_seconds: u64,

    /// The token types that count toward limits, with weights, as
    /// TYPE=WEIGHT pairs; a type left out does not count.
    #[arg(
        long,
        env = "TOLLGATE_COUNTED_TYPES",
        default_value = "input=1,output=1,cacheRead=1,cacheCreation=1"
    )]
    counted_types: String,

    /// A file that receives the bound host:port once the server listens.
    #[arg(long, value_name = "PATH")]
    port_file: Option<PathBuf>,

    /// A URL that receives each quota alert as a JSON POST with a
    /// Slack-compatible `text` field; without it alerts go to the log only.
    #[arg(long, env = "TOLLGATE_ALERT_WEBHOOK", value_name = "URL")]
    alert_webhook: Option<String>,

    /// The largest POST /v1/metrics body in bytes, before and after gzip
    /// decompression.
    #[arg(
        long,
        env = "TOLLGATE_MAX_METRICS_BYTES",
        value_name = "BYTES",
        default_value_t = crate::ingest::DEFAULT_MAX_BODY_BYTES
    )]
    max_metrics_bytes: usize,

    /// Extra values of the metric's `type` attribute to count, as
    /// NAME=TYPE pairs such as cacheCreation1h=cacheCreation; other
    /// unknown types are kept per model but not counted.
    #[arg(
        long,
        env = "TOLLGATE_COUNT_TYPE_ALIASES",
        value_name = "NAME=TYPE,...",
        default_value = ""
    )]
    count_type_aliases: String,

    /// The de-duplication window in days: a usage point that ended longer
    /// ago is rejected, and the identities of older points are deleted a
    /// day after they leave the window.
    #[arg(
        long,
        env = "TOLLGATE_DEDUP_WINDOW_DAYS",
        value_name = "DAYS",
        default_value_t = crate::ingest::DEFAULT_DEDUP_WINDOW_DAYS,
        value_parser = parse_dedup_days,
        allow_negative_numbers = true
    )]
    dedup_window_days: u32,
}

fn parse_refresh_seconds(text: &str) -> Result<u64, String> {
    parse_whole_number(text, 1, 86_400, "seconds")
}

fn parse_dedup_days(text: &str) -> Result<u32, String> {
    parse_whole_number(text, 1, 3650, "days")
        .map(|days| u32::try_from(days).expect("the range ends at 3650, which fits in u32"))
}

/// Parses a whole number from `min` to `max`. Its error names the range,
/// because the standard parser's error names only the invalid character.
fn parse_whole_number(text: &str, min: u64, max: u64, unit: &str) -> Result<u64, String> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|value| (min..=max).contains(value))
        .ok_or_else(|| format!("use whole {unit} from {min} to {max}"))
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let counting: CountingConfig = args.counted_types.parse().map_err(|error| {
        user_error(format!(
            "invalid --counted-types {:?}: {error}",
            args.counted_types
        ))
    })?;
    let types = TypeMapping::parse(&args.count_type_aliases).map_err(|error| {
        user_error(format!(
            "invalid --count-type-aliases {:?}: {error}",
            args.count_type_aliases
        ))
    })?;
    if args.max_metrics_bytes < 1024 {
        return Err(user_error(format!(
            "invalid --max-metrics-bytes {}: use at least 1024 bytes",
            args.max_metrics_bytes
        )));
    }
    let webhook = parse_webhook(args.alert_webhook.as_deref())?;
    let issuer = args.issuer.trim().to_owned();
    if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
        return Err(user_error(format!(
            "invalid --issuer {issuer:?}: use the issuer's URL, such as https://login.example.com"
        )));
    }
    if args.audience.trim().is_empty() {
        return Err(user_error(
            "--audience is empty; use the OIDC client id the agent logs in with",
        ));
    }

    let mut auth = AuthConfig::new(issuer, args.audience.trim());
    auth.identity_claim = args.identity_claim.trim().to_owned();
    auth.group_claims = args
        .group_claims
        .iter()
        .map(|claim| claim.trim().to_owned())
        .filter(|claim| !claim.is_empty())
        .collect();
    auth.jwks_refresh_interval = std::time::Duration::from_secs(args.jwks_refresh_seconds);

    // Bind first, so that a busy port is reported before the store is
    // migrated and the issuer contacted.
    let listener = bind_listener(args.listen).await?;

    let db_path = args.store.writable_path()?;
    let store = open_store_file(&db_path)?;
    tracing::info!(path = %db_path.display(), "opened the SQLite store");

    let validator =
        TokenValidator::new(auth).context("cannot build the HTTP client for the issuer")?;
    match validator.prefetch_keys().await {
        Ok(count) => {
            tracing::info!(issuer = %validator.config().issuer, count, "downloaded the issuer's signing keys")
        }
        // The issuer may come up after the server; keys are fetched again
        // on the first request.
        Err(error) => {
            tracing::warn!(issuer = %validator.config().issuer, "cannot download the issuer's signing keys yet: {error}")
        }
    }

    let store: Arc<dyn Store> = Arc::new(store);
    let mut ingest = IngestSettings::default();
    ingest.max_body_bytes = args.max_metrics_bytes;
    ingest.types = types;
    ingest.writer.dedup_window_days = args.dedup_window_days;
    if let Some(url) = webhook {
        let wake = Arc::new(Notify::new());
        let sender = WebhookSender::new(
            Arc::clone(&store),
            WebhookSettings::new(url),
            Arc::clone(&wake),
        )
        .context("cannot build the HTTP client for the alert webhook")?;
        tokio::spawn(sender.run());
        ingest.alert_wake = Some(wake);
    } else {
        tracing::info!("no --alert-webhook: quota alerts go to the log only");
    }

    let validator = Arc::new(validator);
    TokenValidator::spawn_key_refresh(&validator);
    tracing::info!(
        issuer = %validator.config().issuer,
        interval_seconds = args.jwks_refresh_seconds,
        "refreshing the issuer's signing keys in the background"
    );
    let state = AppState {
        validator,
        store,
        counting: Arc::new(counting),
    };
    if let Some(port_file) = &args.port_file {
        let bound = listener
            .local_addr()
            .context("cannot read the bound address of the listening socket")?;
        server::write_port_file(port_file, bound)?;
    }
    let app = server::router_with_ingest(state, ingest);
    server::serve(listener, app, server::shutdown_signal()).await
}

/// Parses --listen: an IP:PORT address, or localhost:PORT for
/// 127.0.0.1:PORT.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Some(port) = text.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("invalid address {text:?}: use IP:PORT such as 127.0.0.1:8080"))
}

/// Binds the listening socket, with advice that matches the failure.
async fn bind_listener(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use std::io::ErrorKind;

    let error = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => return Ok(listener),
        Err(error) => error,
    };
    let advice = match error.kind() {
        ErrorKind::AddrInUse => format!(
            "another process is listening on port {}; stop it or choose another port with \
             --listen, such as {}:0 for any free port",
            address.port(),
            address.ip()
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this machine; use 127.0.0.1, 0.0.0.0 or the address \
             of one of its network interfaces with --listen",
            address.ip()
        ),
        ErrorKind::PermissionDenied => format!(
            "port {} needs extra privileges; choose a port of 1024 or more with --listen",
            address.port()
        ),
        _ => "choose another address with --listen".to_owned(),
    };
    Err(user_error(format!(
        "cannot listen on {address}: {error}; {advice}"
    )))
}

/// Opens the store file, and when that fails, names the path, the cause
/// and the fix.
fn open_store_file(path: &Path) -> anyhow::Result<SqliteStore> {
    match SqliteStore::open(path) {
        Ok(store) => Ok(store),
        Err(error) => match diagnose_store_path(path) {
            Some(cause) => Err(user_error(format!(
                "cannot open the store {}: {cause}; pass another store file with --db or \
                 TOLLGATE_DB",
                path.display()
            ))),
            None => Err(anyhow::Error::new(error)
                .context("pass another store file with --db or TOLLGATE_DB if this one is wrong")),
        },
    }
}

/// Finds why the store file at `path` cannot be opened: a folder in its
/// place, a file in place of a parent folder, or missing permissions.
fn diagnose_store_path(path: &Path) -> Option<String> {
    use std::io::ErrorKind;

    if path.is_dir() {
        return Some(format!(
            "{} is a folder, not a file; name a file inside it, such as {}",
            path.display(),
            path.join("tollgate.db").display()
        ));
    }
    let existing = path.ancestors().skip(1).find(|ancestor| ancestor.exists());
    if let Some(ancestor) = existing
        && !ancestor.as_os_str().is_empty()
        && !ancestor.is_dir()
    {
        return Some(format!(
            "{} is a file, so it cannot contain the store",
            ancestor.display()
        ));
    }
    if path.exists() {
        let access = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path);
        return match access {
            Err(error) if error.kind() == ErrorKind::PermissionDenied => Some(format!(
                "permission denied: the server needs read and write access to {}",
                path.display()
            )),
            _ => None,
        };
    }
    // The file is missing, so try to create it as SQLite would, and remove
    // it again.
    let folder = existing?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(path);
            None
        }
        Err(error) if error.kind() == ErrorKind::PermissionDenied => Some(format!(
            "permission denied: cannot create files in the folder {}",
            folder.display()
        )),
        Err(_) => None,
    }
}

/// Parses --alert-webhook: an http or https URL.
fn parse_webhook(text: Option<&str>) -> anyhow::Result<Option<reqwest::Url>> {
    let Some(text) = text.map(str::trim).filter(|text| !text.is_empty()) else {
        return Ok(None);
    };
    let url: reqwest::Url = text.parse().map_err(|error| {
        user_error(format!(
            "invalid --alert-webhook: {error}; use an http or https URL such as \
             https://hooks.slack.com/services/..."
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(user_error(
            "invalid --alert-webhook: use an http or https URL with a host",
        ));
    }
    Ok(Some(url))
}
