//! The `tollgate` binary against a real store file in a temporary folder:
//! every `quota` command, and bad input that must exit 1 and change
//! nothing.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

struct Fixture {
    folder: tempfile::TempDir,
    db: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let db = folder.path().join("state").join("tollgate.db");
        std::fs::create_dir(folder.path().join("state")).expect("the store folder");
        Self { folder, db }
    }

    /// Returns the binary with `--db` taken from the environment, as an admin's
    /// shell would set it, and a fixed actor name for the audit log.
    fn tollgate(&self) -> Command {
        let mut command = Command::cargo_bin("tollgate").expect("the tollgate binary");
        command
            .env("TOLLGATE_DB", &self.db)
            .env("USER", "test-admin")
            .env_remove("TOLLGATE_LOG")
            .env_remove("TOLLGATE_IDENTITY_CLAIM")
            .env_remove("TOLLGATE_COUNTED_TYPES");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        run_command(self.tollgate().args(args))
    }

    /// Runs `args` and asserts exit code 0.
    fn ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert_eq!(output.code, Some(0), "{args:?} failed: {output:?}");
        output
    }

    /// Runs `args`, asserts exit code 0, and parses stdout as JSON.
    fn json(&self, args: &[&str]) -> Value {
        let output = self.ok(args);
        serde_json::from_str(&output.stdout)
            .unwrap_or_else(|error| panic!("{args:?} prints JSON ({error}): {}", output.stdout))
    }

    fn list_json(&self) -> Value {
        self.json(&["quota", "list", "--json"])
    }

    /// Writes `content` to a file in the fixture folder.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.folder.path().join(name);
        std::fs::write(&path, content).expect("the file is written");
        path
    }

    fn path(&self, name: &str) -> String {
        self.folder
            .path()
            .join(name)
            .to_str()
            .expect("UTF-8 path")
            .to_owned()
    }

    /// Captures what a command must not change: the policies, the audit log
    /// and the store file's bytes.
    fn snapshot(&self) -> (Value, Value, Option<Vec<u8>>) {
        let policies = self.list_json();
        let audit = self.json(&["quota", "audit", "--json", "--limit", "1000"]);
        (policies, audit, file_bytes(&self.db))
    }
}

