#!/usr/bin/env bash
# Shows Tollgate end to end on this machine, with every server on 127.0.0.1:
#   - `tollgate serve` with an SQLite database and a default quota policy,
#   - a local OpenID Connect provider (npm oidc-provider) with a demo user,
#   - moto_server standing in for AWS STS,
#   - the agent, logging the demo user in through a scripted browser,
#   - the real AWS CLI getting credentials through the credential_process
#     shim and printing the assumed-role identity,
#   - then the backend stopped and the profile set to fail closed, so the
#     shim rejects the request and prints the reason.
# Everything lives in a temporary HOME, and every process the script starts
# is stopped by its PID on exit, Ctrl-C included.
#
# Environment:
#   TOLLGATE_CARGO_TARGET  the cargo target folder (/var/cache/tollgate/target)
#   TOLLGATE_DEMO_USER     the demo user's login (demo@example.com)
#   TOLLGATE_DEMO_KEEP=1   keep the temporary folder with the logs

set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

user="${TOLLGATE_DEMO_USER:-demo@example.com}"
pids=()
work=""

# Bold headings only on a terminal, and never with NO_COLOR set
# (https://no-color.org).
if [[ -t 1 && -z "${NO_COLOR:-}" ]]; then
  heading() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
  heading() { printf '\n== %s\n' "$*"; }
fi
note() { printf '   %s\n' "$*"; }

# Prints the PIDs of tollgate-agent processes started for this demo: the
# one recorded in the agent's lock file, and any whose environment has the
# demo's HOME. The second kind includes an agent that the shim started
# detached in its own session, which a signal to the demo's process group
# does not reach.
demo_agents() {
  local lock="${XDG_RUNTIME_DIR:-/nonexistent}/tollgate/agent.lock" pid environ
  if [[ -n "$work" && -r "$lock" ]]; then
    pid="$(tr -dc '0-9' <"$lock")"
    if [[ -n "$pid" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == tollgate-agent ]]; then
      echo "$pid"
    fi
  fi
  [[ -n "$work" ]] || return 0
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"
    pid="${pid%/environ}"
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == tollgate-agent ]] || continue
    if { tr '\0' '\n' <"$environ"; } 2>/dev/null | grep -qxF "HOME=$work/home"; then
      echo "$pid"
    fi
  done
}

# Succeeds while process $1 runs. A child that exited but was not waited
# for yet (a zombie, state Z) does not count.
running() {
  local state
  state="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)"
  [[ -n "$state" && "$state" != Z ]]
}

