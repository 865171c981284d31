//! Request handling against a fake STS, a fake quota backend and the
//! in-memory secret store.

use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tokio_util::sync::CancellationToken;
use tollgate_protocol::Secret;
use tollgate_protocol::agent::{ErrorBody, ErrorKind, RequestBody, Response};
use tollgate_protocol::check::{CheckAnswer, Enforcement, PeriodUsage, Reason, Usage};

use super::Agent;
use crate::cache::session::{IdentityTokens, StoredSession, StsCredentials};
use crate::config::ConfigSource;
use crate::login::oidc::Oidc;
use crate::progress::Progress;
use crate::store::{MemoryStore, SecretStore};
use crate::sts::{AssumeRoleRequest, BoxFuture, StsApi, StsError};

pub(crate) const ID_TOKEN: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJpZC10b2tlbi1zZWNyZXQiOjF9.c2lnbmF0dXJlLXNlY3JldA";
pub(crate) const REFRESH_TOKEN: &str = "refresh-token-secret-7f3a";

/// An STS stand-in that counts calls and issues numbered credentials.
#[derive(Default)]
pub(crate) struct FakeSts {
    pub calls: AtomicUsize,
    pub requests: StdMutex<Vec<AssumeRoleRequest>>,
}

impl StsApi for FakeSts {
    fn assume_role(
        &self,
        request: AssumeRoleRequest,
    ) -> BoxFuture<'_, Result<StsCredentials, StsError>> {
        Box::pin(async move {
            // Long enough that parallel requests overlap with the call.
            tokio::time::sleep(StdDuration::from_millis(50)).await;
            let number = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let expiration = Utc::now() + Duration::seconds(i64::from(request.duration_seconds));
            self.requests.lock().unwrap().push(request);
            Ok(StsCredentials {
                access_key_id: format!("ASIAFAKE{number}"),
                secret_access_key: Secret::new(format!("secret-access-key-{number}-9c1e")),
                session_token: Secret::new(format!("session-token-{number}-44d0")),
                expiration,
                assumed_role_arn: None,
            })
        })
    }
}

/// What the fake quota backend returns.
#[derive(Clone)]
pub(crate) enum QuotaReply {
    Answer(Box<CheckAnswer>),
    Status(u16),
}

/// A local HTTP server that serves `GET /v1/check`.
pub(crate) struct FakeQuota {
    pub url: String,
    pub reply: Arc<StdMutex<QuotaReply>>,
    pub calls: Arc<AtomicUsize>,
    pub authorization: Arc<StdMutex<Vec<String>>>,
}

impl FakeQuota {
    pub fn start(reply: QuotaReply) -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let url = format!(
            "http://127.0.0.1:{}",
            server.server_addr().to_ip().unwrap().port()
        );
        let reply = Arc::new(StdMutex::new(reply));
        let calls = Arc::new(AtomicUsize::new(0));
        let authorization = Arc::new(StdMutex::new(Vec::new()));
        let (thread_reply, thread_calls, thread_auth) =
            (reply.clone(), calls.clone(), authorization.clone());
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                thread_calls.fetch_add(1, Ordering::SeqCst);
                if let Some(header) = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                {
                    thread_auth.lock().unwrap().push(header.value.to_string());
                }
                let response = match (request.url(), thread_reply.lock().unwrap().clone()) {
                    ("/v1/check", QuotaReply::Answer(answer)) => {
                        tiny_http::Response::from_string(serde_json::to_string(&*answer).unwrap())
                    }
                    ("/v1/check", QuotaReply::Status(status)) => tiny_http::Response::from_string(
                        "{\"error\":\"boom\",\"message\":\"backend broke\"}",
                    )
                    .with_status_code(status),
                    _ => tiny_http::Response::from_string("not found").with_status_code(404),
                };
                let _ = request.respond(response);
            }
        });
        Self {
            url,
            reply,
            calls,
            authorization,
        }
    }

    pub fn set(&self, reply: QuotaReply) {
        *self.reply.lock().unwrap() = reply;
    }
}

