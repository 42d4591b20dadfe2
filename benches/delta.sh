#!/usr/bin/env bash
# Delta bundle row: export the benchmark image's v2 against what a far side
# holding base has (its `ls --json --blobs`), and compare the bytes written
# with the one layer v2 does not share with base. Also times the import of
# the delta there (which hashes the base layers it relies on) and, for
# scale, a full export of v2. Informational only: nothing here is asserted.
#
#   benches/delta.sh            # image in $OCIKIT_BENCH_DIR/big (default ~/.cache/ocikit-bench)
#   OCIKIT_BENCH_SCALE=0.01 benches/delta.sh   # quick
set -euo pipefail
cd "$(dirname "$0")/.."
BENCH_DIR=${OCIKIT_BENCH_DIR:-$HOME/.cache/ocikit-bench}
SCALE=${OCIKIT_BENCH_SCALE:-1}
IMAGE=$BENCH_DIR/big
WORK=${OCIKIT_BENCH_WORK:-/dev/shm/ocikit-delta-bench}
OCIKIT=$PWD/target/release/ocikit

cargo build --release --quiet
cargo build --release --quiet --example bigimage
target/release/examples/bigimage "$IMAGE" --scale "$SCALE"

rm -rf "$WORK" && mkdir -p "$WORK" && cd "$WORK"
# Side B: base carried over and imported.
"$OCIKIT" export "$IMAGE:base" base.tar 2>/dev/null
"$OCIKIT" import base.tar B 2>/dev/null
"$OCIKIT" ls --json --blobs B >have.json

timed() { # LABEL CMD... -> prints "LABEL  seconds  peak RSS"
    local label=$1; shift
    /usr/bin/time -f '%e %M' -o time.out "$@" >/dev/null 2>cmd.err
    read -r secs kib <time.out
    printf '%-40s %8s s %8.1f MiB\n' "$label" "$secs" "$(awk -v k="$kib" 'BEGIN{print k/1024}')"
}

timed "export v2 --delta-from (ls --blobs)" "$OCIKIT" export "$IMAGE:v2" delta.tar --delta-from have.json
timed "import delta into B (hashes base)" "$OCIKIT" import delta.tar B
timed "export v2 (full, for scale)" "$OCIKIT" export "$IMAGE:v2" full.tar

# The layer of v2 that base lacks.
differing=$(python3 - "$IMAGE" <<'PY'
import json, sys
root = sys.argv[1]
idx = json.load(open(f"{root}/index.json"))
def blob(d): return json.load(open(f"{root}/blobs/sha256/{d.split(':')[1]}"))
m = {e["annotations"]["org.opencontainers.image.ref.name"]: blob(e["digest"]) for e in idx["manifests"]}
base = {l["digest"] for l in m["base"]["layers"]}
print(sum(l["size"] for l in m["v2"]["layers"] if l["digest"] not in base))
PY
)
delta=$(stat -c %s delta.tar)
full=$(stat -c %s full.tar)
printf 'delta.tar: %d bytes; the differing layer: %d bytes (delta/layer = %s); full export: %d bytes\n' \
    "$delta" "$differing" "$(awk -v a="$delta" -v b="$differing" 'BEGIN{printf "%.4f", a/b}')" "$full"
"$OCIKIT" verify --deep B >/dev/null && echo "B verifies --deep after the delta import"
cd / && rm -rf "$WORK"
