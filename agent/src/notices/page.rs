//! The local status page: an HTML view of each profile's last quota
//! answer, served on 127.0.0.1 by `tiny_http`.
//!
//! The page lives under a random path (`/status/<token>`), so other local
//! users who can reach 127.0.0.1 cannot guess it. Every text that comes
//! from the backend is HTML-escaped.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use html_escape::encode_text;
use tollgate_protocol::check::{CheckAnswer, PeriodUsage};

use crate::quota::format_tokens;
use crate::quota_view::{self, Level, percent_used};

/// What the page shows for one profile.
#[derive(Debug, Clone)]
pub struct PageEntry {
    pub answer: CheckAnswer,
    /// The explanation when the answer refused access.
    pub blocked_message: Option<String>,
}

type Entries = Arc<Mutex<BTreeMap<String, PageEntry>>>;

/// The page's data and its server, started on first use.
#[derive(Default)]
pub struct StatusPage {
    entries: Entries,
    url: OnceLock<String>,
    start: Mutex<()>,
}

impl StatusPage {
    pub fn update(&self, profile: &str, entry: PageEntry) {
        self.entries
            .lock()
            .expect("page lock is never poisoned")
            .insert(profile.to_string(), entry);
    }

    /// Returns the page URL, starting the server on first call.
    pub fn url(&self) -> std::io::Result<String> {
        if let Some(url) = self.url.get() {
            return Ok(url.clone());
        }
        let _starting = self
            .start
            .lock()
            .expect("page start lock is never poisoned");
        if let Some(url) = self.url.get() {
            return Ok(url.clone());
        }
        let server = tiny_http::Server::http("127.0.0.1:0").map_err(std::io::Error::other)?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|address| address.port())
            .ok_or_else(|| std::io::Error::other("the status page server has no IP address"))?;
        let token = openidconnect::CsrfToken::new_random().secret().clone();
        let path = format!("/status/{token}");
        let url = format!("http://127.0.0.1:{port}{path}");
        let entries = self.entries.clone();
        std::thread::Builder::new()
            .name("status-page".into())
            .spawn(move || serve(server, path, entries))?;
        tracing::info!(port, "started the status page server");
        let _ = self.url.set(url.clone());
        Ok(url)
    }
}

fn serve(server: tiny_http::Server, path: String, entries: Entries) {
    for request in server.incoming_requests() {
        let response = if request.url() == path && *request.method() == tiny_http::Method::Get {
            let snapshot = entries.lock().expect("page lock is never poisoned").clone();
            let html = render(&snapshot, Utc::now());
            tiny_http::Response::from_string(html)
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header("Cache-Control", "no-store"))
                .with_header(header(
                    "Content-Security-Policy",
                    "default-src 'none'; style-src 'unsafe-inline'",
                ))
                .with_status_code(200)
        } else {
            tiny_http::Response::from_string("not found\n").with_status_code(404)
        };
        if let Err(error) = request.respond(response) {
            tracing::debug!(%error, "could not send the status page");
        }
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes())
        .expect("static header names and values are valid")
}

fn period_html(name: &str, usage: &PeriodUsage, now: DateTime<Utc>) -> String {
    let resets = encode_text(&quota_view::time_with_distance(usage.resets_at, now)).into_owned();
    match (usage.limit, percent_used(usage)) {
        (Some(limit), Some(percent)) => {
            let level = Level::of(percent);
            format!(
                r#"<div class="period"><div class="row"><span class="name">{name}</span><span class="count">{used} of {limit} tokens ({percent:.0}%)</span></div>
<div class="bar" role="meter" aria-valuenow="{percent:.0}" aria-valuemin="0" aria-valuemax="100"><div class="fill" style="width:{width:.1}%;background:{color}"></div></div>
<div class="row small"><span>{level} · {enforcement}</span><span>resets {resets}</span></div></div>"#,
                used = format_tokens(usage.tokens),
                limit = format_tokens(limit),
                width = percent.clamp(0.0, 100.0),
                color = level.css_color(),
                level = level.name(),
                enforcement = quota_view::enforcement_text(usage.enforcement),
            )
        }
        _ => format!(
            r#"<div class="period"><div class="row"><span class="name">{name}</span><span class="count">{used} tokens, no limit</span></div><div class="row small"><span></span><span>resets {resets}</span></div></div>"#,
            used = format_tokens(usage.tokens),
        ),
    }
}

fn profile_html(profile: &str, entry: &PageEntry, now: DateTime<Utc>) -> String {
    let answer = &entry.answer;
    let mut html = format!(
        r#"<section><h2>{user} <span class="profile">profile {profile}</span></h2>"#,
        user = encode_text(&answer.user),
        profile = encode_text(profile),
    );
    if let Some(message) = &entry.blocked_message {
        html.push_str(&format!(
            r#"<div class="blocked"><strong>Claude Code is blocked.</strong> {}</div>"#,
            encode_text(message)
        ));
    }
    html.push_str(&period_html("Monthly", &answer.usage.monthly, now));
    html.push_str(&period_html("Daily", &answer.usage.daily, now));
    html.push_str(&format!(
        r#"<p class="small">Policy: {policy}. Backend message: {message} Checked {checked}.</p>"#,
        policy = encode_text(&quota_view::policy_text(answer)),
        message = encode_text(&answer.message),
        checked = answer.checked_at.format("%Y-%m-%d %H:%M:%S UTC"),
    ));
    if let Some(unblock) = &answer.unblock {
        html.push_str(&format!(
            r#"<div class="unblock">Unblocked until {until} by {by}: {reason}</div>"#,
            until = encode_text(&quota_view::time_with_distance(unblock.expires_at, now)),
            by = encode_text(&unblock.granted_by),
            reason = encode_text(&unblock.reason),
        ));
    }
    html.push_str("</section>");
    html
}

/// Renders the whole page.
pub fn render(entries: &BTreeMap<String, PageEntry>, now: DateTime<Utc>) -> String {
    let body = if entries.is_empty() {
        "<p>No quota check has been made yet.</p>".to_string()
    } else {
        entries
            .iter()
            .map(|(profile, entry)| profile_html(profile, entry, now))
            .collect::<Vec<_>>()
            .join("\n")
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Tollgate usage</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 46em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.1em; margin-bottom: .4em; }}
.profile {{ color: #777; font-weight: normal; font-size: .85em; }}
section {{ border: 1px solid #ddd; border-radius: 8px; padding: 1em 1.2em; margin-bottom: 1em; }}
.period {{ margin: .8em 0; }}
.row {{ display: flex; justify-content: space-between; }}
.name {{ font-weight: 600; }}
.bar {{ background: #eee; border-radius: 4px; height: 14px; margin: .3em 0; overflow: hidden; }}
.fill {{ height: 100%; }}
.small {{ font-size: .85em; color: #555; }}
.blocked {{ background: #fde8e8; border-left: 4px solid #d62828; padding: .6em .8em; }}
.unblock {{ background: #e8f4fd; border-left: 4px solid #1d70b8; padding: .6em .8em; }}
</style></head>
<body><h1>Tollgate usage</h1>
{body}
<p class="small">Shown by tollgate-agent at {now}. Reload for the result of the latest quota check.</p>
</body></html>
"#,
        now = now.format("%Y-%m-%d %H:%M:%S UTC"),
    )
}