pub(crate) fn answer(allowed: bool) -> CheckAnswer {
    let period = |tokens, limit, resets_at: &str| PeriodUsage {
        tokens,
        limit: Some(limit),
        percent: Some(tokens as f64 / limit as f64 * 100.0),
        enforcement: Some(Enforcement::Block),
        warning_threshold: None,
        resets_at: resets_at.parse().unwrap(),
    };
    CheckAnswer {
        allowed,
        reason: if allowed {
            Reason::WithinLimits
        } else {
            Reason::MonthlyLimitExceeded
        },
        message: if allowed {
            "Within limits".into()
        } else {
            "Monthly limit reached".into()
        },
        user: "ana@example.com".into(),
        usage: Usage {
            monthly: period(
                if allowed { 1_000_000 } else { 230_000_000 },
                225_000_000,
                "2027-01-01T00:00:00Z",
            ),
            daily: period(1_000, 8_250_000, "2026-12-05T00:00:00Z"),
            counted_types: Vec::new(),
        },
        policy: None,
        unblock: None,
        checked_at: Utc::now(),
    }
}

pub(crate) fn config_text(quota_url: Option<&str>, recheck: u32, fail_mode: &str) -> String {
    let quota = quota_url
        .map(|url| format!("quota_url = \"{url}\"\nquota_recheck_minutes = {recheck}\nfail_mode = \"{fail_mode}\"\n"))
        .unwrap_or_default();
    format!(
        "[profiles.bedrock]\n\
         issuer = \"http://127.0.0.1:9\"\n\
         client_id = \"tollgate-cli\"\n\
         role_arn = \"arn:aws:iam::123456789012:role/ClaudeCodeBedrock\"\n\
         region = \"us-east-1\"\n\
         session_duration_minutes = 60\n\
         {quota}"
    )
}

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub agent: Arc<Agent>,
    pub sts: Arc<FakeSts>,
    pub store: Arc<MemoryStore>,
}

impl Fixture {
    pub fn new(config: &str) -> Self {
        Self::with_store(config, Arc::new(MemoryStore::default()))
    }

    pub fn with_store(config: &str, store: Arc<MemoryStore>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let sts = Arc::new(FakeSts::default());
        let agent = Arc::new(Agent::new(
            ConfigSource::new(path),
            Oidc::new().unwrap(),
            sts.clone(),
            store.clone(),
            CancellationToken::new(),
        ));
        Self {
            dir,
            agent,
            sts,
            store,
        }
    }

    pub fn rewrite_config(&self, config: &str) {
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, config).unwrap();
        let later = std::time::SystemTime::now() + StdDuration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
    }

    /// Puts a valid login into the profile's session, as if the user had
    /// logged in.
    pub async fn seed_login(&self) {
        let config = self.agent.config.current().unwrap();
        let profile = config.profile("bedrock").unwrap();
        let state = self.agent.profile_state(profile).await;
        state.session().stored.tokens = Some(tokens(Utc::now() + Duration::hours(1)));
    }

    pub async fn get_credentials(&self) -> Response {
        self.agent
            .handle(
                RequestBody::GetCredentials {
                    profile: "bedrock".into(),
                    interactive: false,
                },
                Progress::none(),
            )
            .await
    }

    pub async fn stored(&self) -> Option<StoredSession> {
        self.store
            .load("profile:bedrock")
            .unwrap()
            .map(|secret| StoredSession::from_secret(&secret).unwrap())
    }
}

pub(crate) fn tokens(expiration: DateTime<Utc>) -> IdentityTokens {
    IdentityTokens {
        issuer: "http://127.0.0.1:9".into(),
        client_id: "tollgate-cli".into(),
        id_token: Secret::new(ID_TOKEN),
        id_token_expiration: expiration,
        refresh_token: Some(Secret::new(REFRESH_TOKEN)),
        identity: "ana@example.com".into(),
    }
}

fn credentials(response: Response) -> tollgate_protocol::agent::Credentials {
    match response {
        Response::Credentials(credentials) => credentials,
        other => panic!("expected credentials, got {other:?}"),
    }
}