cleanup() {
  local pid deadline
  local -a all=("${pids[@]}")
  # SIGINT reaches the whole process group, so ignore further ones while
  # cleaning up.
  trap '' INT TERM

  mapfile -t -O "${#all[@]}" all < <(demo_agents | sort -u)
  for pid in "${all[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  # Give each process 5 seconds to stop, then kill it.

  deadline=$((SECONDS + 5))
  for pid in "${all[@]}"; do
    while running "$pid" && ((SECONDS < deadline)); do
      sleep 0.1
    done
    if running "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done

  if [[ -n "$interrupted" ]]; then
    echo "demo: interrupted; stopped every process it started" >&2
  fi
  if [[ -n "$work" ]]; then
    if [[ "${TOLLGATE_DEMO_KEEP:-}" == 1 ]]; then
      note "logs kept in $work/logs"
    else
      rm -rf "$work"
    fi
  fi
}
# The first SIGINT or SIGTERM ends the demo: the EXIT trap then stops
# every process started here.
interrupted=""
on_signal() {
  interrupted="$1"
  exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Prints a TCP port on 127.0.0.1 that is free now.
free_port() {
  /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to $2 seconds for the command in $3... to succeed.
wait_until() {
  local what="$1" seconds="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "demo: timed out after ${seconds}s waiting for $what" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# Succeeds once a process owns the Secret Service name on the session bus.
# NameHasOwner does not start a service through D-Bus activation.
secret_service_running() {
  dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.secrets | grep -q 'boolean true'
}

heading "Preparing"
venv_bin="$(scripts/install-deps.sh | tail -n 1)"
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
export CARGO_TARGET_DIR="${TOLLGATE_CARGO_TARGET:-/var/cache/tollgate/target}"
note "building the workspace (cargo target folder: $CARGO_TARGET_DIR)"
cargo build --workspace --bins --quiet
bin="$CARGO_TARGET_DIR/debug"

work="$(mktemp -d -t tollgate-demo.XXXXXX)"
mkdir -p "$work/logs" "$work/home" "$work/run" "$work/backend"
chmod 0700 "$work/run"
home="$work/home"

# The environment of every Tollgate and AWS command below: a throwaway
# HOME, no AWS credentials but the profile's, and all AWS calls to moto.
redirect_port="$(free_port)"
moto_port="$(free_port)"
export HOME="$home"
export XDG_CONFIG_HOME="$home/.config" XDG_STATE_HOME="$home/.local/state"
export XDG_DATA_HOME="$home/.local/share" XDG_CACHE_HOME="$home/.cache"
export XDG_RUNTIME_DIR="$work/run"
export TOLLGATE_CONFIG="$home/.config/tollgate/agent.toml"
export TOLLGATE_AGENT_BIN="$bin/tollgate-agent"
export AWS_CONFIG_FILE="$home/.aws/config"
export AWS_SHARED_CREDENTIALS_FILE="$home/.aws/credentials"
export AWS_EC2_METADATA_DISABLED=true
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export BROWSER="$repo/tests/support/browser"
export TOLLGATE_TEST_LOGIN="$user"
export TOLLGATE_TEST_BROWSER_LOG="$work/logs/browser.log"
export PATH="$venv_bin:$PATH"
unset AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_PROFILE

heading "Starting gnome-keyring on a private D-Bus session"
# A private session bus, so the agent caches the demo login in a
# gnome-keyring that lives in the temporary HOME and ends with the demo.
# The script starts the bus itself, not through dbus-run-session, so that a
# Ctrl-C stops it only after the cleanup, and its log (such as the harmless
# "Failed to set fd limit") goes to a file.
dbus_info="$(dbus-daemon --session --fork --print-address=1 --print-pid=1 \
  2>"$work/logs/dbus-daemon.log")"
pids+=("$(sed -n 2p <<<"$dbus_info")")
DBUS_SESSION_BUS_ADDRESS="$(sed -n 1p <<<"$dbus_info")"
export DBUS_SESSION_BUS_ADDRESS
printf 'demo-keyring-password' >"$work/keyring-password"
gnome-keyring-daemon --foreground --unlock --components=secrets \
  <"$work/keyring-password" >"$work/logs/gnome-keyring.log" 2>&1 &
pids+=($!)
wait_until "the Secret Service" 30 secret_service_running
note "the agent caches the login in the Secret Service"

heading "Starting the OpenID Connect provider"
OIDC_REDIRECT_PORTS="$redirect_port" node tests/support/oidc/server.mjs --port 0 \
  >"$work/logs/oidc.out" 2>"$work/logs/oidc.log" &
pids+=($!)
wait_until "the OIDC provider" 30 grep -q '^ready ' "$work/logs/oidc.out"
issuer="$(sed -n 's/^ready //p' "$work/logs/oidc.out")"
note "issuer $issuer, client tollgate-cli, demo user $user"

heading "Starting moto_server as AWS STS"
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/logs/moto.log" 2>&1 &
pids+=($!)
wait_until "moto_server" 60 curl -sf -o /dev/null --noproxy '*' "$AWS_ENDPOINT_URL/moto-api/"
note "STS at $AWS_ENDPOINT_URL"

heading "Starting the quota backend"
export TOLLGATE_DB="$work/backend/tollgate.db"
"$bin/tollgate" serve --listen 127.0.0.1:0 --issuer "$issuer" --audience tollgate-cli \
  --port-file "$work/backend/port" >"$work/logs/backend.log" 2>&1 &
backend_pid=$!
pids+=("$backend_pid")
wait_until "the backend's port file" 30 grep -q ':' "$work/backend/port"
backend_url="http://$(cat "$work/backend/port")"
note "tollgate serve at $backend_url, database $TOLLGATE_DB"

heading "Setting the default quota policy"
"$bin/tollgate" quota set-default --monthly-limit 225M --daily-limit auto \
  --enforcement block --daily-enforcement alert
"$bin/tollgate" quota list

heading "Writing the agent configuration and ~/.aws/config"
mkdir -p "$(dirname "$TOLLGATE_CONFIG")" "$home/.aws"
write_agent_config() {
  cat >"$TOLLGATE_CONFIG" <<EOF
[profiles.demo]
issuer = "$issuer"
client_id = "tollgate-cli"
redirect_port = $redirect_port
role_arn = "arn:aws:iam::123456789012:role/ClaudeCodeBedrock"
region = "us-east-1"
session_duration_minutes = 60
sts_endpoint = "$AWS_ENDPOINT_URL"
quota_url = "$backend_url"
quota_recheck_minutes = $1
fail_mode = "$2"
EOF
}
write_agent_config 30 open
cat >"$AWS_CONFIG_FILE" <<EOF
[profile demo]
credential_process = $bin/tollgate-credential-process --profile demo
region = us-east-1
EOF
: >"$AWS_SHARED_CREDENTIALS_FILE"
sed 's/^/   /' "$TOLLGATE_CONFIG"
sed 's/^/   /' "$AWS_CONFIG_FILE"

heading "Starting the agent"
"$bin/tollgate-agent" run --foreground >"$work/logs/agent.stderr.log" 2>&1 &
pids+=($!)
wait_until "the agent's socket" 30 test -S "$XDG_RUNTIME_DIR/tollgate/agent.sock"
note "agent socket $XDG_RUNTIME_DIR/tollgate/agent.sock"

heading "Logging in as $user (the scripted browser fills in the login page)"
"$bin/tollgate-agent" login --profile demo
"$bin/tollgate-agent" status --profile demo

heading "aws sts get-caller-identity --profile demo"
aws sts get-caller-identity --profile demo --output json

heading "Stopping the backend and setting the profile to fail closed"
kill "$backend_pid"
wait "$backend_pid" 2>/dev/null || true
write_agent_config 0 closed
note "fail_mode = \"closed\", quota_recheck_minutes = 0 (check on every request)"

heading "The shim refuses"
status=0
"$bin/tollgate-credential-process" --profile demo >/dev/null || status=$?
note "exit status $status"
if ((status == 0)); then
  echo "demo: the shim handed out credentials while the quota backend was down" >&2
  exit 1
fi

# --- Usage ingest (Claude Code's OpenTelemetry metrics) -------------------
# The backend comes back on the same database. The demo user's Claude
# Code-shaped usage goes to POST /v1/metrics through the OpenTelemetry SDK,
# with the ID token from the shim's --otel-headers, past a block-mode daily
# limit, and the next AWS CLI call through the shim is refused.

heading "Restarting the backend for usage ingest"
"$bin/tollgate" serve --listen 127.0.0.1:0 --issuer "$issuer" --audience tollgate-cli \
  --port-file "$work/backend/port2" >"$work/logs/backend2.log" 2>&1 &
pids+=($!)
wait_until "the backend's port file" 30 grep -q ':' "$work/backend/port2"
backend_url="http://$(cat "$work/backend/port2")"
write_agent_config 0 closed
note "tollgate serve at $backend_url; quota_recheck_minutes = 0"
"$bin/tollgate" quota set-user "$user" --monthly-limit 225M --daily-limit 10K \
  --daily-enforcement block

heading "Exporting the demo user's token usage over OTLP"
otel_headers="$("$bin/tollgate-credential-process" --profile demo --otel-headers)"
otel_token="$(python3 -c 'import json, sys; print(json.load(sys.stdin)["Authorization"].split(" ", 1)[1])' <<<"$otel_headers")"
note "otelHeadersHelper output: {\"Authorization\": \"Bearer <ID token of $user>\"}"
OTLP_BEARER_TOKEN="$otel_token" "$venv_bin/python" backend/tests/otel_export.py \
  --endpoint "$backend_url/v1/metrics" --protocol protobuf --rounds 1 --fixed-value 3000 >/dev/null
note "exported claude_code.token.usage: input, output, cacheRead, cacheCreation 3,000 each"

heading "aws sts get-caller-identity --profile demo (over the daily limit)"
status=0
aws sts get-caller-identity --profile demo --output json 2>"$work/logs/aws-refused.log" || status=$?
sed 's/^/   /' "$work/logs/aws-refused.log"
note "exit status $status"
if ((status == 0)); then
  echo "demo: the AWS CLI got credentials past the daily limit" >&2
  exit 1
fi

heading "Done"
note "every process started here is stopped on exit"
