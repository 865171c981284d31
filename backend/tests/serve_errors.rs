//! `tollgate serve` started wrongly: a bad or busy --listen address, a
//! number out of range, and a store path that cannot be a store file. Each
//! must exit 1 with the value, the cause and the fix, and a busy port must
//! fail before the store is created. Also keeps the flag table of
//! backend/README.md in step with `tollgate serve --help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt as _;

/// Nothing listens on the discard port here, so key downloads fail fast.
const ISSUER: &str = "http://127.0.0.1:9";

fn serve(listen: &str, db: &Path) -> Command {
    let mut command = Command::cargo_bin("tollgate").expect("the tollgate binary");
    command
        .args(["serve", "--listen", listen, "--issuer", ISSUER])
        .args(["--audience", "tollgate-cli", "--db"])
        .arg(db)
        .env_remove("TOLLGATE_LOG")
        .env_remove("TOLLGATE_DB")
        .env_remove("TOLLGATE_LISTEN");
    command
}

/// Runs `command`, which must exit on its own, and returns the exit code
/// and stderr.
fn run(command: &mut Command) -> (Option<i32>, String) {
    let output = command.output().expect("tollgate runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn listen_parse_error_gives_an_example() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let db = folder.path().join("tollgate.db");
    for listen in ["8080", "127.0.0.1", "example:80", "localhost:http"] {
        let (code, stderr) = run(&mut serve(listen, &db));
        assert_eq!(code, Some(1), "{listen}: {stderr}");
        assert!(
            stderr.contains("use IP:PORT such as 127.0.0.1:8080"),
            "{listen}: {stderr}"
        );
        assert!(!db.exists(), "{listen}: no store is created");
    }
}

#[test]
fn localhost_listens_on_loopback() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let db = folder.path().join("tollgate.db");
    let port_file = folder.path().join("port");
    let mut child = serve("localhost:0", &db)
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tollgate starts");

    let deadline = Instant::now() + Duration::from_secs(30);
    let bound = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            break text;
        }
        if Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            panic!("the server did not write its port file");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().expect("the server stops");
    child.wait().expect("the server exits");
    assert!(bound.starts_with("127.0.0.1:"), "bound to {bound}");
}

#[test]
fn busy_port_fails_before_the_store() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let db = folder.path().join("state").join("tollgate.db");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("the bound address").to_string();

    let (code, stderr) = run(&mut serve(&address, &db));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&address), "names the address: {stderr}");
    assert!(
        stderr.contains("another process is listening"),
        "names the cause: {stderr}"
    );
    assert!(
        stderr.contains("choose another port with --listen"),
        "gives the fix: {stderr}"
    );
    assert!(!db.exists(), "the store is not created");
}

#[test]
fn foreign_address_says_cannot_assign() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let db = folder.path().join("tollgate.db");
    // 192.0.2.0/24 is reserved for documentation, so no interface has it.
    let (code, stderr) = run(&mut serve("192.0.2.1:0", &db));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("192.0.2.1 is not an address of this machine"),
        "{stderr}"
    );
    assert!(!db.exists(), "the store is not created");
}

#[test]
fn store_path_errors_name_cause_and_fix() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let plain_file = folder.path().join("plain-file");
    std::fs::write(&plain_file, "not a folder").expect("the file");
    let cases: [(PathBuf, &str); 2] = [
        (folder.path().to_owned(), "is a folder, not a file"),
        (
            plain_file.join("tollgate.db"),
            "is a file, so it cannot contain the store",
        ),
    ];
    for (db, cause) in cases {
        let (code, stderr) = run(&mut serve("127.0.0.1:0", &db));
        assert_eq!(code, Some(1), "{}: {stderr}", db.display());
        assert!(
            stderr.contains(&format!("cannot open the store {}", db.display())),
            "names the path: {stderr}"
        );
        assert!(stderr.contains(cause), "names the cause: {stderr}");
        assert!(
            stderr.contains("--db or TOLLGATE_DB"),
            "gives the fix: {stderr}"
        );
    }
}

/// Returns the long flags `tollgate serve --help` lists, without `--help`.
fn help_flags() -> Vec<String> {
    let output = Command::cargo_bin("tollgate")
        .expect("the tollgate binary")
        .args(["serve", "--help"])
        .output()
        .expect("tollgate runs");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let help = String::from_utf8(output.stdout).expect("UTF-8 help");
    help.lines()
        .filter_map(|line| {
            let flag = line.split_whitespace().next()?;
            let flag = flag.trim_end_matches(',');
            (flag.starts_with("--") && flag != "--help").then(|| flag.to_owned())
        })
        .collect()
}

#[test]
fn readme_flag_table_matches_help() {
    let readme_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&readme_path).expect("backend/README.md is readable");
    let table_flags: Vec<String> = readme
        .lines()
        .filter_map(|line| line.strip_prefix("| `--"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("--{name}"))
        .collect();
    assert_eq!(
        table_flags,
        help_flags(),
        "the flag table in backend/README.md must list the flags of `tollgate serve --help` \
         in the same order"
    );
}

#[test]
fn out_of_range_numbers_name_the_range() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let db = folder.path().join("tollgate.db");
    let cases = [
        (
            "--jwks-refresh-seconds",
            "-1",
            "use whole seconds from 1 to 86400",
        ),
        (
            "--jwks-refresh-seconds",
            "abc",
            "use whole seconds from 1 to 86400",
        ),
        (
            "--jwks-refresh-seconds",
            "0",
            "use whole seconds from 1 to 86400",
        ),
        ("--dedup-window-days", "-1", "use whole days from 1 to 3650"),
        (
            "--dedup-window-days",
            "3651",
            "use whole days from 1 to 3650",
        ),
    ];
    for (flag, value, range) in cases {
        let (code, stderr) = run(serve("127.0.0.1:0", &db).args([flag, value]));
        assert_eq!(code, Some(1), "{flag} {value}: {stderr}");
        assert!(stderr.contains(range), "{flag} {value}: {stderr}");
        assert!(!db.exists(), "{flag} {value}: no store is created");
    }
}