fn error(response: Response) -> ErrorBody {
    match response {
        Response::Error(body) => body,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_requests_share_one_sts_call() {
    let fixture = Arc::new(Fixture::new(&config_text(None, 30, "closed")));
    fixture.seed_login().await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let fixture = fixture.clone();
        tasks.push(tokio::spawn(async move {
            credentials(fixture.get_credentials().await)
        }));
    }
    let mut keys = std::collections::BTreeSet::new();
    for task in tasks {
        keys.insert(task.await.unwrap().access_key_id);
    }
    assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 1);
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["ASIAFAKE1"]);
}

#[tokio::test]
async fn sts_request_uses_profile_and_identity() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    let handed = credentials(fixture.get_credentials().await);
    let requests = fixture.sts.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].role_arn,
        "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
    );
    assert_eq!(requests[0].session_name, "ana@example.com");
    assert_eq!(requests[0].duration_seconds, 3600);
    assert_eq!(requests[0].region, "us-east-1");
    assert_eq!(requests[0].web_identity_token.expose(), ID_TOKEN);
    // Without a quota check the SDK gets the STS expiry itself.
    let left = handed.expiration - Utc::now();
    assert!(
        left > Duration::minutes(59) && left <= Duration::minutes(60),
        "{left}"
    );
}

#[tokio::test]
async fn cached_credentials_reused() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    let first = credentials(fixture.get_credentials().await);
    let second = credentials(fixture.get_credentials().await);
    assert_eq!(first.access_key_id, second.access_key_id);
    assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 1);
    let stored = fixture.stored().await.unwrap();
    assert_eq!(stored.credentials.unwrap().access_key_id, "ASIAFAKE1");
}

#[tokio::test]
async fn expiring_credentials_renewed() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    {
        let config = fixture.agent.config.current().unwrap();
        let state = fixture
            .agent
            .profile_state(config.profile("bedrock").unwrap())
            .await;
        let mut session = state.session();
        session.stored.role_arn = Some("arn:aws:iam::123456789012:role/ClaudeCodeBedrock".into());
        session.stored.credentials = Some(StsCredentials {
            access_key_id: "ASIAOLD".into(),
            secret_access_key: Secret::new("old-secret"),
            session_token: Secret::new("old-token"),
            // Less than the 16 minutes an SDK needs.
            expiration: Utc::now() + Duration::minutes(15),
            assumed_role_arn: None,
        });
    }
    let handed = credentials(fixture.get_credentials().await);
    assert_eq!(handed.access_key_id, "ASIAFAKE1");
    assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn no_login_without_interactive() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    let body = error(fixture.get_credentials().await);
    assert_eq!(body.kind, ErrorKind::LoginRequired);
    assert!(
        body.message
            .contains("tollgate-agent login --profile bedrock"),
        "{}",
        body.message
    );
    let body = error(
        fixture
            .agent
            .handle(
                RequestBody::GetIdToken {
                    profile: "bedrock".into(),
                },
                Progress::none(),
            )
            .await,
    );
    assert_eq!(body.kind, ErrorKind::LoginRequired);
}

#[tokio::test]
async fn unreachable_provider_keeps_refresh_token() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    {
        let config = fixture.agent.config.current().unwrap();
        let state = fixture
            .agent
            .profile_state(config.profile("bedrock").unwrap())
            .await;
        state.session().stored.tokens = Some(tokens(Utc::now() - Duration::minutes(1)));
    }
    let body = error(
        fixture
            .agent
            .handle(
                RequestBody::GetIdToken {
                    profile: "bedrock".into(),
                },
                Progress::none(),
            )
            .await,
    );
    assert_eq!(body.kind, ErrorKind::LoginRequired);
    assert!(
        body.causes
            .iter()
            .any(|cause| cause.contains("renewing the ID token failed")),
        "{:?}",
        body.causes
    );
    let config = fixture.agent.config.current().unwrap();
    let state = fixture
        .agent
        .profile_state(config.profile("bedrock").unwrap())
        .await;
    let refresh = state
        .session()
        .stored
        .tokens
        .as_ref()
        .unwrap()
        .refresh_token
        .clone();
    assert_eq!(refresh.unwrap().expose(), REFRESH_TOKEN);
}

