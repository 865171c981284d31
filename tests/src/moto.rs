//! `moto_server`, the AWS emulator that replaces STS in the tests.
//!
//! moto accepts any web-identity token and any role ARN, and the
//! assumed-role ARN it returns ends in the RoleSessionName that was sent.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::http;
use crate::locate::{free_port, venv_program};
use crate::process::{Service, wait_for};

/// How long moto_server may take to respond. It starts in under 4 seconds
/// here when idle; the margin covers a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a start is retried when the chosen port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// A running moto_server.
#[derive(Debug)]
pub struct Moto {
    service: Service,
    url: String,
}

impl Moto {
    /// Starts moto_server on a free port of 127.0.0.1, logging to
    /// `<log_dir>/moto.log`, and waits until it responds.
    pub fn start(log_dir: &Path) -> Result<Self> {
        let program = venv_program("moto_server")?;
        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&program, log_dir) {
                Ok(moto) => return Ok(moto),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.expect("at least one start was attempted"))
    }

    fn start_once(program: &Path, log_dir: &Path) -> Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(program);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut service = Service::spawn("moto", command, log_dir)?;
        let url = format!("http://127.0.0.1:{port}");
        let probe = format!("{url}/moto-api/");
        wait_for("moto_server to respond", START_TIMEOUT, || {
            service.ensure_running()?;
            Ok(http::get(&probe, &[])
                .ok()
                .filter(|reply| reply.status == 200))
        })
        .with_context(|| format!("moto_server did not start on {url}"))?;
        Ok(Self { service, url })
    }

    /// Returns the endpoint URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the server's log so far.
    pub fn log(&self) -> String {
        self.service.log()
    }
}
