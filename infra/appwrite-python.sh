#!/usr/bin/env bash
# The official Python server SDK (PyPI appwrite, pinned) for tests/server-sdk, in a private
# venv, as infra/moto.sh makes one for moto.
#   install   venv at infra/.cache/appwrite-venv with the pinned appwrite
#   path      print the venv's python
set -euo pipefail

VERSION="27.0.0" # pinned: the server SDK the support story is tested with
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$HERE/.cache/appwrite-venv"

die() { echo "appwrite-python: $*" >&2; exit 1; }

installed_version() {
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c 'from importlib.metadata import version; print(version("appwrite"))' 2>/dev/null
}

case "${1:-}" in
  install)
    command -v python3 >/dev/null || die "python3 is required"
    if [[ "$(installed_version || true)" == "$VERSION" ]]; then
      echo "appwrite-python: appwrite==$VERSION already installed"
      exit 0
    fi
    mkdir -p "$HERE/.cache"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "could not create the venv at $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "appwrite==$VERSION"
    [[ "$(installed_version || true)" == "$VERSION" ]] || die "install did not produce appwrite==$VERSION"
    ;;
  path) echo "$VENV/bin/python" ;;
  *) die "usage: $0 install|path" ;;
esac
