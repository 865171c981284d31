//! One request-response exchange with the agent over its socket, bounded by
//! a [`Deadline`].
//!
//! The shim writes one request line and reads response lines until a final
//! one arrives. Progress lines are handed to a callback and restart the idle
//! timeout, because the agent may be waiting for the user to finish a login
//! in the browser.

use std::io::{self, ErrorKind as IoErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde::Deserialize;
use tollgate_protocol::agent::{MAX_LINE_BYTES, Request, Response};
use zeroize::Zeroizing;

use crate::failure::{Failure, FailureKind};

/// The time limits of one shim run.
///
/// - The idle timeout runs from the last line received from the agent (or
///   from the request, before the first line).
/// - The hard cap is twice the idle timeout, measured from the shim's start,
///   and is never extended.
#[derive(Debug, Clone)]
pub struct Deadline {
    idle: Duration,
    hard_end: Instant,
    last_activity: Instant,
}

/// The limit of a [`Deadline`] that ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    Idle,
    Hard,
}

impl Deadline {
    /// Starts the limits for a run that began at `started`.
    pub fn new(started: Instant, idle: Duration) -> Self {
        Self {
            idle,
            hard_end: started + idle.saturating_mul(2),
            last_activity: Instant::now(),
        }
    }

    /// Returns the idle timeout.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Returns the hard cap on the whole run.
    pub fn hard_cap(&self) -> Duration {
        self.idle.saturating_mul(2)
    }

    /// Restarts the idle timeout from now.
    pub fn touch(&mut self) {
        self.last_activity = Instant::now();
    }

    /// Returns the time left before either limit runs out, or which one
    /// already has.
    pub fn remaining(&self) -> Result<Duration, Expired> {
        let now = Instant::now();
        let idle_end = self.last_activity + self.idle;
        let (end, kind) = if idle_end <= self.hard_end {
            (idle_end, Expired::Idle)
        } else {
            (self.hard_end, Expired::Hard)
        };
        match end.checked_duration_since(now) {
            Some(left) if !left.is_zero() => Ok(left),
            _ => Err(kind),
        }
    }

    /// Returns the time left before the hard cap.
    pub fn until_hard_end(&self) -> Duration {
        self.hard_end.saturating_duration_since(Instant::now())
    }
}

/// Sends `request` on `stream` and returns the first final response.
/// Each progress line is passed to `on_progress` as (message, url).
pub fn exchange(
    stream: UnixStream,
    socket: &Path,
    request: &Request,
    deadline: &mut Deadline,
    mut on_progress: impl FnMut(&str, Option<&str>),
) -> Result<Response, Failure> {
    let mut stream = stream;
    send_request(&mut stream, socket, request, deadline)?;
    deadline.touch();

    let mut reader = LineReader::new(stream);
    loop {
        let line = reader
            .next_line(deadline)
            .map_err(|error| read_failure(error, socket, deadline))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        deadline.touch();
        let response: Response = serde_json::from_slice(&line)
            .with_context(|| format!("the agent at {} sent an invalid line", socket.display()))
            .map_err(|error| {
                Failure::failed(error).with_hint(
                    "install matching versions of tollgate-agent and \
                     tollgate-credential-process, then retry",
                )
            })?;
        match response {
            Response::Progress { message, url } => on_progress(&message, url.as_deref()),
            Response::Unknown => {
                return Err(Failure::failed(anyhow!(
                    "the agent at {} sent a response of type {} that this shim does not know",
                    socket.display(),
                    type_name(&line),
                ))
                .with_hint(
                    "install matching versions of tollgate-agent and \
                     tollgate-credential-process, then retry",
                ));
            }
            other => return Ok(other),
        }
    }
}

fn send_request(
    stream: &mut UnixStream,
    socket: &Path,
    request: &Request,
    deadline: &Deadline,
) -> Result<(), Failure> {
    let mut line = serde_json::to_vec(request).expect("a protocol request always serializes");
    line.push(b'\n');
    write_line(stream, &line, deadline)
        .with_context(|| {
            format!(
                "failed to send the request to the agent at {}",
                socket.display()
            )
        })
        .map_err(|error| {
            Failure::new(FailureKind::Unreachable, error)
                .with_hint("restart the agent with `tollgate-agent run`, or check its log")
        })
}

fn write_line(stream: &mut UnixStream, line: &[u8], deadline: &Deadline) -> io::Result<()> {
    let left = deadline
        .remaining()
        .map_err(|_| io::Error::from(IoErrorKind::TimedOut))?;
    stream.set_write_timeout(Some(left))?;
    stream.write_all(line)
}

/// The reason reading a line stopped.
#[derive(Debug)]
enum ReadError {
    Expired(Expired),
    Closed,
    TooLong,
    Io(io::Error),
}

