//! The floor for any credential_process: a binary that only writes a fixed
//! credential_process JSON line to stdout. The shim's benchmark runs it side
//! by side with the shim, built with the same release profile.

use std::io::Write;

const DOCUMENT: &[u8] = b"{\"Version\":1,\"AccessKeyId\":\"ASIABENCHMARKKEY\",\"SecretAccessKey\":\"benchmark/secret+access+key/0123456789abcdef\",\"SessionToken\":\"benchmark-session-token\",\"Expiration\":\"2026-12-04T18:00:00Z\"}\n";

fn main() -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(DOCUMENT)?;
    stdout.flush()
}
