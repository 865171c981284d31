//! `tollgate serve` as a real process: it writes the port file once it
//! listens, serves health and check requests, and exits 0 on SIGTERM.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use support::{AUDIENCE, SigningKey, TestIssuer, claims};

/// Waits for the port file, then returns its `host:port`.
async fn wait_for_port_file(path: &std::path::Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(address) = std::fs::read_to_string(path) {
            return address;
        }
        if let Some(status) = child.try_wait().expect("the child status reads") {
            panic!("tollgate serve exited early with {status}");
        }
        assert!(Instant::now() < deadline, "no port file after 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends SIGTERM to the child by its PID and returns its exit code.
fn terminate(child: &mut Child) -> Option<i32> {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("the child status reads") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tollgate serve did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serve_runs_and_stops_on_sigterm() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = TestIssuer::start(&[&key]).await;
    let folder = tempfile::tempdir().expect("a temporary folder");
    let port_file = folder.path().join("port");
    let log_path = folder.path().join("serve.log");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .env("TOLLGATE_DB", folder.path().join("serve.db"))
        .env("TOLLGATE_ISSUER", &issuer.url)
        .env("TOLLGATE_AUDIENCE", AUDIENCE)
        .env("TOLLGATE_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("the log file"))
        .spawn()
        .expect("tollgate serve starts");

    let address = wait_for_port_file(&port_file, &mut child).await;
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let http = reqwest::Client::new();

    let health: Value = http
        .get(format!("http://{address}/health"))
        .send()
        .await
        .expect("health is answered")
        .json()
        .await
        .expect("JSON body");
    assert_eq!(health["status"], "ok");
    assert!(
        folder.path().join("serve.db").exists(),
        "the store file is created"
    );
    // The server logs "listening" before it serves the first request.
    let log = std::fs::read_to_string(&log_path).expect("the log is readable");
    assert!(
        log.contains(&format!("address={address}")),
        "the log names the bound address plainly: {log}"
    );
    assert!(!log.contains("Some("), "no Debug wrapper in the log: {log}");

    let response = http
        .get(format!("http://{address}/v1/check"))
        .bearer_auth(key.sign(&claims(&issuer.url, "served@example.com")))
        .send()
        .await
        .expect("check is answered");
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.expect("JSON body");
    assert_eq!(answer["user"], "served@example.com");
    assert_eq!(answer["reason"], "no_policy");

    assert_eq!(terminate(&mut child), Some(0), "a clean exit on SIGTERM");
}

#[tokio::test]
async fn serve_rejects_bad_issuer_url() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--issuer",
            "login.example.com",
        ])
        .args(["--audience", AUDIENCE])
        .env("TOLLGATE_DB", folder.path().join("serve.db"))
        .output()
        .expect("tollgate serve runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("login.example.com"), "{stderr}");
    assert!(stderr.contains("https://"), "{stderr}");
    assert!(
        !folder.path().join("serve.db").exists(),
        "nothing is created"
    );
}
