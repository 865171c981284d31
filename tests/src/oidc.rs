//! The local OIDC provider (`tests/support/oidc/server.mjs`, npm
//! oidc-provider) and its test-only endpoints: request counts, the tokens
//! and device codes it issued, refresh-token revocation and the device code
//! lifetime.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::http;
use crate::locate::support_dir;
use crate::process::Service;

/// How long the provider may take to print its `ready` line. Node starts it
/// in well under a second here; the margin covers a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The client id the provider registers.
pub const CLIENT_ID: &str = "tollgate-cli";

/// The device code grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Settings for [`OidcProvider::start`].
#[derive(Debug, Clone, Default)]
pub struct OidcOptions {
    /// The callback ports the client may redirect to. Empty means any
    /// loopback port.
    pub redirect_ports: Vec<u16>,
    /// The `groups` claim of each login (or email).
    pub groups: BTreeMap<String, Vec<String>>,
    /// The ID token lifetime in seconds (the provider's default is 3600).
    pub id_token_ttl: Option<u64>,
    /// The access token lifetime in seconds (the provider's default is 3600).
    pub access_token_ttl: Option<u64>,
    /// The device authorization grant's settings.
    pub device_flow: DeviceFlowOptions,
}

/// Settings of the provider's device authorization grant (RFC 8628).
#[derive(Debug, Clone, Default)]
pub struct DeviceFlowOptions {
    /// The device code lifetime in seconds (the provider's default is 600).
    pub code_ttl: Option<u64>,
    /// The polling interval in seconds that the device authorization
    /// response announces. `None` announces none, so clients use 5.
    pub interval: Option<u64>,
    /// Sends `slow_down` for a poll sooner than the device code's interval
    /// after the device authorization or the previous poll, and adds 5 s to
    /// that code's interval each time.
    pub enforce_interval: bool,
}

/// Request counts from `GET /__stats`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OidcStats {
    pub authorization_requests: u64,
    pub token_requests: BTreeMap<String, u64>,
    pub token_errors: BTreeMap<String, u64>,
    pub device_authorization_requests: u64,
    /// Login and consent pages shown, by prompt name.
    pub interactions: BTreeMap<String, u64>,
    /// Device code polls of the token endpoint in order, keyed by a
    /// fingerprint of the device code.
    #[serde(default)]
    pub device_polls: BTreeMap<String, Vec<DevicePoll>>,
}

/// One device code poll of the token endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct DevicePoll {
    /// When the request arrived, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The OAuth error code of the response, or `tokens`.
    pub outcome: String,
}

impl OidcStats {
    /// Returns the number of token requests with this grant type.
    pub fn token_requests(&self, grant_type: &str) -> u64 {
        self.token_requests.get(grant_type).copied().unwrap_or(0)
    }
}

/// The token endpoint's response to a completed login.
#[derive(Debug, Clone, Deserialize)]
pub struct Tokens {
    pub id_token: String,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
}

/// A running oidc-provider.
#[derive(Debug)]
pub struct OidcProvider {
    service: Service,
    issuer: String,
}

impl OidcProvider {
    /// Starts the provider on a free port of 127.0.0.1, logging to
    /// `<log_dir>/oidc.log`.
    pub fn start(log_dir: &Path, options: &OidcOptions) -> Result<Self> {
        let server = support_dir().join("oidc").join("server.mjs");
        if !support_dir()
            .join("oidc/node_modules/oidc-provider")
            .is_dir()
        {
            bail!(
                "npm package oidc-provider is not installed in {}: run scripts/install-deps.sh",
                support_dir().join("oidc").display()
            );
        }
        let ports = options
            .redirect_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");

        let mut command = Command::new("node");
        command.arg(&server).arg("--port").arg("0");
        command.env("OIDC_REDIRECT_PORTS", ports);
        command.env(
            "OIDC_GROUPS",
            serde_json::to_string(&options.groups).context("failed to encode OIDC groups")?,
        );
        if let Some(ttl) = options.id_token_ttl {
            command.env("OIDC_ID_TOKEN_TTL", ttl.to_string());
        }
        if let Some(ttl) = options.access_token_ttl {
            command.env("OIDC_ACCESS_TOKEN_TTL", ttl.to_string());
        }
        if let Some(ttl) = options.device_flow.code_ttl {
            command.env("OIDC_DEVICE_CODE_TTL", ttl.to_string());
        }
        if let Some(interval) = options.device_flow.interval {
            command.env("OIDC_DEVICE_INTERVAL", interval.to_string());
        }
        if options.device_flow.enforce_interval {
            command.env("OIDC_DEVICE_ENFORCE_INTERVAL", "1");
        }
        let (service, issuer) =
            Service::spawn_until_line("oidc", command, log_dir, "ready ", START_TIMEOUT)?;
        Ok(Self {
            service,
            issuer: issuer.trim().to_owned(),
        })
    }

