//! Runs the real shim binary against a fake agent on a socket in a
//! temporary runtime folder, and checks stdout, stderr and the exit status.

mod support;

use std::os::unix::net::UnixListener;
use std::time::Duration;

use serde_json::json;
use support::{CREDENTIALS_JSON, CREDENTIALS_LINE, FakeAgent, Sandbox, run};

#[test]
fn credentials_printed_exactly() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(CREDENTIALS_LINE);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    let requests = agent.requests();

    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, CREDENTIALS_JSON);
    assert_eq!(result.stderr, "");
    assert_eq!(
        requests,
        [json!({"v": 1, "type": "get-credentials", "profile": "bedrock", "interactive": true})]
    );
    assert_eq!(sandbox.unexpected_starts(), 0);
}

#[test]
fn profile_from_environment() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(CREDENTIALS_LINE);
    });
    let mut command = sandbox.shim(&[]);
    command.env("TOLLGATE_PROFILE", "from-env");
    let result = run(command);
    let requests = agent.requests();

    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, CREDENTIALS_JSON);
    assert_eq!(requests[0]["profile"], "from-env");
}

#[test]
fn aws_credential_export_format() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(CREDENTIALS_LINE);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock", "--format", "aws-credential-export"]));
    let requests = agent.requests();

    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(
        result.stdout,
        "{\"Credentials\":{\"AccessKeyId\":\"ASIAFAKEKEY\",\
         \"SecretAccessKey\":\"fake/secret+key\",\"SessionToken\":\"fake-session-token\",\
         \"Expiration\":\"2026-12-04T18:00:00Z\"}}\n"
    );
    assert_eq!(result.stderr, "");
    assert_eq!(requests[0]["type"], "get-credentials");
}

#[test]
fn progress_lines_go_to_stderr() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(
            r#"{"type":"progress","message":"Open this URL to log in:","url":"http://127.0.0.1:9400/auth?x=1"}"#,
        );
        session.send(r#"{"type":"progress","message":"Waiting for the\nbrowser login"}"#);
        session.send(CREDENTIALS_LINE);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, CREDENTIALS_JSON);
    assert_eq!(
        result.stderr,
        "tollgate: Open this URL to log in: http://127.0.0.1:9400/auth?x=1\n\
         tollgate: Waiting for the browser login\n"
    );
}

#[test]
fn quota_refusal_is_reported() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(
            &json!({
                "type": "error",
                "kind": "quota-blocked",
                "message": "Monthly token limit reached: 500000000 of 500000000 tokens used; resets 2027-01-01T00:00:00Z.",
                "causes": ["the quota backend refused", "monthly_limit_exceeded"],
            })
            .to_string(),
        );
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert_eq!(
        result.stderr,
        "tollgate: Monthly token limit reached: 500000000 of 500000000 tokens used; \
         resets 2027-01-01T00:00:00Z.\n  caused by: the quota backend refused\n  \
         caused by: monthly_limit_exceeded\n"
    );
}

#[test]
fn login_required_names_login_command() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(r#"{"type":"error","kind":"login-required","message":"Not logged in."}"#);
    });
    let result = run(sandbox.shim(&["--profile", "work"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert!(
        result.stderr.starts_with("tollgate: Not logged in.\n"),
        "{}",
        result.stderr
    );
    assert!(
        result
            .stderr
            .contains("run `tollgate-agent login --profile work`"),
        "{}",
        result.stderr
    );
}

#[test]
fn otel_headers_use_id_token() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(
            r#"{"type":"id-token","token":"eyJhbGciOiJSUzI1NiJ9.payload.sig","expiration":"2026-12-04T18:00:00Z"}"#,
        );
    });
    let result = run(sandbox.shim(&["--profile", "bedrock", "--otel-headers"]));
    let requests = agent.requests();

    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(
        result.stdout,
        "{\"Authorization\":\"Bearer eyJhbGciOiJSUzI1NiJ9.payload.sig\"}\n"
    );
    assert_eq!(result.stderr, "");
    assert_eq!(
        requests,
        [json!({"v": 1, "type": "get-id-token", "profile": "bedrock"})]
    );
}