#[tokio::test]
async fn id_token_returned_when_valid() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    match fixture
        .agent
        .handle(
            RequestBody::GetIdToken {
                profile: "bedrock".into(),
            },
            Progress::none(),
        )
        .await
    {
        Response::IdToken { token, .. } => assert_eq!(token.expose(), ID_TOKEN),
        other => panic!("expected an ID token, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_profile_names_configured_ones() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    let body = error(
        fixture
            .agent
            .handle(
                RequestBody::GetCredentials {
                    profile: "other".into(),
                    interactive: false,
                },
                Progress::none(),
            )
            .await,
    );
    assert_eq!(body.kind, ErrorKind::UnknownProfile);
    assert!(
        body.message.contains("profile `other` is not in"),
        "{}",
        body.message
    );
    assert!(body.message.contains("agent.toml"), "{}", body.message);
    assert!(
        body.message.contains("configured profiles: bedrock"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn invalid_config_reported() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.rewrite_config(&config_text(None, 30, "closed").replace(
        "session_duration_minutes = 60",
        "session_duration_minutes = 5",
    ));
    let body = error(fixture.get_credentials().await);
    assert_eq!(body.kind, ErrorKind::InvalidConfig);
    assert!(
        body.message
            .contains("`session_duration_minutes` = 5 is out of range"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn quota_sent_bearer_id_token() {
    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 30, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    assert_eq!(
        quota.authorization.lock().unwrap().as_slice(),
        [format!("Bearer {ID_TOKEN}")]
    );
}

#[tokio::test]
async fn quota_block_refuses_with_answer() {
    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(false))));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 30, "closed"));
    fixture.seed_login().await;
    let body = error(fixture.get_credentials().await);
    assert_eq!(body.kind, ErrorKind::QuotaBlocked);
    assert!(
        body.message
            .contains("the monthly limit is reached: 230M of 225M tokens used (102%)"),
        "{}",
        body.message
    );
    assert!(
        body.message.contains("resets at 2027-01-01 00:00 UTC"),
        "{}",
        body.message
    );
    assert!(!body.quota.unwrap().allowed);
    assert_eq!(
        fixture.sts.calls.load(Ordering::SeqCst),
        0,
        "no credentials are minted for a blocked user"
    );
}

#[tokio::test]
async fn recheck_block_drops_credentials() {
    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 0, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    assert!(fixture.stored().await.unwrap().credentials.is_some());
    quota.set(QuotaReply::Answer(Box::new(answer(false))));
    assert_eq!(
        error(fixture.get_credentials().await).kind,
        ErrorKind::QuotaBlocked
    );
    assert!(fixture.stored().await.unwrap().credentials.is_none());
    assert!(
        fixture.stored().await.unwrap().tokens.is_some(),
        "the login is kept"
    );
    // Unblocked again: new credentials are minted.
    quota.set(QuotaReply::Answer(Box::new(answer(true))));
    let again = credentials(fixture.get_credentials().await);
    assert_eq!(again.access_key_id, "ASIAFAKE2");
}

