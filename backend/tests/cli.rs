//! The `tollgate` binary against a real store file in a temporary folder.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use chrono::Utc;
use serde_json::Value;
use tollgate_backend::store::Store;
use tollgate_backend::store::sqlite::SqliteStore;

struct Fixture {
    _folder: tempfile::TempDir,
    db: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let db = folder.path().join("state").join("tollgate.db");
        Self {
            _folder: folder,
            db,
        }
    }

    /// Returns the binary with `--db` taken from the environment, as an admin's
    /// shell would set it, and a fixed actor name for the audit log.
    fn tollgate(&self) -> Command {
        let mut command = Command::cargo_bin("tollgate").expect("the tollgate binary");
        command
            .env("TOLLGATE_DB", &self.db)
            .env("USER", "test-admin")
            .env_remove("TOLLGATE_LOG");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        let output = self.tollgate().args(args).output().expect("tollgate runs");
        Output {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
            stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
        }
    }

    fn list_json(&self) -> Value {
        let output = self.run(&["quota", "list", "--json"]);
        assert_eq!(output.code, Some(0), "list failed: {}", output.stderr);
        serde_json::from_str(&output.stdout).expect("list --json prints JSON")
    }

    fn store(&self) -> SqliteStore {
        SqliteStore::open(&self.db).expect("the store opens")
    }
}

#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn file_bytes(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

#[test]
fn set_default_and_user_then_list() {
    let fixture = Fixture::new();

    let output = fixture.run(&[
        "quota",
        "set-default",
        "--monthly-limit",
        "225M",
        "--daily-limit",
        "auto",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains("Created the default policy"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("225M tokens a month (block)"),
        "{}",
        output.stdout
    );
    assert!(
        output.stdout.contains("8.25M a day (alert)"),
        "{}",
        output.stdout
    );

    let output = fixture.run(&[
        "quota",
        "set-user",
        "  Ann@Example.COM ",
        "--monthly-limit",
        "1.5B",
        "--daily-limit",
        "15k",
        "--enforcement",
        "alert",
        "--daily-enforcement",
        "block",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains("user policy for ann@example.com"),
        "{}",
        output.stdout
    );

    let output = fixture.run(&[
        "quota",
        "set-group",
        "interns",
        "--monthly-limit",
        "500000",
        "--disabled",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");

    let listed = fixture.list_json();
    let policies = listed.as_array().expect("a JSON list");
    assert_eq!(policies.len(), 3);
    assert_eq!(policies[0]["kind"], "user");
    assert_eq!(policies[0]["identifier"], "ann@example.com");
    assert_eq!(policies[0]["monthly_limit"], 1_500_000_000u64);
    assert_eq!(policies[0]["daily_limit"], 15_000);
    assert_eq!(policies[0]["monthly_enforcement"], "alert");
    assert_eq!(policies[0]["daily_enforcement"], "block");
    assert_eq!(policies[0]["enabled"], true);
    assert_eq!(policies[1]["kind"], "group");
    assert_eq!(policies[1]["enabled"], false);
    assert_eq!(policies[2]["kind"], "default");
    assert_eq!(policies[2]["monthly_limit"], 225_000_000);
    assert_eq!(policies[2]["daily_limit"], 8_250_000);

    let table = fixture.run(&["quota", "list"]);
    assert_eq!(table.code, Some(0), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(lines[0].starts_with("KIND"), "{}", lines[0]);
    assert!(
        lines[1].contains("ann@example.com") && lines[1].contains("1.5B"),
        "{}",
        lines[1]
    );
    assert!(
        lines[3].contains("default") && lines[3].contains("225M"),
        "{}",
        lines[3]
    );
    assert!(
        table.stderr.is_empty(),
        "no warning with a default policy: {}",
        table.stderr
    );
}

#[test]
fn update_keeps_unchanged_settings() {
    let fixture = Fixture::new();
    let output = fixture.run(&[
        "quota",
        "set-user",
        "bob@example.com",
        "--monthly-limit",
        "10M",
        "--daily-limit",
        "1M",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");

    let output = fixture.run(&[
        "quota",
        "set-user",
        "bob@example.com",
        "--enforcement",
        "alert",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains("Updated the user policy"),
        "{}",
        output.stdout
    );

    let listed = fixture.list_json();
    assert_eq!(listed[0]["monthly_limit"], 10_000_000);
    assert_eq!(listed[0]["daily_limit"], 1_000_000);
    assert_eq!(listed[0]["monthly_enforcement"], "alert");

    let output = fixture.run(&[
        "quota",
        "set-user",
        "bob@example.com",
        "--daily-limit",
        "none",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(fixture.list_json()[0]["daily_limit"], Value::Null);
}

#[test]
fn policy_changes_are_audited() {
    let fixture = Fixture::new();
    let output = fixture.run(&["quota", "set-default", "--monthly-limit", "225M"]);
    assert_eq!(output.code, Some(0), "{output:?}");

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let entries = runtime
        .block_on(fixture.store().read_audit(10))
        .expect("the audit log reads");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].actor, "test-admin");
    assert_eq!(entries[0].action, "policy.put");
    assert_eq!(entries[0].target, "default:default");
    assert_eq!(entries[0].detail["created"], true);
    assert_eq!(entries[0].detail["policy"]["monthly_limit"], 225_000_000);
}

#[test]
fn bad_values_exit_1_and_change_nothing() {
    let fixture = Fixture::new();
    let output = fixture.run(&[
        "quota",
        "set-user",
        "keep@example.com",
        "--monthly-limit",
        "5M",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");
    let before = fixture.list_json();
    let bytes_before = file_bytes(&fixture.db);

    // Each case: arguments, the value the message must name, and a phrase
    // of the fix it must give.
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--monthly-limit",
                "12Q",
            ],
            "12Q",
            "500M",
        ),
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--monthly-limit",
                "-5",
            ],
            "-5",
            "negative",
        ),
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--monthly-limit",
                "1.5.5M",
            ],
            "1.5.5M",
            "1.5B",
        ),
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--monthly-limit",
                "18446744073709551616",
            ],
            "18446744073709551616",
            "maximum",
        ),
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--daily-limit",
                "lots",
            ],
            "lots",
            "auto",
        ),
        (
            &[
                "quota",
                "set-default",
                "--monthly-limit",
                "99999999999999999999B",
            ],
            "99999999999999999999B",
            "maximum",
        ),
        (
            &["quota", "set-user", "not-an-email", "--monthly-limit", "5M"],
            "not-an-email",
            "email address",
        ),
        (
            &[
                "quota",
                "set-user",
                "two@@example.com",
                "--monthly-limit",
                "5M",
            ],
            "two@@example.com",
            "email address",
        ),
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--enforcement",
                "maybe",
            ],
            "maybe",
            "alert or block",
        ),
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--warning-thresholds",
                "80,900",
            ],
            "900",
            "1 to 100",
        ),
        (
            &[
                "quota",
                "set-user",
                "keep@example.com",
                "--daily-limit",
                "6M",
            ],
            "6M",
            "--daily-limit",
        ),
        (
            &[
                "quota",
                "set-user",
                "new@example.com",
                "--enforcement",
                "alert",
            ],
            "new@example.com",
            "--monthly-limit",
        ),
        (
            &["quota", "set-group", "  ", "--monthly-limit", "5M"],
            "group name",
            "group name",
        ),
    ];
    for (args, value, fix) in cases {
        let output = fixture.run(args);
        assert_eq!(output.code, Some(1), "exit code for {args:?}: {output:?}");
        assert!(
            output.stderr.contains(value),
            "{args:?}: the message names {value:?}: {}",
            output.stderr
        );
        assert!(
            output.stderr.contains(fix),
            "{args:?}: the message gives the fix {fix:?}: {}",
            output.stderr
        );
        assert!(
            output.stdout.is_empty(),
            "{args:?}: nothing on stdout: {}",
            output.stdout
        );
    }

    assert_eq!(fixture.list_json(), before, "the policies are unchanged");
    assert_eq!(
        file_bytes(&fixture.db),
        bytes_before,
        "the store file is unchanged"
    );
}

