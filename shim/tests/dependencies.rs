//! Checks that the shim's dependency tree stays free of the heavy crates it
//! must not link: an async runtime, an HTTP or TLS stack, a keyring.

use std::process::Command;

/// Crate names that must not appear among the shim's normal dependencies.
const FORBIDDEN: &[&str] = &[
    "tokio",
    "async-std",
    "smol",
    "futures-executor",
    "hyper",
    "reqwest",
    "ureq",
    "rustls",
    "openssl",
    "openssl-sys",
    "native-tls",
    "ring",
    "aws-lc-rs",
    "keyring",
    "keyring-core",
    "secret-service",
    "zbus",
    "dbus",
    "clap",
];

#[test]
fn shim_links_no_runtime_tls_or_keyring() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--package",
            "tollgate-shim",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "--target",
            "all",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo tree");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "cargo tree failed: {stderr}");

    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    let names: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&"tollgate-protocol"),
        "the tree misses tollgate-protocol, so it was not read right:\n{tree}"
    );
    let found: Vec<&str> = names
        .iter()
        .copied()
        .filter(|name| FORBIDDEN.contains(name))
        .collect();
    assert!(
        found.is_empty(),
        "the shim must not link {found:?}; its dependency tree:\n{tree}"
    );
}
