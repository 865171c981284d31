//! The agent's socket over a real Unix socket: protocol errors as data,
//! line limits, the instance lock, stale sockets, peer checks and shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tollgate_agent::config::ConfigSource;
use tollgate_agent::login::oidc::Oidc;
use tollgate_agent::server::{self, Bound};
use tollgate_agent::service::Agent;
use tollgate_agent::store::MemoryStore;
use tollgate_agent::sts::AwsSts;
use tollgate_protocol::agent::{ErrorKind, MAX_LINE_BYTES, Response};

const CONFIG: &str = r#"
[profiles.bedrock]
issuer = "http://127.0.0.1:9"
client_id = "tollgate-cli"
role_arn = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
region = "us-east-1"
"#;

/// An agent serving on a socket in a private temporary folder.
struct Running {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let runtime = dir.path().join("run");
        tollgate_agent::runtime_dir::prepare(&runtime, rustix::process::getuid().as_raw()).unwrap();
        std::fs::write(dir.path().join("agent.toml"), CONFIG).unwrap();
        let Bound::Serving(listener) = server::bind(&runtime).unwrap() else {
            panic!("a fresh folder has no other agent");
        };
        let socket = listener.socket_path().to_path_buf();
        let agent = Arc::new(Agent::new(
            ConfigSource::new(dir.path().join("agent.toml")),
            Oidc::new().unwrap(),
            Arc::new(AwsSts::default()),
            Arc::new(MemoryStore::default()),
            CancellationToken::new(),
        ));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(server::serve(listener, agent, async {
            let _ = stopped.await;
        }));
        Self {
            dir,
            socket,
            stop: Some(stop),
            task,
        }
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    async fn shutdown(mut self) -> PathBuf {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.await.unwrap();
        self.socket.clone()
    }
}

/// Sends lines on one connection and reads one response line per request.
fn exchange(socket: &Path, lines: &[&str]) -> Vec<Response> {
    let mut stream = UnixStream::connect(socket).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    lines
        .iter()
        .map(|line| {
            writeln!(stream, "{line}").unwrap();
            let mut answer = String::new();
            reader.read_line(&mut answer).unwrap();
            serde_json::from_str(&answer).unwrap_or_else(|error| panic!("{error}: {answer:?}"))
        })
        .collect()
}

