//! The agent binary against the real npm oidc-provider and moto_server: a
//! browser login through the scripted browser (`tests/support/browser`),
//! STS credentials from moto, silent renewal, `invalid_grant`, and a trace
//! log that contains none of the secrets.
// A test that needs a session bus prints why it skipped.
#![allow(clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use tollgate_protocol::agent::{ProfileStatus, Request, RequestBody, Response};
use tollgate_tests::locate::{free_port, support_dir};
use tollgate_tests::{Moto, OidcOptions, OidcProvider, Service, wait_for};

/// The agent binary under test, its folders and its process.
struct AgentRun {
    home: PathBuf,
    socket: PathBuf,
    service: Service,
}

/// Where the agent keeps secrets in a test: the store name for
/// `TOLLGATE_SECRET_STORE`, and for keyutils the named session keyring
/// that `keyctl session` joins, so two agent runs share it.
#[derive(Clone)]
enum StoreChoice {
    Memory,
    Keyutils { session: String },
    SecretService,
}

impl AgentRun {
    fn start(
        dir: &Path,
        issuer: &str,
        sts_url: &str,
        redirect_port: u16,
        store: &StoreChoice,
    ) -> Result<Self> {
        let dir = dir.to_path_buf();
        let home = dir.join("home");
        let runtime = dir.join("run");
        std::fs::create_dir_all(&home)?;
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[profiles.bedrock]\n\
                 issuer = \"{issuer}\"\n\
                 client_id = \"tollgate-cli\"\n\
                 redirect_port = {redirect_port}\n\
                 role_arn = \"arn:aws:iam::123456789012:role/ClaudeCodeBedrock\"\n\
                 region = \"us-east-1\"\n\
                 session_duration_minutes = 60\n\
                 sts_endpoint = \"{sts_url}\"\n\
                 login_timeout_seconds = 60\n"
            ),
        )?;

        let agent = env!("CARGO_BIN_EXE_tollgate-agent");
        let (mut command, store_name) = match store {
            StoreChoice::Memory => (Command::new(agent), "memory"),
            StoreChoice::Keyutils { session } => {
                let mut command = Command::new("keyctl");
                command.args(["session", session.as_str(), agent]);
                (command, "keyutils")
            }
            StoreChoice::SecretService => (Command::new(agent), "secret-service"),
        };
        command.env_clear();
        if let Ok(bus) = std::env::var("DBUS_SESSION_BUS_ADDRESS") {
            command.env("DBUS_SESSION_BUS_ADDRESS", bus);
        }
        command
            .args(["run", "--foreground"])
            .env("TOLLGATE_SECRET_STORE", store_name)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("XDG_STATE_HOME", home.join("state"))
            .env("XDG_CONFIG_HOME", home.join("config"))
            .env("TOLLGATE_RUNTIME_DIR", &runtime)
            .env("TOLLGATE_CONFIG", &config)
            .env("TOLLGATE_LOG", "trace")
            .env("BROWSER", support_dir().join("browser"))
            .env("TOLLGATE_TEST_LOGIN", "ana@example.com")
            .env("TOLLGATE_TEST_BROWSER_LOG", dir.join("browser.log"))
            .env("AWS_EC2_METADATA_DISABLED", "true");

        let mut service = Service::spawn("agent", command, &dir)?;
        let socket = runtime.join("agent.sock");
        wait_for("the agent socket", Duration::from_secs(20), || {
            service.ensure_running()?;
            Ok(UnixStream::connect(&socket).ok().map(|_| ()))
        })?;
        Ok(Self {
            home,
            socket,
            service,
        })
    }

    /// Sends one request; returns the progress lines and the final response.
    fn request(&self, body: RequestBody) -> Result<(Vec<Response>, Response)> {
        self.request_with(body, |_| Ok(()))
    }

    /// Sends one request and calls `on_progress` for each progress line as
    /// it arrives.
    fn request_with(
        &self,
        body: RequestBody,
        mut on_progress: impl FnMut(&Response) -> Result<()>,
    ) -> Result<(Vec<Response>, Response)> {
        let mut stream = UnixStream::connect(&self.socket).context("connect to the agent")?;
        stream.set_read_timeout(Some(Duration::from_secs(90)))?;
        writeln!(stream, "{}", serde_json::to_string(&Request::new(body))?)?;
        let mut reader = BufReader::new(stream);
        let mut progress = Vec::new();
        loop {
            let mut line = String::new();
            anyhow::ensure!(
                reader.read_line(&mut line)? > 0,
                "the agent closed the connection"
            );
            let response: Response = serde_json::from_str(&line)?;
            if response.is_final() {
                return Ok((progress, response));
            }
            on_progress(&response)?;
            progress.push(response);
        }
    }

    /// Sends SIGTERM and waits for the agent to exit.
    fn stop(&mut self) -> Result<()> {
        let pid = self.service.pid().context("the agent runs")?;
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(pid)?).context("a valid pid")?,
            rustix::process::Signal::TERM,
        )?;
        wait_for("the agent to stop", Duration::from_secs(10), || {
            Ok((!self.service.is_running()).then_some(()))
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("state/tollgate/agent.log")).unwrap_or_default()
    }
}

