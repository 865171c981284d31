//! `tollgate-credential-process`: the AWS `credential_process` shim.
//!
//! It requests credentials from the per-user Tollgate agent over the
//! agent's Unix socket and prints them in the format the caller reads. It
//! starts the agent when none listens, never reads stdin, needs no terminal,
//! and
//! links no keyring, TLS or async runtime, because it runs once per
//! credential request. See `--help` for the flags and exit statuses.

mod args;
mod client;
mod failure;
mod launch;
mod output;

use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow};
use tollgate_protocol::agent::{ErrorKind, Request, RequestBody, Response};
use tollgate_protocol::paths;
use zeroize::Zeroizing;

use crate::args::{Command, Options, Output};
use crate::client::Deadline;
use crate::failure::Failure;

fn main() -> ExitCode {
    let started = Instant::now();
    match run(started) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            output::print_failure(&failure);
            failure.exit_code()
        }
    }
}

fn env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

fn run(started: Instant) -> Result<(), Failure> {
    let command = args::parse(std::env::args_os().skip(1), env)
        .map_err(|error| Failure::usage(error.to_string()))?;
    let options = match command {
        Command::Run(options) => options,
        Command::Help => return write_text(args::HELP),
        Command::Version => {
            return write_text(concat!(
                "tollgate-credential-process ",
                env!("CARGO_PKG_VERSION"),
                "\n"
            ));
        }
    };

    if env(paths::INSIDE_AGENT_ENV).is_some() {
        return Err(Failure::usage(format!(
            "{} is set, so this shim was started by tollgate-agent itself; the \
             agent's own AWS calls must not use a profile whose credential_process \
             is tollgate-credential-process, because the agent would call itself",
            paths::INSIDE_AGENT_ENV
        ))
        .with_hint(
            "remove AWS_PROFILE (and any default profile pointing at this shim) from \
             the agent's environment and restart the agent",
        ));
    }

    let uid = rustix::process::getuid().as_raw();
    let socket = paths::socket_path(&paths::runtime_dir(env, uid));
    let mut deadline = Deadline::new(started, options.timeout);
    let stream = launch::connect_or_start(&socket, &deadline, &env)?;

    let request = Request::new(request_body(&options));
    let response = client::exchange(
        stream,
        &socket,
        &request,
        &mut deadline,
        output::print_progress,
    )?;
    let document = render_answer(&options, response, &socket)?;
    output::write_stdout(&document)
        .context("failed to write the JSON document to stdout")
        .map_err(Failure::failed)
}

fn request_body(options: &Options) -> RequestBody {
    match options.output {
        Output::CredentialProcess | Output::AwsCredentialExport => RequestBody::GetCredentials {
            profile: options.profile.clone(),
            interactive: true,
        },
        Output::OtelHeaders => RequestBody::GetIdToken {
            profile: options.profile.clone(),
        },
    }
}

/// Turns the agent's final response into the stdout document, or into the
/// failure to report.
fn render_answer(
    options: &Options,
    response: Response,
    socket: &std::path::Path,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    match (options.output, response) {
        (Output::CredentialProcess, Response::Credentials(credentials)) => {
            Ok(output::credential_process_json(&credentials))
        }
        (Output::AwsCredentialExport, Response::Credentials(credentials)) => {
            Ok(output::credential_export_json(&credentials))
        }
        (Output::OtelHeaders, Response::IdToken { token, .. }) => {
            Ok(output::otel_headers_json(&token))
        }
        (_, Response::Error(body)) => {
            let failure = Failure::from_agent_error(&body);
            let login_hint = format!("run `tollgate-agent login --profile {}`", options.profile);
            if body.kind == ErrorKind::LoginRequired
                && !body.message.contains("tollgate-agent login")
            {
                Err(failure.with_hint(format!("{login_hint} to log in, then retry")))
            } else {
                Err(failure)
            }
        }
        (_, other) => Err(Failure::failed(anyhow!(
            "the agent at {} sent an unexpected {} response to the {} request",
            socket.display(),
            response_name(&other),
            request_name(options.output),
        ))
        .with_hint(
            "install matching versions of tollgate-agent and tollgate-credential-process, \
             then retry",
        )),
    }
}

fn request_name(output: Output) -> &'static str {
    match output {
        Output::CredentialProcess | Output::AwsCredentialExport => "get-credentials",
        Output::OtelHeaders => "get-id-token",
    }
}

fn response_name(response: &Response) -> &'static str {
    match response {
        Response::Hello { .. } => "hello",
        Response::Progress { .. } => "progress",
        Response::Credentials(_) => "credentials",
        Response::IdToken { .. } => "id-token",
        Response::Status { .. } => "status",
        Response::Done { .. } => "done",
        Response::Error(_) => "error",
        _ => "unknown",
    }
}

fn write_text(text: &str) -> Result<(), Failure> {
    output::write_text(text)
        .context("failed to write to stdout")
        .map_err(Failure::failed)
}
