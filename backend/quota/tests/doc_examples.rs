//! Keeps docs/check-api.md and docs/quotas.md in step with the code: every
//! example answer in docs/check-api.md is rendered here from a real
//! decision, and every row of the amount table in docs/quotas.md is checked
//! against the parser and formatter.
//!
//! After changing a message or the answer's shape, regenerate the examples
//! with `TOLLGATE_UPDATE_DOCS=1 cargo test -p tollgate-quota --test doc_examples`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tollgate_quota::{
    CheckInput, CountingConfig, Enforcement, Identity, Policy, PolicyKind, Reason, TokenUsage,
    UnblockDuration, UnblockGrant, decide, format_amount, parse_amount,
};

fn doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/quotas.md")
}

/// The page with the example answers.
fn api_doc_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/check-api.md")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("example timestamps are RFC 3339")
        .with_timezone(&Utc)
}

const NOW: &str = "2025-01-15T10:00:00Z";

fn usage(input: u64, output: u64, cache_read: u64, cache_creation: u64) -> TokenUsage {
    TokenUsage {
        input,
        output,
        cache_read,
        cache_creation,
    }
}

struct Example {
    reason: Reason,
    groups: Vec<String>,
    policies: Vec<Policy>,
    daily: TokenUsage,
    monthly: TokenUsage,
    counting: CountingConfig,
    unblock: Option<UnblockGrant>,
}

fn alice() -> Identity {
    Identity::parse("alice@example.com").expect("a valid email")
}

fn contractors_policy() -> Policy {
    Policy::new(
        PolicyKind::Group,
        "contractors",
        100_000_000,
        at("2025-01-02T09:00:00Z"),
    )
    .expect("a valid group policy")
}

/// Builds one scenario per reason, in the order docs/check-api.md lists them.
fn examples() -> Vec<Example> {
    let recommended = Policy::recommended_default(at("2025-01-01T00:00:00Z"));
    let no_cache_reads: CountingConfig = "input=1,output=1,cacheCreation=1"
        .parse()
        .expect("a valid counting setting");

    let mut daily_blocking = Policy::new(
        PolicyKind::User,
        "alice@example.com",
        500_000_000,
        at("2025-01-10T14:30:00Z"),
    )
    .expect("a valid user policy");
    daily_blocking.monthly_enforcement = Enforcement::Alert;
    daily_blocking.daily_limit = Some(20_000_000);
    daily_blocking.daily_enforcement = Enforcement::Block;

    let unblock = UnblockGrant::new(
        alice(),
        UnblockDuration::Hours(24),
        "admin@example.com",
        "release week",
        at("2025-01-15T08:00:00Z"),
        at("2025-02-01T00:00:00Z"),
    )
    .expect("a valid unblock");

    vec![
        Example {
            reason: Reason::WithinLimits,
            groups: vec![],
            policies: vec![recommended.clone()],
            daily: usage(300_000, 150_000, 1_200_000, 100_000),
            monthly: usage(30_000_000, 12_500_000, 130_000_000, 8_000_000),
            counting: CountingConfig::default(),
            unblock: None,
        },
        Example {
            reason: Reason::NoPolicy,
            groups: vec![],
            policies: vec![],
            daily: usage(300_000, 150_000, 1_200_000, 100_000),
            monthly: usage(30_000_000, 12_500_000, 130_000_000, 8_000_000),
            counting: CountingConfig::default(),
            unblock: None,
        },
        Example {
            reason: Reason::LimitAlert,
            groups: vec![],
            policies: vec![recommended],
            daily: usage(2_000_000, 1_000_000, 5_500_000, 500_000),
            monthly: usage(40_000_000, 15_000_000, 60_000_000, 5_000_000),
            counting: CountingConfig::default(),
            unblock: None,
        },
        Example {
            reason: Reason::DailyLimitExceeded,
            groups: vec![],
            policies: vec![daily_blocking],
            daily: usage(12_000_000, 6_000_000, 40_000_000, 2_500_000),
            monthly: usage(150_000_000, 60_000_000, 400_000_000, 25_000_000),
            counting: no_cache_reads,
            unblock: None,
        },
        Example {
            reason: Reason::MonthlyLimitExceeded,
            groups: vec!["contractors".to_owned(), "staff".to_owned()],
            policies: vec![contractors_policy()],
            daily: usage(1_500_000, 700_000, 3_000_000, 300_000),
            monthly: usage(30_000_000, 14_000_000, 52_000_000, 4_500_000),
            counting: CountingConfig::default(),
            unblock: None,
        },
        Example {
            reason: Reason::Unblocked,
            groups: vec!["contractors".to_owned(), "staff".to_owned()],
            policies: vec![contractors_policy()],
            daily: usage(1_500_000, 700_000, 3_000_000, 300_000),
            monthly: usage(30_000_000, 14_000_000, 52_000_000, 4_500_000),
            counting: CountingConfig::default(),
            unblock: Some(unblock),
        },
    ]
}