#[test]
fn otel_headers_not_logged_in() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(
            r#"{"type":"error","kind":"login-required","message":"No valid session for profile bedrock."}"#,
        );
    });
    let result = run(sandbox.shim(&["--profile", "bedrock", "--otel-headers"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert!(
        result
            .stderr
            .contains("run `tollgate-agent login --profile bedrock`"),
        "{}",
        result.stderr
    );
    assert!(
        result.elapsed < Duration::from_secs(5),
        "{:?}",
        result.elapsed
    );
}

#[test]
fn unknown_response_type_is_named() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(r#"{"type":"hologram","payload":1}"#);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert!(result.stderr.contains("\"hologram\""), "{}", result.stderr);
    assert!(
        result.stderr.contains("matching versions"),
        "{}",
        result.stderr
    );
}

#[test]
fn unexpected_response_is_rejected() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(r#"{"type":"done","message":"ok"}"#);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert!(
        result
            .stderr
            .contains("unexpected done response to the get-credentials request"),
        "{}",
        result.stderr
    );
}

#[test]
fn invalid_line_is_rejected() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send(r#"{"type":"credentials","access_key_id":"ASIA"}"#);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert!(
        result.stderr.contains("sent an invalid line"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("caused by: missing field"),
        "{}",
        result.stderr
    );
}

#[test]
fn overlong_line_is_rejected() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.send_raw(&vec![b'x'; 300 * 1024]);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert!(
        result.stderr.contains("longer than 262144 bytes"),
        "{}",
        result.stderr
    );
}

#[test]
fn closed_connection_is_reported() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 1);
    assert_eq!(result.stdout, "");
    assert!(
        result
            .stderr
            .contains("closed the connection before answering"),
        "{}",
        result.stderr
    );
}

#[test]
fn silent_agent_times_out() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.wait_for_close(Duration::from_secs(15));
    });
    let result = run(sandbox.shim(&["--profile", "bedrock", "--timeout", "1"]));
    agent.requests();

    assert_eq!(result.code(), 4, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, "");
    let expected = format!(
        "tollgate: no answer from the agent at {} within 1 s\n",
        sandbox.socket().display()
    );
    assert!(result.stderr.starts_with(&expected), "{}", result.stderr);
    assert!(result.stderr.contains("--timeout"), "{}", result.stderr);
    assert!(
        result.elapsed >= Duration::from_millis(950),
        "{:?}",
        result.elapsed
    );
    assert!(
        result.elapsed < Duration::from_millis(2500),
        "{:?}",
        result.elapsed
    );
}

#[test]
fn timeout_from_environment() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        session.wait_for_close(Duration::from_secs(15));
    });
    let mut command = sandbox.shim(&["--profile", "bedrock"]);
    command.env("TOLLGATE_SHIM_TIMEOUT", "0.5");
    let result = run(command);
    agent.requests();

    assert_eq!(result.code(), 4, "stderr: {}", result.stderr);
    assert!(result.stderr.contains("within 0.5 s"), "{}", result.stderr);
    assert!(
        result.elapsed < Duration::from_millis(2000),
        "{:?}",
        result.elapsed
    );
}

#[test]
fn progress_restarts_idle_timeout() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        for _ in 0..2 {
            std::thread::sleep(Duration::from_millis(1200));
            session.send(r#"{"type":"progress","message":"Waiting for the browser login"}"#);
        }
        std::thread::sleep(Duration::from_millis(1000));
        session.send(CREDENTIALS_LINE);
    });
    let result = run(sandbox.shim(&["--profile", "bedrock", "--timeout", "2"]));
    agent.requests();

    // 3.4 s in all: longer than the 2 s idle timeout, within the 4 s cap.
    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, CREDENTIALS_JSON);
    assert_eq!(result.stderr.lines().count(), 2, "{}", result.stderr);
    assert!(
        result.elapsed >= Duration::from_millis(3300),
        "{:?}",
        result.elapsed
    );
}

#[test]
fn hard_cap_stops_endless_progress() {
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, |session| {
        session.read_request();
        for _ in 0..25 {
            std::thread::sleep(Duration::from_millis(200));
            if !session.send(r#"{"type":"progress","message":"still waiting"}"#) {
                break;
            }
        }
    });
    let result = run(sandbox.shim(&["--profile", "bedrock", "--timeout", "1"]));
    agent.requests();

    assert_eq!(result.code(), 4, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, "");
    assert!(
        result.stderr.contains("within 2 s (twice --timeout)"),
        "{}",
        result.stderr
    );
    assert!(
        result.elapsed >= Duration::from_millis(1900),
        "{:?}",
        result.elapsed
    );
    assert!(
        result.elapsed < Duration::from_millis(3500),
        "{:?}",
        result.elapsed
    );
}

