#!/usr/bin/env bash
# Measures the throughput and latency of GET /v1/check on `tollgate
# serve`, with real RS256 ID tokens of 10,000 users who all have policies,
# once with 1,000 usage counter rows in the store and once with 1,000,000.
#
# The load comes from wrk (`apt-get install wrk`) in a second process on
# the same machine, rotating through the users' tokens. Everything listens
# on 127.0.0.1 and is stopped by its PID at the end.
#
# Usage: backend/benches/check.sh [DURATION_SECONDS] [CONNECTIONS]
# Environment: CARGO_TARGET_DIR (default target), USERS (default 10000),
# ROWS (the usage row counts to measure, in order; default "1000 1000000").
set -euo pipefail

duration="${1:-20}"
connections="${2:-64}"
users="${USERS:-10000}"
rows_list="${ROWS:-1000 1000000}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d)"
pids=()

cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk is missing; install it with apt-get install wrk" >&2; exit 1; }

cargo build --release --quiet -p tollgate-backend --bin tollgate --example check_bench
tollgate="$target/release/tollgate"
fixture="$target/release/examples/check_bench"

# Waits up to 60 s for a file to appear (the issuer signs every token first).
wait_for_file() {
  for _ in $(seq 1 1200); do
    [ -s "$1" ] && return 0
    sleep 0.05
  done
  echo "timed out waiting for $1" >&2
  exit 1
}

"$fixture" issuer --port-file "$work/issuer" --tokens "$work/tokens" --users "$users" &
pids+=($!)
wait_for_file "$work/issuer"
issuer="$(cat "$work/issuer")"

cat > "$work/check.lua" <<LUA
local tokens = {}
for line in io.lines("$work/tokens") do tokens[#tokens + 1] = line end
local next_index = math.random(#tokens)
request = function()
  next_index = next_index % #tokens + 1
  return wrk.format("GET", "/v1/check", { ["Authorization"] = "Bearer " .. tokens[next_index] })
end
LUA

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"

for rows in $rows_list; do
  db="$work/bench-$rows.db"
  "$fixture" seed --db "$db" --users "$users" --usage-rows "$rows"
  rm -f "$work/port"
  TOLLGATE_LOG=warn "$tollgate" serve --listen 127.0.0.1:0 --port-file "$work/port" \
    --db "$db" --issuer "$issuer" --audience tollgate-cli &
  server=$!
  pids+=("$server")
  wait_for_file "$work/port"
  address="$(cat "$work/port")"
  # Warm up: the JWKS download, SQLite's page cache, connection set-up.
  wrk -t2 -c"$connections" -d3s -s "$work/check.lua" "http://$address" >/dev/null
  echo "== $rows usage rows, load: $(cut -d' ' -f1-3 /proc/loadavg)"
  # The server's CPU time per request depends much less on what else runs
  # on the machine than the request rate does.
  ticks_before="$(awk '{print $14 + $15}' "/proc/$server/stat")"
  /usr/bin/time -f "%U %S" -o "$work/wrk-cpu" \
    wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/check.lua" "http://$address" \
    | tee "$work/wrk.txt"
  ticks_after="$(awk '{print $14 + $15}' "/proc/$server/stat")"
  requests="$(awk '/requests in/ {print $1}' "$work/wrk.txt")"
  awk -v ticks="$((ticks_after - ticks_before))" -v hz="$(getconf CLK_TCK)" -v requests="$requests" \
    'BEGIN { printf "server CPU per request: %.1f us\n", ticks / hz / requests * 1e6 }'
  awk -v requests="$requests" \
    '{ printf "wrk CPU per request: %.1f us\n", ($1 + $2) / requests * 1e6 }' "$work/wrk-cpu"
  kill "$server"
  wait "$server" 2>/dev/null || true
done
