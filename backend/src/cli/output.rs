//! The one place the command line prints: results to stdout, errors to
//! stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

/// Prints a result line to stdout.
pub fn line(text: &str) {
    println!("{text}");
}

/// Prints an error to stderr, prefixed with `error: ` as clap does.
pub fn error(text: &str) {
    eprintln!("error: {text}");
}

/// Prints a warning to stderr.
pub fn warning(text: &str) {
    eprintln!("warning: {text}");
}