fn claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("a JWT has a payload");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("the payload is base64url");
    serde_json::from_slice(&bytes).expect("the payload is JSON")
}

fn id_token(agent: &AgentRun) -> Result<String> {
    match agent
        .request(RequestBody::GetIdToken {
            profile: "bedrock".into(),
        })?
        .1
    {
        Response::IdToken { token, .. } => Ok(token.expose().to_string()),
        other => anyhow::bail!("expected an ID token, got {other:?}"),
    }
}

fn status(agent: &AgentRun) -> Result<ProfileStatus> {
    match agent
        .request(RequestBody::Status {
            profile: Some("bedrock".into()),
        })?
        .1
    {
        Response::Status { mut profiles } => Ok(profiles.remove(0)),
        other => anyhow::bail!("expected a status, got {other:?}"),
    }
}

fn start_components(dir: &Path, id_token_ttl: Option<u64>) -> Result<(OidcProvider, Moto, u16)> {
    let redirect_port = free_port()?;
    let oidc = OidcProvider::start(
        dir,
        &OidcOptions {
            redirect_ports: vec![redirect_port],
            id_token_ttl,
            ..OidcOptions::default()
        },
    )?;
    let moto = Moto::start(dir)?;
    Ok((oidc, moto, redirect_port))
}

#[test]
fn browser_login_gets_moto_credentials() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let (oidc, moto, port) = start_components(logs.path(), None)?;
    let mut agent = AgentRun::start(
        logs.path(),
        oidc.issuer(),
        moto.url(),
        port,
        &StoreChoice::Memory,
    )?;

    let (progress, response) = agent.request(RequestBody::GetCredentials {
        profile: "bedrock".into(),
        interactive: true,
    })?;
    let url = progress
        .iter()
        .find_map(|note| match note {
            Response::Progress { url: Some(url), .. } => Some(url.clone()),
            _ => None,
        })
        .context("the login URL is sent as progress")?;
    assert!(
        url.starts_with(&format!("{}/auth?", oidc.issuer())),
        "{url}"
    );
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "client_id=tollgate-cli",
    ] {
        assert!(url.contains(part), "{part} missing in {url}");
    }
    let Response::Credentials(credentials) = response else {
        anyhow::bail!(
            "expected credentials, got {response:?}; agent log:\n{}",
            agent.log()
        );
    };
    assert!(
        credentials.access_key_id.starts_with("ASIA"),
        "{}",
        credentials.access_key_id
    );
    let left = credentials.expiration - chrono::Utc::now();
    assert!(
        left > chrono::Duration::minutes(58) && left <= chrono::Duration::minutes(60),
        "{left}"
    );

    let token = id_token(&agent)?;
    let token_claims = claims(&token);
    assert_eq!(token_claims["email"], "ana@example.com");
    assert_eq!(token_claims["aud"], "tollgate-cli");

    let status = status(&agent)?;
    assert_eq!(status.identity.as_deref(), Some("ana@example.com"));
    assert!(status.has_refresh_token);

    // A second request reuses the credentials: one authorization, one code
    // exchange.
    let (_, again) = agent.request(RequestBody::GetCredentials {
        profile: "bedrock".into(),
        interactive: false,
    })?;
    let Response::Credentials(again) = again else {
        anyhow::bail!("expected credentials, got {again:?}");
    };
    assert_eq!(again.access_key_id, credentials.access_key_id);
    let stats = oidc.stats()?;
    assert_eq!(stats.authorization_requests, 1);
    assert_eq!(stats.token_requests("authorization_code"), 1);

    let log = agent.log();
    assert!(
        log.contains("assumed-role/ClaudeCodeBedrock/ana@example.com"),
        "the session name is the email: {log}"
    );
    let mut secrets = oidc.issued_tokens()?;
    secrets.push(credentials.secret_access_key.expose().to_string());
    secrets.push(credentials.session_token.expose().to_string());
    assert!(
        secrets.len() >= 4,
        "ID, access and refresh token plus the AWS keys: {}",
        secrets.len()
    );
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret is in the trace log"
        );
    }

    // A second login right away binds the callback port again.
    let (_, response) = agent.request(RequestBody::Login {
        profile: "bedrock".into(),
        device_code: false,
    })?;
    assert!(matches!(response, Response::Done { .. }), "{response:?}");
    assert_eq!(oidc.stats()?.authorization_requests, 2);

    agent.stop()?;
    assert!(!agent.socket.exists(), "the socket is removed on SIGTERM");
    Ok(())
}

