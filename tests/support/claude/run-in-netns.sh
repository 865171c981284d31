#!/usr/bin/env bash
# Runs a command inside new network, PID and mount namespaces whose only
# network interface is the loopback `lo`, so nothing the command starts can
# reach another host. Every server the command needs must be started inside
# the same run and listen on 127.0.0.1.
#
# Usage: run-in-netns.sh COMMAND [ARG...]
#
# Needs root (unshare creates the namespaces). The command runs as a child of
# the namespace's PID 1, so every process it leaves behind is killed when it
# exits, and a signal that ends this script's unshare kills them all too
# (--kill-child). Inside, `bin/` beside this script comes first on PATH, so
# `claude` is the wrapper that checks the namespace before starting Claude
# Code. The exit status is the command's.

set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if (($# == 0)); then
  echo "run-in-netns.sh: missing command; usage: run-in-netns.sh COMMAND [ARG...]" >&2
  exit 2
fi

if [[ "${TOLLGATE_NETNS_STAGE:-}" != inside ]]; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "run-in-netns.sh: must run as root to create network namespaces (uid is $(id -u))" >&2
    exit 1
  fi
  export TOLLGATE_NETNS_STAGE=inside
  exec unshare --net --pid --mount-proc --fork --kill-child -- "${BASH_SOURCE[0]}" "$@"
fi

# This is PID 1 of the new PID namespace, in a network namespace that starts
# with `lo` down and no other interface.
unset TOLLGATE_NETNS_STAGE
ip link set lo up
"$here/bin/check-loopback-only"

export PATH="$here/bin:$PATH"
export TOLLGATE_NETNS=1

status=0
"$@" || status=$?
exit "$status"
