#!/usr/bin/env bash
# Load on mfa-local (embedded store, outbox) over loopback, side by side with an earlier
# commit built in the same run: both servers run at once on fresh data folders and take
# turns at each scenario, so both meet the same machine:
#   (a) GET /v1/account/mfa/factors with a valid session (the session check), under wrk;
#   (b) a TOTP challenge, created and completed (POST + PUT), once per prepared user, by
#       the Rust client shared/examples/bench_load.rs (one thread);
#   (c) the password sign-in (Argon2id), a few times for some of the users;
# with each server's CPU time per operation (utime + stime from /proc) and its resident
# memory (VmRSS) along the way. Not a test: no assertions on timings. Needs wrk (Debian:
# apt-get install -y wrk), git and Python 3.
#
#   bash infra/bench-load.sh     # BASE=3171960 USERS=600 DURATION=10s CONNECTIONS=16 CONCURRENCY=8
#
# Both are built with the release profile (the Lambda profile: opt-level "z", fat LTO;
# Argon2 at opt-level 3): this tree in target/, the earlier commit from a temporary git
# worktree (removed afterwards) in target/bench-base/. BASE= (empty) measures this tree
# alone.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BASE=${BASE-3171960}
USERS=${USERS:-600}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
CONCURRENCY=${CONCURRENCY:-8}
LOGIN_USERS=${LOGIN_USERS:-100}
LOGIN_ROUNDS=${LOGIN_ROUNDS:-2}
# Scheduling priority of the servers and clients (not of the builds): e.g. NICE=-10, as
# root, on a machine busy with other work, so that the figures are of these processes.
NICE=${NICE:-0}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

WORK=$(mktemp -d)
PIDS=()
stop() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  if [ -d "$WORK/base-src" ]; then git worktree remove --force "$WORK/base-src" || true; fi
  rm -rf "$WORK"
}
trap stop EXIT

echo "==> build this tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ', with uncommitted changes'))"
cargo build --release -p mfa-functions --bin mfa-local
cargo build --release -p mfa-bench
mkdir -p "$WORK/now"
cp target/release/mfa-local "$WORK/now/mfa-local"
cp target/release/bench-load "$WORK/bench-load"
NAMES=(now)
if [ -n "$BASE" ]; then
  echo "==> build $BASE in a temporary worktree"
  git worktree add --detach "$WORK/base-src" "$BASE"
  # A target folder of its own: cargo names a workspace crate's build by its path inside
  # the workspace, so the earlier commit's would overwrite this tree's. It starts as a
  # copy of this one's, for the dependencies.
  if [ ! -d target/bench-base/release ]; then
    mkdir -p target/bench-base && cp -a target/release target/bench-base/release
  fi
  (cd "$WORK/base-src" && cargo build --release --target-dir "$ROOT/target/bench-base" -p mfa-functions --bin mfa-local)
  mkdir -p "$WORK/base"
  cp target/bench-base/release/mfa-local "$WORK/base/mfa-local"
  git worktree remove --force "$WORK/base-src"
  NAMES=(base now)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A PID PORT
for name in "${NAMES[@]}"; do
  PORT[$name]=$(free_port)
  MFA_LISTEN="127.0.0.1:${PORT[$name]}" MFA_DATA_DIR="$WORK/$name/data" MFA_PROJECT_ID=bench RUST_LOG=warn \
    nice -n "$NICE" "$WORK/$name/mfa-local" >"$WORK/$name/server.log" 2>&1 &
  PID[$name]=$!
  PIDS+=("$!")
done
for name in "${NAMES[@]}"; do
  for _ in $(seq 100); do grep -q "listening on" "$WORK/$name/server.log" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$WORK/$name/server.log" || { cat "$WORK/$name/server.log"; exit 1; }
done

# CPU ticks (utime + stime, every thread the process ever had) and resident memory.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
rss() {
  printf '{"server": "%s", "when": "%s", "rss_kb": %s}\n' "$1" "$2" \
    "$(awk '/^VmRSS/ {print $2}' "/proc/${PID[$1]}/status")" >>"$WORK/results.jsonl"
}
# Runs a scenario against one server, then appends its CPU time to its last result line.
measure() {
  local name=$1; shift
  local before after
  before=$(ticks "${PID[$name]}")
  nice -n "$NICE" "$@"
  after=$(ticks "${PID[$name]}")
  python3 infra/bench_load.py cpu "$WORK/$name/results.jsonl" "$((after - before))" "$(getconf CLK_TCK)"
  tail -n 1 "$WORK/$name/results.jsonl" | sed "s/^{/{\"server\": \"$name\", /" >>"$WORK/results.jsonl"
}

for name in "${NAMES[@]}"; do
  rss "$name" "started"
  echo "==> $name: prepare $USERS users (own loopback address each)"
  python3 infra/bench_load.py prepare "http://127.0.0.1:${PORT[$name]}" bench "$WORK/$name/users.json" "$USERS" "$CONCURRENCY"
  rss "$name" "after preparing $USERS users"
done

for name in "${NAMES[@]}"; do
  echo "==> $name: (a) GET /v1/account/mfa/factors: wrk -t1 -c$CONNECTIONS -d$DURATION"
  SESSION=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["session"])' "$WORK/$name/users.json")
  measure "$name" env MFA_PROJECT=bench MFA_SESSION="$SESSION" WRK_SHAPE="-t1 -c$CONNECTIONS -d$DURATION" \
    sh -c "wrk -t1 -c$CONNECTIONS -d$DURATION -s infra/bench-load.lua http://127.0.0.1:${PORT[$name]} \
      >/dev/null 2>>$WORK/$name/results.jsonl"
done

for name in "${NAMES[@]}"; do
  echo "==> $name: (b) TOTP challenge, created and completed, once per user, concurrency $CONCURRENCY"
  measure "$name" "$WORK/bench-load" challenge "http://127.0.0.1:${PORT[$name]}" bench "$WORK/$name/users.json" \
    "$WORK/$name/results.jsonl" "$CONCURRENCY"
done

for name in "${NAMES[@]}"; do
  echo "==> $name: (c) password sign-in, $LOGIN_ROUNDS per user for $LOGIN_USERS users"
  measure "$name" python3 infra/bench_load.py login "http://127.0.0.1:${PORT[$name]}" bench "$WORK/$name/users.json" \
    "$WORK/$name/results.jsonl" "$CONCURRENCY" "$LOGIN_ROUNDS" "$LOGIN_USERS"
  rss "$name" "after the load"
done

echo
python3 infra/bench_load.py report "$WORK/results.jsonl"
echo
echo "$(nproc) CPUs, shared with the load clients; nice $NICE; load average now: $(cut -d' ' -f1-3 /proc/loadavg)."
