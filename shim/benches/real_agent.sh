#!/usr/bin/env bash
# Runs credential_process.sh against a real tollgate-agent with cached
# credentials. The steps:
#   1. Start the local OIDC provider (tests/support/oidc) and moto_server as
#      STS, both on 127.0.0.1 only.
#   2. Write an agent config into a throwaway HOME and start
#      `tollgate-agent run --foreground`.
#   3. Log in with the scripted browser (tests/support/browser), and make one
#      shim call so the agent caches STS credentials.
#   4. Benchmark, or run the command given as arguments in place of the
#      benchmark, with the stack's environment (profile `bench`). On exit,
#      every process the script started is stopped by its PID.
#
# Needs what scripts/install-deps.sh installs: node with the npm packages
# under tests/support/oidc, and moto_server in $TOLLGATE_VENV.
# Environment: as credential_process.sh (RUNS, WARMUP, OUT, CARGO_TARGET_DIR,
# BUILD), plus TOLLGATE_VENV (default /var/cache/tollgate/venv).
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
venv=${TOLLGATE_VENV:-/var/cache/tollgate/venv}
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    echo "real_agent.sh: $*" >&2
    exit 1
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until "$@" succeeds, for at most 30 s.
wait_until() {
    local what=$1
    shift
    for _ in $(seq 300); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    fail "timed out waiting for $what; logs are in $work"
}

[[ -x $venv/bin/moto_server ]] || fail "moto_server is missing in $venv; run scripts/install-deps.sh"
[[ -d $repo/tests/support/oidc/node_modules ]] || fail "tests/support/oidc has no node_modules; run scripts/install-deps.sh"

# Two builds, because one build of both packages would unify their crate
# features and so build a different shim than the one users get.
if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p tollgate-agent
    cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p tollgate-shim \
        --bin tollgate-credential-process
fi
agent_bin=$target/release/tollgate-agent

# cargo and rustup find their folders through HOME unless CARGO_HOME and
# RUSTUP_HOME are set, and the measurement below builds after HOME changes.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export HOME=$work/home
export XDG_CONFIG_HOME=$HOME/.config XDG_STATE_HOME=$HOME/.local/state
export XDG_DATA_HOME=$HOME/.local/share XDG_CACHE_HOME=$HOME/.cache
export TOLLGATE_RUNTIME_DIR=$work/run
export TOLLGATE_CONFIG=$work/agent.toml
export TOLLGATE_AGENT_BIN=$agent_bin
export BROWSER=$repo/tests/support/browser
export TOLLGATE_TEST_LOGIN=bench@example.com
export TOLLGATE_TEST_BROWSER_LOG=$work/browser.log
export AWS_EC2_METADATA_DISABLED=true
unset DBUS_SESSION_BUS_ADDRESS
mkdir -p "$HOME" "$TOLLGATE_RUNTIME_DIR"
chmod 700 "$TOLLGATE_RUNTIME_DIR"

redirect_port=$(free_port)
node "$repo/tests/support/oidc/server.mjs" --port 0 --redirect-ports "$redirect_port" \
    >"$work/oidc.log" 2>&1 &
pids+=($!)
wait_until "the OIDC provider" grep -q '^ready ' "$work/oidc.log"
issuer=$(sed -n 's/^ready //p' "$work/oidc.log" | head -n1)

moto_port=$(free_port)
"$venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
sts=http://127.0.0.1:$moto_port
wait_until "moto_server" python3 -c "import urllib.request; urllib.request.urlopen('$sts/moto-api/')"

cat >"$TOLLGATE_CONFIG" <<TOML
[profiles.bench]
issuer = "$issuer"
client_id = "tollgate-cli"
redirect_port = $redirect_port
role_arn = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
region = "us-east-1"
session_duration_minutes = 60
sts_endpoint = "$sts"
TOML

"$agent_bin" run --foreground >"$work/agent.log" 2>&1 &
pids+=($!)
wait_until "the agent socket" test -S "$TOLLGATE_RUNTIME_DIR/agent.sock"

"$agent_bin" login --profile bench || fail "the login failed; logs are in $work"
"$target/release/tollgate-credential-process" --profile bench >/dev/null \
    || fail "the first credential request failed; logs are in $work"

if [[ $# -gt 0 ]]; then
    "$@"
else
    "$repo/shim/benches/credential_process.sh" --profile bench
fi