fn run_command(command: &mut Command) -> Output {
    let output = command.output().expect("tollgate runs");
    Output {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(output.stderr).expect("UTF-8 stderr"),
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

/// Seeds a default, a group and a user policy.
fn seed(fixture: &Fixture) {
    fixture.ok(&[
        "quota",
        "set-default",
        "--monthly-limit",
        "225M",
        "--auto-daily",
    ]);
    fixture.ok(&[
        "quota",
        "set-group",
        "eng",
        "--monthly-limit",
        "300M",
        "--daily-limit",
        "12M",
        "--daily-enforcement",
        "block",
        "--warn-at",
        "50,75",
    ]);
    fixture.ok(&[
        "quota",
        "set-user",
        "ann@example.com",
        "--monthly-limit",
        "1.5B",
        "--enforcement",
        "alert",
    ]);
}

#[test]
fn set_default_and_user_then_list() {
    let fixture = Fixture::new();

    let output = fixture.ok(&[
        "quota",
        "set-default",
        "--monthly-limit",
        "225M",
        "--auto-daily",
    ]);
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
        output
            .stdout
            .contains("8.25M (auto, 10% burst) a day (alert)"),
        "{}",
        output.stdout
    );

    fixture.ok(&[
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
    fixture.ok(&[
        "quota",
        "set-group",
        "interns",
        "--monthly-limit",
        "500000",
        "--disabled",
    ]);

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
    assert_eq!(policies[2]["daily_burst"], 10);

    let table = fixture.ok(&["quota", "list"]);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", table.stdout);
    assert!(lines[0].starts_with("KIND"), "{}", lines[0]);
    assert!(
        lines[1].contains("ann@example.com")
            && lines[1].contains("1.5B")
            && lines[1].contains("15K"),
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
fn list_filters_by_type() {
    let fixture = Fixture::new();
    seed(&fixture);
    for (kind, expected) in [
        ("user", "ann@example.com"),
        ("group", "eng"),
        ("default", "default"),
    ] {
        let listed = fixture.json(&["quota", "list", "--type", kind, "--json"]);
        let listed = listed.as_array().expect("a JSON list");
        assert_eq!(listed.len(), 1, "--type {kind}");
        assert_eq!(listed[0]["identifier"], expected, "--type {kind}");
        let table = fixture.ok(&["quota", "list", "--type", kind]);
        assert_eq!(table.stdout.lines().count(), 2, "{}", table.stdout);
    }
}

#[test]
fn update_keeps_unchanged_settings() {
    let fixture = Fixture::new();
    fixture.ok(&[
        "quota",
        "set-user",
        "bob@example.com",
        "--monthly-limit",
        "10M",
        "--daily-limit",
        "1M",
    ]);

    let output = fixture.ok(&[
        "quota",
        "set-user",
        "bob@example.com",
        "--enforcement",
        "alert",
    ]);
    assert!(
        output.stdout.contains("Updated the user policy"),
        "{}",
        output.stdout
    );
    let listed = fixture.list_json();
    assert_eq!(listed[0]["monthly_limit"], 10_000_000);
    assert_eq!(listed[0]["daily_limit"], 1_000_000);
    assert_eq!(listed[0]["monthly_enforcement"], "alert");

    fixture.ok(&[
        "quota",
        "set-user",
        "bob@example.com",
        "--daily-limit",
        "none",
    ]);
    assert_eq!(fixture.list_json()[0]["daily_limit"], Value::Null);
}

#[test]
fn derived_daily_follows_monthly() {
    let fixture = Fixture::new();
    fixture.ok(&[
        "quota",
        "set-group",
        "eng",
        "--monthly-limit",
        "300M",
        "--auto-daily",
        "--burst",
        "20",
    ]);
    assert_eq!(fixture.list_json()[0]["daily_limit"], 12_000_000);

    // A new monthly limit re-derives the daily one with the same burst.
    fixture.ok(&["quota", "set-group", "eng", "--monthly-limit", "600M"]);
    assert_eq!(fixture.list_json()[0]["daily_limit"], 24_000_000);
    // A new burst alone re-derives it too.
    fixture.ok(&["quota", "set-group", "eng", "--burst", "5"]);
    assert_eq!(fixture.list_json()[0]["daily_limit"], 21_000_000);

    // An amount stops the derivation.
    fixture.ok(&["quota", "set-group", "eng", "--daily-limit", "1M"]);
    fixture.ok(&["quota", "set-group", "eng", "--monthly-limit", "900M"]);
    let listed = fixture.list_json();
    assert_eq!(listed[0]["daily_limit"], 1_000_000);
    assert_eq!(listed[0].get("daily_burst"), None);
}

#[test]
fn every_change_is_audited() {
    let fixture = Fixture::new();
    fixture.ok(&["quota", "set-default", "--monthly-limit", "225M"]);
    fixture.ok(&["quota", "set-default", "--monthly-limit", "300M"]);
    fixture.ok(&[
        "quota",
        "unblock",
        "ann@example.com",
        "--reason",
        "release week",
        "--by",
        "lead@example.com",
    ]);
    fixture.ok(&["quota", "unblock", "ann@example.com", "--revoke"]);
    fixture.ok(&["quota", "delete", "default", "--force"]);
    fixture.ok(&[
        "usage",
        "record",
        "ann@example.com",
        "--tokens",
        "5",
        "--reason",
        "test",
    ]);

    let entries = fixture.json(&["quota", "audit", "--json"]);
    let entries = entries.as_array().expect("a JSON list");
    let actions: Vec<&str> = entries
        .iter()
        .map(|entry| entry["action"].as_str().expect("an action"))
        .collect();
    assert_eq!(
        actions,
        [
            "usage.record",
            "policy.delete",
            "unblock.revoke",
            "unblock.grant",
            "policy.update",
            "policy.create",
        ],
        "newest first"
    );
    for entry in entries {
        assert_eq!(entry["actor"], "test-admin", "{entry}");
    }
    assert_eq!(entries[1]["target"], "default:default");
    assert_eq!(entries[1]["detail"]["before"]["monthly_limit"], 300_000_000);
    assert_eq!(entries[3]["target"], "user:ann@example.com");
    assert_eq!(
        entries[3]["detail"]["grant"]["granted_by"],
        "lead@example.com"
    );
    assert_eq!(entries[3]["detail"]["grant"]["reason"], "release week");
    assert_eq!(entries[4]["detail"]["before"]["monthly_limit"], 225_000_000);
    assert_eq!(entries[4]["detail"]["after"]["monthly_limit"], 300_000_000);
    assert_eq!(entries[5]["detail"]["before"], Value::Null);

    let limited = fixture.json(&["quota", "audit", "--json", "--limit", "2"]);
    assert_eq!(limited.as_array().map(Vec::len), Some(2));
    let targeted = fixture.json(&["quota", "audit", "--json", "--target", "default:default"]);
    assert_eq!(targeted.as_array().map(Vec::len), Some(3));

    let table = fixture.ok(&["quota", "audit"]);
    assert!(table.stdout.starts_with("TIME (UTC)"), "{}", table.stdout);
    assert!(
        table.stdout.contains("24h until") && table.stdout.contains("release week"),
        "{}",
        table.stdout
    );
}

#[test]
fn bad_values_exit_1_and_change_nothing() {
    let fixture = Fixture::new();
    seed(&fixture);
    let missing_column = fixture.file(
        "missing-column.csv",
        "kind,identifier,daily_limit\nuser,new@example.com,5M\n",
    );
    let wrong_shape = fixture.file("wrong-shape.json", r#"{"users": {"ann": 5}}"#);
    let wrong_rows = fixture.file("wrong-rows.json", r#"{"version": 1, "policies": [1, "x"]}"#);
    let not_json = fixture.file("not-json.json", "kind,identifier\n");
    let too_large = fixture.file(
        "too-large.csv",
        "kind,identifier,monthly_limit\nuser,new@example.com,18446744073709551616\n",
    );
    let (missing_column, wrong_shape, wrong_rows, not_json, too_large) = (
        missing_column.to_str().expect("UTF-8"),
        wrong_shape.to_str().expect("UTF-8"),
        wrong_rows.to_str().expect("UTF-8"),
        not_json.to_str().expect("UTF-8"),
        too_large.to_str().expect("UTF-8"),
    );
    let before = fixture.snapshot();

    // Each case: arguments, the value the message must name, and a phrase
    // of the fix it must give.
    let set_user = |value: &'static str| -> Vec<&'static str> {
        vec![
            "quota",
            "set-user",
            "ann@example.com",
            "--monthly-limit",
            value,
        ]
    };
    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (set_user("12Q"), "12Q", "500M"),
        (set_user("-5"), "-5", "negative"),
        (set_user("1.5.5M"), "1.5.5M", "1.5B"),
        (
            set_user("18446744073709551616"),
            "18446744073709551616",
            "maximum",
        ),
        (
            set_user("99999999999999999999B"),
            "99999999999999999999B",
            "maximum",
        ),
        (set_user("1.2345K"), "1.2345K", "whole number"),
        (
            vec![
                "quota",
                "set-user",
                "ann@example.com",
                "--daily-limit",
                "lots",
            ],
            "lots",
            "none",
        ),
        (
            vec!["quota", "set-user", "not-an-email", "--monthly-limit", "5M"],
            "not-an-email",
            "--identity-claim",
        ),
        (
            vec![
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
            vec![
                "quota",
                "set-user",
                "ann@example.com",
                "--enforcement",
                "maybe",
            ],
            "maybe",
            "alert or block",
        ),
        (
            vec![
                "quota",
                "set-user",
                "ann@example.com",
                "--warn-at",
                "80,900",
            ],
            "900",
            "1 to 100",
        ),
        (
            vec!["quota", "set-group", "eng", "--daily-limit", "400M"],
            "400M",
            "lower the daily limit",
        ),
        (
            vec!["quota", "set-group", "eng", "--auto-daily", "--burst", "30"],
            "30",
            "5 to 25",
        ),
        (
            vec!["quota", "set-group", "eng", "--burst", "15"],
            "--burst",
            "--auto-daily",
        ),
        (
            vec!["quota", "set-group", "eng"],
            "no setting",
            "--monthly-limit",
        ),
        (
            vec![
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
            vec!["quota", "set-group", "  ", "--monthly-limit", "5M"],
            "group name",
            "group name",
        ),
        (
            vec!["quota", "list", "--type", "robot"],
            "robot",
            "user, group or default",
        ),
        (
            vec!["quota", "export", "--stdout", "--type", "robot"],
            "robot",
            "user, group or default",
        ),
        (
            vec!["quota", "delete", "robot", "x", "--force"],
            "robot",
            "user, group or default",
        ),
        (
            vec!["quota", "delete", "user", "nobody@example.com", "--force"],
            "nobody@example.com",
            "tollgate quota list",
        ),
        (
            vec!["quota", "delete", "group", "eng"],
            "group policy for eng",
            "--force",
        ),
        (
            vec![
                "quota",
                "unblock",
                "ann@example.com",
                "--duration",
                "8d",
                "--reason",
                "x",
            ],
            "8d",
            "7 days",
        ),
        (
            vec![
                "quota",
                "unblock",
                "ann@example.com",
                "--duration",
                "169h",
                "--reason",
                "x",
            ],
            "169h",
            "7 days",
        ),
        (
            vec![
                "quota",
                "unblock",
                "ann@example.com",
                "--duration",
                "2w",
                "--reason",
                "x",
            ],
            "2w",
            "until-reset",
        ),
        (
            vec!["quota", "unblock", "ann@example.com"],
            "reason",
            "--reason",
        ),
        (
            vec!["quota", "unblock", "ann@example.com", "--revoke"],
            "ann@example.com",
            "no unblock",
        ),
        (
            vec!["quota", "usage", "not-an-email"],
            "not-an-email",
            "email address",
        ),
        (
            vec!["quota", "show", "ann@example.com", "--at", "yesterday"],
            "yesterday",
            "RFC 3339",
        ),
        (
            vec!["quota", "import", missing_column],
            "monthly_limit",
            "is missing",
        ),
        (
            vec!["quota", "import", wrong_shape],
            "users",
            "\"policies\"",
        ),
        (vec!["quota", "import", wrong_rows], "line 1", "JSON object"),
        (
            vec!["quota", "import", not_json],
            "not JSON",
            "\"policies\"",
        ),
        (
            vec!["quota", "import", too_large],
            "18446744073709551616",
            "maximum",
        ),
        (
            vec!["quota", "export", "policies.txt"],
            "policies.txt",
            "--format",
        ),
        (
            vec!["quota", "audit", "--limit", "0"],
            "--limit 0",
            "1 or more",
        ),
    ];
    for (args, value, fix) in &cases {
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

    assert_eq!(fixture.snapshot(), before, "nothing changed");
}

#[test]
fn bad_value_creates_no_store() {
    let fixture = Fixture::new();
    for args in [
        &["quota", "set-user", "bad-email", "--monthly-limit", "5M"][..],
        &[
            "quota",
            "set-user",
            "a@example.com",
            "--monthly-limit",
            "5Q",
        ],
        &["quota", "set-group", "eng", "--burst", "10"],
        &["quota", "set-group", "eng", "--daily-limit", "5M"],
        &["quota", "delete", "group", "eng", "--force"],
        &["quota", "unblock", "a@example.com", "--revoke"],
    ] {
        let output = fixture.run(args);
        assert_eq!(output.code, Some(1), "{args:?}: {output:?}");
        assert!(
            !fixture.db.exists(),
            "{args:?}: a rejected command creates no store file"
        );
        let folder = fixture.db.parent().expect("a parent");
        assert_eq!(
            std::fs::read_dir(folder).expect("readable").count(),
            0,
            "{args:?}: nor any other file in its folder"
        );
    }
}

#[test]
fn unusable_store_exits_2() {
    let fixture = Fixture::new();
    std::fs::create_dir_all(fixture.db.parent().expect("a parent")).expect("the folder");
    std::fs::write(&fixture.db, b"this is not a SQLite database, just text").expect("the file");

    for args in [
        &["quota", "list"][..],
        &["quota", "show", "ann@example.com"],
        &["quota", "set-default", "--monthly-limit", "5M"],
    ] {
        let output = fixture.run(args);
        assert_eq!(output.code, Some(2), "{args:?}: {output:?}");
        assert!(
            output
                .stderr
                .contains(fixture.db.to_str().expect("UTF-8 path")),
            "{args:?}: the message names the file: {}",
            output.stderr
        );
    }
}

#[test]
fn group_names_are_validated() {
    let fixture = Fixture::new();
    seed(&fixture);
    let before = fixture.snapshot();
    let too_long = "g".repeat(2000);
    let cases: [(&str, &str); 6] = [
        ("line\nbreak", "control character"),
        ("tab\there", "control character"),
        (&too_long, "longer than 256 bytes"),
        ("a,b", "contains a comma"),
        ("=HYPERLINK(\"http://x\",\"y\")", "spreadsheets run a cell"),
        ("   ", "it is empty"),
    ];
    for (name, phrase) in cases {
        let output = fixture.run(&["quota", "set-group", name, "--monthly-limit", "1M"]);
        assert_eq!(output.code, Some(1), "{name:?}: {output:?}");
        assert!(
            output.stderr.contains(phrase),
            "{name:?} gives the reason: {}",
            output.stderr
        );
    }
    for prefix in ["+", "-", "@"] {
        let name = format!("{prefix}admins");
        let output = fixture.run(&["quota", "set-group", "--monthly-limit", "1M", "--", &name]);
        assert_eq!(output.code, Some(1), "{name:?}: {output:?}");
        assert!(
            output.stderr.contains("as a formula"),
            "{name:?} says why: {}",
            output.stderr
        );
    }
    assert_eq!(fixture.snapshot(), before, "nothing changed");

    let file = fixture.file(
        "groups.csv",
        "kind,identifier,monthly_limit\n\
         group,ok-group,1M\n\
         group,\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\",1M\n\
         group,\"a,b\",1M\n",
    );
    let output = fixture.run(&["quota", "import", file.to_str().expect("UTF-8")]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output.stderr.contains("line 3: invalid group name"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("line 4: invalid group name"),
        "{}",
        output.stderr
    );
    assert_eq!(fixture.snapshot(), before, "nothing changed");

    for name in [
        "eng-platform",
        "Engineering Platform",
        "ai:admins",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    ] {
        fixture.ok(&["quota", "set-group", name, "--monthly-limit", "1M"]);
        let output = fixture.ok(&["quota", "show", "ann@example.com", "--groups", name]);
        assert!(
            output.stdout.contains(name),
            "show --groups finds {name:?}: {}",
            output.stdout
        );
    }
}

#[test]
fn audit_actor_without_user_variables() {
    let fixture = Fixture::new();
    let output = run_command(
        fixture
            .tollgate()
            .env_remove("USER")
            .env_remove("LOGNAME")
            .env_remove("USERNAME")
            .args(["quota", "set-default", "--monthly-limit", "1M"]),
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    let audit = fixture.json(&["quota", "audit", "--json"]);
    let uid = uzers::get_current_uid();
    let expected = uzers::get_user_by_uid(uid).map_or_else(
        || format!("uid:{uid}"),
        |user| user.name().to_string_lossy().into_owned(),
    );
    assert_eq!(audit[0]["actor"], expected.as_str(), "{audit}");

    let output = run_command(
        fixture
            .tollgate()
            .env_remove("USER")
            .env("LOGNAME", "svc-tollgate")
            .args(["quota", "set-default", "--monthly-limit", "2M"]),
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    let audit = fixture.json(&["quota", "audit", "--json"]);
    assert_eq!(audit[0]["actor"], "svc-tollgate", "{audit}");
}

#[test]
fn unchanged_settings_write_nothing() {
    let fixture = Fixture::new();
    let user = "ann@example.com";
    fixture.ok(&[
        "quota",
        "set-user",
        user,
        "--monthly-limit",
        "5M",
        "--warn-at",
        "80,90",
    ]);
    let before = fixture.snapshot();
    let output = fixture.ok(&["quota", "set-user", user, "--warn-at", "90,80,80"]);
    assert!(
        output.stdout.starts_with("Unchanged: "),
        "says nothing changed: {}",
        output.stdout
    );
    assert_eq!(fixture.snapshot(), before, "no policy or audit write");

    let output = fixture.ok(&["quota", "set-user", user, "--warn-at", "70"]);
    assert!(output.stdout.starts_with("Updated "), "{}", output.stdout);
}

#[test]
fn audit_target_is_validated() {
    let fixture = Fixture::new();
    seed(&fixture);
    for target in ["foo", "robot:x", "user:not an email", "group:"] {
        let output = fixture.run(&["quota", "audit", "--target", target]);
        assert_eq!(output.code, Some(1), "{target:?}: {output:?}");
        assert!(
            output.stderr.contains("use KIND:ID"),
            "{target:?} gives the form: {}",
            output.stderr
        );
    }
    let entries = fixture.json(&["quota", "audit", "--json", "--target", " Default:Default "]);
    assert!(
        !entries.as_array().expect("a list").is_empty(),
        "a valid target in another case still matches: {entries}"
    );
}

#[test]
fn empty_store_variable_is_named() {
    let fixture = Fixture::new();
    let output = run_command(
        fixture
            .tollgate()
            .env("TOLLGATE_DB", "")
            .args(["quota", "list"]),
    );
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output
            .stderr
            .contains("TOLLGATE_DB is set to an empty value"),
        "names the variable: {}",
        output.stderr
    );
}

#[test]
fn explicit_store_folder_must_exist() {
    let fixture = Fixture::new();
    let missing = fixture.folder.path().join("nonexist").join("dir");
    let db = missing.join("x.db");
    let db_text = db.to_str().expect("UTF-8 path");
    let write_commands: [&[&str]; 4] = [
        &["quota", "set-default", "--monthly-limit", "1M"],
        &["quota", "set-group", "eng", "--monthly-limit", "1M"],
        &["usage", "record", "ann@example.com", "--tokens", "5"],
        &["quota", "unblock", "ann@example.com", "--reason", "test"],
    ];
    for args in write_commands {
        let mut with_flag: Vec<&str> = args.to_vec();
        with_flag.extend(["--db", db_text]);
        let flag_output = fixture.run(&with_flag);
        let env_output = run_command(fixture.tollgate().env("TOLLGATE_DB", &db).args(args));
        for output in [flag_output, env_output] {
            assert_eq!(output.code, Some(1), "{args:?}: {output:?}");
            assert!(
                output.stderr.contains(&format!(
                    "the folder {} of the store file {db_text} does not exist",
                    missing.display()
                )),
                "{args:?} names the folder: {}",
                output.stderr
            );
            assert!(
                output.stderr.contains("check --db or TOLLGATE_DB"),
                "{args:?} gives the fix: {}",
                output.stderr
            );
            assert!(
                !missing.parent().expect("a parent").exists(),
                "{args:?} creates no folder"
            );
        }
    }
}

#[test]
fn store_location_flag_env_and_default() {
    let fixture = Fixture::new();
    let flag_db = fixture.path("flag.db");
    fixture.ok(&[
        "quota",
        "set-default",
        "--monthly-limit",
        "1M",
        "--db",
        &flag_db,
    ]);
    assert!(Path::new(&flag_db).exists(), "--db wins over TOLLGATE_DB");
    assert!(!fixture.db.exists(), "TOLLGATE_DB is not used with --db");

    let data_home = fixture.folder.path().join("data-home");
    let output = run_command(
        Command::cargo_bin("tollgate")
            .expect("the tollgate binary")
            .env_remove("TOLLGATE_DB")
            .env("HOME", fixture.folder.path())
            .env("XDG_DATA_HOME", &data_home)
            .args(["quota", "set-default", "--monthly-limit", "2M"]),
    );
    assert_eq!(output.code, Some(0), "{output:?}");
    assert!(
        data_home.join("tollgate").join("tollgate.db").exists(),
        "the default store is <data dir>/tollgate/tollgate.db"
    );
}

#[test]
fn list_warns_without_policies() {
    let fixture = Fixture::new();
    // Read commands need an existing store, so create one and empty it.
    fixture.ok(&["quota", "set-group", "eng", "--monthly-limit", "5M"]);
    fixture.ok(&["quota", "delete", "group", "eng", "--force"]);
    let output = fixture.ok(&["quota", "list"]);
    assert!(output.stdout.contains("No policies."), "{}", output.stdout);
    assert!(
        output.stderr.contains("nobody is limited"),
        "{}",
        output.stderr
    );
    let output = fixture.ok(&["quota", "list", "--json"]);
    assert_eq!(output.stdout.trim(), "[]");
    assert!(
        output.stderr.contains("nobody is limited"),
        "the warning shows with --json too: {}",
        output.stderr
    );

    fixture.ok(&[
        "quota",
        "set-user",
        "only@example.com",
        "--monthly-limit",
        "5M",
    ]);
    let output = fixture.ok(&["quota", "list"]);
    assert!(
        output.stderr.contains("no enabled default policy"),
        "{}",
        output.stderr
    );
}

#[test]
fn show_explains_the_applied_policy() {
    let fixture = Fixture::new();
    seed(&fixture);
    fixture.ok(&["quota", "set-group", "ops", "--monthly-limit", "200M"]);

    // Each case: user, --groups, applied kind and id, and a phrase of why.
    let cases: &[(&str, Option<&str>, &str, &str, &str)] = &[
        (
            "Ann@Example.com",
            Some("eng"),
            "user",
            "ann@example.com",
            "user policy takes precedence",
        ),
        (
            "bob@example.com",
            Some("eng,ops"),
            "group",
            "ops",
            "most restrictive",
        ),
        (
            "bob@example.com",
            Some("[eng]"),
            "group",
            "eng",
            "most restrictive",
        ),
        (
            "bob@example.com",
            None,
            "default",
            "default",
            "no enabled user or group policy",
        ),
    ];
    for (user, groups, kind, id, why) in cases {
        let mut args = vec!["quota", "show", user, "--json"];
        if let Some(groups) = groups {
            args.extend(["--groups", groups]);
        }
        let shown = fixture.json(&args);
        assert_eq!(shown["policy"]["kind"], *kind, "{args:?}");
        assert_eq!(shown["policy"]["identifier"], *id, "{args:?}");
        assert_eq!(shown["check"]["policy"]["id"], *id, "{args:?}");
        assert_eq!(shown["check"]["reason"], "within_limits", "{args:?}");
        let text = shown["explanation_text"].as_str().expect("a text");
        assert!(text.contains(why), "{args:?}: {text}");
        assert_eq!(shown["groups_given"], groups.is_some(), "{args:?}");
    }

    let output = fixture.ok(&["quota", "show", "bob@example.com", "--groups", "eng,ops"]);
    assert!(
        output.stdout.contains("Policy:   group ops: 200M"),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stdout
            .contains("Candidates, most restrictive first: ops"),
        "{}",
        output.stdout
    );
    let output = fixture.ok(&["quota", "show", "bob@example.com"]);
    assert!(
        output.stdout.contains("group policies are not considered"),
        "{}",
        output.stdout
    );

    fixture.ok(&["quota", "set-group", "ops", "--disabled"]);
    let shown = fixture.json(&[
        "quota",
        "show",
        "bob@example.com",
        "--groups",
        "ops",
        "--json",
    ]);
    assert_eq!(shown["policy"]["kind"], "default");
    assert!(
        shown["explanation_text"]
            .as_str()
            .expect("a text")
            .contains("Skipped as disabled: group ops"),
        "{shown}"
    );
}

#[test]
fn usage_shows_both_periods_by_type() {
    let fixture = Fixture::new();
    seed(&fixture);
    let record = |tokens: &str, token_type: &str, at: &str| {
        fixture.ok(&[
            "usage",
            "record",
            "ann@example.com",
            "--tokens",
            tokens,
            "--type",
            token_type,
            "--at",
            at,
        ]);
    };
    record("2M", "input", "2026-03-09T23:59:59.999Z");
    record("1M", "output", "2026-03-10T00:00:00Z");
    record("4M", "cacheRead", "2026-03-10T08:00:00Z");
    record("9M", "input", "2026-02-28T12:00:00Z");

    let report = fixture.json(&[
        "quota",
        "usage",
        "ann@example.com",
        "--at",
        "2026-03-10T09:00:00Z",
        "--json",
    ]);
    assert_eq!(report["daily"]["period"], "2026-03-10");
    assert_eq!(report["daily"]["by_type"]["input"], 0, "yesterday's input");
    assert_eq!(report["daily"]["by_type"]["output"], 1_000_000);
    assert_eq!(report["daily"]["by_type"]["cacheRead"], 4_000_000);
    assert_eq!(report["daily"]["tokens"], 5_000_000);
    assert_eq!(report["daily"]["resets_at"], "2026-03-11T00:00:00Z");
    assert_eq!(report["monthly"]["period"], "2026-03");
    assert_eq!(report["monthly"]["by_type"]["input"], 2_000_000);
    assert_eq!(
        report["monthly"]["tokens"], 7_000_000,
        "February not counted"
    );
    assert_eq!(report["monthly"]["limit"], 1_500_000_000u64);
    assert_eq!(report["monthly"]["enforcement"], "alert");
    assert_eq!(report["monthly"]["resets_at"], "2026-04-01T00:00:00Z");
    assert_eq!(report["policy"]["kind"], "user");
    let counted: Vec<&str> = report["counted_types"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|counted| counted["type"].as_str().expect("a type"))
        .collect();
    assert_eq!(counted, ["input", "output", "cacheRead", "cacheCreation"]);

    // A user idle since yesterday has 0 daily usage today.
    let idle = fixture.json(&[
        "quota",
        "usage",
        "ann@example.com",
        "--at",
        "2026-03-11T00:00:00Z",
        "--json",
    ]);
    assert_eq!(idle["daily"]["tokens"], 0);
    assert_eq!(idle["monthly"]["tokens"], 7_000_000);

    // The counting setting is the deployment's, as for the server.
    let weighted = run_command(
        fixture
            .tollgate()
            .env("TOLLGATE_COUNTED_TYPES", "input=1,output=1")
            .args([
                "quota",
                "usage",
                "ann@example.com",
                "--at",
                "2026-03-10T09:00:00Z",
                "--json",
            ]),
    );
    assert_eq!(weighted.code, Some(0), "{weighted:?}");
    let weighted: Value = serde_json::from_str(&weighted.stdout).expect("JSON");
    assert_eq!(weighted["daily"]["tokens"], 1_000_000);
    assert_eq!(weighted["daily"]["by_type"]["cacheRead"], 4_000_000);
    assert_eq!(weighted["counted_types"].as_array().map(Vec::len), Some(2));

    let table = fixture.ok(&[
        "quota",
        "usage",
        "ann@example.com",
        "--at",
        "2026-03-10T09:00:00Z",
    ]);
    assert!(
        table
            .stdout
            .contains("Counted:  input ×1, output ×1, cacheRead ×1, cacheCreation ×1"),
        "{}",
        table.stdout
    );
    let today = table
        .stdout
        .lines()
        .find(|line| line.starts_with("today 2026-03-10"))
        .expect("a row for today");
    assert!(
        today.contains("5M") && today.contains("2026-03-11 00:00"),
        "{today}"
    );
    let month = table
        .stdout
        .lines()
        .find(|line| line.starts_with("month 2026-03"))
        .expect("a row for the month");
    assert!(
        month.contains("7M") && month.contains("1.5B") && month.contains("2026-04-01 00:00"),
        "{month}"
    );
}

#[test]
fn delete_needs_force_without_terminal() {
    let fixture = Fixture::new();
    seed(&fixture);

    let output = fixture.run(&["quota", "delete", "user", "ann@example.com"]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert_eq!(fixture.list_json().as_array().map(Vec::len), Some(3));

    let output = fixture.ok(&["quota", "delete", "user", "ANN@example.com", "--force"]);
    assert!(
        output
            .stdout
            .contains("Deleted the user policy for ann@example.com"),
        "{}",
        output.stdout
    );
    fixture.ok(&["quota", "delete", "group", "eng", "--force"]);
    let output = fixture.ok(&["quota", "delete", "default", "--force"]);
    assert!(
        output.stderr.contains("nobody is limited"),
        "deleting the last policy warns: {}",
        output.stderr
    );
    assert_eq!(fixture.list_json(), Value::Array(Vec::new()));
}

#[test]
fn unblock_lets_a_blocked_user_continue() {
    let fixture = Fixture::new();
    fixture.ok(&[
        "quota",
        "set-user",
        "ann@example.com",
        "--monthly-limit",
        "1M",
        "--daily-limit",
        "100K",
        "--daily-enforcement",
        "block",
    ]);
    fixture.ok(&["usage", "record", "ann@example.com", "--tokens", "100K"]);
    let shown = fixture.json(&["quota", "show", "ann@example.com", "--json"]);
    assert_eq!(shown["check"]["reason"], "daily_limit_exceeded");
    assert_eq!(shown["check"]["allowed"], false);

    let output = fixture.ok(&[
        "quota",
        "unblock",
        "ann@example.com",
        "--duration",
        "until-reset",
        "--reason",
        "demo day",
    ]);
    assert!(output.stdout.contains("(until-reset)"), "{}", output.stdout);
    let shown = fixture.json(&["quota", "show", "ann@example.com", "--json"]);
    let check = &shown["check"];
    assert_eq!(check["reason"], "unblocked");
    assert_eq!(check["allowed"], true);
    assert_eq!(check["unblock"]["granted_by"], "test-admin");
    assert_eq!(check["unblock"]["reason"], "demo day");
    assert_eq!(
        check["unblock"]["expires_at"], check["usage"]["daily"]["resets_at"],
        "until-reset ends at the blocking daily limit's reset"
    );

    // After the unblock expires, the next check blocks again.
    let expires_at = check["unblock"]["expires_at"].as_str().expect("a time");
    let later = fixture.json(&[
        "quota",
        "show",
        "ann@example.com",
        "--at",
        expires_at,
        "--json",
    ]);
    assert_eq!(later["check"]["unblock"], Value::Null);

    let output = fixture.ok(&["quota", "unblock", "ann@example.com", "--revoke"]);
    assert!(
        output.stdout.contains("Ended the unblock"),
        "{}",
        output.stdout
    );
    let shown = fixture.json(&["quota", "show", "ann@example.com", "--json"]);
    assert_eq!(shown["check"]["reason"], "daily_limit_exceeded");

    // The default is 24 hours; a user who is not blocked gets a warning.
    let output = fixture.ok(&[
        "quota",
        "unblock",
        "bob@example.com",
        "--reason",
        "just in case",
    ]);
    assert!(output.stdout.contains("(24h)"), "{}", output.stdout);
    assert!(
        output.stderr.contains("not blocked now"),
        "{}",
        output.stderr
    );
}

#[test]
fn non_email_identity_with_other_claim() {
    let fixture = Fixture::new();
    let with_sub = |args: &[&str]| {
        run_command(
            fixture
                .tollgate()
                .env("TOLLGATE_IDENTITY_CLAIM", "sub")
                .args(args),
        )
    };
    let output = with_sub(&["quota", "set-user", " 00U1AbC ", "--monthly-limit", "5M"]);
    assert_eq!(output.code, Some(0), "{output:?}");
    assert_eq!(fixture.list_json()[0]["identifier"], "00u1abc");

    // Input with an @ is still checked as an email address.
    let output = with_sub(&[
        "quota",
        "set-user",
        "a@@example.com",
        "--monthly-limit",
        "5M",
    ]);
    assert_eq!(output.code, Some(1), "{output:?}");
    // Whitespace is never part of an identity.
    let output = with_sub(&["quota", "set-user", "two words", "--monthly-limit", "5M"]);
    assert_eq!(output.code, Some(1), "{output:?}");

    let output = fixture.run(&["quota", "set-user", "00u1abc", "--monthly-limit", "5M"]);
    assert_eq!(
        output.code,
        Some(1),
        "the email claim needs an email: {output:?}"
    );
    let output = fixture.ok(&[
        "quota",
        "set-user",
        "00u1xyz",
        "--monthly-limit",
        "5M",
        "--identity-claim",
        "sub",
    ]);
    assert!(output.stdout.contains("00u1xyz"), "{}", output.stdout);
}

/// Deletes every policy through the CLI.
fn delete_all(fixture: &Fixture) {
    let listed = fixture.list_json();
    for policy in listed.as_array().expect("a JSON list") {
        let kind = policy["kind"].as_str().expect("a kind");
        let id = policy["identifier"].as_str().expect("an id");
        fixture.ok(&["quota", "delete", kind, id, "--force"]);
    }
    assert_eq!(fixture.list_json(), Value::Array(Vec::new()));
}

#[test]
fn export_import_round_trip() {
    for extension in ["json", "csv"] {
        let fixture = Fixture::new();
        seed(&fixture);
        fixture.ok(&[
            "quota",
            "set-group",
            "off",
            "--monthly-limit",
            "1234567",
            "--warn-at",
            "",
            "--disabled",
        ]);
        let first = fixture.path(&format!("first.{extension}"));
        let second = fixture.path(&format!("second.{extension}"));
        let output = fixture.ok(&["quota", "export", &first]);
        assert!(
            output.stdout.contains("Exported 4 policies"),
            "{}",
            output.stdout
        );
        let before = fixture.list_json();

        delete_all(&fixture);
        let output = fixture.ok(&["quota", "import", &first]);
        assert!(
            output.stdout.contains("4 created, 0 updated, 0 skipped"),
            "{}",
            output.stdout
        );
        fixture.ok(&["quota", "export", &second]);
        let first_text = std::fs::read_to_string(&first).expect("the first export");
        let second_text = std::fs::read_to_string(&second).expect("the second export");
        assert_eq!(first_text, second_text, "{extension} round trip");

        let strip_times = |listed: Value| -> Vec<Value> {
            listed
                .as_array()
                .expect("a JSON list")
                .iter()
                .map(|policy| {
                    let mut policy = policy.clone();
                    let object = policy.as_object_mut().expect("an object");
                    object.remove("created_at");
                    object.remove("updated_at");
                    policy
                })
                .collect()
        };
        assert_eq!(
            strip_times(fixture.list_json()),
            strip_times(before),
            "{extension}: the policies are the same"
        );
    }
}

#[test]
fn export_formats_carry_every_setting() {
    let fixture = Fixture::new();
    seed(&fixture);
    let output = fixture.ok(&[
        "quota", "export", "--stdout", "--format", "csv", "--type", "group",
    ]);
    assert_eq!(
        output.stdout,
        "kind,identifier,monthly_limit,daily_limit,daily_burst,monthly_enforcement,daily_enforcement,warning_thresholds,enabled\n\
         group,eng,300M,12M,,block,block,\"50,75\",true\n"
    );
    let exported = fixture.json(&["quota", "export", "--stdout"]);
    assert_eq!(exported["version"], 1);
    let default = &exported["policies"][2];
    assert_eq!(default["kind"], "default");
    assert_eq!(default["monthly_limit"], "225M");
    assert_eq!(default["daily_limit"], "8.25M");
    assert_eq!(default["daily_burst"], 10);
    assert_eq!(default["daily_enforcement"], "alert");
    assert_eq!(default["warning_thresholds"], serde_json::json!([80, 90]));
}

#[test]
fn import_is_all_or_nothing() {
    let fixture = Fixture::new();
    seed(&fixture);
    let file = fixture.file(
        "mixed.csv",
        "kind,identifier,monthly_limit,daily_limit,monthly_enforcement\n\
         user,good@example.com,5M,,block\n\
         user,bad@@example.com,5M,,block\n\
         group,ops,12Q,,block\n\
         group,ops2,5M,6M,block\n\
         user,GOOD@example.com,6M,,block\n\
         group,eng,1M,,maybe\n\
         robot,x,5M,,block\n",
    );
    let before = fixture.snapshot();
    let output = fixture.run(&["quota", "import", file.to_str().expect("UTF-8")]);
    assert_eq!(output.code, Some(1), "{output:?}");
    let expected_lines = [
        ("line 3:", "bad@@example.com"),
        ("line 4:", "12Q"),
        ("line 5:", "lower the daily limit"),
        ("line 6:", "also on line 2"),
        ("line 7:", "maybe"),
        ("line 8:", "robot"),
    ];
    for (line, phrase) in expected_lines {
        let reported = output
            .stderr
            .lines()
            .find(|text| text.trim_start().starts_with(line))
            .unwrap_or_else(|| panic!("{line} is listed: {}", output.stderr));
        assert!(
            reported.contains(phrase),
            "{line} names {phrase:?}: {reported}"
        );
    }
    assert!(
        !output.stderr.contains("line 2:"),
        "the good row is not listed: {}",
        output.stderr
    );
    assert!(
        output.stderr.contains("nothing was imported"),
        "{}",
        output.stderr
    );
    assert_eq!(fixture.snapshot(), before, "nothing changed");

    // JSON rows report the line each object starts on.
    let file = fixture.file(
        "mixed.json",
        r#"{
  "version": 1,
  "policies": [
    {"kind": "user", "identifier": "fine@example.com", "monthly_limit": "5M"},
    {"kind": "user", "identifier": "fine2@example.com", "monthly_limit": -5},
    {"kind": "group", "identifier": "x", "monthly_limit": "5M", "color": "red"}
  ]
}
"#,
    );
    let output = fixture.run(&["quota", "import", file.to_str().expect("UTF-8")]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output.stderr.contains("line 5: monthly_limit"),
        "{}",
        output.stderr
    );
    assert!(output.stderr.contains("negative"), "{}", output.stderr);
    assert!(output.stderr.contains("line 6:"), "{}", output.stderr);
    assert!(output.stderr.contains("\"color\""), "{}", output.stderr);
    assert_eq!(fixture.snapshot(), before, "nothing changed");
}

#[test]
fn import_rejects_duplicated_names() {
    let fixture = Fixture::new();
    seed(&fixture);
    let before = fixture.snapshot();

    let file = fixture.file(
        "duplicated.csv",
        "kind,identifier,monthly_limit,monthly_limit\ngroup,ops,5M,7M\n",
    );
    let output = fixture.run(&["quota", "import", file.to_str().expect("UTF-8")]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output.stderr.contains("line 1:"),
        "names the header line: {}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains("\"monthly_limit\" appears more than once"),
        "names the column: {}",
        output.stderr
    );
    assert!(
        output.stderr.contains("keep one monthly_limit column"),
        "says the fix: {}",
        output.stderr
    );
    assert_eq!(fixture.snapshot(), before, "nothing changed");

    let file = fixture.file(
        "duplicated.json",
        r#"[
  {"kind": "group", "identifier": "ops", "monthly_limit": "5M"},
  {"kind": "group", "identifier": "qa",
   "monthly_limit": "5M",
   "monthly_limit": "7M"}
]
"#,
    );
    let output = fixture.run(&["quota", "import", file.to_str().expect("UTF-8")]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output.stderr.contains("line 5:"),
        "names the line of the second key: {}",
        output.stderr
    );
    assert!(
        output
            .stderr
            .contains("\"monthly_limit\" appears more than once"),
        "names the key: {}",
        output.stderr
    );
    assert!(
        output.stderr.contains("keep one \"monthly_limit\" field"),
        "says the fix: {}",
        output.stderr
    );
    assert_eq!(fixture.snapshot(), before, "nothing changed");
}

#[test]
fn import_reads_enabled_values() {
    let fixture = Fixture::new();
    let file = fixture.file(
        "enabled.csv",
        "kind,identifier,monthly_limit,enabled\n\
         group,a,1M,true\n\
         group,b,1M,YES\n\
         group,c,1M,1\n\
         group,d,1M,false\n\
         group,e,1M,No\n\
         group,f,1M,0\n\
         group,g,1M,\n",
    );
    fixture.ok(&["quota", "import", file.to_str().expect("UTF-8")]);
    let policies = fixture.list_json();
    let enabled: Vec<(&str, bool)> = policies
        .as_array()
        .expect("a list")
        .iter()
        .map(|policy| {
            (
                policy["identifier"].as_str().expect("an identifier"),
                policy["enabled"].as_bool().expect("a flag"),
            )
        })
        .collect();
    assert_eq!(
        enabled,
        [
            ("a", true),
            ("b", true),
            ("c", true),
            ("d", false),
            ("e", false),
            ("f", false),
            ("g", true)
        ]
    );

    let file = fixture.file(
        "enabled-bad.csv",
        "kind,identifier,monthly_limit,enabled\ngroup,h,1M,2\n",
    );
    let output = fixture.run(&["quota", "import", file.to_str().expect("UTF-8")]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(
        output
            .stderr
            .contains("use true, yes or 1, or false, no or 0"),
        "lists the accepted values: {}",
        output.stderr
    );
}

#[test]
fn import_conflicts_need_a_choice() {
    let fixture = Fixture::new();
    seed(&fixture);
    let file = fixture.file(
        "update.csv",
        "kind,identifier,monthly_limit\n\
         user,ann@example.com,2B\n\
         group,new,7M\n\
         default,default,225M\n",
    );
    let file = file.to_str().expect("UTF-8");
    let before = fixture.snapshot();

    let output = fixture.run(&["quota", "import", file]);
    assert_eq!(output.code, Some(1), "{output:?}");
    assert!(output.stderr.contains("line 2:"), "{}", output.stderr);
    assert!(output.stderr.contains("--update"), "{}", output.stderr);
    assert!(
        output.stderr.contains("--skip-existing"),
        "{}",
        output.stderr
    );
    assert!(
        output.stderr.contains("line 4:"),
        "the default differs too: {}",
        output.stderr
    );

    let output = fixture.ok(&["quota", "import", file, "--update", "--dry-run"]);
    let plan: Vec<&str> = output.stdout.lines().collect();
    assert!(
        plan[0].starts_with("line 2: update the user policy for ann@example.com"),
        "{plan:?}"
    );
    assert!(
        plan[1].starts_with("line 3: create the group policy for new"),
        "{plan:?}"
    );
    assert!(
        plan[2].starts_with("line 4: update the default policy"),
        "{plan:?}"
    );
    assert!(
        plan[3].contains("0 to skip; nothing was changed"),
        "{plan:?}"
    );
    assert_eq!(fixture.snapshot(), before, "a dry run changes nothing");

    let output = fixture.ok(&["quota", "import", file, "--skip-existing", "--dry-run"]);
    assert!(output.stdout.contains("line 2: skip"), "{}", output.stdout);
    assert!(
        output
            .stdout
            .contains("1 to create, 0 to update, 2 to skip"),
        "{}",
        output.stdout
    );

    let output = fixture.ok(&["quota", "import", file, "--type", "group"]);
    assert!(
        output.stdout.contains("1 created, 0 updated, 2 skipped"),
        "{}",
        output.stdout
    );

    let output = fixture.ok(&[
        "quota",
        "import",
        file,
        "--update",
        "--auto-daily",
        "--burst",
        "20",
    ]);
    assert!(
        output.stdout.contains("0 created, 3 updated, 0 skipped"),
        "{}",
        output.stdout
    );
    let listed = fixture.list_json();
    assert_eq!(listed[0]["monthly_limit"], 2_000_000_000u64);
    assert_eq!(listed[0]["daily_limit"], 80_000_000, "2B / 30 × 1.2");

    let entries = fixture.json(&["quota", "audit", "--json", "--limit", "4"]);
    let actions: Vec<&str> = entries
        .as_array()
        .expect("a list")
        .iter()
        .map(|entry| entry["action"].as_str().expect("an action"))
        .collect();
    assert_eq!(actions, ["policy.import"; 4]);

    // Importing the same file again changes nothing and needs no flag.
    let output = fixture.ok(&["quota", "import", file, "--auto-daily", "--burst", "20"]);
    assert!(
        output.stdout.contains("0 created, 0 updated, 3 skipped"),
        "{}",
        output.stdout
    );
}

#[test]
fn usage_record_adds_usage_and_audits() {
    let fixture = Fixture::new();
    let output = fixture.ok(&[
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
    assert!(
        output.stdout.contains("at 2026-03-10 11:00:00 UTC."),
        "prints the time in UTC to the second: {}",
        output.stdout
    );
    let report = fixture.json(&[
        "quota",
        "usage",
        "ann@example.com",
        "--at",
        "2026-03-10T11:00:00Z",
        "--json",
    ]);
    assert_eq!(report["daily"]["by_type"]["output"], 2_500_000);
    assert_eq!(report["monthly"]["by_type"]["output"], 2_500_000);
    assert_eq!(report["daily"]["by_type"]["input"], 0);

    let entries = fixture.json(&["quota", "audit", "--json", "--limit", "1"]);
    assert_eq!(entries[0]["action"], "usage.record");
    assert_eq!(entries[0]["target"], "user:ann@example.com");
    assert_eq!(
        entries[0]["detail"]["reason"],
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
    for command in [
        "set-user",
        "set-group",
        "set-default",
        "list",
        "show",
        "usage",
        "delete",
        "unblock",
        "export",
        "import",
        "audit",
    ] {
        let output = fixture.ok(&["quota", command, "--help"]);
        assert!(
            output.stdout.contains("--db"),
            "{command}: {}",
            output.stdout
        );
    }
    let output = fixture.ok(&["quota", "set-user", "--help"]);
    for option in [
        "--monthly-limit",
        "--daily-limit",
        "--auto-daily",
        "--burst",
        "--enforcement",
        "--daily-enforcement",
        "--warn-at",
        "--disabled",
    ] {
        assert!(
            output.stdout.contains(option),
            "{option}: {}",
            output.stdout
        );
    }
    let output = fixture.run(&["quota", "frobnicate"]);
    assert_eq!(output.code, Some(1), "{output:?}");
}
