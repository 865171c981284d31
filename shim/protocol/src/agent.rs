//! The agent protocol: newline-delimited JSON over the agent's Unix socket.
//!
//! A client writes one [`Request`] line and reads [`Response`] lines until a
//! final one arrives (see [`Response::is_final`]). While the agent works on
//! a request it may send any number of [`Response::Progress`] lines, for
//! example the login URL when no browser could be opened; the shim copies
//! them to its stderr so the user sees them.
//!
//! # Compatibility
//!
//! Every request carries the protocol version `v`. The agent answers a
//! version it does not speak with an [`ErrorKind::UnsupportedVersion`]
//! error, and a request type it does not know with
//! [`ErrorKind::UnknownRequest`]. Every enum has an `Unknown` variant so
//! that a newer peer's additions decode instead of failing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::check::CheckAnswer;
use crate::secret::Secret;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The maximum length of one protocol line in bytes. Longer lines are
/// rejected so a confused peer cannot make the other side buffer forever.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// One request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The protocol version the client speaks.
    pub v: u32,
    #[serde(flatten)]
    pub body: RequestBody,
}

impl Request {
    /// Wraps `body` with this build's protocol version.
    pub fn new(body: RequestBody) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            body,
        }
    }
}

/// The request body, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RequestBody {
    /// Asks which protocol versions and agent version are on the other end.
    Hello {
        /// A short name of the client, for the agent's log.
        client: String,
    },
    /// Asks for AWS credentials for a profile. The agent logs in, assumes the
    /// role and checks the quota as needed.
    GetCredentials {
        profile: String,
        /// Whether the agent may start an interactive login (browser or
        /// device code) to satisfy the request. When false and no valid
        /// session exists, the agent returns [`ErrorKind::LoginRequired`].
        #[serde(default = "default_true")]
        interactive: bool,
    },
    /// Asks for a current OIDC ID token for a profile, for example for the
    /// OpenTelemetry header helper. Never starts an interactive login.
    GetIdToken { profile: String },
    /// Starts (or restarts) a login for a profile.
    Login {
        profile: String,
        /// Uses the device authorization grant instead of the browser.
        #[serde(default)]
        device_code: bool,
    },
    /// Forgets the profile's cached tokens and credentials, in memory and in
    /// the keyring.
    Logout { profile: String },
    /// Asks for the state of one profile, or of all when `profile` is absent.
    Status {
        #[serde(default)]
        profile: Option<String>,
    },
    /// A request type this build does not know.
    #[serde(other)]
    Unknown,
}

fn default_true() -> bool {
    true
}

/// One response line.
///
/// The `Error` variant is much larger than the others because it can carry a
/// whole quota answer; a response is built once per request and written out
/// at once, so boxing it would buy nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)]
pub enum Response {
    Hello {
        /// The protocol versions the agent speaks.
        versions: Vec<u32>,
        /// The agent's package version.
        agent_version: String,
    },
    /// A note for the user while the request is still running. Not final.
    Progress {
        message: String,
        /// A URL the user has to open, when the note is about one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    Credentials(Credentials),
    IdToken {
        token: Secret,
        expiration: DateTime<Utc>,
    },
    Status {
        profiles: Vec<ProfileStatus>,
    },
    /// A request that has no data to return finished.
    Done {
        message: String,
    },
    Error(ErrorBody),
    /// A response type this build does not know. Treated as final.
    #[serde(other)]
    Unknown,
}

impl Response {
    /// Returns whether this line ends the exchange for its request.
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Progress { .. })
    }

    /// Builds an error response.
    pub fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Response::Error(ErrorBody {
            kind,
            message: message.into(),
            causes: Vec::new(),
            quota: None,
        })
    }
}

/// AWS credentials as handed to a credential_process client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Secret,
    /// The expiry reported to SDKs. This is at most the STS credentials' own
    /// expiry and may be earlier, so that SDKs come back for a quota re-check.
    pub expiration: DateTime<Utc>,
}