#[test]
fn bad_value_creates_no_store() {
    let fixture = Fixture::new();
    let output = fixture.run(&["quota", "set-user", "bad-email", "--monthly-limit", "5M"]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        !fixture.db.exists(),
        "a rejected command creates no store file"
    );
    assert!(
        !fixture.db.parent().expect("a parent").exists(),
        "nor its folder"
    );
}

#[test]
fn unusable_store_exits_2() {
    let fixture = Fixture::new();
    std::fs::create_dir_all(fixture.db.parent().expect("a parent")).expect("the folder");
    std::fs::write(&fixture.db, b"this is not a SQLite database, just text").expect("the file");

    let output = fixture.run(&["quota", "list"]);
    assert_eq!(output.code, Some(2), "{output:?}");
    assert!(
        output
            .stderr
            .contains(fixture.db.to_str().expect("UTF-8 path")),
        "{}",
        output.stderr
    );
}

#[test]
fn list_warns_without_policies() {
    let fixture = Fixture::new();
    let output = fixture.run(&["quota", "list"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(output.stdout.contains("No policies."), "{}", output.stdout);
    assert!(
        output.stderr.contains("nobody is limited"),
        "{}",
        output.stderr
    );

    let output = fixture.run(&[
        "quota",
        "set-user",
        "only@example.com",
        "--monthly-limit",
        "5M",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");
    let output = fixture.run(&["quota", "list"]);
    assert!(
        output.stderr.contains("no enabled default policy"),
        "{}",
        output.stderr
    );
}

#[test]
fn usage_record_adds_usage_and_audits() {
    let fixture = Fixture::new();
    let output = fixture.run(&[
        "usage",
        "record",
        "Ann@Example.com",
        "--tokens",
        "2.5M",
        "--type",
        "output",
        "--at",
        "2026-03-10T12:00:00+01:00",
        "--reason",
        "carried over from the old system",
    ]);
    assert_eq!(output.code, Some(0), "{output:?}");

    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let store = fixture.store();
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-10T11:00:00Z")
        .expect("a time")
        .with_timezone(&Utc);
    let usage = runtime
        .block_on(store.usage("ann@example.com", at))
        .expect("usage reads");
    assert_eq!(usage.daily.output, 2_500_000);
    assert_eq!(usage.monthly.output, 2_500_000);
    assert_eq!(usage.daily.input, 0);

    let entries = runtime
        .block_on(store.read_audit(1))
        .expect("the audit log reads");
    assert_eq!(entries[0].action, "usage.record");
    assert_eq!(entries[0].target, "user:ann@example.com");
    assert_eq!(
        entries[0].detail["reason"],
        "carried over from the old system"
    );

    let output = fixture.run(&[
        "usage",
        "record",
        "ann@example.com",
        "--tokens",
        "5",
        "--type",
        "cached",
    ]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(output.stderr.contains("cached"), "{}", output.stderr);
}

#[test]
fn help_exits_0() {
    let fixture = Fixture::new();
    let output = fixture.run(&["quota", "set-user", "--help"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        output.stdout.contains("--monthly-limit"),
        "{}",
        output.stdout
    );
    let output = fixture.run(&["quota", "frobnicate"]);
    assert_eq!(output.code, Some(1), "{output:?}");
}
