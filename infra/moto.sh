#!/usr/bin/env bash
# moto, the SES v2 + SNS emulator for tests and local runs, from PyPI into a private venv
# (registries are reachable; arbitrary downloads are not).
#   install        venv at infra/.cache/moto-venv with the pinned moto[server]
#   start <port>   run moto_server on 127.0.0.1 in the background, wait until it answers
#   stop           stop the instance started by `start`
set -euo pipefail

VERSION="5.2.5" # pinned so every machine emulates SES/SNS the same way
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HERE/.cache"
VENV="$CACHE/moto-venv"
PID_FILE="$CACHE/moto.pid"
NAME="moto"
LOG_FILE="$CACHE/moto.log"

# shellcheck source=service.sh
source "$HERE/service.sh"

installed_version() {
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c 'from importlib.metadata import version; print(version("moto"))' 2>/dev/null
}

cmd_install() {
  command -v python3 >/dev/null || die "python3 is required"
  # The server extra (flask, werkzeug) is what provides moto_server; check it too.
  if [[ "$(installed_version || true)" == "$VERSION" && -x "$VENV/bin/moto_server" ]]; then
    echo "moto: moto[server]==$VERSION already installed"
    return
  fi
  mkdir -p "$CACHE"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "could not create the venv at $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server]==$VERSION"
  [[ "$(installed_version || true)" == "$VERSION" ]] || die "install did not produce moto==$VERSION"
}

answers() {
  # The state endpoint the tests read, so "up" means "ready for the tests".
  curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$1/moto-api/data.json" 2>/dev/null
}

cmd_start() {
  local port="${1:-}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 start <port>"
  command -v curl >/dev/null || die "curl is required"
  [[ -x "$VENV/bin/moto_server" ]] || die "moto_server not found: run '$0 install' first"
  ensure_free "$port"
  mkdir -p "$CACHE"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$LOG_FILE" 2>&1 &
  await_started "$port" $!
}

dispatch "$@"
