#!/usr/bin/env bash
# Runs Tollgate's whole test suite the way CI does:
#   1. installs missing tools (scripts/install-deps.sh),
#   2. builds the workspace with a target folder outside the clone, so that
#      a rerun on the same machine only rebuilds what changed,
#   3. runs `cargo nextest run --workspace` inside a private D-Bus session
#      with gnome-keyring unlocked, and HOME and XDG_RUNTIME_DIR in a
#      temporary folder that is deleted afterwards.
# Exits non-zero when any step or test fails.
#
# Environment:
#   TOLLGATE_CARGO_TARGET  the cargo target folder (/var/cache/tollgate/target)
#   TOLLGATE_VENV          the Python environment (/var/cache/tollgate/venv)
# Arguments are passed to `cargo nextest run`, e.g. `scripts/test.sh -E 'test(shim)'`.

set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

section() { printf '\n==> %s\n' "$*"; }

section "Installing test dependencies"
venv_bin="$(scripts/install-deps.sh | tail -n 1)"

# Cargo, rustup and pyenv find their homes through HOME unless their own
# variables are set, and HOME is replaced below, so set those first.
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
if [[ -d "$HOME/.pyenv" ]]; then
  export PYENV_ROOT="${PYENV_ROOT:-$HOME/.pyenv}"
fi
export CARGO_TARGET_DIR="${TOLLGATE_CARGO_TARGET:-/var/cache/tollgate/target}"
export TOLLGATE_VENV="${venv_bin%/bin}"
export TOLLGATE_BIN_DIR="$CARGO_TARGET_DIR/debug"
export AWS_EC2_METADATA_DISABLED=true
export TOLLGATE_NEXTEST_CONFIG="$repo/scripts/nextest.toml"
mkdir -p "$CARGO_TARGET_DIR"

section "Building the workspace"
cargo build --workspace --all-targets

work="$(mktemp -d -t tollgate-test.XXXXXX)"
cleanup() { rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/home" "$work/run"
chmod 0700 "$work/run"
export HOME="$work/home"
export XDG_RUNTIME_DIR="$work/run"
unset XDG_CONFIG_HOME XDG_STATE_HOME XDG_DATA_HOME XDG_CACHE_HOME

section "Running the tests"
status=0
dbus-run-session -- bash -c '
  set -euo pipefail
  # Creates and unlocks the "login" collection without a prompt.
  printf "test-password" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
  exec cargo nextest run --workspace --no-fail-fast \
    --tool-config-file "tollgate:$TOLLGATE_NEXTEST_CONFIG" "$@"
' nextest "$@" || status=$?

exit "$status"
