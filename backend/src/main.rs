//! The `tollgate` binary; see [`tollgate_backend::cli`].

fn main() -> std::process::ExitCode {
    tollgate_backend::cli::main()
}
