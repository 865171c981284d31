//! Usage ingest with the real OpenTelemetry Python SDK as the exporter and
//! `tollgate serve` as a process. Stored totals equal what was exported,
//! and parallel exporters give exact totals. A webhook receiver gets one
//! alert per threshold and period across repeated ingests, a restart and
//! two servers on one store.
//!
//! The SDK comes from the virtual environment of scripts/install-deps.sh
//! (`TOLLGATE_VENV`, default `/var/cache/tollgate/venv`).

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use chrono::Utc;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tollgate_backend::store::Store;
use tollgate_backend::store::sqlite::SqliteStore;
use tollgate_protocol::check::{Enforcement, PolicyKind};
use tollgate_quota::Policy;

use support::{AUDIENCE, SigningKey, TestIssuer, claims};

const MODEL: &str = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";

fn venv_python() -> PathBuf {
    let venv = std::env::var("TOLLGATE_VENV").unwrap_or_else(|_| "/var/cache/tollgate/venv".into());
    let python = Path::new(&venv).join("bin/python");
    assert!(
        python.exists(),
        "{} is missing; run scripts/install-deps.sh to create the virtual environment",
        python.display()
    );
    python
}

fn export_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/otel_export.py")
}

/// A running `tollgate serve` on a store file, stopped by its PID on drop.
struct Server {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Server {
    fn start(folder: &Path, issuer: &str, extra: &[&str]) -> Self {
        Self::start_on(folder, &folder.join("tollgate.db"), issuer, extra)
    }

