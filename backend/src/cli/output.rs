//! The one place the command line prints: results to stdout, errors to
//! stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write as _;

/// Prints a result line to stdout.
pub fn line(text: &str) {
    write_stdout(text, "\n");
}

/// Prints `text` to stdout as it is, without adding a newline.
pub fn raw(text: &str) {
    write_stdout(text, "");
}

/// Writes `text` and `end` to stdout through a locked handle.
///
/// A reader that closed the pipe early, as `tollgate quota audit | head -1`
/// does, has all the output it wants, so a broken pipe ends the process
/// with exit code 0 instead of a panic. Any other write error is reported
/// and exits with code 2.
fn write_stdout(text: &str, end: &str) {
    let mut stdout = std::io::stdout().lock();
    let result = write!(stdout, "{text}{end}").and_then(|()| stdout.flush());
    match result {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            self::error(&format!("cannot write to stdout: {error}"));
            std::process::exit(i32::from(super::EXIT_FAILURE));
        }
    }
}

/// Prints an error to stderr, prefixed with `error: ` as clap does.
pub fn error(text: &str) {
    eprintln!("error: {text}");
}

/// Prints a warning to stderr.
pub fn warning(text: &str) {
    eprintln!("warning: {text}");
}

/// Prints `value` as pretty JSON to stdout.
pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    line(&text);
    Ok(())
}

/// Prints a prompt to stderr and reads one line from stdin.
pub fn prompt(question: &str) -> std::io::Result<String> {
    eprint!("{question} ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer)
}
