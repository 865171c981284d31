//! `tollgate-agent`: see the library crate for what it does.

fn main() -> std::process::ExitCode {
    tollgate_agent::cli::main()
}