    /// Returns the issuer URL, `http://127.0.0.1:<port>`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Returns the provider's log so far.
    pub fn log(&self) -> String {
        self.service.log()
    }

    /// Returns the request counts.
    pub fn stats(&self) -> Result<OidcStats> {
        http::get_json(&format!("{}/__stats", self.issuer))
    }

    /// Sets every request count back to zero.
    pub fn reset_stats(&self) -> Result<()> {
        http::post_empty(&format!("{}/__stats/reset", self.issuer))?;
        Ok(())
    }

    /// Sets the lifetime of the device codes issued from now on.
    pub fn set_device_code_ttl(&self, seconds: u64) -> Result<()> {
        http::post_empty(&format!(
            "{}/__device-code-ttl?seconds={seconds}",
            self.issuer
        ))?;
        Ok(())
    }

    /// Returns every access, ID and refresh token the token endpoint issued.
    pub fn issued_tokens(&self) -> Result<Vec<String>> {
        http::get_json(&format!("{}/__issued-tokens", self.issuer))
    }

    /// Returns every device code the device authorization endpoint issued.
    pub fn issued_device_codes(&self) -> Result<Vec<String>> {
        http::get_json(&format!("{}/__issued-device-codes", self.issuer))
    }

    /// Revokes the refresh tokens of `sub`, or of every account, so the
    /// next refresh gets `invalid_grant`. Returns how many were revoked.
    pub fn revoke_refresh_tokens(&self, sub: Option<&str>) -> Result<u64> {
        #[derive(Deserialize)]
        struct Revoked {
            revoked: u64,
        }
        let mut url = format!("{}/__revoke-refresh-tokens", self.issuer);
        if let Some(sub) = sub {
            url.push_str("?sub=");
            url.push_str(&http::form_encode(sub));
        }
        let body = http::post_empty(&url)?;
        let revoked: Revoked = serde_json::from_str(&body)
            .with_context(|| format!("invalid answer from {url}: {body}"))?;
        Ok(revoked.revoked)
    }

    /// Logs `login` in through the device flow, with `tests/support/device-login`
    /// as the person's browser, and returns the tokens. This gives tests a
    /// real ID token without an agent.
    pub fn device_login(&self, login: &str) -> Result<Tokens> {
        #[derive(Deserialize)]
        struct DeviceAuthorization {
            device_code: String,
            verification_uri_complete: String,
        }
        let url = format!("{}/device/auth", self.issuer);
        let body = http::post_form(
            &url,
            &[
                ("client_id", CLIENT_ID),
                ("scope", "openid email offline_access groups"),
            ],
        )?;
        let authorization: DeviceAuthorization = serde_json::from_str(&body.text)
            .with_context(|| format!("invalid answer from {url}: {}", body.text))?;

        let output = Command::new(support_dir().join("device-login"))
            .arg(&authorization.verification_uri_complete)
            .env("TOLLGATE_TEST_LOGIN", login)
            .env_remove("TOLLGATE_TEST_BROWSER_LOG")
            .output()
            .context("failed to run tests/support/device-login")?;
        if !output.status.success() {
            bail!(
                "device-login failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }

        let url = format!("{}/token", self.issuer);
        let reply = http::post_form(
            &url,
            &[
                ("client_id", CLIENT_ID),
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", &authorization.device_code),
            ],
        )?;
        if reply.status != 200 {
            bail!("{url} returned HTTP {}: {}", reply.status, reply.text);
        }
        serde_json::from_str(&reply.text)
            .with_context(|| format!("invalid token response from {url}"))
    }
}
