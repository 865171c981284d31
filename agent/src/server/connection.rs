//! One client connection: newline-delimited JSON requests in, responses
//! out, with the protocol checks that come before a request reaches the
//! [`Agent`].

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec, LinesCodecError};
use tollgate_protocol::agent::{
    ErrorKind, MAX_LINE_BYTES, PROTOCOL_VERSION, Request, RequestBody, Response,
};

use crate::progress::Progress;
use crate::service::Agent;

/// Whether a peer with `peer_uid` may talk to an agent running as `uid`.
pub fn peer_allowed(peer_uid: u32, uid: u32) -> bool {
    peer_uid == uid
}

type Lines = FramedRead<tokio::net::unix::OwnedReadHalf, LinesCodec>;
type Out = FramedWrite<tokio::net::unix::OwnedWriteHalf, LinesCodec>;

/// Serves requests on `stream` until the client closes it, a line is
/// unreadable, or shutdown is announced.
pub async fn serve(stream: UnixStream, agent: Arc<Agent>, mut shutdown: broadcast::Receiver<()>) {
    let (reader, writer) = stream.into_split();
    let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    let mut out = FramedWrite::new(writer, LinesCodec::new());
    // A line the client sent while the previous request still ran.
    let mut queued: VecDeque<String> = VecDeque::new();
    loop {
        let line = match queued.pop_front() {
            Some(line) => Some(Ok(line)),
            None => tokio::select! {
                line = lines.next() => line,
                _ = shutdown.recv() => break,
            },
        };
        let line = match line {
            None => break,
            Some(Ok(line)) => line,
            Some(Err(error)) => {
                let message = match error {
                    LinesCodecError::MaxLineLengthExceeded => {
                        format!("the request line is longer than {MAX_LINE_BYTES} bytes")
                    }
                    LinesCodecError::Io(error) => format!("the request could not be read: {error}"),
                };
                tracing::debug!(%message, "closing a connection after an unreadable line");
                let _ = send(
                    &mut out,
                    &Response::error(ErrorKind::MalformedRequest, message),
                )
                .await;
                break;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        if !answer(&line, &agent, &mut lines, &mut queued, &mut out).await {
            break;
        }
    }
}

/// Handles one request line, forwarding progress until the final response.
/// Returns false when the client can no longer be written to.
///
/// When the client closes the connection before the response, the request
/// is dropped, so a client that gave up starts no login and no STS call
/// later. A login it joined is cancelled only when no other client waits on
/// it and no credential request joined it.
async fn answer(
    line: &str,
    agent: &Arc<Agent>,
    lines: &mut Lines,
    queued: &mut VecDeque<String>,
    out: &mut Out,
) -> bool {
    let (sender, mut notes) = mpsc::unbounded_channel();
    let handling = dispatch(line, agent, Progress::new(sender));
    tokio::pin!(handling);
    let response = loop {
        tokio::select! {
            response = &mut handling => break response,
            Some(note) = notes.recv() => {
                if send(out, &note).await.is_err() {
                    tracing::debug!("the client left before the response; dropping its request");
                    return false;
                }
            }
            next = lines.next() => match next {
                Some(Ok(next)) => queued.push_back(next),
                Some(Err(error)) => {
                    tracing::debug!(%error, "the client sent an unreadable line during a request; closing the connection");
                    return false;
                }
                None => {
                    tracing::debug!("the client closed the connection before the response; dropping its request");
                    return false;
                }
            },
        }
    };
    while let Ok(note) = notes.try_recv() {
        if send(out, &note).await.is_err() {
            return false;
        }
    }
    send(out, &response).await.is_ok()
}

async fn send(out: &mut Out, response: &Response) -> Result<(), LinesCodecError> {
    let line = serde_json::to_string(response).expect("responses always serialize to JSON");
    out.send(line).await
}

/// Checks the protocol envelope, then hands the request to the agent.
pub async fn dispatch(line: &str, agent: &Arc<Agent>, progress: Progress) -> Response {
    match parse(line) {
        Ok(body) => agent.handle(body, progress).await,
        Err((kind, message)) => Response::error(kind, message),
    }
}

/// Parses a request line. The version is checked before the body, so a
/// newer client's request with a body this build cannot parse still gets
/// [`ErrorKind::UnsupportedVersion`].
pub fn parse(line: &str) -> Result<RequestBody, (ErrorKind, String)> {
    let value: serde_json::Value = serde_json::from_str(line).map_err(|error| {
        (
            ErrorKind::MalformedRequest,
            format!("the request line is not valid JSON: {error}"),
        )
    })?;
    let Some(version) = value.get("v").and_then(serde_json::Value::as_u64) else {
        return Err((
            ErrorKind::MalformedRequest,
            "the request has no protocol version; every request needs a numeric field `v`"
                .to_string(),
        ));
    };
    if version != u64::from(PROTOCOL_VERSION) {
        return Err((
            ErrorKind::UnsupportedVersion,
            format!(
                "the request uses protocol version {version}, but this agent speaks version {PROTOCOL_VERSION}; update the older of tollgate-agent and the client"
            ),
        ));
    }
    let request_type = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let request: Request = serde_json::from_value(value).map_err(|error| {
        (
            ErrorKind::MalformedRequest,
            format!("the request is invalid: {error}"),
        )
    })?;
    if matches!(request.body, RequestBody::Unknown) {
        return Err((
            ErrorKind::UnknownRequest,
            format!(
                "this agent does not know the request type `{request_type}`; update tollgate-agent"
            ),
        ));
    }
    Ok(request.body)
}
