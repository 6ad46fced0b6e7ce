#!/usr/bin/env bash
# The Lambda binaries speak the Lambda runtime protocol: under `cargo lambda watch` (the
# emulated Lambda control plane and runtime API), each function is invoked through the raw
# invoke API, POST /2015-03-31/functions/<binary>/invocations, with hand-written API Gateway
# v2 (HTTP API) events, on DynamoDB Local + moto. The checks are tests/lambda/invoke_test.py
# (Python standard library only); it prints one line per check and `N passed, M failed`.
#
#   bash infra/lambda-runtime-test.sh
#
# Uses DynamoDB Local and moto from MFA_TEST_DYNAMODB_ENDPOINT / MFA_TEST_MOTO_ENDPOINT when
# set (infra/test.sh exports them); otherwise installs and starts them on free ports and stops
# them again. cargo-lambda is pinned and kept in a venv (infra/cargo-lambda.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

CACHE="$ROOT/infra/.cache"
WATCH_PID_FILE="$CACHE/lambda-watch.pid"
WATCH_LOG="$CACHE/lambda-watch.log"

step() { printf '\n==> %s\n' "$*"; }
die() { echo "lambda-runtime-test: $*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "install cargo-lambda (pinned, infra/cargo-lambda.sh)"
bash infra/cargo-lambda.sh install
export PATH="$(bash infra/cargo-lambda.sh bin):$PATH" # `cargo lambda` finds the cargo-lambda binary on PATH

# Built here so that cargo lambda's build on the first invoke of each binary is a no-op
# (cargo lambda watch runs `cargo run -p mfa-functions --bin <function>`; CARGO_TARGET_DIR,
# if set, applies to both).
step "build the functions (debug, as cargo lambda watch runs them)"
cargo build --locked -p mfa-functions --bins

started_ddb=0
started_moto=0
WATCH_PID="" # set once this run started cargo lambda watch; only that is stopped
cleanup() {
  local rc=$?
  if [[ -n "$WATCH_PID" ]]; then
    local pid="$WATCH_PID"
    # The watcher runs in its own process group (setsid): stop it with the functions it spawned.
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    # Function instances run in process groups of their own; the log names each one.
    for pgid in $(sed -n 's/.*process group spawned pgid=\([0-9]*\).*/\1/p' "$WATCH_LOG" 2>/dev/null); do
      kill -TERM -- "-$pgid" 2>/dev/null || true
    done
    rm -f "$WATCH_PID_FILE"
  fi
  if [[ $started_ddb == 1 ]]; then bash infra/dynamodb-local.sh stop || true; fi
  if [[ $started_moto == 1 ]]; then bash infra/moto.sh stop || true; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -z "${MFA_TEST_DYNAMODB_ENDPOINT:-}" ]]; then
  step "start DynamoDB Local (MFA_TEST_DYNAMODB_ENDPOINT not set)"
  bash infra/dynamodb-local.sh install
  port="$(free_port)"
  bash infra/dynamodb-local.sh start "$port"
  started_ddb=1
  export MFA_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$port"
fi
if [[ -z "${MFA_TEST_MOTO_ENDPOINT:-}" ]]; then
  step "start moto (MFA_TEST_MOTO_ENDPOINT not set)"
  bash infra/moto.sh install
  port="$(free_port)"
  bash infra/moto.sh start "$port"
  started_moto=1
  export MFA_TEST_MOTO_ENDPOINT="http://127.0.0.1:$port"
fi

# The environment a deployed function has (template.yaml), pointed at the local stand-ins.
TABLE="mfa-lambda-test-$(date +%s)-$RANDOM"
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL_DYNAMODB="$MFA_TEST_DYNAMODB_ENDPOINT"
export AWS_ENDPOINT_URL_SESV2="$MFA_TEST_MOTO_ENDPOINT" AWS_ENDPOINT_URL_SNS="$MFA_TEST_MOTO_ENDPOINT"
export MFA_STORE=dynamodb MFA_SENDER=aws MFA_TABLE="$TABLE" MFA_EMAIL_FROM=no-reply@mfa.example
export MFA_WEBAUTHN_RP_ID=app.mfa.example MFA_WEBAUTHN_ORIGINS=https://app.mfa.example
export MFA_PROJECT_ID=lambda-test MFA_PROJECT_NAME="Lambda Test"
export MFA_ALLOWED_ORIGINS="*" MFA_REDIRECT_HOSTS=localhost
# The function the shared bootstrap (mfa-lambda) serves here; the per-function binaries ignore it.
export MFA_FUNCTION=get-account
MFA_SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
export MFA_SECRET_KEY
export RUST_LOG="${RUST_LOG:-info}"
# Nothing in this environment may point at a developer's own AWS account.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_ENDPOINT_URL

step "create table $TABLE and the SES identity (mfa-local setup)"
"${CARGO_TARGET_DIR:-target}/debug/mfa-local" setup

WATCH_PORT="$(free_port)"
step "start cargo lambda watch on 127.0.0.1:$WATCH_PORT (log: ${WATCH_LOG#"$ROOT"/})"
# --ignore-changes: edits elsewhere in the tree must not restart functions mid-test.
setsid cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$WATCH_PORT" --timeout 900 -p mfa-functions \
  >"$WATCH_LOG" 2>&1 </dev/null &
WATCH_PID=$!
echo "$WATCH_PID" >"$WATCH_PID_FILE"
listening() { python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null; }
for _ in $(seq 1 120); do
  listening "$WATCH_PORT" && break
  kill -0 "$WATCH_PID" 2>/dev/null || { cat "$WATCH_LOG" >&2; die "cargo lambda watch exited"; }
  sleep 0.5
done
listening "$WATCH_PORT" || { cat "$WATCH_LOG" >&2; die "cargo lambda watch did not listen on $WATCH_PORT"; }

step "invoke the functions with API Gateway v2 events"
status=0
LAMBDA_INVOKE_URL="http://127.0.0.1:$WATCH_PORT" python3 tests/lambda/invoke_test.py || status=$?
if [[ $status != 0 ]]; then
  echo "--- cargo lambda watch log (last 80 lines) ---" >&2
  tail -n 80 "$WATCH_LOG" >&2 || true
fi
exit "$status"
