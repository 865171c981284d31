//! The shim's failures and the exit status each one maps to.
//!
//! A failure carries an `anyhow` error whose chain is printed as
//! `tollgate: <message>` followed by one `  caused by: <cause>` line per
//! cause, plus an optional hint line with the next step.

use std::process::ExitCode;

use tollgate_protocol::agent::ErrorBody;

/// The class of a failure, which decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The agent refused, or the request failed after reaching it. Exit 1.
    Failed,
    /// The command line or environment is invalid. Exit 2.
    Usage,
    /// No agent could be reached or started. Exit 3.
    Unreachable,
    /// The agent sent no response within the timeout. Exit 4.
    TimedOut,
}

impl FailureKind {
    /// Returns the process exit status for this class.
    pub fn exit_status(self) -> u8 {
        match self {
            FailureKind::Failed => 1,
            FailureKind::Usage => 2,
            FailureKind::Unreachable => 3,
            FailureKind::TimedOut => 4,
        }
    }
}

/// A failure to print on stderr before exiting non-zero.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    pub error: anyhow::Error,
    /// The next step for the user, when the error's own text lacks it.
    pub hint: Option<String>,
}

impl Failure {
    pub fn new(kind: FailureKind, error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            error: error.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Usage, anyhow::Error::msg(message.into()))
    }

    pub fn failed(error: impl Into<anyhow::Error>) -> Self {
        Self::new(FailureKind::Failed, error)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Builds the failure for an error the agent sent as data, keeping its
    /// message and causes in order.
    pub fn from_agent_error(body: &ErrorBody) -> Self {
        let mut causes = body.causes.iter().rev();
        let error = match causes.next() {
            None => anyhow::Error::msg(body.message.clone()),
            Some(innermost) => {
                let mut error = anyhow::Error::msg(innermost.clone());
                for cause in causes {
                    error = error.context(cause.clone());
                }
                error.context(body.message.clone())
            }
        };
        Self::failed(error)
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.kind.exit_status())
    }
}

#[cfg(test)]
mod tests {
    use tollgate_protocol::agent::ErrorKind;

    use super::*;

    #[test]
    fn agent_error_keeps_cause_order() {
        let body = ErrorBody {
            kind: ErrorKind::StsFailed,
            message: "STS refused the role".into(),
            causes: vec!["outer cause".into(), "inner cause".into()],
            quota: None,
        };
        let failure = Failure::from_agent_error(&body);
        let chain: Vec<String> = failure.error.chain().map(|e| e.to_string()).collect();
        assert_eq!(
            chain,
            ["STS refused the role", "outer cause", "inner cause"]
        );
        assert_eq!(failure.kind.exit_status(), 1);
    }

    #[test]
    fn agent_error_without_causes() {
        let body = ErrorBody {
            kind: ErrorKind::QuotaBlocked,
            message: "monthly limit reached".into(),
            causes: Vec::new(),
            quota: None,
        };
        let failure = Failure::from_agent_error(&body);
        assert_eq!(failure.error.chain().count(), 1);
        assert_eq!(failure.error.to_string(), "monthly limit reached");
    }
}
