#!/usr/bin/env bash
# Installs what Tollgate's tests and demo need, when it is missing:
#   - Debian packages: the keyring, D-Bus, notification and X tools, Chromium,
#     hyperfine, faketime and libfaketime (apt-get update runs once, and only
#     if something is missing)
#   - a Python virtual environment outside the clone with moto_server, the
#     AWS CLI, boto3, cfn-lint and the OpenTelemetry SDK
#   - the npm packages under tests/support (the local OIDC provider, and the
#     JavaScript SDK client when its folder exists)
#   - cargo-nextest
# Running it again with everything present takes about a second.
#
# Environment:
#   TOLLGATE_VENV   the virtual environment (/var/cache/tollgate/venv)
#
# Prints the venv's bin folder as its last line, for callers to put on PATH.

set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${TOLLGATE_VENV:-/var/cache/tollgate/venv}"

log() { printf 'install-deps: %s\n' "$*" >&2; }

apt_packages=(
  gnome-keyring dbus dbus-x11 libsecret-tools keyutils
  libnotify-bin dunst xvfb chromium hyperfine
  nodejs npm python3-minimal python3-venv util-linux curl tmux iproute2
  faketime libfaketime
)

install_apt_packages() {
  local missing=() package
  for package in "${apt_packages[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null)" != "install ok installed" ]]; then
      missing+=("$package")
    fi
  done
  # The machine image may carry node and npm outside Debian's packages.
  if command -v node >/dev/null && command -v npm >/dev/null; then
    missing=("${missing[@]/nodejs/}")
    missing=("${missing[@]/npm/}")
  fi
  # python3-venv is only needed when the python3 on PATH lacks venv.
  if python3 -c 'import venv, ensurepip' 2>/dev/null; then
    missing=("${missing[@]/python3-venv/}")
  fi
  local wanted=()
  for package in "${missing[@]}"; do
    [[ -n "$package" ]] && wanted+=("$package")
  done
  if ((${#wanted[@]} == 0)); then
    return
  fi
  if [[ "$(id -u)" != 0 ]]; then
    log "missing Debian packages: ${wanted[*]}; run this script as root or install them with apt-get"
    exit 1
  fi
  log "installing Debian packages: ${wanted[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${wanted[@]}" >/dev/null
}

install_venv() {
  local requirements="$repo/tests/support/python-requirements.txt"
  local stamp="$venv/.tollgate-requirements"
  if [[ -x "$venv/bin/moto_server" && -f "$stamp" ]] && cmp -s "$requirements" "$stamp"; then
    return
  fi
  log "creating the Python environment in $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$stamp"
}

# Runs `npm ci` in a folder under tests/support when its installed tree is
# missing or older than its lock file.
install_npm_folder() {
  local folder="$repo/tests/support/$1"
  [[ -f "$folder/package-lock.json" ]] || return 0
  if [[ -f "$folder/node_modules/.package-lock.json" &&
        "$folder/node_modules/.package-lock.json" -nt "$folder/package-lock.json" ]]; then
    return
  fi
  log "installing npm packages in tests/support/$1"
  (cd "$folder" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

install_nextest() {
  if cargo nextest --version >/dev/null 2>&1; then
    return
  fi
  log "installing cargo-nextest"
  cargo install --locked --quiet cargo-nextest
}

install_apt_packages
install_venv
install_npm_folder oidc
install_npm_folder js
install_npm_folder claude
install_nextest

echo "$venv/bin"