#[test]
fn recursion_guard_blocks_before_connecting() {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.runtime_dir()).unwrap();
    let listener = UnixListener::bind(sandbox.socket()).unwrap();
    listener.set_nonblocking(true).unwrap();
    let mut command = sandbox.shim(&["--profile", "bedrock"]);
    command.env("TOLLGATE_INSIDE_AGENT", "1");
    let result = run(command);

    assert_eq!(result.code(), 2);
    assert_eq!(result.stdout, "");
    assert!(
        result.stderr.contains("TOLLGATE_INSIDE_AGENT is set"),
        "{}",
        result.stderr
    );
    assert!(result.stderr.contains("AWS_PROFILE"), "{}", result.stderr);
    let pending = listener.accept();
    assert!(pending.is_err(), "the shim connected to the agent socket");
    assert_eq!(sandbox.unexpected_starts(), 0);
}

#[test]
fn missing_profile_is_usage_error() {
    let sandbox = Sandbox::new();
    let result = run(sandbox.shim(&[]));

    assert_eq!(result.code(), 2);
    assert_eq!(result.stdout, "");
    assert_eq!(
        result.stderr,
        "tollgate: no profile given; pass --profile NAME or set TOLLGATE_PROFILE\n"
    );
    assert_eq!(sandbox.unexpected_starts(), 0);
}

#[test]
fn unknown_flag_is_usage_error() {
    let sandbox = Sandbox::new();
    let result = run(sandbox.shim(&["--profile", "bedrock", "--verbose"]));

    assert_eq!(result.code(), 2);
    assert_eq!(result.stdout, "");
    assert!(result.stderr.contains("--verbose"), "{}", result.stderr);
}

#[test]
fn help_lists_exit_statuses() {
    let sandbox = Sandbox::new();
    let result = run(sandbox.shim(&["--help"]));

    assert_eq!(result.code(), 0);
    assert!(
        result.stdout.contains("--otel-headers"),
        "{}",
        result.stdout
    );
    assert!(result.stdout.contains("Exit status:"), "{}", result.stdout);
    assert_eq!(result.stderr, "");
}

#[test]
fn long_line_in_pieces_is_joined() {
    let token = "t".repeat(10_000);
    let line = format!(
        r#"{{"type":"credentials","access_key_id":"ASIAFAKEKEY","secret_access_key":"s","session_token":"{token}","expiration":"2026-12-04T18:00:00Z"}}"#
    );
    let sandbox = Sandbox::new();
    let agent = FakeAgent::serve(&sandbox, move |session| {
        session.read_request();
        for piece in format!("{line}\n").as_bytes().chunks(3000) {
            session.send_raw(piece);
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let result = run(sandbox.shim(&["--profile", "bedrock"]));
    agent.requests();

    assert_eq!(result.code(), 0, "stderr: {}", result.stderr);
    assert_eq!(
        result.stdout,
        format!(
            "{{\"Version\":1,\"AccessKeyId\":\"ASIAFAKEKEY\",\"SecretAccessKey\":\"s\",\
             \"SessionToken\":\"{token}\",\"Expiration\":\"2026-12-04T18:00:00Z\"}}\n"
        )
    );
}

#[test]
fn full_accept_queue_times_out() {
    use rustix::io::Errno;
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.runtime_dir()).unwrap();
    let address = SocketAddrUnix::new(sandbox.socket()).unwrap();
    let new_socket = || {
        rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .unwrap()
    };
    // A listener with an accept queue of one that never accepts, filled up.
    let listener = new_socket();
    rustix::net::bind(&listener, &address).unwrap();
    rustix::net::listen(&listener, 0).unwrap();
    let mut queued = Vec::new();
    loop {
        let client = new_socket();
        match rustix::net::connect(&client, &address) {
            Ok(()) => queued.push(client),
            Err(Errno::AGAIN) => break,
            Err(error) => panic!("filling the accept queue failed: {error}"),
        }
        assert!(queued.len() < 100, "the accept queue never filled up");
    }

    let result = run(sandbox.shim(&["--profile", "bedrock", "--timeout", "1"]));

    assert_eq!(result.code(), 4, "stderr: {}", result.stderr);
    assert_eq!(result.stdout, "");
    assert!(
        result
            .stderr
            .contains("did not accept the connection within 1 s"),
        "{}",
        result.stderr
    );
    assert!(
        result.elapsed < Duration::from_millis(2500),
        "{:?}",
        result.elapsed
    );
    assert_eq!(sandbox.unexpected_starts(), 0);
}
