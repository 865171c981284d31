#!/usr/bin/env bash
# Checks that a Ctrl-C (SIGINT to the process group) stops scripts/demo.sh
# at once: the demo must exit with status 130 within 15 seconds and leave
# no process behind, an agent the shim started detached included.
#
# Usage: scripts/test-demo-interrupt.sh [HEADING...]
# Each HEADING is a demo heading to interrupt at (default: "Starting the
# quota backend" and "Logging in as"). The demo's environment variables
# (TOLLGATE_CARGO_TARGET and others) pass through.

set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
headings=("$@")
if ((${#headings[@]} == 0)); then
  headings=("Starting the quota backend" "Logging in as")
fi

# Prints the PIDs of processes left from a demo run: those in its session,
# and those whose environment has a HOME under its temporary folder.
leftovers() {
  local session="$1" folder="$2" environ pid
  ps -e -o pid=,sid= | awk -v session="$session" '$2 == session { print $1 }'
  for environ in /proc/[0-9]*/environ; do
    pid="${environ#/proc/}"
    pid="${pid%/environ}"
    if { tr '\0' '\n' <"$environ"; } 2>/dev/null | grep -q "^HOME=$folder/"; then
      echo "$pid"
    fi
  done
}

failed=0
for heading in "${headings[@]}"; do
  folder="$(mktemp -d -t tollgate-interrupt.XXXXXX)"
  : >"$folder/out"
  # A script's background job starts with SIGINT ignored, and bash cannot
  # trap a signal ignored on entry, so restore it and start a new session,
  # as a terminal's job control would.
  TMPDIR="$folder" NO_COLOR=1 python3 -c '
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execv(sys.argv[1], sys.argv[1:])
' "$repo/scripts/demo.sh" >"$folder/out" 2>&1 &
  demo=$!
  deadline=$((SECONDS + 900))
  until grep -qF "== $heading" "$folder/out"; do
    if ((SECONDS >= deadline)) || ! kill -0 "$demo" 2>/dev/null; then
      echo "FAIL $heading: the demo never reached it; output:" >&2
      cat "$folder/out" >&2
      exit 1
    fi
    sleep 0.2
  done
  sleep 0.3
  kill -INT -- "-$demo"
  started=$SECONDS
  status=0
  wait "$demo" || status=$?
  took=$((SECONDS - started))
  sleep 2
  mapfile -t left < <(
    leftovers "$demo" "$folder" | sort -u | while read -r pid; do
      if [[ -e "/proc/$pid" ]]; then echo "$pid"; fi
    done
  )

  if ((status != 130)); then
    echo "FAIL $heading: exit status $status, expected 130" >&2
    failed=1
  fi
  if ((took > 15)); then
    echo "FAIL $heading: the demo took ${took}s to stop" >&2
    failed=1
  fi
  if grep -q $'\033\\[' "$folder/out"; then
    echo "FAIL $heading: ANSI escapes in output that is not a terminal" >&2
    failed=1
  fi
  if grep -q "Failed to set fd limit" "$folder/out"; then
    echo "FAIL $heading: the dbus-daemon log reaches the output" >&2
    failed=1
  fi
  if ((${#left[@]} > 0)); then
    echo "FAIL $heading: processes left behind:" >&2
    ps -o pid=,sid=,args= -p "$(IFS=,; echo "${left[*]}")" >&2 || true
    # The test started these processes, so it stops them by PID.
    kill -KILL "${left[@]}" 2>/dev/null || true
    failed=1
  fi
  if ((failed == 0)); then
    echo "ok $heading: exit 130 after ${took}s, nothing left"
    rm -rf "$folder"
  else
    echo "demo output kept in $folder/out" >&2
  fi
done
exit "$failed"
