#!/usr/bin/env bash
# Every Lambda function built for arm64 (Graviton) the way `sam build` builds it, and each
# bootstrap checked: an aarch64 executable of at most 6 MB (10^6 bytes), stripped.
#
#   bash infra/build-lambda.sh            # cargo lambda build --release --arm64, as sam build runs it
#   bash infra/build-lambda.sh --sam      # `sam build` itself (SAM CLI from infra/lint-template.sh's venv)
#
# template.yaml deploys one bootstrap (`mfa-lambda`) as every function (MFA_FUNCTION names
# which), so the build is the binaries its BuildProperties name, once: sam build runs one
# build for functions with identical build metadata and copies it to each. Installs the arm64
# standard library (rustup) and cargo-lambda (with zig, the cross linker) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

SIZE_LIMIT=6000000
TARGET="aarch64-unknown-linux-gnu"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"

die() {
  echo "build-lambda: $*" >&2
  exit 1
}

if ! rustup target list --installed | grep -qx "$TARGET"; then
  echo "==> rustup target add $TARGET"
  rustup target add "$TARGET"
fi
bash infra/cargo-lambda.sh install
PATH="$(bash infra/cargo-lambda.sh bin):$PATH"
export PATH

# The binaries the template deploys, and the functions deploying each.
mapfile -t binaries < <(sed -n 's/^ *Binary: *\([A-Za-z0-9_-]*\) *$/\1/p' template.yaml | sort -u)
[[ ${#binaries[@]} -gt 0 ]] || die "template.yaml names no BuildProperties.Binary"
functions=$(grep -c '^ *Binary: ' template.yaml)

started=$(date +%s)
declare -A bootstrap
if [[ "${1:-}" == "--sam" ]]; then
  SAM="$ROOT/infra/.cache/lint-venv/bin/sam"
  [[ -x "$SAM" ]] || die "SAM CLI not installed: run bash infra/lint-template.sh first"
  echo "==> sam build ($functions functions)"
  SAM_CLI_TELEMETRY=0 AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" "$SAM" build
  # Each function gets its own copy of the bootstrap it deploys; check every copy.
  for dir in .aws-sam/build/*Function; do bootstrap["$(basename "$dir")"]="$dir/bootstrap"; done
else
  bin_args=()
  for b in "${binaries[@]}"; do bin_args+=(--bin "$b"); done
  echo "==> cargo lambda build --release --arm64 ${bin_args[*]} (deployed as $functions functions)"
  cargo lambda build --release --arm64 --locked -p mfa-functions "${bin_args[@]}"
  for b in "${binaries[@]}"; do bootstrap["$b"]="$TARGET_DIR/lambda/$b/bootstrap"; done
fi
elapsed=$(($(date +%s) - started))

python3 - "$SIZE_LIMIT" "$elapsed" "${!bootstrap[@]}" -- "${bootstrap[@]}" <<'EOF'
import os, struct, sys


def section_names(data):
    """Names of an ELF64 little-endian file's sections."""
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    strtab_offset, strtab_size = headers[shstrndx][4], headers[shstrndx][5]
    strtab = data[strtab_offset:strtab_offset + strtab_size]
    return {strtab[h[0]:strtab.index(b"\0", h[0])].decode() for h in headers}


limit, elapsed = int(sys.argv[1]), int(sys.argv[2])
sep = sys.argv.index("--")
names, paths = sys.argv[3:sep], sys.argv[sep + 1:]
failed = []
print(f"build took {elapsed // 60} min {elapsed % 60} s")
for name, path in sorted(zip(names, paths)):
    if not os.path.isfile(path):
        failed.append(f"{name}: no bootstrap at {path}")
        continue
    with open(path, "rb") as f:
        data = f.read()
    # ELF, 64-bit, little endian, e_machine 183 (AArch64).
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1 or int.from_bytes(data[18:20], "little") != 183:
        failed.append(f"{name}: {path} is not an aarch64 ELF executable")
        continue
    if ".symtab" in section_names(data):
        failed.append(f"{name}: {path} is not stripped (it has a symbol table)")
        continue
    size = os.path.getsize(path)
    verdict = "ok" if size <= limit else "OVER"
    print(f"{name}: {size / 1e6:.2f} MB ({size} bytes), limit {limit / 1e6:.0f} MB: {verdict}")
    if size > limit:
        failed.append(f"{name}: {size / 1e6:.2f} MB > {limit / 1e6:.0f} MB")
for f in failed:
    print(f"build-lambda: {f}", file=sys.stderr)
sys.exit(1 if failed else 0)
EOF
