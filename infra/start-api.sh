#!/usr/bin/env bash
# The deployed shape, locally and without Docker: every function of template.yaml under
# `cargo lambda watch` (the Lambda runtime API; one watch serves every binary), behind
# infra/api_emulator.py, a local API Gateway HTTP API (the template's routes, payload format
# 2.0, its CORS configuration, 404 Not Found for what no route declares).
#
#   bash infra/start-api.sh [PORT]   start on http://127.0.0.1:PORT (default 3000), in the background
#   bash infra/start-api.sh stop     stop the gateway, the watch and every function it started
#
# The functions get this shell's environment, as the template's Globals give it on AWS:
# MFA_* (MFA_EMAIL_FROM, MFA_TABLE, MFA_PROJECT_ID, MFA_SECRET_KEY, ...) and AWS_* (region,
# credentials, AWS_ENDPOINT_URL_* for DynamoDB Local and moto). Template parameters mapped to a
# variable there take its value in the gateway too (AllowedOrigins <- MFA_ALLOWED_ORIGINS).
# Logs: infra/.cache/api.log (one line per request), infra/.cache/api-watch.log (functions).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

CACHE="$ROOT/infra/.cache"
PYYAML_VERSION="6.0.2" # reads template.yaml
VENV="$CACHE/api-venv"
API_PID_FILE="$CACHE/api.pid"
API_LOG="$CACHE/api.log"
WATCH_PID_FILE="$CACHE/api-watch.pid"
WATCH_LOG="$CACHE/api-watch.log"

die() {
  echo "start-api: $*" >&2
  exit 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
listening() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; }
running_pid() { # <pid file>
  [[ -f "$1" ]] || return 1
  local pid
  pid="$(cat "$1")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Stops a process group started with setsid (its leader's pid is the group id).
stop_group() { # <pid file> <name>
  local pid
  if pid="$(running_pid "$1")"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    echo "start-api: $2 stopped (pid $pid)"
  fi
  rm -f "$1"
}

cmd_stop() {
  stop_group "$API_PID_FILE" "gateway"
  local had_watch=0
  [[ -f "$WATCH_PID_FILE" ]] && had_watch=1
  stop_group "$WATCH_PID_FILE" "cargo lambda watch"
  if [[ $had_watch == 1 ]]; then
    # Function instances run in process groups of their own; the watch log names each one.
    for pgid in $(sed -n 's/.*process group spawned pgid=\([0-9]*\).*/\1/p' "$WATCH_LOG" 2>/dev/null); do
      kill -TERM -- "-$pgid" 2>/dev/null || true
    done
  fi
}

install_pyyaml() {
  if [[ -x "$VENV/bin/python" ]] &&
    [[ "$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("PyYAML"))' 2>/dev/null)" == "$PYYAML_VERSION" ]]; then
    return
  fi
  mkdir -p "$CACHE"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "could not create the venv at $VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "PyYAML==$PYYAML_VERSION"
}

cmd_start() {
  local port="${1:-3000}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 [PORT] | stop"
  if pid="$(running_pid "$API_PID_FILE")" || pid="$(running_pid "$WATCH_PID_FILE")"; then
    die "already running (pid $pid); run '$0 stop' first"
  fi
  listening "$port" && die "port $port is taken"
  command -v python3 >/dev/null || die "python3 is required"

  bash infra/cargo-lambda.sh install >/dev/null
  PATH="$(bash infra/cargo-lambda.sh bin):$PATH"
  export PATH
  install_pyyaml
  # The routes must be readable before anything starts.
  "$VENV/bin/python" infra/api_emulator.py --template template.yaml --invoke-url http://unused --routes >/dev/null

  # Built now, so that watch's build on the first request to each function is a no-op
  # (watch runs `cargo run -p mfa-functions --bin <function>`, a debug build).
  echo "start-api: building the functions (debug, as cargo lambda watch runs them)"
  cargo build --locked --quiet -p mfa-functions --bins

  trap 'cmd_stop >/dev/null' ERR
  local watch_port
  watch_port="$(free_port)"
  # --ignore-changes: an edit elsewhere in the tree must not restart functions mid-request.
  setsid cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$watch_port" --timeout 900 -p mfa-functions \
    >"$WATCH_LOG" 2>&1 </dev/null &
  echo $! >"$WATCH_PID_FILE"
  for _ in $(seq 1 120); do
    listening "$watch_port" && break
    running_pid "$WATCH_PID_FILE" >/dev/null || { cat "$WATCH_LOG" >&2; die "cargo lambda watch exited"; }
    sleep 0.5
  done
  listening "$watch_port" || { cat "$WATCH_LOG" >&2; cmd_stop; die "cargo lambda watch did not listen"; }

  setsid "$VENV/bin/python" -u infra/api_emulator.py --template template.yaml --port "$port" \
    --invoke-url "http://127.0.0.1:$watch_port" >"$API_LOG" 2>&1 </dev/null &
  echo $! >"$API_PID_FILE"
  for _ in $(seq 1 40); do
    listening "$port" && break
    running_pid "$API_PID_FILE" >/dev/null || break
    sleep 0.25
  done
  if ! listening "$port"; then
    cat "$API_LOG" >&2
    cmd_stop
    die "the gateway did not listen on $port"
  fi
  trap - ERR
  echo "start-api: http://127.0.0.1:$port/v1 (functions under cargo lambda watch on :$watch_port)"
  echo "start-api: logs ${API_LOG#"$ROOT"/}, ${WATCH_LOG#"$ROOT"/}; stop with: bash infra/start-api.sh stop"
}

case "${1:-}" in
  stop) cmd_stop ;;
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) cmd_start "$@" ;;
esac
