#!/usr/bin/env bash
# The one test command (README, CI): builds everything, runs the Rust tests (unit,
# in-process rules, end-to-end over HTTP against mfa-local) and the official-SDK client
# test against mfa-local.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "build"
cargo build --workspace --all-targets --locked

step "Rust tests: unit, rules with an injected clock, end-to-end over HTTP"
cargo test --workspace --locked

step "official appwrite SDK against mfa-local"
( cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error )
( cd tests/sdk && MFA_LOCAL_BIN="$PWD/../../target/debug/mfa-local" npm test )
