#!/usr/bin/env bash
# cargo-lambda, pinned, from PyPI into a private venv (infra/.cache/cargo-lambda-venv). It
# brings zig, which links the arm64 (Graviton) bootstraps on an x86_64 machine.
#   install   install it unless that version is already there
#   bin       print the venv's bin directory (put it first on PATH: `cargo lambda` finds the
#             cargo-lambda binary there)
set -euo pipefail

VERSION="1.9.2"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.cache/cargo-lambda-venv"

die() {
  echo "cargo-lambda.sh: $*" >&2
  exit 1
}

installed_version() {
  [[ -x "$VENV/bin/cargo-lambda" ]] && "$VENV/bin/cargo-lambda" lambda --version 2>/dev/null | awk '{print $2}'
}

case "${1:-}" in
  install)
    if [[ "$(installed_version || true)" == "$VERSION" ]]; then
      echo "cargo-lambda $VERSION already installed"
      exit 0
    fi
    command -v python3 >/dev/null || die "python3 is required"
    mkdir -p "$HERE/.cache"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "could not create the venv at $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "cargo-lambda==$VERSION"
    [[ "$(installed_version || true)" == "$VERSION" ]] || die "install did not produce cargo-lambda $VERSION"
    echo "cargo-lambda $VERSION installed in ${VENV#"$(dirname "$HERE")"/}"
    ;;
  bin)
    echo "$VENV/bin"
    ;;
  *) die "usage: $0 install | bin" ;;
esac