#[tokio::test]
async fn recheck_interval_respected() {
    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 30, "closed"));
    fixture.seed_login().await;
    let first = credentials(fixture.get_credentials().await);
    let second = credentials(fixture.get_credentials().await);
    assert_eq!(quota.calls.load(Ordering::SeqCst), 1);
    // Reported expiry: the next re-check (30 min) plus 15 minutes, capped
    // by the 60 minute STS expiry, and the same on both calls.
    let left = first.expiration - Utc::now();
    assert!(
        left > Duration::minutes(44) && left <= Duration::minutes(45),
        "{left}"
    );
    assert_eq!(first.expiration, second.expiration);

    let quota_every = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Fixture::new(&config_text(Some(&quota_every.url), 0, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    let handed = credentials(fixture.get_credentials().await);
    assert_eq!(quota_every.calls.load(Ordering::SeqCst), 2);
    let left = handed.expiration - Utc::now();
    assert!(
        left > Duration::minutes(15) && left <= Duration::minutes(16),
        "{left}"
    );
}

#[tokio::test]
async fn unreachable_quota_fails_closed() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{closed_port}");
    let fixture = Fixture::new(&config_text(Some(&url), 30, "closed"));
    fixture.seed_login().await;
    let body = error(fixture.get_credentials().await);
    assert_eq!(body.kind, ErrorKind::QuotaCheckFailed);
    assert!(
        body.message
            .contains(&format!("the quota check at {url}/v1/check failed")),
        "{}",
        body.message
    );
    assert!(body.message.contains("fails closed"), "{}", body.message);
    assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unreachable_quota_fails_open() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{closed_port}");
    let fixture = Fixture::new(&config_text(Some(&url), 30, "open"));
    fixture.seed_login().await;
    let handed = credentials(fixture.get_credentials().await);
    assert_eq!(handed.access_key_id, "ASIAFAKE1");
    // No successful check yet, so SDKs come back in 16 minutes.
    let left = handed.expiration - Utc::now();
    assert!(
        left > Duration::minutes(15) && left <= Duration::minutes(16),
        "{left}"
    );
}

#[tokio::test]
async fn quota_server_error_fails_closed() {
    let quota = FakeQuota::start(QuotaReply::Status(503));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 30, "closed"));
    fixture.seed_login().await;
    let body = error(fixture.get_credentials().await);
    assert_eq!(body.kind, ErrorKind::QuotaCheckFailed);
    assert!(
        body.message
            .contains("HTTP 503 Service Unavailable: backend broke"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn unparseable_quota_answer_fails_closed() {
    // HTTP 200 with a body that is not a check answer.
    let quota = FakeQuota::start(QuotaReply::Status(200));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 30, "closed"));
    fixture.seed_login().await;
    let body = error(fixture.get_credentials().await);
    assert_eq!(body.kind, ErrorKind::QuotaCheckFailed);
    assert!(
        body.message
            .contains("the answer is not a quota check answer"),
        "{}",
        body.message
    );
}

#[tokio::test]
async fn logout_removes_secrets() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    assert!(fixture.stored().await.is_some());
    let response = fixture
        .agent
        .handle(
            RequestBody::Logout {
                profile: "bedrock".into(),
            },
            Progress::none(),
        )
        .await;
    assert!(matches!(response, Response::Done { .. }), "{response:?}");
    assert!(fixture.stored().await.is_none());
    match fixture
        .agent
        .handle(RequestBody::Status { profile: None }, Progress::none())
        .await
    {
        Response::Status { profiles } => {
            assert_eq!(profiles.len(), 1);
            assert!(profiles[0].identity.is_none());
            assert!(profiles[0].credentials_expiration.is_none());
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test]
async fn status_reports_session() {
    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 30, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    match fixture
        .agent
        .handle(
            RequestBody::Status {
                profile: Some("bedrock".into()),
            },
            Progress::none(),
        )
        .await
    {
        Response::Status { profiles } => {
            let status = &profiles[0];
            assert_eq!(status.identity.as_deref(), Some("ana@example.com"));
            assert!(status.has_refresh_token);
            assert!(status.credentials_expiration.is_some());
            assert!(status.last_quota.as_ref().unwrap().allowed);
            assert_eq!(status.secret_store.as_deref(), Some("memory"));
        }
        other => panic!("expected a status, got {other:?}"),
    }
}

#[tokio::test]
async fn failing_store_keeps_memory_session() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.store.set_failing(true);
    fixture.seed_login().await;
    let first = credentials(fixture.get_credentials().await);
    let second = credentials(fixture.get_credentials().await);
    assert_eq!(first.access_key_id, second.access_key_id);
    assert_eq!(fixture.store.save_count(), 0);
}

