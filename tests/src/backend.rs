//! `tollgate serve` with an SQLite database in a temporary folder, and the
//! admin CLI `tollgate quota ...` against the same database.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::http::{self, Reply};
use crate::locate::{BACKEND, binary};
use crate::process::{Service, wait_for};

/// How long the backend may take to write its port file.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings for [`Backend::start`].
#[derive(Debug, Clone)]
pub struct BackendOptions {
    pub issuer: String,
    pub audience: String,
    /// Extra arguments after `serve`, such as `--group-claims groups`.
    pub extra_args: Vec<String>,
}

/// A running `tollgate serve`.
#[derive(Debug)]
pub struct Backend {
    service: Service,
    url: String,
    db: PathBuf,
    dir: PathBuf,
    options: BackendOptions,
}

impl Backend {
    /// Starts the backend on a free port of 127.0.0.1 with its database in
    /// `dir`, logging to `<dir>/backend.log`.
    pub fn start(dir: &Path, options: BackendOptions) -> Result<Self> {
        let db = dir.join("tollgate.db");
        let (service, url) = spawn(dir, &db, &options)?;
        Ok(Self {
            service,
            url,
            db,
            dir: dir.to_path_buf(),
            options,
        })
    }

    /// Returns the base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Returns the SQLite database path.
    pub fn db(&self) -> &Path {
        &self.db
    }

    /// Returns the backend's log so far.
    pub fn log(&self) -> String {
        self.service.log()
    }

    /// Stops the server (SIGTERM, then SIGKILL after five seconds).
    pub fn stop(&mut self) {
        self.service.stop();
    }

    /// Starts the server again on the same database. The port may differ.
    pub fn restart(&mut self) -> Result<()> {
        self.service.stop();
        let (service, url) = spawn(&self.dir, &self.db, &self.options)?;
        self.service = service;
        self.url = url;
        Ok(())
    }

    /// Runs `tollgate <args>` against this backend's database.
    pub fn admin(&self, args: &[&str]) -> Result<Output> {
        admin(&self.db, args)
    }

    /// Runs `tollgate <args>` and fails with its output unless it exits 0.
    pub fn admin_ok(&self, args: &[&str]) -> Result<String> {
        let output = self.admin(args)?;
        if !output.status.success() {
            bail!(
                "`tollgate {}` failed ({}):\nstdout: {}\nstderr: {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Sends `GET /v1/check` with `token` as the bearer token.
    pub fn check(&self, token: &str) -> Result<Reply> {
        let url = format!("{}/v1/check", self.url);
        http::get(&url, &[("Authorization", &format!("Bearer {token}"))])
    }
}

fn spawn(dir: &Path, db: &Path, options: &BackendOptions) -> Result<(Service, String)> {
    let port_file = dir.join("backend.port");
    let _ = std::fs::remove_file(&port_file);
    let mut command = Command::new(binary(BACKEND)?);
    command
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--db")
        .arg(db)
        .arg("--issuer")
        .arg(&options.issuer)
        .arg("--audience")
        .arg(&options.audience)
        .arg("--port-file")
        .arg(&port_file)
        .args(&options.extra_args)
        .env("TOLLGATE_LOG", "trace")
        .env("RUST_LOG", "trace")
        .env_remove("TOLLGATE_DB");
    let mut service = Service::spawn("backend", command, dir)?;
    let address = wait_for("the backend's port file", START_TIMEOUT, || {
        service.ensure_running()?;
        let text = std::fs::read_to_string(&port_file).unwrap_or_default();
        // The file is complete once it contains a whole `host:port`.
        Ok(text
            .trim()
            .rsplit_once(':')
            .filter(|(_, port)| port.parse::<u16>().is_ok())
            .map(|_| text.trim().to_owned()))
    })
    .with_context(|| format!("backend did not start; its log:\n{}", service.log()))?;
    Ok((service, format!("http://{address}")))
}

/// Runs `tollgate <args>` with `--db`-equivalent `TOLLGATE_DB` set to `db`.
pub fn admin(db: &Path, args: &[&str]) -> Result<Output> {
    Command::new(binary(BACKEND)?)
        .args(args)
        .env("TOLLGATE_DB", db)
        .output()
        .with_context(|| format!("failed to run `tollgate {}`", args.join(" ")))
}
