#!/usr/bin/env bash
# benches/sync_bench.sh: the sync benchmark row. 200 single-image archives
# (images m0000…m0199 of benches/gen_many.py's layout, each exported to
# archives/imgNNN.tar) synced by a glob into one layout; then again, when
# every image is up to date and nothing is written; then the same for the
# 2,000 images of gen_many's layout as one source. Prints wall time and peak
# RSS of each run (the goal: peak RSS under 100 MiB).
#
#   benches/sync_bench.sh [OCIKIT_BIN]
#
# Environment:
#   OCIKIT_BENCH_DIR   work directory (default /dev/shm/ob-sync); its
#                      archives/ are kept between runs, mirror/ is not
#   IMAGES             how many archives (default 200)
# Timings are informational: the exit status never depends on them.
set -euo pipefail

BIN=${1:-target/release/ocikit}
DIR=${OCIKIT_BENCH_DIR:-/dev/shm/ob-sync}
IMAGES=${IMAGES:-200}
HERE=$(cd "$(dirname "$0")" && pwd)
[[ -x $BIN ]] || {
    echo "sync_bench.sh: $BIN is not built (cargo build --release)" >&2
    exit 2
}
mkdir -p "$DIR/archives"
python3 "$HERE/gen_many.py" "$DIR/many" >/dev/null
have=$(find "$DIR/archives" -name 'img*.tar' | wc -l)
if [[ $have -ne $IMAGES ]]; then
    rm -f "$DIR"/archives/img*.tar
    for ((i = 0; i < IMAGES; i++)); do
        n=$(printf '%04d' "$i")
        "$BIN" -q export "$DIR/many:m$n" "$DIR/archives/img$n.tar"
    done
fi
cat >"$DIR/sync.yaml" <<'YAML'
sync:
  - source: archives/img*.tar
    target: mirror:{{repo}}:{{tag}}
YAML
rm -rf "$DIR/mirror"

row() {
    local what=$1 label=$2
    local log=$DIR/time-$what.txt
    /usr/bin/time -v "$BIN" sync "$DIR/sync.yaml" >"$DIR/out-$what.txt" 2>"$log"
    local wall rss
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
    printf '%-34s wall %-9s peak RSS %6.1f MiB   %s\n' "$label ($what)" \
        "$wall" "$(echo "$rss / 1024" | bc -l)" "$(tail -n 1 "$DIR/out-$what.txt")"
}
row first "sync $IMAGES archives"
row second "sync $IMAGES archives"

# Also: every image of one big layout (gen_many's 2,000) into another.
cat >"$DIR/sync.yaml" <<'YAML'
sync:
  - source: many
    target: mirror
YAML
rm -rf "$DIR/mirror"
row first "sync 2000 images of one layout"
row second "sync 2000 images of one layout"
