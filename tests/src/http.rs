//! A small blocking HTTP client for the harness. It ignores proxy settings
//! from the environment, follows no redirects, and returns error statuses
//! as data so tests can assert on them.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::de::DeserializeOwned;

/// The maximum duration of one harness request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A response's status and body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub text: String,
}

/// Returns an HTTP client configured for loopback test servers.
pub fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .proxy(None)
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

fn read(
    url: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply> {
    let mut response = response.with_context(|| format!("request to {url} failed"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("failed to read the response body from {url}"))?;
    Ok(Reply { status, text })
}

/// Sends `GET url` with optional extra headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Result<Reply> {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    read(url, request.call())
}

/// Sends `GET url` and decodes a 200 JSON body.
pub fn get_json<T: DeserializeOwned>(url: &str) -> Result<T> {
    let reply = get(url, &[])?;
    if reply.status != 200 {
        bail!("{url} returned HTTP {}: {}", reply.status, reply.text);
    }
    serde_json::from_str(&reply.text)
        .with_context(|| format!("invalid JSON from {url}: {}", reply.text))
}

/// Sends `POST url` with no body and returns a 2xx body.
pub fn post_empty(url: &str) -> Result<String> {
    let reply = read(url, client().post(url).send_empty())?;
    if !(200..300).contains(&reply.status) {
        bail!("{url} returned HTTP {}: {}", reply.status, reply.text);
    }
    Ok(reply.text)
}

/// Sends `POST url` with a form body.
pub fn post_form(url: &str, fields: &[(&str, &str)]) -> Result<Reply> {
    read(url, client().post(url).send_form(fields.iter().copied()))
}

/// Percent-encodes a value for a query string or form body.
pub fn form_encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

/// Decodes an `application/x-www-form-urlencoded` body into pairs.
pub fn form_decode(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}
