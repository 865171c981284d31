#!/usr/bin/env bash
# Smoke test of the real Claude Code CLI against the fake Bedrock runtime,
# run inside a loopback-only network namespace (see run-in-netns.sh).
#
# Usage: smoke.sh [--keep] [--save-samples] [--only SCENARIO]...
#
# Needs root and `npm ci` done in this folder. It also needs the test Python
# environment that scripts/install-deps.sh creates (TOLLGATE_VENV, default
# /var/cache/tollgate/venv), for opentelemetry-proto and moto_server, and tmux
# for the interactive scenario. Prints one `ok`/`not ok` line per check and ends
# with `N passed, N failed`; exits 1 when a check failed.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TOLLGATE_VENV:-/var/cache/tollgate/venv}"

if [[ ! -x "$venv/bin/python" ]]; then
  echo "smoke.sh: no Python environment at $venv; run scripts/install-deps.sh or set TOLLGATE_VENV" >&2
  exit 1
fi
if [[ ! -x "$here/node_modules/.bin/claude" ]]; then
  echo "smoke.sh: Claude Code is not installed; run 'npm ci' in $here" >&2
  exit 1
fi

exec "$here/run-in-netns.sh" "$venv/bin/python" "$here/smoke.py" "$@"
