#!/usr/bin/env bash
# Refreshes web/vendor/appwrite.js: the IIFE bundle of the official `appwrite` web SDK from
# npm, at the version tests/sdk pins (one pin for the page and the SDK test). The package
# is checked against the integrity recorded in tests/sdk/package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(node -p "require('./tests/sdk/package.json').dependencies.appwrite")
locked=$(node -p "require('./tests/sdk/package-lock.json').packages['node_modules/appwrite'].integrity")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

( cd "$work" && npm pack "appwrite@$version" --json --silent >pack.json )
integrity=$(node -p "require('$work/pack.json')[0].integrity")
if [ "$integrity" != "$locked" ]; then
  echo "appwrite@$version from npm has integrity $integrity, tests/sdk/package-lock.json says $locked" >&2
  exit 1
fi
tar -xzf "$work/appwrite-$version.tgz" -C "$work" package/dist/iife/sdk.js package/LICENSE
{
  printf '/* appwrite@%s (npm), dist/iife/sdk.js, BSD-3-Clause: see LICENSE-appwrite.\n' "$version"
  printf '   Refreshed by web/vendor/refresh-appwrite.sh; do not edit. */\n'
  cat "$work/package/dist/iife/sdk.js"
} >web/vendor/appwrite.js
cp "$work/package/LICENSE" web/vendor/LICENSE-appwrite
echo "web/vendor/appwrite.js: appwrite@$version"
