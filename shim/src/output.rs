//! Everything the shim writes to stdout and stderr.
//!
//! stdout gets exactly one JSON document and a newline on success, and
//! nothing otherwise, because AWS SDKs parse all of it. stderr gets one line
//! per progress note or failure, each starting with `tollgate: `. Control
//! characters from the agent are replaced, so each note stays one line.

use std::io::{self, Write};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tollgate_protocol::Secret;
use tollgate_protocol::agent::Credentials;
use zeroize::Zeroizing;

use crate::failure::Failure;

/// The `credential_process` document, with the field names and order AWS
/// documents.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProcessCredentials<'a> {
    version: u8,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: String,
}

/// The credentials object inside Claude Code's `awsCredentialExport`
/// document, shaped like the `Credentials` of `aws sts` output.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ExportCredentials<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    session_token: &'a str,
    expiration: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CredentialExport<'a> {
    credentials: ExportCredentials<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct OtelHeaders<'a> {
    authorization: &'a str,
}

/// Room for a document with a typical session token, so the buffer that
/// contains the secrets does not reallocate and leave unzeroed copies
/// behind. One page, because zeroing on drop touches the whole capacity.
const OUTPUT_CAPACITY: usize = 4 * 1024;

/// Formats `time` as RFC 3339 UTC with a `Z` and whole seconds. Fractional
/// seconds are truncated, so the reported expiry is never later than the
/// agent's.
pub fn format_expiration(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Renders the `credential_process` JSON line.
pub fn credential_process_json(credentials: &Credentials) -> Zeroizing<Vec<u8>> {
    render(&ProcessCredentials {
        version: 1,
        access_key_id: &credentials.access_key_id,
        secret_access_key: credentials.secret_access_key.expose(),
        session_token: credentials.session_token.expose(),
        expiration: format_expiration(&credentials.expiration),
    })
}

/// Renders the `awsCredentialExport` JSON line.
pub fn credential_export_json(credentials: &Credentials) -> Zeroizing<Vec<u8>> {
    render(&CredentialExport {
        credentials: ExportCredentials {
            access_key_id: &credentials.access_key_id,
            secret_access_key: credentials.secret_access_key.expose(),
            session_token: credentials.session_token.expose(),
            expiration: format_expiration(&credentials.expiration),
        },
    })
}

/// Renders the `otelHeadersHelper` JSON line for an ID token.
pub fn otel_headers_json(id_token: &Secret) -> Zeroizing<Vec<u8>> {
    let mut value = Zeroizing::new(String::with_capacity(id_token.expose().len() + 7));
    value.push_str("Bearer ");
    value.push_str(id_token.expose());
    render(&OtelHeaders {
        authorization: &value,
    })
}

fn render(document: &impl Serialize) -> Zeroizing<Vec<u8>> {
    let mut buffer = Zeroizing::new(Vec::with_capacity(OUTPUT_CAPACITY));
    serde_json::to_writer(&mut *buffer, document)
        .expect("serializing borrowed strings into a Vec cannot fail");
    buffer.push(b'\n');
    buffer
}

/// Writes a rendered document to stdout in one write and flushes it.
pub fn write_stdout(document: &[u8]) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(document)?;
    stdout.flush()
}

/// Writes plain text (help, version) to stdout.
pub fn write_text(text: &str) -> io::Result<()> {
    write_stdout(text.as_bytes())
}

/// Copies a progress note from the agent to stderr as one line.
pub fn print_progress(message: &str, url: Option<&str>) {
    write_stderr(&progress_line(message, url));
}

/// Formats a progress note, appending the note's URL when the message does
/// not contain it. When the message already shows another URL (the device
/// login's verification page), the note's URL is an alternative link and
/// follows as its own clause, so it does not run into the user code.
fn progress_line(message: &str, url: Option<&str>) -> String {
    let mut line = String::from("tollgate: ");
    push_sanitized(&mut line, message);
    if let Some(url) = url.filter(|url| !message.contains(url)) {
        if message.contains("http://") || message.contains("https://") {
            line.push_str(", or open ");
            push_sanitized(&mut line, url);
            line.push_str(" directly");
        } else {
            line.push(' ');
            push_sanitized(&mut line, url);
        }
    }
    line.push('\n');
    line
}

/// Prints a failure: its message, one line per cause, then the hint.
pub fn print_failure(failure: &Failure) {
    let mut text = String::from("tollgate: ");
    push_sanitized(&mut text, &failure.error.to_string());
    text.push('\n');
    for cause in failure.error.chain().skip(1) {
        text.push_str("  caused by: ");
        push_sanitized(&mut text, &cause.to_string());
        text.push('\n');
    }
    if let Some(hint) = &failure.hint {
        text.push_str("tollgate: ");
        push_sanitized(&mut text, hint);
        text.push('\n');
    }
    write_stderr(&text);
}

fn write_stderr(text: &str) {
    // A closed stderr leaves no channel to report on, so the error is ignored.
    let _ = io::stderr().lock().write_all(text.as_bytes());
}

/// Appends `text` with line breaks turned into spaces and other control
/// characters (terminal escapes included) dropped.
fn push_sanitized(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials() -> Credentials {
        Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new("secret/key+value"),
            session_token: Secret::new("token\"with-quote"),
            expiration: DateTime::parse_from_rfc3339("2026-12-04T18:00:00.987+00:00")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn progress_line_separates_link() {
        let line = progress_line(
            "To log in, open http://127.0.0.1:9/device on any device and enter the code PXZG-HPQL",
            Some("http://127.0.0.1:9/device?user_code=PXZG-HPQL"),
        );
        assert!(
            line.ends_with(
                "enter the code PXZG-HPQL, or open http://127.0.0.1:9/device?user_code=PXZG-HPQL directly\n"
            ),
            "{line}"
        );
        let line = progress_line(
            "open http://127.0.0.1:9/auth",
            Some("http://127.0.0.1:9/auth"),
        );
        assert_eq!(line, "tollgate: open http://127.0.0.1:9/auth\n");
    }

    #[test]
    fn credential_process_json_exact() {
        let json = credential_process_json(&credentials());
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            "{\"Version\":1,\"AccessKeyId\":\"ASIAEXAMPLE\",\
             \"SecretAccessKey\":\"secret/key+value\",\
             \"SessionToken\":\"token\\\"with-quote\",\
             \"Expiration\":\"2026-12-04T18:00:00Z\"}\n"
        );
    }

    #[test]
    fn credential_export_json_exact() {
        let json = credential_export_json(&credentials());
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            "{\"Credentials\":{\"AccessKeyId\":\"ASIAEXAMPLE\",\
             \"SecretAccessKey\":\"secret/key+value\",\
             \"SessionToken\":\"token\\\"with-quote\",\
             \"Expiration\":\"2026-12-04T18:00:00Z\"}}\n"
        );
    }

    #[test]
    fn otel_headers_json_exact() {
        let json = otel_headers_json(&Secret::new("eyJ.id.token"));
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            "{\"Authorization\":\"Bearer eyJ.id.token\"}\n"
        );
    }

    #[test]
    fn expiration_converts_offsets_to_utc() {
        let time = DateTime::parse_from_rfc3339("2026-12-04T19:30:05+01:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_expiration(&time), "2026-12-04T18:30:05Z");
    }

    #[test]
    fn sanitizing_keeps_one_line() {
        let mut out = String::new();
        push_sanitized(&mut out, "a\nb\r\x1b[31mc\u{7}");
        assert_eq!(out, "a b [31mc");
    }
}
