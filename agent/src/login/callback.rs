//! The loopback listener that receives the browser's redirect after login.
//!
//! It is bound on 127.0.0.1 before the browser opens, so the redirect never
//! arrives at a closed port, and it responds to the browser with a short page
//! saying whether the login finished.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tollgate_protocol::Secret;

use super::LoginError;

/// How often the listener wakes to check the deadline and cancellation.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A bound callback listener.
pub struct CallbackListener {
    server: Arc<tiny_http::Server>,
}

/// The kind of one browser request to the listener.
#[derive(Debug, PartialEq)]
enum Callback {
    /// The expected redirect with an authorization code.
    Code(String),
    /// The provider redirected with an error.
    ProviderError(String),
    /// A redirect from a different issuer (RFC 9207 `iss`): a mix-up.
    WrongIssuer(String),
    /// A request to respond to and then ignore (wrong path, stale state).
    Ignored { status: u16, reason: &'static str },
}

impl CallbackListener {
    /// Binds `127.0.0.1:port`. A busy port is a [`LoginError::PortBusy`].
    pub fn bind(port: u16, config_path: &Path) -> Result<Self, LoginError> {
        let busy = |cause: String| LoginError::PortBusy {
            port,
            cause,
            config: config_path.display().to_string(),
        };
        let listener = listen_loopback_retrying(port).map_err(|error| busy(error.to_string()))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|error| busy(error.to_string()))?;
        tracing::debug!(port, "bound the login callback listener");
        Ok(Self {
            server: Arc::new(server),
        })
    }

    /// Returns the bound port, which tests need after binding port 0.
    pub fn port(&self) -> u16 {
        self.server
            .server_addr()
            .to_ip()
            .map(|address| address.port())
            .unwrap_or_default()
    }

    /// Waits for the redirect that carries `state`, responds to the browser and
    /// returns the authorization code.
    pub async fn wait(
        self,
        state: &str,
        issuer: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Secret, LoginError> {
        let state = state.to_string();
        let issuer = issuer.to_string();
        let cancel = cancel.clone();
        let server = self.server.clone();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + timeout;
            loop {
                if cancel.is_cancelled() {
                    return Err(LoginError::Cancelled);
                }
                if Instant::now() >= deadline {
                    return Err(LoginError::TimedOut {
                        seconds: timeout.as_secs(),
                    });
                }
                let request = match server.recv_timeout(POLL_INTERVAL) {
                    Ok(Some(request)) => request,
                    Ok(None) => continue,
                    Err(error) => {
                        return Err(LoginError::Failed(format!("the callback listener failed: {error}")));
                    }
                };
                let outcome = classify(request.url(), &state, &issuer);
                match outcome {
                    Callback::Code(code) => {
                        respond(request, 200, "Login finished", "You are logged in to Tollgate. You can close this tab.");
                        return Ok(Secret::new(code));
                    }
                    Callback::ProviderError(message) => {
                        respond(request, 400, "Login failed", &format!("The identity provider reported: {message}. Run the login again."));
                        return Err(LoginError::Failed(format!("the identity provider reported: {message}")));
                    }
                    Callback::WrongIssuer(iss) => {
                        respond(request, 400, "Login failed", "The login came back from a different identity provider than the one configured.");
                        return Err(LoginError::Failed(format!(
                            "the redirect names issuer `{iss}`, but the profile's issuer is `{issuer}`; check `issuer` in the config"
                        )));
                    }
                    Callback::Ignored { status, reason } => {
                        tracing::debug!(status, reason, "ignored a request to the login callback listener");
                        respond(request, status, "Not this login", reason);
                    }
                }
            }
        })
        .await
        .map_err(|error| LoginError::Failed(format!("the callback task failed: {error}")))?
    }
}

/// How long [`listen_loopback_retrying`] keeps trying a port that is in use.
const BIND_RETRY_WINDOW: Duration = Duration::from_millis(1500);

