#!/usr/bin/env bash
# Headless Chromium for the browser test: Debian's `chromium` package (puppeteer's own
# browser download cannot be used: only package registries are reachable).
#   install   apt-get install chromium unless it is there (as root, or through sudo)
#   path      print the binary the browser test drives
set -euo pipefail

BIN="${CHROMIUM:-/usr/bin/chromium}"
LOG="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/.cache/chromium-install.log"

cmd_install() {
  if [[ -x "$BIN" ]]; then
    echo "chromium: $("$BIN" --version 2>/dev/null | head -1)"
    return
  fi
  local sudo=()
  [[ "$(id -u)" == 0 ]] || sudo=(sudo)
  mkdir -p "$(dirname "$LOG")"
  echo "chromium: installing Debian's chromium package (log: $LOG)"
  if ! { "${sudo[@]}" apt-get update && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y chromium; } >"$LOG" 2>&1; then
    tail -20 "$LOG" >&2
    echo "chromium: apt-get install chromium failed" >&2
    exit 1
  fi
  [[ -x "$BIN" ]] || { echo "chromium: installed, but $BIN is missing" >&2; exit 1; }
  echo "chromium: $("$BIN" --version 2>/dev/null | head -1)"
}

case "${1:-}" in
  install) cmd_install ;;
  path) echo "$BIN" ;;
  *) echo "usage: $0 install|path" >&2; exit 2 ;;
esac
