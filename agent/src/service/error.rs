//! Errors that cross the socket as data.

use tollgate_protocol::agent::{ErrorBody, ErrorKind, Response};
use tollgate_protocol::check::CheckAnswer;

use crate::config::ConfigError;
use crate::login::LoginError;

/// A request failure: its kind, a message for the user and the causes.
#[derive(Debug, Clone)]
pub struct AgentError {
    pub kind: ErrorKind,
    pub message: String,
    pub causes: Vec<String>,
    pub quota: Option<CheckAnswer>,
}

impl AgentError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            causes: Vec::new(),
            quota: None,
        }
    }

    pub fn with_cause(mut self, cause: impl Into<String>) -> Self {
        self.causes.push(cause.into());
        self
    }

    pub fn into_response(self) -> Response {
        Response::Error(ErrorBody {
            kind: self.kind,
            message: self.message,
            causes: self.causes,
            quota: self.quota,
        })
    }
}

impl From<ConfigError> for AgentError {
    fn from(error: ConfigError) -> Self {
        let kind = match error {
            ConfigError::UnknownProfile { .. } | ConfigError::AmbiguousProfile { .. } => {
                ErrorKind::UnknownProfile
            }
            _ => ErrorKind::InvalidConfig,
        };
        Self::new(kind, error.to_string())
    }
}

impl From<LoginError> for AgentError {
    fn from(error: LoginError) -> Self {
        let kind = match error {
            LoginError::TimedOut { .. }
            | LoginError::DeviceCodeExpired { .. }
            | LoginError::DeviceLoginTimedOut { .. } => ErrorKind::LoginTimedOut,
            _ => ErrorKind::LoginFailed,
        };
        Self::new(kind, error.to_string())
    }
}
