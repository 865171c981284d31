//! Checks over HTTP: the identity provider's discovery document and JWKS,
//! the quota backend's `/health`, and the clock against both servers'
//! `Date` headers.

use std::time::{Duration, SystemTime};

use super::Check;
use crate::config::Profile;
use crate::quota::error_chain;

/// How long each HTTP request of the doctor may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Clock skew beyond this is reported: ID tokens carry `iat`/`exp` in
/// seconds, and identity providers and STS reject tokens from a skewed
/// clock.
const MAX_SKEW: Duration = Duration::from_secs(60);

/// A server's `Date` header and the local time the response arrived.
pub struct ServerDate {
    server: &'static str,
    date: SystemTime,
    local: SystemTime,
}

pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build()
}

fn server_date(server: &'static str, response: &reqwest::Response) -> Option<ServerDate> {
    let header = response.headers().get(reqwest::header::DATE)?;
    let date = httpdate::parse_http_date(header.to_str().ok()?).ok()?;
    Some(ServerDate {
        server,
        date,
        local: SystemTime::now(),
    })
}

/// Fetches the discovery document and the JWKS it names.
pub async fn identity_provider(
    http: &reqwest::Client,
    profile: &Profile,
) -> (Vec<Check>, Option<ServerDate>) {
    const NAME: &str = "identity provider";
    let url = format!(
        "{}/.well-known/openid-configuration",
        profile.issuer.trim_end_matches('/')
    );
    let fix_issuer = format!(
        "check `issuer` of profile `{}` and that {} is reachable from here (proxy, VPN)",
        profile.name, profile.issuer
    );
    let response = match http.get(&url).send().await {
        Ok(response) => response,
        Err(error) => {
            return (
                vec![Check::fail(
                    NAME,
                    format!("discovery at {url} failed: {}", error_chain(&error)),
                    fix_issuer,
                )],
                None,
            );
        }
    };
    let date = server_date("the identity provider", &response);
    let status = response.status();
    if !status.is_success() {
        return (
            vec![Check::fail(
                NAME,
                format!("discovery at {url} returned HTTP {status}"),
                fix_issuer,
            )],
            date,
        );
    }
    let document: serde_json::Value = match response.json().await {
        Ok(document) => document,
        Err(error) => {
            return (
                vec![Check::fail(
                    NAME,
                    format!("discovery at {url} is not JSON: {error}"),
                    fix_issuer,
                )],
                date,
            );
        }
    };
    let issuer = document["issuer"].as_str().unwrap_or_default();
    if issuer != profile.issuer {
        return (
            vec![Check::fail(
                NAME,
                format!(
                    "the discovery document at {url} names issuer `{issuer}`, but the profile has `{}`",
                    profile.issuer
                ),
                format!(
                    "set `issuer = \"{issuer}\"` in profile `{}`; ID tokens carry exactly that value",
                    profile.name
                ),
            )],
            date,
        );
    }
    let mut checks = vec![Check::pass(NAME, format!("discovery at {url} answers"))];
    let Some(jwks_uri) = document["jwks_uri"].as_str() else {
        checks.push(Check::fail(
            "identity provider keys",
            format!("the discovery document at {url} has no jwks_uri"),
            "the identity provider must publish its signing keys; ask its administrator",
        ));
        return (checks, date);
    };
    let jwks = match http.get(jwks_uri).send().await {
        Ok(response) if response.status().is_success() => response
            .json::<serde_json::Value>()
            .await
            .map_err(|error| format!("the JWKS is not JSON: {error}")),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        Err(error) => Err(error_chain(&error)),
    };
    checks.push(match jwks {
        Ok(jwks) => match jwks["keys"].as_array().map(Vec::len) {
            Some(count) if count > 0 => Check::pass(
                "identity provider keys",
                format!("{jwks_uri} lists {count} signing keys"),
            ),
            _ => Check::fail(
                "identity provider keys",
                format!("{jwks_uri} lists no keys"),
                "the identity provider must publish its signing keys; ask its administrator",
            ),
        },
        Err(cause) => Check::fail(
            "identity provider keys",
            format!("fetching {jwks_uri} failed: {cause}"),
            format!("check that {jwks_uri} is reachable from here"),
        ),
    });
    if document["device_authorization_endpoint"].is_null() {
        checks.push(Check::warn(
            "device code login",
            "the identity provider announces no device_authorization_endpoint",
            "over SSH and without a display only the browser login is possible; ask the identity provider's administrator to enable the device flow for the client",
        ));
    }
    (checks, date)
}

/// Calls the quota backend's `/health`.
pub async fn backend(http: &reqwest::Client, profile: &Profile) -> (Check, Option<ServerDate>) {
    const NAME: &str = "quota backend";
    let Some(quota_url) = &profile.quota_url else {
        return (
            Check::skip(
                NAME,
                format!(
                    "profile `{}` has no quota_url, so the agent checks no quota",
                    profile.name
                ),
            ),
            None,
        );
    };
    let url = format!("{quota_url}/health");
    let fail_mode_note = match profile.fail_mode {
        crate::config::FailMode::Closed => {
            "while it is down, credential requests are refused (fail_mode = \"closed\")"
        }
        crate::config::FailMode::Open => {
            "while it is down, credentials are handed out unchecked (fail_mode = \"open\")"
        }
    };
    match http.get(&url).send().await {
        Ok(response) => {
            let date = server_date("the quota backend", &response);
            let status = response.status();
            if status.is_success() {
                (
                    Check::pass(NAME, format!("{url} answers HTTP {status}")),
                    date,
                )
            } else {
                (
                    Check::fail(
                        NAME,
                        format!("{url} returned HTTP {status}; {fail_mode_note}"),
                        "ask your Tollgate administrator to check the backend's log",
                    ),
                    date,
                )
            }
        }
        Err(error) => (
            Check::fail(
                NAME,
                format!("{url} failed: {}; {fail_mode_note}", error_chain(&error)),
                format!(
                    "check `quota_url` of profile `{}` and that the backend runs and is reachable from here",
                    profile.name
                ),
            ),
            None,
        ),
    }
}

/// Compares the local clock with the servers' `Date` headers.
pub fn clock(dates: &[ServerDate]) -> Check {
    const NAME: &str = "clock";
    if dates.is_empty() {
        return Check::skip(NAME, "no server sent a Date header to compare with");
    }
    let mut notes = Vec::new();
    let mut worst = Duration::ZERO;
    for date in dates {
        let (skew, direction) = match date.local.duration_since(date.date) {
            Ok(ahead) => (ahead, "ahead of"),
            Err(behind) => (behind.duration(), "behind"),
        };
        worst = worst.max(skew);
        notes.push(format!("{} s {direction} {}", skew.as_secs(), date.server));
    }
    let detail = format!("the local clock is {}", notes.join(", "));
    if worst > MAX_SKEW {
        Check::warn(
            NAME,
            detail,
            "ID tokens and STS requests fail with a skewed clock; enable time synchronisation (`timedatectl set-ntp true`)",
        )
    } else {
        Check::pass(NAME, format!("{detail} (Date headers have 1 s resolution)"))
    }
}
