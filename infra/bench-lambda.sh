#!/usr/bin/env bash
# Benchmark, not a test: for every Lambda function, the size of its stripped bootstrap and its
# cold-init time (median of N runs), i.e. from exec until the binary first asks the runtime API
# for an event (GET /2018-06-01/runtime/invocation/next). Every function deploys the one
# bootstrap `mfa-lambda`, run here as each function in turn (MFA_FUNCTION, as template.yaml
# sets it). infra/lambda_runtime_stub.py plays the runtime API; the bootstrap gets the
# environment a Lambda gives it, with the AWS endpoints pointed at a closed port (init must not
# touch the network). Host architecture (x86_64); the arm64 bootstrap's size is shown too
# when target/lambda/mfa-lambda/bootstrap is built (infra/build-lambda.sh).
#
#   bash infra/bench-lambda.sh                 # release profile (what `sam build` deploys)
#   MFA_BENCH_RUNS=50 bash infra/bench-lambda.sh
#   MFA_BENCH_SKIP_BUILD=1 bash infra/bench-lambda.sh   # measure what is already built
#
# Targets: <= 6 MB per stripped bootstrap, <= 15 ms median cold init.
# A cold release build takes many minutes (the dependencies); later runs take about one.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE="${MFA_BENCH_PROFILE:-release}"
RUNS="${MFA_BENCH_RUNS:-20}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT_DIR="$TARGET_DIR/$PROFILE"
[[ "$PROFILE" == "dev" ]] && OUT_DIR="$TARGET_DIR/debug"

functions=()
for src in functions/src/bin/*.rs; do
  name="$(basename "$src" .rs)"
  [[ "$name" == "mfa-local" || "$name" == "mfa-lambda" ]] && continue # the local server; the bootstrap
  functions+=("$name")
done

BOOTSTRAP="mfa-lambda"
if [[ -z "${MFA_BENCH_SKIP_BUILD:-}" ]]; then
  echo "==> cargo build --profile $PROFILE --bin $BOOTSTRAP (serves ${#functions[@]} functions)" >&2
  cargo build --locked --profile "$PROFILE" -p mfa-functions --bin "$BOOTSTRAP" >&2
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# What a deployed function has (template.yaml), with every AWS endpoint on a closed port.
closed="http://127.0.0.1:9"
cat >"$work/env" <<EOF
AWS_REGION=us-east-1
AWS_DEFAULT_REGION=us-east-1
AWS_ACCESS_KEY_ID=test
AWS_SECRET_ACCESS_KEY=test
AWS_SESSION_TOKEN=test
AWS_ENDPOINT_URL_DYNAMODB=$closed
AWS_ENDPOINT_URL_SESV2=$closed
AWS_ENDPOINT_URL_SNS=$closed
MFA_STORE=dynamodb
MFA_SENDER=aws
MFA_TABLE=mfa-bench
MFA_EMAIL_FROM=no-reply@mfa.example
MFA_PROJECT_ID=bench
MFA_PROJECT_NAME=Bench
MFA_ALLOWED_ORIGINS=https://app.example.com
MFA_REDIRECT_HOSTS=app.example.com
MFA_SECRET_KEY=bench-secret-key-0123456789abcdef0123456789
EOF

[[ -x "$OUT_DIR/$BOOTSTRAP" ]] || { echo "bench-lambda: $OUT_DIR/$BOOTSTRAP not built" >&2; exit 1; }
specs=()
for f in "${functions[@]}"; do specs+=("$f=$OUT_DIR/$BOOTSTRAP"); done

echo "==> cold init: $RUNS runs per function against infra/lambda_runtime_stub.py" >&2
python3 infra/lambda_runtime_stub.py --runs "$RUNS" --env-file "$work/env" --name-env MFA_FUNCTION "${specs[@]}" \
  >"$work/times.jsonl" || true

python3 - "$work/times.jsonl" "$OUT_DIR/$BOOTSTRAP" "$PROFILE" "$RUNS" "$TARGET_DIR/lambda/$BOOTSTRAP/bootstrap" <<'EOF'
import io, json, os, sys, zipfile

times_file, path, profile, runs, arm64 = sys.argv[1:]
MB = 1_000_000
SIZE_TARGET, INIT_TARGET = 6 * MB, 15.0

def zipped(path):
    # What Lambda stores: the bootstrap alone in a zip (deflate, level 9).
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.write(path, "bootstrap")
    return buf.tell()

rows, over = [], []
for line in open(times_file):
    r = json.loads(line)
    size = os.path.getsize(path)
    rows.append((r, size, zipped(path)))

print(f"profile {profile}, host {os.uname().machine}, cold init = median of {runs} runs (min-max), MB = 10^6 bytes")
print()
print("| function | bootstrap MB | zip MB | cold init ms (median) | min-max ms |")
print("|---|---:|---:|---:|---:|")
for r, size, zsize in rows:
    if "error" in r:
        print(f"| {r['function']} | {size / MB:.2f} | {zsize / MB:.2f} | ERROR | {r['error'][:80]} |")
        over.append(f"{r['function']}: {r['error']}")
        continue
    print(f"| {r['function']} | {size / MB:.2f} | {zsize / MB:.2f} | {r['median_ms']:.1f} | {r['min_ms']:.1f}-{r['max_ms']:.1f} |")
    if size > SIZE_TARGET:
        over.append(f"{r['function']}: {size / MB:.2f} MB > 6 MB")
    if r["median_ms"] > INIT_TARGET:
        over.append(f"{r['function']}: median cold init {r['median_ms']:.1f} ms > 15 ms")
ok = [r for r, _, _ in rows if "error" not in r]
if ok:
    print()
    print(f"largest bootstrap {max(s for _, s, _ in rows) / MB:.2f} MB; "
          f"slowest median cold init {max(r['median_ms'] for r in ok):.1f} ms "
          f"(targets: <= 6 MB, <= 15 ms)")
if os.path.exists(arm64):
    size = os.path.getsize(arm64)
    print(f"arm64 bootstrap (what sam build deploys, {arm64}): {size / MB:.2f} MB, {zipped(arm64) / MB:.2f} MB zipped")
    if size > SIZE_TARGET:
        over.append(f"arm64 bootstrap: {size / MB:.2f} MB > 6 MB")
for o in over:
    print(f"over target: {o}")
EOF
