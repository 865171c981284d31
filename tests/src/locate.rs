//! Where the harness finds the workspace binaries, the support scripts and
//! the Python tools.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

/// The environment variable naming the folder that contains the workspace
/// binaries (`tollgate`, `tollgate-agent`, `tollgate-credential-process`).
pub const BIN_DIR_ENV: &str = "TOLLGATE_BIN_DIR";

/// The environment variable naming the Python virtual environment.
pub const VENV_ENV: &str = "TOLLGATE_VENV";

/// The virtual environment `scripts/install-deps.sh` creates by default.
pub const DEFAULT_VENV: &str = "/var/cache/tollgate/venv";

/// The agent binary's file name.
pub const AGENT: &str = "tollgate-agent";
/// The shim binary's file name.
pub const SHIM: &str = "tollgate-credential-process";
/// The backend and admin CLI binary's file name.
pub const BACKEND: &str = "tollgate";

/// Returns the `tests` package folder.
///
/// Cargo and nextest set `CARGO_MANIFEST_DIR` when they run a test, and that
/// value wins over the one compiled in: two clones that share a target
/// folder (CI does this) may reuse a harness built in the other clone.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.join("support").is_dir())
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Returns the workspace root.
pub fn workspace_root() -> PathBuf {
    manifest_dir()
        .parent()
        .expect("the tests package sits one folder below the workspace root")
        .to_path_buf()
}

/// Returns `tests/support`, where the OIDC provider and the scripted
/// browser live.
pub fn support_dir() -> PathBuf {
    manifest_dir().join("support")
}

/// Returns the folder with the workspace binaries.
///
/// Cargo builds the binaries of other packages into the same profile folder
/// as the test executable (`<target>/debug/deps/<test>` next to
/// `<target>/debug/tollgate-agent`), so without `TOLLGATE_BIN_DIR` the
/// folder above the test executable's is used.
pub fn bin_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV).filter(|dir| !dir.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().context("failed to read the test executable's path")?;
    let deps = exe
        .parent()
        .context("the test executable has no parent folder")?;
    let profile_dir = if deps.file_name().is_some_and(|name| name == "deps") {
        deps.parent().unwrap_or(deps)
    } else {
        deps
    };
    Ok(profile_dir.to_path_buf())
}

/// Returns the path of a workspace binary, failing with the fix when it has
/// not been built.
pub fn binary(name: &str) -> Result<PathBuf> {
    let dir = bin_dir()?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "binary {name} not found in {}: build it with `cargo build --workspace` \
             or set {BIN_DIR_ENV} to the folder that holds it",
            dir.display()
        );
    }
    Ok(path)
}

/// Returns the virtual environment's `bin` folder.
pub fn venv_bin_dir() -> PathBuf {
    let venv = std::env::var_os(VENV_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
    venv.join("bin")
}

/// Returns the path of a program in the virtual environment, failing with
/// the fix when it is not installed.
pub fn venv_program(name: &str) -> Result<PathBuf> {
    let path = venv_bin_dir().join(name);
    if !path.is_file() {
        bail!(
            "{name} not found at {}: run scripts/install-deps.sh, or set {VENV_ENV} \
             to the virtual environment that has it",
            path.display()
        );
    }
    Ok(path)
}

/// Returns a TCP port on 127.0.0.1 that was free a moment ago.
///
/// NOTE: another process can take the port between this call and its use.
/// Callers that can bind port 0 themselves (the backend, the OIDC provider)
/// do so instead. This function is for ports that must be known before a
/// server starts, such as the agent's callback port.
pub fn free_port() -> Result<u16> {
    // Ports the kernel hands out for port 0 and for outgoing connections
    // come from the ephemeral range (32768 to 60999 on Linux, 49152 and up
    // elsewhere). Choosing below it means a server that another test binds
    // to port 0 cannot take the port before this one's user binds it.
    const FIRST: u32 = 10_000;
    const COUNT: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or(0);
    let seed = std::process::id().wrapping_mul(2_654_435_761) ^ nanos;
    for _ in 0..500 {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + seed.wrapping_add(step.wrapping_mul(7_919)) % COUNT;
        let port = u16::try_from(port).expect("the range ends below 65536");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!(
        "found no free port on 127.0.0.1 between {FIRST} and {}",
        FIRST + COUNT
    )
}
