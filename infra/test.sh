#!/usr/bin/env bash
# The one test command (README, CI). Installs and starts DynamoDB Local and the SES/SNS
# emulator (moto) on free ports, runs every test, and stops them again:
#   1. Rust tests: unit, rules with an injected clock, store conformance on the embedded
#      store AND DynamoDB Local, SES/SNS delivery against moto, end-to-end over HTTP against
#      mfa-local on the embedded store + outbox; then the DynamoDB calls of every request
#      of the seed flow, held to their targets (shared/examples/dynamo_calls.rs);
#   2. the end-to-end tests again, mfa-local on DynamoDB Local + moto;
#   3. the official appwrite SDK client test against mfa-local, on both backends, and through
#      the local HTTP API (infra/start-api.sh: the Lambda functions under cargo lambda watch
#      behind an API Gateway emulator) on DynamoDB Local + moto, with the gateway's own checks;
#      the server SDKs (npm node-appwrite, PyPI appwrite) with an API key from `mfa-local keys
#      create`, on both backends (tests/server-sdk);
#   4. the page mfa-local serves at / walked in headless Chromium (tests/browser), through
#      every factor, with a virtual security key; screenshots in target/screenshots/;
#   5. the Lambda binaries under `cargo lambda watch`, invoked with API Gateway v2 events;
#   6. template.yaml through cfn-lint and `sam validate --lint` (template.rs, run in 1.,
#      checks it declares exactly the route table);
#   7. `sam build`: every function built for arm64 in the release profile (one shared
#      bootstrap, one build), each bootstrap checked to be aarch64, stripped and <= 6 MB.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "install DynamoDB Local, moto (pinned) and Chromium"
bash infra/dynamodb-local.sh install
bash infra/moto.sh install
bash infra/appwrite-python.sh install
bash infra/chromium.sh install

step "build"
cargo build --workspace --all-targets --locked

DDB_PORT=$(free_port)
MOTO_PORT=$(free_port)
stop_services() {
  bash infra/start-api.sh stop || true
  bash infra/dynamodb-local.sh stop || true
  bash infra/moto.sh stop || true
}
trap stop_services EXIT
step "start DynamoDB Local on :$DDB_PORT and moto on :$MOTO_PORT"
bash infra/dynamodb-local.sh start "$DDB_PORT"
bash infra/moto.sh start "$MOTO_PORT"

export MFA_TEST_DYNAMODB_ENDPOINT="http://127.0.0.1:$DDB_PORT" MFA_REQUIRE_DYNAMODB=1
export MFA_TEST_MOTO_ENDPOINT="http://127.0.0.1:$MOTO_PORT" MFA_REQUIRE_MOTO=1

step "Rust tests (embedded store + outbox for the end-to-end run)"
cargo test --workspace --locked

step "DynamoDB calls per request (<= 2; <= 3 to complete a challenge or check a password, 4 to sign in) and a TOTP sign-in (<= \$6 per million), counted on DynamoDB Local"
# Built above with the workspace's feature set; the example exits non-zero over target.
target/debug/examples/dynamo_calls

# mfa-local on DynamoDB Local + moto, through the AWS SDK's own endpoint variables.
aws_env=(
  AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  AWS_ENDPOINT_URL_DYNAMODB="$MFA_TEST_DYNAMODB_ENDPOINT"
  AWS_ENDPOINT_URL_SESV2="$MFA_TEST_MOTO_ENDPOINT" AWS_ENDPOINT_URL_SNS="$MFA_TEST_MOTO_ENDPOINT"
  MFA_STORE=dynamodb MFA_SENDER=aws MFA_EMAIL_FROM=no-reply@mfa.example
)

step "end-to-end tests on DynamoDB Local + moto"
# --workspace keeps the feature set of the first run: nothing is compiled again.
env "${aws_env[@]}" cargo test --workspace --locked --test e2e

step "official appwrite SDK against mfa-local (embedded store + outbox)"
( cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error )
export MFA_LOCAL_BIN="$PWD/target/debug/mfa-local"
( cd tests/sdk && npm test )

step "official appwrite SDK against mfa-local on DynamoDB Local + moto"
( cd tests/sdk && env "${aws_env[@]}" npm test )

step "official appwrite SDK through the local HTTP API (Lambda functions, DynamoDB Local + moto)"
# The environment template.yaml gives the functions, pointed at the local stand-ins; a fresh
# table. The SDK's CORS test runs in a browser origin the API allows.
APP_ORIGIN="http://localhost:5173"
api_env=(
  -u AWS_PROFILE -u AWS_SESSION_TOKEN -u AWS_ENDPOINT_URL # never a developer's own AWS account
  "${aws_env[@]}" AWS_DEFAULT_REGION=us-east-1
  MFA_TABLE="sdk-api-$(date +%s)-$RANDOM" MFA_PROJECT_ID=sdk-e2e MFA_PROJECT_NAME="SDK E2E"
  MFA_ALLOWED_ORIGINS="$APP_ORIGIN" MFA_REDIRECT_HOSTS=localhost
  MFA_WEBAUTHN_RP_ID=localhost MFA_WEBAUTHN_ORIGINS="$APP_ORIGIN"
  MFA_SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(48))')"
)
env "${api_env[@]}" target/debug/mfa-local setup
API_PORT=$(free_port)
env "${api_env[@]}" bash infra/start-api.sh "$API_PORT"
( cd tests/sdk && env "${api_env[@]}" MFA_SDK_ENDPOINT="http://127.0.0.1:$API_PORT/v1" npm test )
env "${api_env[@]}" API_URL="http://127.0.0.1:$API_PORT" API_ALLOWED_ORIGIN="$APP_ORIGIN" \
  python3 tests/lambda/api_emulator_test.py
bash infra/start-api.sh stop

step "server SDKs (node-appwrite, PyPI appwrite) with an API key, embedded store"
( cd tests/server-sdk && npm ci --no-audit --no-fund --loglevel=error )
export MFA_APPWRITE_PYTHON="$(bash infra/appwrite-python.sh path)"
( cd tests/server-sdk && npm test )

step "server SDKs with an API key, on DynamoDB Local + moto"
( cd tests/server-sdk && env "${aws_env[@]}" npm test )

step "the page in headless Chromium (screenshots in target/screenshots/)"
( cd tests/browser && npm ci --no-audit --no-fund --loglevel=error )
CHROMIUM="$(bash infra/chromium.sh path)"
( cd tests/browser && CHROMIUM="$CHROMIUM" npm test )

step "Lambda runtime: the functions under cargo lambda watch"
bash infra/lambda-runtime-test.sh

step "template.yaml: cfn-lint and sam validate --lint"
bash infra/lint-template.sh

step "sam build: every function for arm64 (release), bootstraps <= 6 MB"
bash infra/build-lambda.sh --sam
