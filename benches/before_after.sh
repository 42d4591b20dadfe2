#!/usr/bin/env bash
# benches/before_after.sh: the benchmark rows a change must not regress, timed
# for two ocikit binaries on the same inputs, alternating runs (best of N wall
# time, and that run's peak RSS), plus skopeo's docker-archive export for the
# ratio the docker-archive row is held to (<= 1/3 of skopeo).
#
#   benches/before_after.sh OLD_BIN NEW_BIN
#
# Environment:
#   OCIKIT_BENCH_DIR   holds big/ (examples/bigimage.rs) and many/
#                      (benches/gen_many.py); default /dev/shm/ob
#   RUNS               runs per binary and row (default 2)
# Outputs go to $OCIKIT_BENCH_DIR/out (put the directory on tmpfs: the rows
# time the tools, not the disk). Timings are informational: the exit status
# never depends on them.
set -euo pipefail

OLD=${1:?usage: before_after.sh OLD_BIN NEW_BIN}
NEW=${2:?usage: before_after.sh OLD_BIN NEW_BIN}
DIR=${OCIKIT_BENCH_DIR:-/dev/shm/ob}
RUNS=${RUNS:-2}
BIG=$DIR/big
MANY=$DIR/many
OUT=$DIR/out
[[ -d $BIG && -d $MANY ]] || {
    echo "before_after.sh: $BIG and $MANY are needed (examples/bigimage.rs, benches/gen_many.py)" >&2
    exit 2
}
rm -rf "$OUT"
mkdir -p "$OUT"
# flatten --tar - stages the tree under $TMPDIR: keep it on the same tmpfs.
export TMPDIR=$OUT

# time_one BIN PREP -- ARGS...: runs PREP (a shell snippet, untimed), then
# BIN ARGS under GNU time; prints "seconds kib".
time_one() {
    local bin=$1 prep=$2
    shift 3
    eval "$prep"
    local status=0
    /usr/bin/time -f '%e %M' -o "$OUT/time" "$bin" "$@" >/dev/null 2>"$OUT/stderr" || status=$?
    # diff exits 1 when it finds differences: a result, not a failure.
    if ((status > 1)); then
        echo "failed ($status): $bin $* ($(tail -1 "$OUT/stderr"))" >&2
        echo "NA NA"
        return
    fi
    tail -1 "$OUT/time"
}

# row LABEL PREP -- ARGS...: best of RUNS for each binary, alternating.
row() {
    local label=$1 prep=$2
    shift 3
    local best_old="" best_new="" r
    for ((i = 0; i < RUNS; i++)); do
        for which in old new; do
            local bin=$OLD
            [[ $which == new ]] && bin=$NEW
            r=$(time_one "$bin" "$prep" -- "$@")
            if [[ $which == old ]]; then
                best_old=$(printf '%s\n%s\n' "$best_old" "$r" | awk 'NF==2 && $1!="NA"' | sort -n | head -1)
            else
                best_new=$(printf '%s\n%s\n' "$best_new" "$r" | awk 'NF==2 && $1!="NA"' | sort -n | head -1)
            fi
        done
    done
    printf '%-44s %8s s %7s MiB   %8s s %7s MiB\n' "$label" \
        "$(echo "$best_old" | awk '{print $1}')" "$(echo "$best_old" | awk '{printf "%.0f", $2/1024}')" \
        "$(echo "$best_new" | awk '{print $1}')" "$(echo "$best_new" | awk '{printf "%.0f", $2/1024}')"
    LAST_NEW=$(echo "$best_new" | awk '{print $1}')
}

printf '%-44s %22s   %22s\n' "row" "old (wall, peak RSS)" "new (wall, peak RSS)"
row "verify" "" -- verify "$BIG"
row "verify --deep" "" -- verify --deep "$BIG"
row "flatten --output (base)" "rm -rf $OUT/rootfs" -- flatten "$BIG:base" --output "$OUT/rootfs" --rootless
row "flatten --tar - (base)" "" -- flatten "$BIG:base" --tar - --rootless
row "export oci-archive (base)" "rm -f $OUT/a.tar" -- export "oci:$BIG:base" "$OUT/a.tar"
row "export docker-archive --uncompressed-layers" "rm -f $OUT/d.tar" -- \
    export "oci:$BIG:base" "docker-archive:$OUT/d.tar:bench/base:1" --uncompressed-layers
DA_NEW=$LAST_NEW
row "diff base v2" "" -- diff "$BIG:base" "$BIG:v2"
row "diff base v2 --ignore layer-boundaries" "" -- diff "$BIG:base" "$BIG:v2" --ignore layer-boundaries
row "gc (many, fresh copy)" "rm -rf $OUT/many; cp -a $MANY $OUT/many" -- gc "$OUT/many"

if command -v skopeo >/dev/null; then
    best=""
    for ((i = 0; i < RUNS; i++)); do
        rm -f "$OUT/s.tar"
        /usr/bin/time -f '%e %M' -o "$OUT/time" skopeo copy -q "oci:$BIG:base" \
            "docker-archive:$OUT/s.tar:bench/base:1" >/dev/null 2>&1 && best=$(printf '%s\n%s\n' "$best" "$(cat "$OUT/time")" | awk NF | sort -n | head -1)
    done
    s=$(echo "$best" | awk '{print $1}')
    printf '%-44s %8s s %7s MiB\n' "skopeo docker-archive export (base)" "$s" "$(echo "$best" | awk '{printf "%.0f", $2/1024}')"
    awk -v n="$DA_NEW" -v s="$s" 'BEGIN { r = n / s; printf "new docker-archive export / skopeo: %.2f (target <= 0.33: %s)\n", r, (r <= 1/3 ? "met" : "NOT met") }'
fi
rm -rf "$OUT"