/// Listens on `127.0.0.1:port`, retrying briefly while the port is in use.
/// A dropped `tiny_http::Server` closes its listening socket from its accept
/// thread a moment after the drop, so a login right after another one can
/// find the port still taken by the previous, already finished listener.
fn listen_loopback_retrying(port: u16) -> std::io::Result<std::net::TcpListener> {
    let deadline = Instant::now() + BIND_RETRY_WINDOW;
    loop {
        match listen_loopback(port) {
            Err(error)
                if error.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// Listens on `127.0.0.1:port` with `SO_REUSEADDR`. The callback closes
/// each browser connection first, which leaves it in TIME_WAIT for about a
/// minute, and without the option the next login could not bind the port
/// until then. A port that another socket listens on is still refused.
fn listen_loopback(port: u16) -> std::io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let socket = rustix::net::socket_with(
        AddressFamily::INET,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::sockopt::set_socket_reuseaddr(&socket, true)?;
    rustix::net::bind(
        &socket,
        &std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port),
    )?;
    rustix::net::listen(&socket, 16)?;
    Ok(std::net::TcpListener::from(socket))
}

fn classify(request_url: &str, state: &str, issuer: &str) -> Callback {
    let Ok(url) = url::Url::parse("http://127.0.0.1").and_then(|base| base.join(request_url))
    else {
        return Callback::Ignored {
            status: 400,
            reason: "The request URL is not valid.",
        };
    };
    if url.path() != "/callback" {
        return Callback::Ignored {
            status: 404,
            reason: "This address only receives Tollgate's login redirect.",
        };
    }
    let query = |name: &str| {
        url.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_owned())
    };
    if query("state").as_deref() != Some(state) {
        return Callback::Ignored {
            status: 400,
            reason: "This login link belongs to an older login attempt. Use the newest login tab.",
        };
    }
    if let Some(iss) = query("iss")
        && iss != issuer
    {
        return Callback::WrongIssuer(iss);
    }
    if let Some(error) = query("error") {
        let description = query("error_description").unwrap_or_default();
        return Callback::ProviderError(if description.is_empty() {
            error
        } else {
            format!("{error} ({description})")
        });
    }
    match query("code") {
        Some(code) if !code.is_empty() => Callback::Code(code),
        _ => Callback::Ignored {
            status: 400,
            reason: "The redirect has no authorization code.",
        },
    }
}

fn respond(request: tiny_http::Request, status: u16, title: &str, text: &str) {
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Tollgate: {title}</title></head>\
         <body style=\"font-family:sans-serif;margin:3em\"><h1>{title}</h1><p>{text}</p></body></html>",
        title = html_escape(title),
        text = html_escape(text)
    );
    let header = tiny_http::Header::from_bytes("Content-Type", "text/html; charset=utf-8")
        .expect("a static header is valid");
    let response = tiny_http::Response::from_string(page)
        .with_status_code(status)
        .with_header(header);
    if let Err(error) = request.respond(response) {
        tracing::debug!(%error, "could not respond to the browser");
    }
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "http://127.0.0.1:9400";

    #[test]
    fn code_accepted_with_matching_state() {
        assert_eq!(
            classify(
                "/callback?code=abc&state=s1&iss=http%3A%2F%2F127.0.0.1%3A9400",
                "s1",
                ISSUER
            ),
            Callback::Code("abc".into())
        );
    }

    #[test]
    fn stale_state_ignored() {
        assert!(matches!(
            classify("/callback?code=abc&state=old", "s1", ISSUER),
            Callback::Ignored { status: 400, .. }
        ));
        assert!(matches!(
            classify("/callback?code=abc", "s1", ISSUER),
            Callback::Ignored { status: 400, .. }
        ));
    }

    #[test]
    fn other_path_ignored() {
        assert!(matches!(
            classify("/favicon.ico", "s1", ISSUER),
            Callback::Ignored { status: 404, .. }
        ));
    }

    #[test]
    fn provider_error_reported() {
        assert_eq!(
            classify(
                "/callback?error=access_denied&error_description=no+way&state=s1",
                "s1",
                ISSUER
            ),
            Callback::ProviderError("access_denied (no way)".into())
        );
    }

    #[test]
    fn wrong_issuer_rejected() {
        assert_eq!(
            classify(
                "/callback?code=abc&state=s1&iss=http%3A%2F%2Fevil",
                "s1",
                ISSUER
            ),
            Callback::WrongIssuer("http://evil".into())
        );
    }

    #[tokio::test]
    async fn busy_port_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let error = CallbackListener::bind(port, Path::new("/cfg/agent.toml"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains(&format!("127.0.0.1:{port} is in use")),
            "{error}"
        );
        assert!(
            error.contains("set redirect_port in `/cfg/agent.toml`"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn listener_returns_code() {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let listener = CallbackListener::bind(port, Path::new("/cfg")).unwrap();
        let cancel = CancellationToken::new();
        let waiting = tokio::spawn(async move {
            listener
                .wait("s1", ISSUER, Duration::from_secs(10), &cancel)
                .await
        });
        let browser = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let fetch = |path: &str| {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                write!(
                    stream,
                    "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                let mut page = String::new();
                stream.read_to_string(&mut page).unwrap();
                page
            };
            let stale = fetch("/callback?code=old&state=s0");
            let done = fetch("/callback?code=the-code&state=s1");
            (stale, done)
        });
        let (stale, done) = browser.await.unwrap();
        assert!(stale.starts_with("HTTP/1.1 400"), "{stale}");
        assert!(done.starts_with("HTTP/1.1 200"), "{done}");
        assert!(done.contains("You are logged in to Tollgate"), "{done}");
        let code = waiting.await.unwrap().unwrap();
        assert_eq!(code.expose(), "the-code");

        // The port is free again for the next login.
        assert!(CallbackListener::bind(port, Path::new("/cfg")).is_ok());
    }

    #[tokio::test]
    async fn listener_times_out() {
        let listener = CallbackListener::bind(0, Path::new("/cfg")).unwrap();
        let error = listener
            .wait(
                "s1",
                ISSUER,
                Duration::from_millis(300),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        assert!(matches!(error, LoginError::TimedOut { .. }), "{error}");
    }
}