fn read_failure(error: ReadError, socket: &Path, deadline: &Deadline) -> Failure {
    let socket = socket.display();
    match error {
        ReadError::Expired(Expired::Idle) => Failure::new(
            FailureKind::TimedOut,
            anyhow!(
                "no answer from the agent at {socket} within {} s",
                deadline.idle().as_secs_f64()
            ),
        )
        .with_hint(
            "if a login is open in the browser, finish it and retry; otherwise \
             check the agent log, restart it with `tollgate-agent run`, or raise \
             --timeout (TOLLGATE_SHIM_TIMEOUT)",
        ),
        ReadError::Expired(Expired::Hard) => Failure::new(
            FailureKind::TimedOut,
            anyhow!(
                "no answer from the agent at {socket} within {} s (twice --timeout), \
                 although it was still sending progress",
                deadline.hard_cap().as_secs_f64()
            ),
        )
        .with_hint(
            "finish the login in the browser and retry, or raise --timeout \
             (TOLLGATE_SHIM_TIMEOUT)",
        ),
        ReadError::Closed => Failure::failed(anyhow!(
            "the agent at {socket} closed the connection before answering"
        ))
        .with_hint("check the agent log; `tollgate-agent status` shows whether it still runs"),
        ReadError::TooLong => Failure::failed(anyhow!(
            "the agent at {socket} sent a line longer than {MAX_LINE_BYTES} bytes"
        ))
        .with_hint(
            "install matching versions of tollgate-agent and \
             tollgate-credential-process, then retry",
        ),
        ReadError::Io(error) => Failure::failed(anyhow::Error::new(error).context(format!(
            "failed to read the response of the agent at {socket}"
        ))),
    }
}

/// The bytes requested from the socket per read. One read usually returns a
/// whole credentials line, which is 1 to 2 KB with STS session tokens. The
/// size is kept to one page because every page touched at start-up costs a
/// page fault, which the benchmark showed in the shim's run time.
const READ_CHUNK: usize = 4 * 1024;

/// Splits the stream into lines. The buffers are zeroed on drop because
/// credential lines contain secrets, but a line longer than [`READ_CHUNK`]
/// grows the buffer and leaves the old allocation unzeroed.
struct LineReader {
    stream: UnixStream,
    buffer: Zeroizing<Vec<u8>>,
    /// Bytes of `buffer` already scanned for a newline.
    scanned: usize,
}

impl LineReader {
    fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buffer: Zeroizing::new(Vec::with_capacity(READ_CHUNK)),
            scanned: 0,
        }
    }

    /// Returns the next line without its newline.
    fn next_line(&mut self, deadline: &Deadline) -> Result<Zeroizing<Vec<u8>>, ReadError> {
        loop {
            if let Some(offset) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + offset;
                let mut line = Zeroizing::new(self.buffer[..end].to_vec());
                self.buffer.drain(..=end);
                self.scanned = 0;
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            self.scanned = self.buffer.len();
            if self.buffer.len() > MAX_LINE_BYTES {
                return Err(ReadError::TooLong);
            }

            let left = deadline.remaining().map_err(ReadError::Expired)?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(ReadError::Io)?;
            let filled = self.buffer.len();
            self.buffer.resize(filled + READ_CHUNK, 0);
            let result = self.stream.read(&mut self.buffer[filled..]);
            self.buffer
                .truncate(filled + result.as_ref().map_or(0, |count| *count));
            match result {
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(error) if error.kind() == IoErrorKind::Interrupted => {}
                // The socket timeout fired; the deadline decides which limit.
                Err(error)
                    if matches!(
                        error.kind(),
                        IoErrorKind::WouldBlock | IoErrorKind::TimedOut
                    ) => {}
                Err(error) => return Err(ReadError::Io(error)),
            }
        }
    }
}

/// Returns the `type` field of a response line, quoted, for messages.
fn type_name(line: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Tagged {
        #[serde(rename = "type")]
        type_name: Option<String>,
    }
    match serde_json::from_slice::<Tagged>(line) {
        Ok(Tagged {
            type_name: Some(name),
        }) => format!("{name:?}"),
        _ => "(missing)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_idle_then_hard() {
        let started = Instant::now();
        let mut deadline = Deadline::new(started, Duration::from_millis(100));
        assert!(deadline.remaining().unwrap() <= Duration::from_millis(100));
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(deadline.remaining(), Err(Expired::Idle));
        deadline.touch();
        // The idle timeout restarted, but only 80 ms are left before the cap.
        let left = deadline.remaining().unwrap();
        assert!(left <= Duration::from_millis(80), "{left:?}");
        std::thread::sleep(left);
        assert_eq!(deadline.remaining(), Err(Expired::Hard));
    }

    #[test]
    fn type_name_is_quoted_or_missing() {
        assert_eq!(type_name(br#"{"type":"hologram"}"#), "\"hologram\"");
        assert_eq!(type_name(br#"{"kind":"x"}"#), "(missing)");
    }
}
