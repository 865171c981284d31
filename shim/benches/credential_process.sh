#!/usr/bin/env bash
# Benchmarks one cache-hit shim call as a whole process against
# `print_static`, a binary that only prints the same kind of JSON (the floor
# for any credential_process), in one hyperfine run.
#
# Usage:
#   shim/benches/credential_process.sh                 # against instant_agent
#   shim/benches/credential_process.sh --profile NAME  # against the agent
#                                                      # already running for
#                                                      # this environment
# Environment: RUNS (default 2000), WARMUP (default 200), CARGO_TARGET_DIR,
# OUT (folder for the hyperfine JSON and Markdown, default a new temp folder),
# BUILD=0 to use the binaries already in the target folder.
set -euo pipefail

profile=""
if [[ $# -gt 0 ]]; then
    if [[ $1 == --profile && $# -eq 2 ]]; then
        profile=$2
    else
        echo "usage: $0 [--profile NAME]" >&2
        exit 2
    fi
fi

repo=$(cd "$(dirname "$0")/../.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
runs=${RUNS:-2000}
warmup=${WARMUP:-200}
out=${OUT:-$(mktemp -d)}

if [[ ${BUILD:-1} != 0 ]]; then
    cargo build --quiet --release --manifest-path "$repo/Cargo.toml" -p tollgate-shim \
        --bin tollgate-credential-process --example print_static --example instant_agent
fi

shim=$target/release/tollgate-credential-process
floor=$target/release/examples/print_static

agent_pid=""
runtime=""
cleanup() {
    if [[ -n $agent_pid ]]; then kill "$agent_pid" 2>/dev/null || true; fi
    if [[ -n $runtime ]]; then rm -rf "$runtime"; fi
}
trap cleanup EXIT

if [[ -z $profile ]]; then
    runtime=$(mktemp -d)
    export TOLLGATE_RUNTIME_DIR=$runtime
    "$target/release/examples/instant_agent" 900 &
    agent_pid=$!
    for _ in $(seq 100); do
        [[ -S $runtime/agent.sock ]] && break
        sleep 0.05
    done
    profile=bench
    echo "agent: instant_agent (answers at once), runtime folder $runtime"
else
    echo "agent: the running tollgate-agent, profile $profile"
fi

# One call first: it must succeed, so the benchmark measures cache hits.
"$shim" --profile "$profile" >/dev/null

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r)"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "binaries: shim $(stat -c %s "$shim") bytes, print_static $(stat -c %s "$floor") bytes"

hyperfine --shell=none --warmup "$warmup" --runs "$runs" \
    --export-json "$out/credential_process.json" \
    --export-markdown "$out/credential_process.md" \
    --command-name print_static "$floor" \
    --command-name shim "$shim --profile $profile"

echo "results: $out"