fn reason_name(reason: Reason) -> String {
    serde_json::to_value(reason)
        .expect("a reason serialises")
        .as_str()
        .expect("a reason serialises as a string")
        .to_owned()
}

fn render(example: &Example) -> String {
    let decision = decide(&CheckInput {
        identity: &alice(),
        groups: &example.groups,
        policies: &example.policies,
        daily_usage: example.daily,
        monthly_usage: example.monthly,
        counting: &example.counting,
        unblock: example.unblock.as_ref(),
        now: at(NOW),
    });
    assert_eq!(
        decision.answer.reason, example.reason,
        "the example scenario's reason"
    );
    serde_json::to_string_pretty(&decision.answer).expect("an answer serialises")
}

/// Returns the marker line before each example's JSON block.
fn marker(reason: Reason) -> String {
    format!("<!-- example answer: {} -->", reason_name(reason))
}

/// Finds the JSON block after `marker` in `doc`, as the byte range of its lines
/// including the last newline (empty for an empty block).
fn block_range(doc: &str, marker: &str) -> Option<std::ops::Range<usize>> {
    let after_marker = doc.find(marker)? + marker.len();
    let fence = "```json\n";
    let start = after_marker + doc[after_marker..].find(fence)? + fence.len();
    let rest = &doc[start..];
    let end = if rest.starts_with("```") {
        start
    } else {
        start + rest.find("\n```")? + 1
    };
    Some(start..end)
}

#[test]
fn doc_examples_match_code() {
    let path = api_doc_path();
    let mut doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
    let update = std::env::var_os("TOLLGATE_UPDATE_DOCS").is_some();

    let mut stale = Vec::new();
    for example in examples() {
        let rendered = render(&example) + "\n";
        let marker = marker(example.reason);
        let range = block_range(&doc, &marker).unwrap_or_else(|| {
            panic!(
                "{} has no ```json block after {marker:?}; add the marker and an empty block",
                path.display()
            )
        });
        if doc[range.clone()] != rendered {
            stale.push(reason_name(example.reason));
            doc.replace_range(range, &rendered);
        }
    }

    if update && !stale.is_empty() {
        std::fs::write(&path, &doc)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        return;
    }
    assert!(
        stale.is_empty(),
        "the examples for {stale:?} in {} differ from the code; rerun with TOLLGATE_UPDATE_DOCS=1 to regenerate them",
        path.display()
    );
}

#[test]
fn doc_covers_every_reason() {
    let doc = std::fs::read_to_string(api_doc_path()).expect("docs/check-api.md is readable");
    let reasons = [
        Reason::WithinLimits,
        Reason::NoPolicy,
        Reason::LimitAlert,
        Reason::DailyLimitExceeded,
        Reason::MonthlyLimitExceeded,
        Reason::Unblocked,
    ];
    for reason in reasons {
        assert!(
            doc.contains(&marker(reason)),
            "docs/check-api.md lacks {reason:?}"
        );
    }
}

/// Rows of the amount table look like "| `1.5M` | 1500000 | `1.5M` |":
/// written form, tokens, and the form `format_amount` writes back.
#[test]
fn doc_amount_table_matches_code() {
    let doc = std::fs::read_to_string(doc_path()).expect("docs/quotas.md is readable");
    let start = doc
        .find("<!-- amount table -->")
        .expect("docs/quotas.md has an amount table marker");
    let rows: Vec<Vec<String>> = doc[start..]
        .lines()
        .skip(3)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`').to_owned())
                .collect()
        })
        .collect();
    assert!(
        rows.len() >= 5,
        "the amount table has only {} rows",
        rows.len()
    );

    for row in rows {
        let [written, tokens, formatted] = row.as_slice() else {
            panic!("amount table row {row:?} needs three cells");
        };
        let tokens: u64 = tokens
            .parse()
            .expect("the tokens column is a plain integer");
        assert_eq!(parse_amount(written), Ok(tokens), "parsing {written:?}");
        assert_eq!(format_amount(tokens), *formatted, "formatting {tokens}");
    }
}

#[test]
fn doc_explanation_matches_code() {
    let mut ops =
        Policy::new(PolicyKind::Group, "ops", 200_000_000, at(NOW)).expect("a valid group policy");
    ops.daily_limit = Some(7_000_000);
    ops.daily_enforcement = Enforcement::Block;
    let eng =
        Policy::new(PolicyKind::Group, "eng", 300_000_000, at(NOW)).expect("a valid group policy");
    let groups = ["eng".to_owned(), "ops".to_owned()];
    let explanation = tollgate_quota::resolve(&alice(), &groups, &[eng, ops])
        .explanation
        .to_string();

    let doc = std::fs::read_to_string(doc_path()).expect("docs/quotas.md is readable");
    let quoted: Vec<&str> = doc
        .lines()
        .filter_map(|line| line.strip_prefix("> "))
        .collect();
    assert_eq!(quoted.join(" "), explanation);
}