#[tokio::test]
async fn session_read_from_store_at_start() {
    let store = Arc::new(MemoryStore::default());
    let stored = StoredSession {
        role_arn: Some("arn:aws:iam::123456789012:role/ClaudeCodeBedrock".into()),
        tokens: Some(tokens(Utc::now() + Duration::hours(1))),
        credentials: Some(StsCredentials {
            access_key_id: "ASIASTORED".into(),
            secret_access_key: Secret::new("stored-secret"),
            session_token: Secret::new("stored-token"),
            expiration: Utc::now() + Duration::hours(1),
            assumed_role_arn: None,
        }),
    };
    store.save("profile:bedrock", &stored.to_secret()).unwrap();
    let fixture = Fixture::with_store(&config_text(None, 30, "closed"), store);
    fixture.agent.load_sessions().await;
    // The store is read once at start; later failures do not matter.
    fixture.store.set_failing(true);
    let handed = credentials(fixture.get_credentials().await);
    assert_eq!(handed.access_key_id, "ASIASTORED");
    assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn role_change_drops_credentials() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    fixture.rewrite_config(
        &config_text(None, 30, "closed").replace("role/ClaudeCodeBedrock", "role/Other"),
    );
    let handed = credentials(fixture.get_credentials().await);
    assert_eq!(handed.access_key_id, "ASIAFAKE2");
    let requests = fixture.sts.requests.lock().unwrap().clone();
    assert_eq!(requests[1].role_arn, "arn:aws:iam::123456789012:role/Other");
}

#[tokio::test]
async fn issuer_change_drops_login() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    fixture
        .rewrite_config(&config_text(None, 30, "closed").replace("127.0.0.1:9\"", "127.0.0.1:7\""));
    assert_eq!(
        error(fixture.get_credentials().await).kind,
        ErrorKind::LoginRequired
    );
    assert!(fixture.stored().await.is_none());
}

#[tokio::test]
async fn device_login_unreachable_issuer_fails() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    let body = error(
        fixture
            .agent
            .handle(
                RequestBody::Login {
                    profile: "bedrock".into(),
                    device_code: true,
                },
                Progress::none(),
            )
            .await,
    );
    assert_eq!(body.kind, ErrorKind::LoginFailed);
    assert!(
        body.message.contains(
            "OIDC discovery at http://127.0.0.1:9/.well-known/openid-configuration failed"
        ),
        "{}",
        body.message
    );
}

