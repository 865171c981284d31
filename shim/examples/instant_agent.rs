//! A stand-in agent for benchmarking the shim: it serves the agent socket
//! in `$TOLLGATE_RUNTIME_DIR` and responds to every request at once with fixed
//! credentials, the same document `print_static` prints. It exits after the
//! number of seconds given as its only argument (default 600).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

const ANSWER: &[u8] = b"{\"type\":\"credentials\",\"access_key_id\":\"ASIABENCHMARKKEY\",\"secret_access_key\":\"benchmark/secret+access+key/0123456789abcdef\",\"session_token\":\"benchmark-session-token\",\"expiration\":\"2026-12-04T18:00:00Z\"}\n";

fn main() -> anyhow::Result<()> {
    let lifetime: u64 = match std::env::args().nth(1) {
        Some(value) => value
            .parse()
            .with_context(|| format!("invalid lifetime {value:?}: expected whole seconds"))?,
        None => 600,
    };
    let Some(runtime) = std::env::var_os("TOLLGATE_RUNTIME_DIR") else {
        bail!("TOLLGATE_RUNTIME_DIR is not set; set it to an empty folder for the socket");
    };
    let socket = PathBuf::from(runtime).join("agent.sock");
    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("failed to bind {}", socket.display()))?;

    // A timer thread ends the process, so the accept loop can block and
    // serve each connection without polling delay.
    let timer_socket = socket.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(lifetime));
        let _ = std::fs::remove_file(&timer_socket);
        std::process::exit(0);
    });

    for stream in listener.incoming() {
        let stream = stream.context("accept failed")?;
        // A shim that went away mid-answer is no reason to stop serving.
        let _ = answer(stream);
    }
    Ok(())
}

fn answer(stream: UnixStream) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut writer = stream.try_clone()?;
    let mut request = String::new();
    BufReader::new(stream).read_line(&mut request)?;
    writer.write_all(ANSWER)
}
