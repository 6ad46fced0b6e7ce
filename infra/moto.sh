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
LOG_FILE="$CACHE/moto.log"

die() {
  echo "moto: $*" >&2
  exit 1
}

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

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
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
  if pid="$(running_pid)"; then
    die "already running (pid $pid); run '$0 stop' first"
  fi
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port" 2>/dev/null; then
    die "port $port already answers: something else is listening there"
  fi
  mkdir -p "$CACHE"
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$LOG_FILE" 2>&1 &
  echo $! >"$PID_FILE"
  local pid
  pid="$(cat "$PID_FILE")"
  for _ in $(seq 1 60); do
    if answers "$port"; then
      echo "moto: listening on http://127.0.0.1:$port (pid $pid)"
      return
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      break
    fi
    sleep 0.5
  done
  echo "moto: did not answer on port $port within 30 s; its log:" >&2
  cat "$LOG_FILE" >&2 || true
  kill "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  exit 1
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    echo "moto: not running"
    return
  fi
  kill "$pid"
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  echo "moto: stopped (pid $pid)"
}

case "${1:-}" in
  install) cmd_install ;;
  start) shift; cmd_start "$@" ;;
  stop) cmd_stop ;;
  *) die "usage: $0 install | start <port> | stop" ;;
esac