/// An error sent as data: what went wrong, in words for the user, with the
/// chain of causes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    /// One or two sentences: what happened and what to do.
    pub message: String,
    /// The causes, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<String>,
    /// The backend's answer when the error is a quota refusal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<CheckAnswer>,
}

/// The category of an [`ErrorBody`]. Each variant's doc says what the client
/// should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The quota backend refused: a limit in block mode is reached. Show the
    /// message; retrying before the reset or an unblock will not help.
    QuotaBlocked,
    /// The quota check could not be made and the profile fails closed. Show
    /// the message; retry once the backend is reachable.
    QuotaCheckFailed,
    /// No valid session and the request did not allow an interactive login.
    /// Run `tollgate-agent login`.
    LoginRequired,
    /// The identity provider or the callback reported an error.
    LoginFailed,
    /// The user did not finish the login in time.
    LoginTimedOut,
    /// The profile is not in the agent's configuration.
    UnknownProfile,
    /// The agent's configuration file is invalid.
    InvalidConfig,
    /// AWS STS refused or failed.
    StsFailed,
    /// The request's protocol version is not spoken by this agent. Update
    /// the older of the two programs.
    UnsupportedVersion,
    /// The request type is not known to this agent. Update the agent.
    UnknownRequest,
    /// The request line was not valid JSON or missed a field.
    MalformedRequest,
    /// A bug or an unexpected local failure.
    Internal,
    /// An error kind this build does not know.
    #[serde(other)]
    Unknown,
}

/// The state of one profile, for `tollgate-agent status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProfileStatus {
    pub profile: String,
    /// The identity the ID token names, when logged in.
    #[serde(default)]
    pub identity: Option<String>,
    /// When the ID token expires.
    #[serde(default)]
    pub id_token_expiration: Option<DateTime<Utc>>,
    /// Whether a refresh token is held.
    #[serde(default)]
    pub has_refresh_token: bool,
    /// When the STS credentials expire.
    #[serde(default)]
    pub credentials_expiration: Option<DateTime<Utc>>,
    /// The last quota answer and when it was received.
    #[serde(default)]
    pub last_quota: Option<CheckAnswer>,
    /// The secret store in use: `secret-service`, `keyutils` or `memory`.
    #[serde(default)]
    pub secret_store: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form() {
        let request = Request::new(RequestBody::GetCredentials {
            profile: "bedrock".into(),
            interactive: true,
        });
        let line = serde_json::to_string(&request).unwrap();
        assert_eq!(
            line,
            r#"{"v":1,"type":"get-credentials","profile":"bedrock","interactive":true}"#
        );
    }

    #[test]
    fn unknown_request_type_decodes() {
        let request: Request =
            serde_json::from_str(r#"{"v":7,"type":"teleport","to":"mars"}"#).unwrap();
        assert_eq!(request.v, 7);
        assert!(matches!(request.body, RequestBody::Unknown));
    }

    #[test]
    fn unknown_response_and_error_kind_decode() {
        let response: Response = serde_json::from_str(r#"{"type":"hologram"}"#).unwrap();
        assert!(matches!(response, Response::Unknown));
        assert!(response.is_final());
        let response: Response =
            serde_json::from_str(r#"{"type":"error","kind":"brand-new","message":"m"}"#).unwrap();
        match response {
            Response::Error(body) => assert_eq!(body.kind, ErrorKind::Unknown),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn progress_is_not_final() {
        let response: Response =
            serde_json::from_str(r#"{"type":"progress","message":"open the URL"}"#).unwrap();
        assert!(!response.is_final());
    }

    #[test]
    fn credentials_debug_hides_secrets() {
        let response = Response::Credentials(Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new("secret-key-value"),
            session_token: Secret::new("session-token-value"),
            expiration: DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
        });
        let debug = format!("{response:?}");
        assert!(debug.contains("ASIAEXAMPLE"));
        assert!(!debug.contains("secret-key-value"));
        assert!(!debug.contains("session-token-value"));
    }
}
