//! The `tollgate` binary at the edges a first-time administrator hits: a
//! reader that closes stdout early, a store path that does not exist, and
//! usage totals at the limit of a 64-bit integer.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt as _;

struct Fixture {
    _folder: tempfile::TempDir,
    db: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let db = folder.path().join("state").join("tollgate.db");
        std::fs::create_dir(folder.path().join("state")).expect("the store folder");
        Self {
            _folder: folder,
            db,
        }
    }

    fn tollgate(&self, args: &[&str]) -> Command {
        let mut command = Command::cargo_bin("tollgate").expect("the tollgate binary");
        command
            .args(args)
            .env("TOLLGATE_DB", &self.db)
            .env("USER", "test-admin")
            .env_remove("TOLLGATE_LOG")
            .env_remove("TOLLGATE_IDENTITY_CLAIM")
            .env_remove("TOLLGATE_COUNTED_TYPES");
        command
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.tollgate(args).output().expect("tollgate runs")
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let output = self.run(args);
        assert_eq!(output.status.code(), Some(0), "{args:?}: {output:?}");
        output
    }
}

/// Counts the entries of `folder`.
fn folder_entries(folder: &std::path::Path) -> usize {
    std::fs::read_dir(folder)
        .expect("the folder is readable")
        .count()
}

/// Runs `args` with a stdout pipe whose reader is closed before the command
/// writes, and returns the exit code and stderr.
fn run_with_closed_stdout(fixture: &Fixture, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let mut child = fixture
        .tollgate(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("tollgate starts");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut stderr)
        .expect("stderr is UTF-8");
    let status = child.wait().expect("tollgate exits");
    (status.code(), stderr)
}

#[test]
fn closed_stdout_exits_quietly() {
    let fixture = Fixture::new();
    for index in 0..30 {
        fixture.ok(&[
            "quota",
            "set-user",
            &format!("user{index}@example.com"),
            "--monthly-limit",
            "5M",
        ]);
    }
    for args in [
        &["quota", "audit"][..],
        &["quota", "audit", "--json"],
        &["quota", "list"],
        &["quota", "list", "--json"],
        &["quota", "show", "user1@example.com"],
        &["quota", "export", "--stdout", "--format", "csv"],
    ] {
        let (code, stderr) = run_with_closed_stdout(&fixture, args);
        assert_eq!(code, Some(0), "{args:?} exits 0: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panics: {stderr}");
        assert!(stderr.is_empty(), "{args:?} prints nothing: {stderr}");
    }
}

#[test]
fn read_commands_need_an_existing_store() {
    let fixture = Fixture::new();
    let path = fixture.db.to_str().expect("UTF-8 path").to_owned();
    for args in [
        &["quota", "list"][..],
        &["quota", "list", "--json"],
        &["quota", "show", "ann@example.com"],
        &["quota", "usage", "ann@example.com"],
        &["quota", "audit"],
        &["quota", "export", "--stdout"],
    ] {
        let output = fixture.run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("no store at {path}; check --db or TOLLGATE_DB")),
            "{args:?} names the path and the fix: {stderr}"
        );
        assert!(!fixture.db.exists(), "{args:?} creates no store file");
        assert_eq!(
            folder_entries(fixture.db.parent().expect("a parent")),
            0,
            "{args:?} leaves the store folder empty"
        );
    }

    fixture.ok(&["quota", "set-default", "--monthly-limit", "5M"]);
    assert!(fixture.db.exists(), "a write command creates the store");
    fixture.ok(&["quota", "list"]);
}

#[test]
fn usage_record_rejects_overflow() {
    let fixture = Fixture::new();
    let max = i64::MAX.to_string();
    let user = "big@example.com";
    fixture.ok(&["quota", "set-user", user, "--monthly-limit", "5M"]);
    fixture.ok(&["usage", "record", user, "--tokens", &max]);

    let output = fixture.run(&["usage", "record", user, "--tokens", &max]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("record fewer tokens"),
        "the message gives the fix: {stderr}"
    );
    let output = fixture.run(&["usage", "record", user, "--tokens", "1"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "one more token is rejected too"
    );

    let output = fixture.ok(&["quota", "usage", user, "--json"]);
    let usage: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("usage prints JSON");
    assert!(
        usage.to_string().contains(&max),
        "the total stays at i64::MAX: {usage}"
    );
}
