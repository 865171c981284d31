//! The one place the command line prints: results to stdout, errors to
//! stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// Prints a result line to stdout.
pub fn line(text: &str) {
    println!("{text}");
}

/// Prints `text` to stdout as it is, without adding a newline.
pub fn raw(text: &str) {
    print!("{text}");
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
    println!("{text}");
    Ok(())
}

/// Prints a prompt to stderr and reads one line from stdin.
pub fn prompt(question: &str) -> std::io::Result<String> {
    use std::io::Write as _;
    eprint!("{question} ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer)
}