fn error_kind(response: &Response) -> (ErrorKind, String) {
    match response {
        Response::Error(body) => (body.kind, body.message.clone()),
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_data() {
    let agent = Running::start().await;
    let socket = agent.socket.clone();
    let responses = blocking(move || {
        exchange(
            &socket,
            &[
                r#"{"v":1,"type":"teleport","to":"mars"}"#,
                "this is not json",
                r#"{"v":2,"type":"hello","client":"future"}"#,
                r#"{"type":"hello","client":"old"}"#,
                r#"{"v":1,"type":"get-credentials"}"#,
                r#"{"v":1,"type":"hello","client":"test"}"#,
            ],
        )
    })
    .await;

    let (kind, message) = error_kind(&responses[0]);
    assert_eq!(kind, ErrorKind::UnknownRequest);
    assert!(message.contains("`teleport`"), "{message}");

    let (kind, message) = error_kind(&responses[1]);
    assert_eq!(kind, ErrorKind::MalformedRequest);
    assert!(message.contains("not valid JSON"), "{message}");

    let (kind, message) = error_kind(&responses[2]);
    assert_eq!(kind, ErrorKind::UnsupportedVersion);
    assert!(
        message.contains("version 2") && message.contains("speaks version 1"),
        "{message}"
    );

    let (kind, message) = error_kind(&responses[3]);
    assert_eq!(kind, ErrorKind::MalformedRequest);
    assert!(message.contains("`v`"), "{message}");

    let (kind, message) = error_kind(&responses[4]);
    assert_eq!(kind, ErrorKind::MalformedRequest);
    assert!(message.contains("profile"), "{message}");

    match &responses[5] {
        Response::Hello { versions, .. } => assert_eq!(versions, &[1]),
        other => panic!("expected hello, got {other:?}"),
    }
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_line_rejected_and_closed() {
    let agent = Running::start().await;
    let socket = agent.socket.clone();
    let (first, rest) = blocking(move || {
        let mut stream = UnixStream::connect(&socket).unwrap();
        let long = "x".repeat(MAX_LINE_BYTES + 10);
        // The agent may close before the whole line is written.
        let _ = writeln!(stream, "{long}");
        let mut reader = BufReader::new(stream);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        let mut rest = String::new();
        let _ = reader.read_to_string(&mut rest);
        (first, rest)
    })
    .await;
    let response: Response = serde_json::from_str(&first).unwrap();
    let (kind, message) = error_kind(&response);
    assert_eq!(kind, ErrorKind::MalformedRequest);
    assert!(
        message.contains(&format!("longer than {MAX_LINE_BYTES} bytes")),
        "{message}"
    );
    assert!(
        rest.is_empty(),
        "the connection is closed after the error: {rest:?}"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_private_and_removed_on_shutdown() {
    let agent = Running::start().await;
    let mode = std::fs::metadata(&agent.socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let socket = agent.shutdown().await;
    assert!(!socket.exists(), "the socket is removed on shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_agent_does_not_take_socket() {
    let agent = Running::start().await;
    match server::bind(&agent.runtime()).unwrap() {
        Bound::AlreadyRunning { pid, socket } => {
            assert_eq!(pid, Some(std::process::id()));
            assert_eq!(socket, agent.socket);
        }
        Bound::Serving(_) => panic!("a second bind must not take over the socket"),
    }
    let socket = agent.socket.clone();
    let responses =
        blocking(move || exchange(&socket, &[r#"{"v":1,"type":"hello","client":"t"}"#])).await;
    assert!(matches!(responses[0], Response::Hello { .. }));
    agent.shutdown().await;
}

#[tokio::test]
async fn stale_socket_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = dir.path().join("run");
    tollgate_agent::runtime_dir::prepare(&runtime, rustix::process::getuid().as_raw()).unwrap();
    let socket = tollgate_protocol::paths::socket_path(&runtime);
    // A socket file whose listener is gone, as after `kill -9`.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    assert!(UnixStream::connect(&socket).is_err());
    let Bound::Serving(listener) = server::bind(&runtime).unwrap() else {
        panic!("a stale socket must be replaced");
    };
    assert_eq!(listener.socket_path(), socket);
    assert!(UnixStream::connect(&socket).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_uid_rejected() {
    if !rustix::process::getuid().is_root() {
        // Connecting as another user needs root to switch uid.
        return;
    }
    let agent = Running::start().await;

    // Open the folder and the socket so only the agent's peer check is
    // between another user and the protocol.
    std::fs::set_permissions(agent.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(agent.runtime(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&agent.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let socket = agent.socket.clone();

    let output = blocking(move || {
        use std::os::unix::process::CommandExt;
        std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import socket,sys\n\
                 s=socket.socket(socket.AF_UNIX)\n\
                 s.connect(sys.argv[1])\n\
                 try:\n\
                 \x20   s.sendall(b'{\"v\":1,\"type\":\"hello\",\"client\":\"intruder\"}\\n')\n\
                 \x20   print(repr(s.recv(4096)))\n\
                 except (BrokenPipeError, ConnectionResetError):\n\
                 \x20   print(repr(b''))",
            )
            .arg(&socket)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    })
    .await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "b''",
        "another user gets no answer"
    );
    let socket = agent.socket.clone();
    let responses =
        blocking(move || exchange(&socket, &[r#"{"v":1,"type":"hello","client":"t"}"#])).await;
    assert!(
        matches!(responses[0], Response::Hello { .. }),
        "the owner is still served"
    );
    agent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_queues_extra_clients() {
    use tollgate_agent::server::MAX_CONNECTIONS;
    let agent = Running::start().await;
    let socket = agent.socket.clone();
    let (waited, served) = blocking(move || {
        let hello = r#"{"v":1,"type":"hello","client":"t"}"#;
        let mut open = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut stream = UnixStream::connect(&socket).unwrap();
            writeln!(stream, "{hello}").unwrap();
            let mut line = String::new();
            BufReader::new(stream.try_clone().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains("\"hello\""), "{line}");
            open.push(stream);
        }
        // One more client waits in the listen backlog.
        let mut extra = UnixStream::connect(&socket).unwrap();
        writeln!(extra, "{hello}").unwrap();
        extra
            .set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        let mut reader = BufReader::new(extra.try_clone().unwrap());
        let mut line = String::new();
        let waited = reader.read_line(&mut line).is_err();
        // Closing one connection frees a place for it.
        drop(open.pop());
        extra
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        reader.read_line(&mut line).unwrap();
        (waited, line)
    })
    .await;
    assert!(
        waited,
        "the extra client is not served while {} connections are open",
        tollgate_agent::server::MAX_CONNECTIONS
    );
    assert!(served.contains("\"hello\""), "{served}");
    agent.shutdown().await;
}
