#!/usr/bin/env bash
# Lints template.yaml with pinned tools from a private venv (infra/.cache/lint-venv), and
# fails on any finding:
#   1. cfn-lint on the SAM template;
#   2. cfn-lint on the template as SAM expands it (roles, API, permissions): cfn-lint skips
#      its check of IAM action names (W3037) on SAM templates, so a misspelt or non-existent
#      action (e.g. dynamodb:TransactWriteItems) is only caught on the expanded form;
#   3. `sam validate --lint` (the SAM translator's own validation, then cfn-lint).
# Works offline once installed. The first install takes a few minutes and ~340 MB (SAM CLI);
# LINT_SKIP_SAM=1 installs and runs cfn-lint only (step 2 needs the SAM translator, which
# cfn-lint brings along, so it still runs).
set -euo pipefail

CFN_LINT_VERSION="1.58.0"
SAM_CLI_VERSION="1.170.0"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="$HERE/.cache/lint-venv"
TEMPLATE="$ROOT/template.yaml"

# Plain `sam validate` and the SAM translator need a region; nothing here talks to AWS.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export SAM_CLI_TELEMETRY=0

die() {
  echo "lint-template: $*" >&2
  exit 1
}

installed_version() { # <distribution>
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c "from importlib.metadata import version; print(version('$1'))" 2>/dev/null
}

install() {
  local wanted=("cfn-lint==$CFN_LINT_VERSION")
  [[ "${LINT_SKIP_SAM:-}" == 1 ]] || wanted+=("aws-sam-cli==$SAM_CLI_VERSION")
  local missing=()
  for spec in "${wanted[@]}"; do
    [[ "$(installed_version "${spec%%==*}" || true)" == "${spec##*==}" ]] || missing+=("$spec")
  done
  if [[ ${#missing[@]} -eq 0 ]]; then
    return
  fi
  command -v python3 >/dev/null || die "python3 is required"
  mkdir -p "$(dirname "$VENV")"
  [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "could not create the venv at $VENV"
  echo "lint-template: installing ${missing[*]} into $VENV"
  # All pins in one resolution, so SAM CLI's own cfn-lint requirement cannot move cfn-lint.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${wanted[@]}"
  for spec in "${wanted[@]}"; do
    [[ "$(installed_version "${spec%%==*}" || true)" == "${spec##*==}" ]] || die "install did not produce $spec"
  done
}

[[ -f "$TEMPLATE" ]] || die "no template at $TEMPLATE"
install

echo "==> cfn-lint $CFN_LINT_VERSION: template.yaml"
"$VENV/bin/cfn-lint" "$TEMPLATE"

echo "==> cfn-lint $CFN_LINT_VERSION: template.yaml as SAM expands it"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" - "$TEMPLATE" "$WORK/expanded.json" <<'PY'
import json
import sys

from cfnlint.decode import decode
from samtranslator.translator.transform import transform


class NoManagedPolicies:
    """The template names no managed policies by name: nothing to look up in IAM."""

    def load(self):
        return {}


template, problems = decode(sys.argv[1])
if problems:
    sys.exit("\n".join(str(p) for p in problems))
for resource in template.get("Resources", {}).values():
    if resource.get("Type") == "AWS::Serverless::Function":
        # What `sam package` puts there; the translator accepts only S3 locations.
        resource["Properties"]["CodeUri"] = "s3://bucket/key"
expanded = transform(template, {"AWS::Region": "us-east-1"}, NoManagedPolicies())
with open(sys.argv[2], "w") as out:
    json.dump(expanded, out, indent=1, default=str)
PY
"$VENV/bin/cfn-lint" "$WORK/expanded.json"

if [[ "${LINT_SKIP_SAM:-}" == 1 ]]; then
  echo "==> sam validate --lint: skipped (LINT_SKIP_SAM=1)"
else
  echo "==> sam validate --lint (SAM CLI $SAM_CLI_VERSION)"
  "$VENV/bin/sam" validate --lint --template-file "$TEMPLATE"
fi
echo "lint-template: template.yaml is clean"