/// A log sink shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<StdMutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_log_has_no_secrets() {
    use std::io::{BufRead, Read, Write};

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(crate::logging::filter(Some("trace"), "info"))
        .with_writer(move || writer.clone())
        .finish();
    // Global, so the blocking threads (callback listener, secret store) log
    // into the same sink.
    tracing::subscriber::set_global_default(subscriber)
        .expect("only this test sets the global subscriber");

    // The browser's redirect with an authorization code reaches the real
    // callback listener.
    const CODE: &str = "authorization-code-secret-51b2";
    let listener =
        crate::login::callback::CallbackListener::bind(0, std::path::Path::new("/cfg")).unwrap();
    let port = listener.port();
    let waiting = tokio::spawn(async move {
        listener
            .wait(
                "state-1",
                "http://127.0.0.1:9",
                StdDuration::from_secs(10),
                &CancellationToken::new(),
            )
            .await
    });
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(stream, "GET /callback?code={CODE}&state=state-1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut page = String::new();
        stream.read_to_string(&mut page).unwrap();
    })
    .await
    .unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().expose(), CODE);

    // A logged-in session, a quota check with the bearer token, an STS call
    // and the credentials handed out over the real socket.
    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 0, "closed"));
    fixture.seed_login().await;
    let runtime = fixture.dir.path().join("run");
    crate::runtime_dir::prepare(&runtime, rustix::process::getuid().as_raw()).unwrap();
    let crate::server::Bound::Serving(listener) = crate::server::bind(&runtime).unwrap() else {
        panic!("a fresh folder has no other agent");
    };
    let socket = listener.socket_path().to_path_buf();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(crate::server::serve(
        listener,
        fixture.agent.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let lines = tokio::task::spawn_blocking(move || {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
        let mut lines = Vec::new();
        for request in [
            r#"{"v":1,"type":"get-credentials","profile":"bedrock","interactive":false}"#,
            r#"{"v":1,"type":"get-id-token","profile":"bedrock"}"#,
            r#"{"v":1,"type":"logout","profile":"bedrock"}"#,
        ] {
            writeln!(stream, "{request}").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            lines.push(line);
        }
        lines
    })
    .await
    .unwrap();
    assert!(
        lines[0].contains("secret-access-key-1-9c1e"),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(ID_TOKEN), "{}", lines[1]);
    stop.send(()).unwrap();
    server.await.unwrap();

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        log.contains("handed out credentials"),
        "the flow was logged at all:\n{log}"
    );
    assert!(
        log.contains("ASIAFAKE1"),
        "access key ids are not secret and help debugging"
    );
    for secret in [
        CODE,
        ID_TOKEN,
        REFRESH_TOKEN,
        "secret-access-key-1-9c1e",
        "session-token-1-44d0",
    ] {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wake_past_expiry_refreshes_once() {
    // A machine that slept past both the credentials' expiry and the
    // re-check: every caller that wakes up at once shares one quota check
    // and one STS call.
    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Arc::new(Fixture::new(&config_text(Some(&quota.url), 30, "closed")));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    {
        let config = fixture.agent.config.current().unwrap();
        let state = fixture
            .agent
            .profile_state(config.profile("bedrock").unwrap())
            .await;
        let mut session = state.session();
        if let Some(credentials) = session.stored.credentials.as_mut() {
            credentials.expiration = Utc::now() - Duration::hours(2);
        }
        session.last_quota_check = Some(Utc::now() - Duration::hours(3));
    }
    let calls_before = quota.calls.load(Ordering::SeqCst);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let fixture = fixture.clone();
        tasks.push(tokio::spawn(async move {
            credentials(fixture.get_credentials().await)
        }));
    }
    let mut keys = std::collections::BTreeSet::new();
    for task in tasks {
        keys.insert(task.await.unwrap().access_key_id);
    }
    assert_eq!(keys.into_iter().collect::<Vec<_>>(), ["ASIAFAKE2"]);
    assert_eq!(fixture.sts.calls.load(Ordering::SeqCst), 2);
    assert_eq!(quota.calls.load(Ordering::SeqCst) - calls_before, 1);
}

#[tokio::test]
async fn info_log_quiet_per_request() {
    // With the per-request line at info, this test measured 335,000 bytes
    // for the 1000 requests; lifecycle events only must add nothing.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(crate::logging::filter(None, "info"))
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let quota = FakeQuota::start(QuotaReply::Answer(Box::new(answer(true))));
    let fixture = Fixture::new(&config_text(Some(&quota.url), 30, "closed"));
    fixture.seed_login().await;
    credentials(fixture.get_credentials().await);
    let after_first = captured.0.lock().unwrap().len();
    for _ in 0..1000 {
        credentials(fixture.get_credentials().await);
    }
    let after_thousand = captured.0.lock().unwrap().len();
    assert!(after_first > 0, "the role assumption is logged at info");
    assert_eq!(
        after_thousand - after_first,
        0,
        "1000 cached requests wrote info lines: {}",
        String::from_utf8_lossy(&captured.0.lock().unwrap()[after_first..])
    );
}

#[tokio::test]
async fn second_logout_says_not_logged_in() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.seed_login().await;
    let logout = || {
        fixture.agent.handle(
            RequestBody::Logout {
                profile: "bedrock".into(),
            },
            Progress::none(),
        )
    };
    match logout().await {
        Response::Done { message } => assert!(message.starts_with("Logged out"), "{message}"),
        other => panic!("expected done, got {other:?}"),
    }
    match logout().await {
        Response::Done { message } => {
            assert!(message.contains("was not logged in"), "{message}")
        }
        other => panic!("expected done, got {other:?}"),
    }
}

#[tokio::test]
async fn no_login_starts_during_shutdown() {
    let fixture = Fixture::new(&config_text(None, 30, "closed"));
    fixture.agent.shutdown.cancel();
    let body = error(
        fixture
            .agent
            .handle(
                RequestBody::GetCredentials {
                    profile: "bedrock".into(),
                    interactive: true,
                },
                Progress::none(),
            )
            .await,
    );
    assert!(body.message.contains("shutting down"), "{}", body.message);
}