    /// Starts a server on the store file `db`, with its port file and log in
    /// `folder`.
    fn start_on(folder: &Path, db: &Path, issuer: &str, extra: &[&str]) -> Self {
        let port_file = folder.join("port");
        let _ = std::fs::remove_file(&port_file);
        let log = folder.join(format!("serve-{}.log", Utc::now().timestamp_micros()));
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .args(extra)
            .env("TOLLGATE_DB", db)
            .env("TOLLGATE_ISSUER", issuer)
            .env("TOLLGATE_AUDIENCE", AUDIENCE)
            .env("TOLLGATE_LOG", "info,tollgate_backend=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("the log file is created"))
            .spawn()
            .expect("tollgate serve starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        let address = loop {
            if let Ok(address) = std::fs::read_to_string(&port_file) {
                break address;
            }
            if let Some(status) = child.try_wait().expect("the child status reads") {
                panic!(
                    "tollgate serve exited with {status}: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "no port file after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self {
            child,
            url: format!("http://{}", address.trim()),
            log,
        }
    }

    fn endpoint(&self) -> String {
        format!("{}/v1/metrics", self.url)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the Python exporter and returns the tokens it recorded per
/// "model/type".
fn export(endpoint: &str, token: &str, args: &[&str]) -> BTreeMap<String, u64> {
    let output = Command::new(venv_python())
        .arg(export_script())
        .args(["--endpoint", endpoint, "--token", token])
        .args(args)
        .env("OTEL_SDK_DISABLED", "false")
        .output()
        .expect("the Python exporter runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the exporter failed ({}):\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("the exporter prints JSON");
    report["totals"]
        .as_object()
        .expect("totals is an object")
        .iter()
        .map(|(key, value)| (key.clone(), value.as_u64().expect("a whole number")))
        .collect()
}

/// Reads today's per-model totals of `user` as "model/type" → tokens.
async fn stored_totals(db: &Path, user: &str) -> BTreeMap<String, u64> {
    let store = SqliteStore::open(db).expect("the store opens");
    store
        .model_usage(user, Utc::now())
        .await
        .expect("model usage reads")
        .into_iter()
        .map(|row| (format!("{}/{}", row.model, row.type_name), row.tokens))
        .collect()
}

struct Fixture {
    key: SigningKey,
    issuer: TestIssuer,
    folder: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Self {
        let key = SigningKey::rsa("rsa-1");
        let issuer = TestIssuer::start(&[&key]).await;
        Self {
            key,
            issuer,
            folder: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    fn token(&self, email: &str) -> String {
        self.key.sign(&claims(&self.issuer.url, email))
    }

    fn db(&self) -> PathBuf {
        self.folder.path().join("tollgate.db")
    }

    fn serve(&self, extra: &[&str]) -> Server {
        Server::start(self.folder.path(), &self.issuer.url, extra)
    }
}

async fn exporter_totals_match(protocol: &'static str) {
    let fixture = Fixture::start().await;
    let server = fixture.serve(&[]);
    let user = format!("{protocol}@example.com");
    let token = fixture.token(&user);
    let endpoint = server.endpoint();
    let models = format!("{MODEL},us.anthropic.claude-haiku-4-5-20251001-v1:0");
    let exported = tokio::task::spawn_blocking(move || {
        export(
            &endpoint,
            &token,
            &["--protocol", protocol, "--rounds", "4", "--models", &models],
        )
    })
    .await
    .expect("the exporter task finishes");
    assert_eq!(exported.len(), 8, "two models × four types");
    let stored = stored_totals(&fixture.db(), &user).await;
    assert_eq!(stored, exported, "server log:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_protobuf_totals_match() {
    exporter_totals_match("protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_json_totals_match() {
    exporter_totals_match("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_integers_and_spoofed_email() {
    let fixture = Fixture::start().await;
    let server = fixture.serve(&[]);
    let token = fixture.token("mia@example.com");
    let endpoint = server.endpoint();
    let exported = tokio::task::spawn_blocking(move || {
        export(
            &endpoint,
            &token,
            &[
                "--integers",
                "--spoof-email",
                "victim@example.com",
                "--rounds",
                "2",
            ],
        )
    })
    .await
    .expect("the exporter task finishes");
    assert_eq!(
        stored_totals(&fixture.db(), "mia@example.com").await,
        exported
    );
    assert!(
        stored_totals(&fixture.db(), "victim@example.com")
            .await
            .is_empty(),
        "the payload's user.email is not a user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_exporters_give_exact_totals() {
    let fixture = Fixture::start().await;
    let server = fixture.serve(&[]);
    let users: Vec<String> = (0..4)
        .map(|index| format!("user{index}@example.com"))
        .collect();
    let mut tasks = Vec::new();
    for exporter in 0..8 {
        let user = users[exporter % 4].clone();
        let token = fixture.token(&user);
        let endpoint = server.endpoint();
        let protocol = if exporter % 2 == 0 {
            "protobuf"
        } else {
            "json"
        };
        tasks.push(tokio::task::spawn_blocking(move || {
            let seed = exporter.to_string();
            let session = format!("session-{exporter}");
            let totals = export(
                &endpoint,
                &token,
                &[
                    "--protocol",
                    protocol,
                    "--rounds",
                    "5",
                    "--seed",
                    &seed,
                    "--session",
                    &session,
                ],
            );
            (user, totals)
        }));
    }
    let mut expected: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for task in tasks {
        let (user, totals) = task.await.expect("an exporter task finishes");
        let entry = expected.entry(user).or_default();
        for (key, tokens) in totals {
            *entry.entry(key).or_default() += tokens;
        }
    }
    for user in &users {
        let stored = stored_totals(&fixture.db(), user).await;
        assert_eq!(
            &stored,
            &expected[user],
            "{user}; server log:\n{}",
            server.log()
        );
    }
}

/// A webhook receiver on 127.0.0.1 that records each JSON body; it fails
/// the first `failures` requests with HTTP 500.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    _shutdown: oneshot::Sender<()>,
}

#[derive(Clone)]
struct ReceiverState {
    bodies: Arc<Mutex<Vec<Value>>>,
    failures: Arc<Mutex<u32>>,
}

async fn receive(State(state): State<ReceiverState>, Json(body): Json<Value>) -> StatusCode {
    {
        let mut failures = state.failures.lock().expect("the lock is free");
        if *failures > 0 {
            *failures -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
    }
    state.bodies.lock().expect("the lock is free").push(body);
    StatusCode::OK
}

impl Receiver {
    async fn start(failures: u32) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!(
            "http://{}/hook/secret-part",
            listener.local_addr().expect("address")
        );
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let state = ReceiverState {
            bodies: Arc::clone(&bodies),
            failures: Arc::new(Mutex::new(failures)),
        };
        let app = Router::new()
            .route("/hook/secret-part", post(receive))
            .with_state(state);
        let (shutdown, signal) = oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = signal.await;
                })
                .await
                .expect("the receiver serves");
        });
        Self {
            url,
            bodies,
            _shutdown: shutdown,
        }
    }

    fn keys(&self) -> Vec<String> {
        self.bodies
            .lock()
            .expect("the lock is free")
            .iter()
            .map(|body| {
                body["alert"]["dedup_key"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    async fn wait_for(&self, count: usize, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        loop {
            let keys = self.keys();
            if keys.len() >= count || Instant::now() > deadline {
                return keys;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn put_daily_block_policy(db: &Path, user: &str, daily_limit: u64) {
    let store = SqliteStore::open(db).expect("the store opens");
    let mut policy =
        Policy::new(PolicyKind::User, user, 100_000_000, Utc::now()).expect("a valid policy");
    policy.daily_limit = Some(daily_limit);
    policy.daily_enforcement = Enforcement::Block;
    store
        .put_policy(&policy)
        .await
        .expect("the policy is stored");
}

fn export_fixed(endpoint: String, token: String, value: u64) {
    let value = value.to_string();
    // One model, four types: each round adds 4 × value tokens.
    export(
        &endpoint,
        &token,
        &["--rounds", "1", "--fixed-value", &value],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_one_alert_per_threshold_across_restart() {
    let fixture = Fixture::start().await;
    let receiver = Receiver::start(1).await;
    let user = "quinn@example.com";
    let token = fixture.token(user);
    let mut server = fixture.serve(&["--alert-webhook", &receiver.url]);
    put_daily_block_policy(&fixture.db(), user, 10_000).await;

    // 8,400 tokens: past 80 %. The first POST fails, so the alert is retried.
    let endpoint = server.endpoint();
    let exporter_token = token.clone();
    tokio::task::spawn_blocking(move || export_fixed(endpoint, exporter_token, 2_100))
        .await
        .expect("the exporter finishes");
    let day = Utc::now().format("%Y-%m-%d").to_string();
    let keys = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(
        keys,
        [format!("{user}/daily/{day}/threshold-80")],
        "{}",
        server.log()
    );

    // Small additions below 90 % raise nothing more.
    for _ in 0..3 {
        let endpoint = server.endpoint();
        let exporter_token = token.clone();
        tokio::task::spawn_blocking(move || export_fixed(endpoint, exporter_token, 10))
            .await
            .expect("the exporter finishes");
    }

    server.stop();
    let server = fixture.serve(&["--alert-webhook", &receiver.url]);
    // 8,520 + 2,000 = 10,520 tokens: past 90 % and the limit.
    let endpoint = server.endpoint();
    let exporter_token = token.clone();
    tokio::task::spawn_blocking(move || export_fixed(endpoint, exporter_token, 500))
        .await
        .expect("the exporter finishes");
    let keys = receiver.wait_for(3, Duration::from_secs(10)).await;
    // Another export over the limit raises nothing.
    let endpoint = server.endpoint();
    tokio::task::spawn_blocking(move || export_fixed(endpoint, token, 500))
        .await
        .expect("the exporter finishes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let keys_after = receiver.keys();
    assert_eq!(
        keys,
        [
            format!("{user}/daily/{day}/threshold-80"),
            format!("{user}/daily/{day}/threshold-90"),
            format!("{user}/daily/{day}/limit"),
        ],
        "{}",
        server.log()
    );
    assert_eq!(keys_after, keys, "no alert twice");

    let bodies = receiver.bodies.lock().expect("the lock is free").clone();
    let limit = &bodies[2];
    let text = limit["text"].as_str().expect("a Slack text field");
    for expected in [
        user,
        "daily limit",
        "10K tokens",
        "user quinn@example.com",
        "enforcement: block",
        "tollgate quota set-user quinn@example.com --daily-limit",
        "tollgate quota unblock quinn@example.com",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
    assert_eq!(limit["alert"]["tokens"], 10_520);
    assert!(
        !server.log().contains("secret-part"),
        "the webhook path is not logged"
    );
    assert!(
        server.log().contains("reached the daily limit"),
        "the log sink"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_usage_raises_no_alert_today() {
    let fixture = Fixture::start().await;
    let receiver = Receiver::start(0).await;
    let user = "rita@example.com";
    let server = fixture.serve(&["--alert-webhook", &receiver.url]);
    put_daily_block_policy(&fixture.db(), user, 1_000).await;

    // Yesterday's usage far over the daily limit, arriving today.
    let yesterday = Utc::now() - chrono::Duration::days(1);
    let body = serde_json::json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{
        "name": "claude_code.token.usage",
        "sum": {"aggregationTemporality": 1, "isMonotonic": true, "dataPoints": [{
            "attributes": [{"key": "type", "value": {"stringValue": "output"}}],
            "startTimeUnixNano": (yesterday.timestamp_nanos_opt().expect("fits") - 1_000_000_000).to_string(),
            "timeUnixNano": yesterday.timestamp_nanos_opt().expect("fits").to_string(),
            "asDouble": 5000.0
        }]}
    }]}]}]});
    let response = reqwest::Client::new()
        .post(server.endpoint())
        .bearer_auth(fixture.token(user))
        .json(&body)
        .send()
        .await
        .expect("the export is answered");
    assert_eq!(response.status(), 200);

    // Today: a little usage, below 80 % of the daily limit.
    let endpoint = server.endpoint();
    let token = fixture.token(user);
    tokio::task::spawn_blocking(move || export_fixed(endpoint, token, 10))
        .await
        .expect("the exporter finishes");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let daily: Vec<String> = receiver
        .keys()
        .into_iter()
        .filter(|key| key.contains("/daily/"))
        .collect();
    assert!(daily.is_empty(), "no daily alert today: {daily:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_raise_each_alert_once() {
    let fixture = Fixture::start().await;
    let receiver = Receiver::start(0).await;
    let user = "sam@example.com";
    let first = fixture.serve(&["--alert-webhook", &receiver.url]);
    // The second server's port file goes to its own folder; both share the
    // store file.
    let second_folder = fixture.folder.path().join("second");
    std::fs::create_dir_all(&second_folder).expect("the folder is created");
    let second = Server::start_on(
        &second_folder,
        &fixture.db(),
        &fixture.issuer.url,
        &["--alert-webhook", &receiver.url],
    );
    put_daily_block_policy(&fixture.db(), user, 10_000).await;

    // 8 exporters, 4 per server, each 1,600 tokens: 12,800 in all.
    let mut tasks = Vec::new();
    for exporter in 0..8 {
        let endpoint = if exporter % 2 == 0 {
            first.endpoint()
        } else {
            second.endpoint()
        };
        let token = fixture.token(user);
        tasks.push(tokio::task::spawn_blocking(move || {
            let session = format!("session-{exporter}");
            export(
                &endpoint,
                &token,
                &[
                    "--rounds",
                    "4",
                    "--fixed-value",
                    "100",
                    "--session",
                    &session,
                ],
            )
        }));
    }
    for task in tasks {
        task.await.expect("an exporter task finishes");
    }
    let keys = receiver.wait_for(3, Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut keys_after = receiver.keys();
    keys_after.sort();
    let day = Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(
        keys_after,
        [
            format!("{user}/daily/{day}/limit"),
            format!("{user}/daily/{day}/threshold-80"),
            format!("{user}/daily/{day}/threshold-90"),
        ],
        "each alert once across both servers:\n{}\n{}",
        first.log(),
        second.log()
    );
    let store = SqliteStore::open(&fixture.db()).expect("the store opens");
    let usage = store.usage(user, Utc::now()).await.expect("usage reads");
    assert_eq!(usage.daily.input + usage.daily.output, 6_400);
    assert_eq!(usage.daily.cache_read + usage.daily.cache_creation, 6_400);
    assert_eq!(store.alerts(Some(user)).await.expect("alerts").len(), 3);
}