#[test]
fn refresh_renews_and_invalid_grant_drops() -> Result<()> {
    let logs = tempfile::tempdir()?;
    // ID tokens that live 2 minutes are always inside the 5 minute renewal
    // window, so every ID token request renews.
    let (oidc, moto, port) = start_components(logs.path(), Some(120))?;
    let agent = AgentRun::start(
        logs.path(),
        oidc.issuer(),
        moto.url(),
        port,
        &StoreChoice::Memory,
    )?;

    let (_, response) = agent.request(RequestBody::Login {
        profile: "bedrock".into(),
        device_code: false,
    })?;
    let Response::Done { message } = response else {
        anyhow::bail!(
            "expected the login to finish, got {response:?}; agent log:\n{}",
            agent.log()
        );
    };
    assert!(message.contains("as ana@example.com"), "{message}");

    let first = id_token(&agent)?;
    // RS256 signatures are deterministic, so a token renewed within the
    // same second as the last one is byte for byte the same.
    std::thread::sleep(Duration::from_millis(1100));
    let second = id_token(&agent)?;
    assert!(
        claims(&second)["iat"].as_i64() > claims(&first)["iat"].as_i64(),
        "the ID token is renewed"
    );
    assert_eq!(oidc.stats()?.token_requests("refresh_token"), 2);
    assert!(status(&agent)?.has_refresh_token);

    assert!(oidc.revoke_refresh_tokens(None)? >= 1);
    // The renewal is refused with invalid_grant: the refresh token is
    // dropped, and the still valid ID token is returned.
    let third = id_token(&agent)?;
    assert_eq!(third, second);
    assert!(
        !status(&agent)?.has_refresh_token,
        "the rejected refresh token is dropped"
    );
    assert!(agent.log().contains("the refresh token was rejected"));
    Ok(())
}

fn get_credentials(
    agent: &AgentRun,
    interactive: bool,
) -> Result<tollgate_protocol::agent::Credentials> {
    let (_, response) = agent.request(RequestBody::GetCredentials {
        profile: "bedrock".into(),
        interactive,
    })?;
    match response {
        Response::Credentials(credentials) => Ok(credentials),
        other => anyhow::bail!(
            "expected credentials, got {other:?}; agent log:\n{}",
            agent.log()
        ),
    }
}

