use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use tollgate_protocol::check::{CheckAnswer, Enforcement, PeriodUsage, Reason, Unblock, Usage};

use super::ledger::Ledger;
use super::page::{PageEntry, render};
use super::*;

fn profile() -> Profile {
    let text = r##"
[profiles.bedrock]
issuer = "http://127.0.0.1:9400"
client_id = "tollgate-cli"
role_arn = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
region = "us-east-1"
support_contact = "#ai-platform"
"##;
    crate::config::parse(Path::new("agent.toml"), text)
        .unwrap()
        .profiles["bedrock"]
        .clone()
}

fn now() -> DateTime<Utc> {
    "2026-12-04T12:00:00Z".parse().unwrap()
}

fn answer(monthly_tokens: u64, allowed: bool) -> CheckAnswer {
    CheckAnswer {
        allowed,
        reason: if allowed {
            Reason::WithinLimits
        } else {
            Reason::MonthlyLimitExceeded
        },
        message: "<b>Monthly</b> & more".into(),
        user: "ana@example.com".into(),
        usage: Usage {
            monthly: PeriodUsage {
                tokens: monthly_tokens,
                limit: Some(1_000_000),
                percent: Some(monthly_tokens as f64 / 10_000.0),
                enforcement: Some(Enforcement::Block),
                warning_threshold: [90, 80]
                    .into_iter()
                    .find(|threshold| monthly_tokens >= u64::from(*threshold) * 10_000),
                resets_at: "2027-01-01T00:00:00Z".parse().unwrap(),
            },
            daily: PeriodUsage {
                tokens: 10,
                limit: None,
                percent: None,
                enforcement: None,
                warning_threshold: None,
                resets_at: "2026-12-05T00:00:00Z".parse().unwrap(),
            },
            counted_types: Vec::new(),
        },
        policy: None,
        unblock: None,
        checked_at: now(),
    }
}

fn ledger() -> (tempfile::TempDir, Ledger) {
    let folder = tempfile::tempdir().unwrap();
    let ledger = Ledger::load(folder.path().join("notices.json"));
    (folder, ledger)
}

#[test]
fn below_eighty_percent_nothing() {
    let (_folder, ledger) = ledger();
    let notices = due_notices(&profile(), &answer(790_000, true), &ledger, now());
    assert!(notices.is_empty());
}

#[test]
fn each_threshold_once() {
    let (_folder, mut ledger) = ledger();
    let profile = profile();
    let mut shown = Vec::new();
    for tokens in [
        810_000, 820_000, 850_000, 910_000, 950_000, 1_000_000, 1_200_000,
    ] {
        let answer = answer(tokens, tokens < 1_000_000);
        let notices = due_notices(&profile, &answer, &ledger, now());
        ledger.record(notices.iter().map(|notice| notice.key.clone()), now());
        shown.extend(notices.into_iter().map(|notice| notice.key.threshold));
    }
    assert_eq!(shown, vec![80, 90, 100]);
}

#[test]
fn policy_without_warnings_only_limit() {
    let (_folder, ledger) = ledger();
    let mut quiet = answer(950_000, true);
    quiet.usage.monthly.warning_threshold = None;
    assert!(due_notices(&profile(), &quiet, &ledger, now()).is_empty());
}

#[test]
fn jump_shows_highest_only() {
    let (_folder, mut ledger) = ledger();
    let profile = profile();
    let notices = due_notices(&profile, &answer(950_000, true), &ledger, now());
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].key.threshold, 90);
    ledger.record(notices.iter().map(|notice| notice.key.clone()), now());
    let notices = due_notices(&profile, &answer(850_000, true), &ledger, now());
    assert!(notices.is_empty(), "80% is covered by the 90% notice");
}

#[test]
fn new_period_announces_again() {
    let (_folder, mut ledger) = ledger();
    let profile = profile();
    let notices = due_notices(&profile, &answer(850_000, true), &ledger, now());
    ledger.record(notices.iter().map(|notice| notice.key.clone()), now());
    let mut next_month = answer(850_000, true);
    next_month.usage.monthly.resets_at = "2027-02-01T00:00:00Z".parse().unwrap();
    let notices = due_notices(&profile, &next_month, &ledger, now());
    assert_eq!(notices.len(), 1);
}

#[test]
fn block_notice_explains() {
    let (_folder, ledger) = ledger();
    let notices = due_notices(&profile(), &answer(1_200_000, false), &ledger, now());
    let notice = &notices[0];
    assert!(notice.blocked);
    assert!(notice.summary.contains("blocked"), "{}", notice.summary);
    assert!(
        notice.body.contains("1.2M of 1M tokens used (120%)"),
        "{}",
        notice.body
    );
    assert!(
        notice.body.contains("resets at 2027-01-01 00:00 UTC"),
        "{}",
        notice.body
    );
    assert!(notice.body.contains("#ai-platform"), "{}", notice.body);
}

#[test]
fn page_escapes_server_text() {
    let mut blocked = answer(1_200_000, false);
    blocked.user = "<script>alert(1)</script>@example.com".into();
    blocked.unblock = Some(Unblock {
        expires_at: "2026-12-05T12:00:00Z".parse().unwrap(),
        granted_by: "admin\"<x>".into(),
        granted_at: now(),
        reason: "<img src=x onerror=alert(2)>".into(),
    });
    let mut entries = BTreeMap::new();
    entries.insert(
        "bedrock".to_string(),
        PageEntry {
            answer: blocked,
            blocked_message: Some("limit <reached>".into()),
        },
    );
    let html = render(&entries, now());
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(!html.contains("<img"), "{html}");
    assert!(!html.contains("<b>Monthly"), "{html}");
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(html.contains("limit &lt;reached&gt;"), "{html}");
    assert!(html.contains("1.2M of 1M tokens (120%)"), "{html}");
    assert!(html.contains("#d62828"), "red bar at the limit: {html}");
}

#[test]
fn page_bar_colours() {
    for (tokens, color) in [
        (500_000, "#2e9d4f"),
        (850_000, "#e0a800"),
        (950_000, "#f07c00"),
        (1_000_000, "#d62828"),
    ] {
        let mut entries = BTreeMap::new();
        entries.insert(
            "bedrock".to_string(),
            PageEntry {
                answer: answer(tokens, true),
                blocked_message: None,
            },
        );
        let html = render(&entries, now());
        assert!(
            html.contains(&format!("background:{color}")),
            "{tokens}: {html}"
        );
    }
}

#[test]
fn page_url_redacted_for_log() {
    assert_eq!(
        super::redact_page_url("http://127.0.0.1:46179/status/s-OZRsabcdef"),
        "http://127.0.0.1:46179/status/[redacted]"
    );
}
