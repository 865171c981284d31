//! `tollgate serve` as a real process against a local issuer whose JWKS
//! changes: a withdrawn signing key stops verifying tokens, cached ones
//! included, within the refresh interval, and a JWKS that fails or lists no
//! key keeps the keys downloaded before.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use support::{AUDIENCE, SigningKey, claims};

/// The `--jwks-refresh-seconds` of these tests.
const REFRESH_SECONDS: u64 = 1;
/// How long a change of the JWKS may take to show, with a wide margin over
/// the refresh interval for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

/// A local issuer whose JWKS can change, fail with HTTP 500, and which
/// sends `Cache-Control: max-age=3600` so that the tests also show that the
/// configured interval caps the issuer's max-age.
struct ChangingIssuer {
    url: String,
    published: Arc<Mutex<Vec<Value>>>,
    failing: Arc<AtomicBool>,
    fetches: Arc<AtomicUsize>,
}

impl ChangingIssuer {
    async fn start(keys: &[&SigningKey]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the issuer");
        let url = format!("http://{}", listener.local_addr().expect("issuer address"));
        let published = Arc::new(Mutex::new(
            keys.iter().map(|key| key.jwk.clone()).collect::<Vec<_>>(),
        ));
        let failing = Arc::new(AtomicBool::new(false));
        let fetches = Arc::new(AtomicUsize::new(0));

        let discovery = json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") });
        let (keys_for_route, failing_for_route, fetches_for_route) = (
            Arc::clone(&published),
            Arc::clone(&failing),
            Arc::clone(&fetches),
        );
        let app = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || {
                    let discovery = discovery.clone();
                    async move { axum::Json(discovery) }
                }),
            )
            .route(
                "/jwks",
                get(move || {
                    fetches_for_route.fetch_add(1, Ordering::SeqCst);
                    let response = if failing_for_route.load(Ordering::SeqCst) {
                        (StatusCode::INTERNAL_SERVER_ERROR, "the key store is down").into_response()
                    } else {
                        let keys = keys_for_route.lock().expect("keys lock").clone();
                        (
                            [(header::CACHE_CONTROL, "public, max-age=3600")],
                            axum::Json(json!({ "keys": keys })),
                        )
                            .into_response()
                    };
                    async move { response }
                }),
            );
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("the issuer serves");
        });
        Self {
            url,
            published,
            failing,
            fetches,
        }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.published.lock().expect("keys lock") =
            keys.iter().map(|key| key.jwk.clone()).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// Waits until the JWKS has been requested `count` more times.
    async fn wait_for_fetches(&self, count: usize) {
        let target = self.fetches() + count;
        let deadline = Instant::now() + DEADLINE;
        while self.fetches() < target {
            assert!(
                Instant::now() < deadline,
                "the JWKS was not requested {count} more times within {DEADLINE:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `tollgate serve` with a 1 s JWKS refresh, logging to a file.
struct Server {
    child: Child,
    address: String,
    http: reqwest::Client,
    _folder: tempfile::TempDir,
    log: std::path::PathBuf,
}

impl Server {
    async fn start(issuer: &str) -> Self {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let port_file = folder.path().join("port");
        let log = folder.path().join("serve.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .env("TOLLGATE_DB", folder.path().join("serve.db"))
            .env("TOLLGATE_ISSUER", issuer)
            .env("TOLLGATE_AUDIENCE", AUDIENCE)
            .env("TOLLGATE_JWKS_REFRESH_SECONDS", REFRESH_SECONDS.to_string())
            .env("TOLLGATE_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file is created"))
            .spawn()
            .expect("tollgate serve starts");
        let address = wait_for_port_file(&port_file, &mut child).await;
        Self {
            child,
            address,
            http: reqwest::Client::new(),
            _folder: folder,
            log,
        }
    }

    async fn check(&self, token: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("http://{}/v1/check", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("the check request is answered");
        let status = response.status().as_u16();
        (status, response.json().await.expect("the body is JSON"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The child is this test's own process, stopped by its PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_for_port_file(path: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(address) = std::fs::read_to_string(path) {
            return address;
        }
        if let Some(status) = child.try_wait().expect("the child status reads") {
            panic!("tollgate serve exited early with {status}");
        }
        assert!(
            Instant::now() < deadline,
            "no port file within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn withdrawn_key_is_rejected_after_refresh() {
    let withdrawn = SigningKey::rsa("rsa-withdrawn");
    let kept = SigningKey::rsa("rsa-kept");
    let issuer = ChangingIssuer::start(&[&withdrawn, &kept]).await;
    let server = Server::start(&issuer.url).await;

    let token = withdrawn.sign(&claims(&issuer.url, "ann@example.com"));
    let other_token = kept.sign(&claims(&issuer.url, "bob@example.com"));
    for attempt in ["first", "cached"] {
        let (status, body) = server.check(&token).await;
        assert_eq!(status, 200, "the {attempt} check of a valid token: {body}");
    }

    issuer.publish(&[&kept]);
    let withdrawn_at = Instant::now();
    let (status, body) = loop {
        let (status, body) = server.check(&token).await;
        if status != 200 || withdrawn_at.elapsed() > DEADLINE {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = withdrawn_at.elapsed();
    assert_eq!(
        status, 401,
        "a token of a withdrawn key is rejected: {body}"
    );
    assert_eq!(body["error"], "unknown_key", "{body}");
    let message = body["message"].as_str().expect("a message");
    assert!(
        message.contains("rsa-withdrawn"),
        "names the key: {message}"
    );
    assert!(message.contains("withdrawn"), "says why: {message}");
    assert!(
        message.contains("log in again"),
        "says what to do: {message}"
    );
    // The issuer's max-age of one hour must not delay the refresh beyond
    // the configured second; the margin covers a loaded machine.
    assert!(
        took < Duration::from_secs(REFRESH_SECONDS + 10),
        "the withdrawal took {took:?} to show"
    );

    let (status, body) = server.check(&other_token).await;
    assert_eq!(status, 200, "a token of a kept key still passes: {body}");
    let log = server.log();
    assert!(
        log.contains("withdrew a signing key") && log.contains("rsa-withdrawn"),
        "the withdrawal is logged: {log}"
    );
}

#[tokio::test]
async fn failing_jwks_keeps_previous_keys() {
    let key = SigningKey::rsa("rsa-1");
    let issuer = ChangingIssuer::start(&[&key]).await;
    let server = Server::start(&issuer.url).await;

    let cached = key.sign(&claims(&issuer.url, "ann@example.com"));
    let (status, body) = server.check(&cached).await;
    assert_eq!(status, 200, "{body}");

    issuer.failing.store(true, Ordering::SeqCst);
    issuer.wait_for_fetches(2).await;
    let (status, body) = server.check(&cached).await;
    assert_eq!(
        status, 200,
        "a cached token passes while the JWKS fails: {body}"
    );
    let fresh = key.sign(&claims(&issuer.url, "bob@example.com"));
    let (status, body) = server.check(&fresh).await;
    assert_eq!(
        status, 200,
        "a new token passes while the JWKS fails: {body}"
    );
    let log = server.log();
    assert!(
        log.contains("cannot refresh the JWKS") && log.contains("HTTP 500"),
        "the failed refresh is logged as a warning: {log}"
    );

    // A JWKS response that lists no key is treated as a failure too.
    issuer.publish(&[]);
    issuer.failing.store(false, Ordering::SeqCst);
    issuer.wait_for_fetches(2).await;
    let another = key.sign(&claims(&issuer.url, "cy@example.com"));
    let (status, body) = server.check(&another).await;
    assert_eq!(status, 200, "an empty JWKS keeps the keys: {body}");
    assert!(
        server.log().contains("lists no usable signing key"),
        "the empty JWKS is logged: {}",
        server.log()
    );
}