/// Logs in with one agent, stops it, and checks that a second agent on the
/// same secret store hands out the same credentials without a login.
fn session_survives_restart(store: &StoreChoice) -> Result<()> {
    let logs = tempfile::tempdir()?;
    let (oidc, moto, port) = start_components(logs.path(), None)?;
    let mut first = AgentRun::start(logs.path(), oidc.issuer(), moto.url(), port, store)?;
    let issued = get_credentials(&first, true)?;
    first.stop()?;
    assert!(first.log().contains(&format!(
        "using the {}",
        match store {
            StoreChoice::Memory => "memory",
            StoreChoice::Keyutils { .. } => "keyutils",
            StoreChoice::SecretService => "secret-service",
        }
    )));

    let mut second = AgentRun::start(logs.path(), oidc.issuer(), moto.url(), port, store)?;
    let again = get_credentials(&second, false)?;
    assert_eq!(again.access_key_id, issued.access_key_id);
    assert_eq!(oidc.stats()?.authorization_requests, 1, "no second login");
    assert!(
        second
            .log()
            .contains("read the cached session from the secret store")
    );

    // Logout removes the entry: a third agent finds nothing.
    let (_, response) = second.request(RequestBody::Logout {
        profile: "bedrock".into(),
    })?;
    assert!(matches!(response, Response::Done { .. }), "{response:?}");
    second.stop()?;
    let third = AgentRun::start(logs.path(), oidc.issuer(), moto.url(), port, store)?;
    let (_, response) = third.request(RequestBody::GetCredentials {
        profile: "bedrock".into(),
        interactive: false,
    })?;
    match response {
        Response::Error(body) => assert_eq!(
            body.kind,
            tollgate_protocol::agent::ErrorKind::LoginRequired
        ),
        other => anyhow::bail!("expected LoginRequired after logout, got {other:?}"),
    }
    Ok(())
}

#[test]
fn session_survives_restart_in_keyutils() -> Result<()> {
    let session = format!(
        "tollgate-test-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
    );
    session_survives_restart(&StoreChoice::Keyutils { session })
}

#[test]
fn session_survives_restart_in_secret_service() -> Result<()> {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none() {
        // scripts/test.sh runs the suite on a private session bus with
        // gnome-keyring; outside it there is no Secret Service to test.
        eprintln!("skipped: no DBUS_SESSION_BUS_ADDRESS");
        return Ok(());
    }
    session_survives_restart(&StoreChoice::SecretService)
}

#[test]
fn device_code_login_finishes() -> Result<()> {
    let logs = tempfile::tempdir()?;
    let (oidc, moto, port) = start_components(logs.path(), None)?;
    let agent = AgentRun::start(
        logs.path(),
        oidc.issuer(),
        moto.url(),
        port,
        &StoreChoice::Memory,
    )?;

    // The person confirms the code with tests/support/device-login, as if
    // on another device, once the agent has printed the URL.
    let mut person = None;
    let (progress, response) = agent.request_with(
        RequestBody::Login {
            profile: "bedrock".into(),
            device_code: true,
        },
        |note| {
            if let Response::Progress { url: Some(url), .. } = note {
                person = Some(
                    Command::new(support_dir().join("device-login"))
                        .arg(url)
                        .env("TOLLGATE_TEST_LOGIN", "ana@example.com")
                        .output()?,
                );
            }
            Ok(())
        },
    )?;
    let person = person.context("the device login URL is sent as progress")?;
    assert!(
        person.status.success(),
        "{}",
        String::from_utf8_lossy(&person.stderr)
    );
    let Response::Progress { message, .. } = &progress[0] else {
        anyhow::bail!("expected a progress note, got {:?}", progress[0]);
    };
    assert!(message.contains("enter the code"), "{message}");
    let Response::Done { message } = response else {
        anyhow::bail!(
            "expected the login to finish, got {response:?}; agent log:\n{}",
            agent.log()
        );
    };
    assert!(message.contains("as ana@example.com"), "{message}");
    assert_eq!(oidc.stats()?.device_authorization_requests, 1);
    assert_eq!(oidc.stats()?.authorization_requests, 0, "no browser login");

    let credentials = get_credentials(&agent, false)?;
    assert!(
        credentials.access_key_id.starts_with("ASIA"),
        "{}",
        credentials.access_key_id
    );
    Ok(())
}
