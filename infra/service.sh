# Process lifecycle shared by the local stand-ins (sourced by dynamodb-local.sh and moto.sh).
# The sourcing script sets NAME, PID_FILE, LOG_FILE and defines `answers <port>`.

die() {
  echo "$NAME: $*" >&2
  exit 1
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE")"
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Refuses to start twice, or on a port something else already answers on.
ensure_free() {
  local port="$1" pid
  if pid="$(running_pid)"; then
    die "already running (pid $pid); run '$0 stop' first"
  fi
  if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port" 2>/dev/null; then
    die "port $port already answers: something else is listening there"
  fi
}

# Records the background process just started ($!) and waits up to 30 s for it to answer;
# otherwise shows its log, stops it and fails.
await_started() {
  local port="$1" pid="$2"
  echo "$pid" >"$PID_FILE"
  for _ in $(seq 1 60); do
    if answers "$port"; then
      echo "$NAME: listening on http://127.0.0.1:$port (pid $pid)"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  echo "$NAME: did not answer on port $port within 30 s; its log:" >&2
  cat "$LOG_FILE" >&2 || true
  kill "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  exit 1
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    echo "$NAME: not running"
    return
  fi
  kill "$pid"
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.25
  done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
  echo "$NAME: stopped (pid $pid)"
}

dispatch() {
  case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) cmd_stop ;;
    *) die "usage: $0 install | start <port> | stop" ;;
  esac
}
