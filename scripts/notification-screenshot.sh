#!/usr/bin/env bash
# Regenerates docs/images/notification-warning-and-block.png: runs the
# notification test `each_threshold_notified_once` (real agent, backend and
# dunst under Xvfb on a private D-Bus session) with TOLLGATE_SCREENSHOT_DIR
# set, so the test saves the screen while dunst shows the agent's 90 %
# warning and its block notification.
#
# Installs ImageMagick (for `import`) when it is missing, which needs root.
# Everything else comes from scripts/test.sh.

set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

if ! command -v import >/dev/null; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "notification-screenshot: ImageMagick's import is missing; run as root or install the imagemagick Debian package" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends imagemagick >/dev/null
fi

mkdir -p docs/images
export TOLLGATE_SCREENSHOT_DIR="$repo/docs/images"
scripts/test.sh -E 'binary(notifications) & test(each_threshold_notified_once)'
echo "notification-screenshot: wrote docs/images/notification-warning-and-block.png" >&2
