#!/usr/bin/env bash
# Load on mfa-local (embedded store, outbox) over loopback; prints a table per scenario:
#   (a) GET /v1/account/mfa/factors with a valid session (the session check), under wrk;
#   (b) a TOTP challenge, created and completed (POST + PUT), once per prepared user;
#   (c) the password sign-in (Argon2id), a few times per prepared user;
# and mfa-local's resident memory (VmRSS) before and after. Not a test: no assertions on
# timings. Needs wrk (Debian: apt-get install -y wrk) and Python 3.
#
#   bash infra/bench-load.sh            # USERS=200 DURATION=10s CONNECTIONS=16 CONCURRENCY=8
#
# mfa-local is built with the release profile (the Lambda profile: opt-level "z", fat LTO;
# Argon2 at opt-level 3); PROFILE=dev measures a debug build instead.
set -euo pipefail
cd "$(dirname "$0")/.."

USERS=${USERS:-200}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
CONCURRENCY=${CONCURRENCY:-8}
LOGIN_ROUNDS=${LOGIN_ROUNDS:-2}
PROFILE=${PROFILE:-release}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
if [ "$PROFILE" = release ]; then
  cargo build --release -p mfa-functions --bin mfa-local
  BIN=target/release/mfa-local
else
  cargo build -p mfa-functions --bin mfa-local
  BIN=target/debug/mfa-local
fi

WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
PROJECT=bench
PID=
stop() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap stop EXIT

MFA_LISTEN="127.0.0.1:$PORT" MFA_DATA_DIR="$WORK/data" MFA_PROJECT_ID=$PROJECT RUST_LOG=warn \
  "$BIN" >"$WORK/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do grep -q "listening on" "$WORK/server.log" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$WORK/server.log" || { cat "$WORK/server.log"; exit 1; }

RESULTS="$WORK/results.jsonl"
rss() { printf '{"when": "%s", "rss_kb": %s}\n' "$1" "$(awk '/^VmRSS/ {print $2}' /proc/$PID/status)" >>"$RESULTS"; }
rss "started"

echo "==> prepare $USERS users (own loopback address each) on $BASE ($PROFILE build)"
python3 infra/bench_load.py prepare "$BASE" $PROJECT "$WORK/users.json" "$USERS" "$CONCURRENCY"
rss "after preparing $USERS users"

echo "==> (a) GET /v1/account/mfa/factors: wrk -t1 -c$CONNECTIONS -d$DURATION"
SESSION=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["session"])' "$WORK/users.json")
MFA_PROJECT=$PROJECT MFA_SESSION="$SESSION" WRK_SHAPE="-t1 -c$CONNECTIONS -d$DURATION" \
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s infra/bench-load.lua "$BASE" 2>>"$RESULTS"
rss "after (a)"

echo "==> (b) TOTP challenge, created and completed, once per user"
python3 infra/bench_load.py challenge "$BASE" $PROJECT "$WORK/users.json" "$RESULTS" "$CONCURRENCY"
rss "after (b)"

echo "==> (c) password sign-in, $LOGIN_ROUNDS per user"
python3 infra/bench_load.py login "$BASE" $PROJECT "$WORK/users.json" "$RESULTS" "$CONCURRENCY" "$LOGIN_ROUNDS"
rss "after (c)"

echo
python3 infra/bench_load.py report "$RESULTS"
echo
echo "$(nproc) CPUs, shared with the load client; the client's own time is in the latencies."
