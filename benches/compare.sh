#!/usr/bin/env bash
# benches/compare.sh: one benchmark run of ocikit against its peers on a large,
# deterministic OCI image layout, printed as a table with ratios against the
# targets. Run from anywhere (it changes to the repository root):
#
#   benches/compare.sh
#   OCIKIT_BENCH_SCALE=0.01 OCIKIT_BENCH_DIR=/tmp/ob benches/compare.sh   # quick
#
# Environment:
#   OCIKIT_BENCH_DIR    where the image (big/), logs and results.tsv live
#                       (default ~/.cache/ocikit-bench)
#   OCIKIT_BENCH_SCALE  image scale for examples/bigimage.rs (default 1, ~2 GB
#                       uncompressed, ~0.8 GB of blobs)
#
# Every row is also appended to $OCIKIT_BENCH_DIR/results.tsv as
# "name<TAB>seconds<TAB>peak_rss_kib" (NA where not applicable).
# Timings are informational: the exit status never depends on a target.
# Needs GNU time (/usr/bin/time, Debian package "time"), openssl, coreutils.
set -euo pipefail

cd "$(dirname "$0")/.."

BENCH_DIR=${OCIKIT_BENCH_DIR:-$HOME/.cache/ocikit-bench}
SCALE=${OCIKIT_BENCH_SCALE:-1}
IMAGE=$BENCH_DIR/big
RESULTS=$BENCH_DIR/results.tsv
LOGS=$BENCH_DIR/logs
TARGET_DIR=${CARGO_TARGET_DIR:-target}
OCIKIT=$TARGET_DIR/release/ocikit
BIGIMAGE=$TARGET_DIR/release/examples/bigimage

say() { printf '%s\n' "$*"; }
warn() { printf 'compare.sh: %s\n' "$*" >&2; }
die() {
    warn "$*"
    exit 2
}

# --- prerequisites ------------------------------------------------------------
if [[ ! -x /usr/bin/time ]] || ! /usr/bin/time --version 2>&1 | grep -q 'GNU'; then
    die "GNU time is required at /usr/bin/time (Debian/Ubuntu: apt-get install time)"
fi
command -v openssl >/dev/null || die "openssl is required (Debian/Ubuntu: apt-get install openssl)"
for tool in sha256sum nproc awk find; do
    command -v "$tool" >/dev/null || die "$tool is required (coreutils/findutils/gawk or mawk)"
done
mkdir -p "$BENCH_DIR" "$LOGS"

# --- 1. build -----------------------------------------------------------------
say "==> cargo build --release"
ocikit_ok=1
if ! cargo build --release; then
    warn "cargo build --release failed: the ocikit rows will be skipped"
    ocikit_ok=0
fi
say "==> cargo build --release --example bigimage"
if ! cargo build --release --example bigimage; then
    # The example links the library, so a broken src/ breaks it too; a cached
    # image (matching stamp) is still good enough to run the peers.
    if [[ -f $IMAGE/.bigimage-stamp && -x $BIGIMAGE ]]; then
        warn "building the bigimage example failed; using the previously built generator"
    else
        die "building the bigimage example failed and there is no earlier build"
    fi
fi

# --- 2. the image (cached between runs by its stamp) ---------------------------
say "==> generating $IMAGE (scale $SCALE)"
"$BIGIMAGE" "$IMAGE" --scale "$SCALE"

mapfile -t BLOBS < <(find "$IMAGE/blobs" -type f | LC_ALL=C sort)
((${#BLOBS[@]} > 0)) || die "no blobs under $IMAGE/blobs"
TOTAL_BYTES=$(find "$IMAGE/blobs" -type f -printf '%s\n' | awk '{s += $1} END {printf "%d", s}')

# Warm the page cache once, before any timing, so every tool reads from memory
# and the rows compare hashing and parsing, not the (slow) disk.
cat "${BLOBS[@]}" >/dev/null
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# --- measurement helpers --------------------------------------------------------
# timed NAME -- CMD...
#   Runs CMD with its output in $LOGS/NAME.log. Sets M_STATUS (exit status),
#   M_SECS (wall seconds, millisecond resolution: GNU time's own %e only has
#   10 ms) and M_RSS_KIB (peak RSS from GNU time). Never fails the script.
timed() {
    local name=$1
    shift
    [[ ${1:-} == -- ]] && shift
    local tfile t0 t1
    tfile=$(mktemp)
    M_STATUS=0
    t0=$(date +%s%N)
    /usr/bin/time -o "$tfile" -f '%M' "$@" >"$LOGS/$name.log" 2>&1 || M_STATUS=$?
    t1=$(date +%s%N)
    M_SECS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    # On failure GNU time first writes "Command exited with non-zero status N".
    M_RSS_KIB=$(tail -n 1 "$tfile")
    rm -f "$tfile"
    [[ $M_RSS_KIB =~ ^[0-9]+$ ]] || M_RSS_KIB=NA
}

# measure NAME -- CMD...
#   timed, then appends "NAME<TAB>seconds<TAB>peak_rss_kib" to results.tsv if
#   CMD exited 0. The one-line building block for new rows.
measure() {
    timed "$@"
    if ((M_STATUS == 0)); then
        record "$1" "$M_SECS" "$M_RSS_KIB"
    fi
}

record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; }

# mbps SECONDS -> MB/s (10^6 B/s) for TOTAL_BYTES
mbps() { awk -v b="$TOTAL_BYTES" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", b / s / 1e6; else print "n/a" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }

ROWS=()
row() { ROWS+=("$(printf '%-34s %9s %10s %12s  %s' "$1" "$2" "$3" "$4" "${5:-}")"); }

# --- 3a. openssl: the single-core sha256 ceiling ---------------------------------
# Not a timed row: openssl measures its own throughput.
openssl speed -evp sha256 -bytes 16384 -seconds 3 >"$LOGS/openssl-speed.log" 2>&1 ||
    die "openssl speed failed, see $LOGS/openssl-speed.log"
# openssl says "The 'numbers' are in 1000s of bytes per second processed." and
# its last line is "sha256   1716977.00k": that many kB/s, / 1000 = MB/s.
OPENSSL_MBPS=$(awk 'NF { last = $NF } END { sub(/k$/, "", last); printf "%.0f", last / 1000 }' "$LOGS/openssl-speed.log")
[[ $OPENSSL_MBPS =~ ^[0-9]+$ && $OPENSSL_MBPS -gt 0 ]] || die "could not parse openssl speed output ($LOGS/openssl-speed.log)"

# Cores the ideal verifier could use. sha256 of one blob is inherently
# sequential, so a verifier can only spread the work over blobs: its ceiling is
# one core per blob that is big enough to matter, capped by the cores we have.
# A blob with under 5% of the bytes finishes in a sliver of the run and cannot
# keep a core busy, so it does not count. (For the default image that is the
# four big layers, so the cap is nproc on small machines.)
NPROC=$(nproc)
BIG_BLOBS=$(find "$IMAGE/blobs" -type f -printf '%s\n' |
    awk -v t="$TOTAL_BYTES" '$1 * 20 > t { n++ } END { print n + 0 }')
CORES=$((NPROC < BIG_BLOBS ? NPROC : BIG_BLOBS))
((CORES >= 1)) || CORES=1
IDEAL_MBPS=$((OPENSSL_MBPS * CORES))
IDEAL_SECS=$(awk -v b="$TOTAL_BYTES" -v r="$IDEAL_MBPS" 'BEGIN { printf "%.3f", b / (r * 1e6) }')
record "openssl-sha256-ideal-x$CORES" "$IDEAL_SECS" NA
row "openssl sha256 (1 core)" - "$OPENSSL_MBPS" - "openssl speed -evp sha256 -bytes 16384"
row "openssl sha256 (x$CORES cores, ideal)" "$IDEAL_SECS" "$IDEAL_MBPS" - \
    "cores = min(nproc $NPROC, $BIG_BLOBS blobs with >5% of bytes)"

# --- 3b. sha256sum over every blob ------------------------------------------------
measure sha256sum -- sha256sum -- "${BLOBS[@]}"
if ((M_STATUS == 0)); then
    SHA256SUM_SECS=$M_SECS
    bad=$(awk '{ n = $2; sub(/.*\//, "", n); if (n != $1) c++ } END { print c + 0 }' "$LOGS/sha256sum.log")
    note="1 process, sequential"
    ((bad == 0)) || note="$note; $bad blob(s) do not match their names!"
    row "sha256sum (all blobs)" "$M_SECS" "$(mbps "$M_SECS")" "$(mib "$M_RSS_KIB")" "$note"
else
    SHA256SUM_SECS=
    row "sha256sum (all blobs)" - - - "failed (exit $M_STATUS), see $LOGS/sha256sum.log"
fi

# --- 3b'. openssl hashing the same files, one process per core --------------------
# Like for like: 'openssl speed' hashes one 16 KiB buffer that stays in the CPU
# cache, while every real tool streams blobs out of RAM; this row is OpenSSL's
# own SHA-256 over the very files ocikit verifies, largest first, NPROC at a time.
measure openssl-dgst -- sh -c 'find "$1" -type f -printf "%s %p\n" | sort -rn | cut -d" " -f2- | xargs -P "$2" -n 1 openssl dgst -sha256' sh "$IMAGE/blobs" "$NPROC"
if ((M_STATUS == 0)); then
    OPENSSL_DGST_SECS=$M_SECS
    row "openssl dgst (x$NPROC processes)" "$M_SECS" "$(mbps "$M_SECS")" "$(mib "$M_RSS_KIB")" "same files, largest first"
else
    OPENSSL_DGST_SECS=
    row "openssl dgst (x$NPROC processes)" - - - "failed (exit $M_STATUS)"
fi

# --- 3c. ocikit verify -------------------------------------------------------------
VERIFY_SECS=
VERIFY_RSS=
if ((ocikit_ok)) && [[ ! -x $OCIKIT ]]; then
    warn "$OCIKIT is missing: skipping the ocikit rows"
    ocikit_ok=0
fi
if ((ocikit_ok)); then
    # A placeholder binary would "verify" anything in no time; insist on a CLI
    # that at least lists the subcommand.
    help=$("$OCIKIT" --help 2>&1 || true)
    if [[ $help != *verify* ]]; then
        warn "$OCIKIT has no 'verify' subcommand yet: skipping the ocikit rows"
        ocikit_ok=0
    fi
fi
if ((ocikit_ok)); then
    # Twice; the better run counts (the first also settles CPU frequency and
    # any cache the file system keeps beyond the warm-up above).
    for run in 1 2; do
        timed "ocikit-verify-run$run" -- "$OCIKIT" verify "oci:$IMAGE"
        case $M_STATUS in
        0)
            if [[ -z $VERIFY_SECS ]] || awk -v a="$M_SECS" -v b="$VERIFY_SECS" 'BEGIN { exit !(a < b) }'; then
                VERIFY_SECS=$M_SECS
                VERIFY_RSS=$M_RSS_KIB
            fi
            ;;
        1) warn "ocikit verify reported findings on the generated image (exit 1): see $LOGS/ocikit-verify-run$run.log" ;;
        *) warn "ocikit verify could not run (exit $M_STATUS): see $LOGS/ocikit-verify-run$run.log" ;;
        esac
    done
    if [[ -n $VERIFY_SECS ]]; then
        record ocikit-verify "$VERIFY_SECS" "$VERIFY_RSS"
        row "ocikit verify (best of 2)" "$VERIFY_SECS" "$(mbps "$VERIFY_SECS")" "$(mib "$VERIFY_RSS")" "ocikit verify oci:DIR"
    else
        row "ocikit verify (best of 2)" - - - "no clean run, see $LOGS/ocikit-verify-run*.log"
    fi
else
    row "ocikit verify (best of 2)" - - - "skipped: CLI not available"
fi

# --- 3d. verify --deep against pigz -dc over every gzip layer --------------------------
DEEP_SECS=
PIGZ_SECS=
if command -v pigz >/dev/null; then
    measure pigz-dc -- sh -c 'for f in "$@"; do if [ "$(head -c2 "$f" | od -An -tx1 | tr -d " ")" = 1f8b ]; then pigz -dc "$f" >/dev/null || exit 1; fi; done' sh "${BLOBS[@]}"
    if ((M_STATUS == 0)); then
        PIGZ_SECS=$M_SECS
        row "pigz -dc (every gzip layer)" "$M_SECS" "$(mbps "$M_SECS")" "$(mib "$M_RSS_KIB")" "decompression only, to /dev/null"
    fi
else
    row "pigz -dc (every gzip layer)" - - - "skipped: pigz not installed (apt-get install pigz)"
fi
if ((ocikit_ok)); then
    timed ocikit-verify-deep -- "$OCIKIT" verify --deep "oci:$IMAGE"
    if ((M_STATUS == 0)); then
        DEEP_SECS=$M_SECS
        record ocikit-verify-deep "$M_SECS" "$M_RSS_KIB"
        row "ocikit verify --deep" "$M_SECS" "$(mbps "$M_SECS")" "$(mib "$M_RSS_KIB")" "hash + inflate + diff_id + tar walk"
    fi
fi
if [[ -n $DEEP_SECS && -n $PIGZ_SECS ]]; then
    DEEP_RATIO=$(awk -v d="$DEEP_SECS" -v p="$PIGZ_SECS" 'BEGIN { r = d / p; printf "  verify --deep vs pigz -dc: %5.2f of its time (target <= 0.50: %s)", r, (r <= 0.5 ? "met" : "NOT met") }')
else
    DEEP_RATIO=
fi

# --- 3e. archives: ocikit against skopeo copy -------------------------------------------
# Outputs go to tmpfs (these disks are slow and swing; the rows time the tools).
OUT=${OCIKIT_BENCH_OUT:-/dev/shm/ocikit-bench-out}
# On these VMs the first touch of guest memory is expensive (measured: 11 s of
# system time for a 4 GB tmpfs write that takes 3 s the next time), and it
# would land on whichever tool writes first. Touch the memory once, for all.
mkdir -p "$OUT"
WARM_GIB=${OCIKIT_BENCH_WARM_GIB:-16}
say "==> pre-faulting ${WARM_GIB} GiB of memory through tmpfs (fair start for every tool)"
head -c "$((WARM_GIB << 30))" /dev/zero >"$OUT/warm" 2>/dev/null || true
rm -f "$OUT/warm"
RATIOS=()
# pair NAME TARGET_RATIO OCIKIT_CMD -- PEER_CMD: times both twice, alternating
# (outputs cleared before each run; the first big write to tmpfs after a clear
# pays for page reclaim, so order matters), keeps each one's best, adds two rows
# and a ratio line "ocikit/peer (target <= X)".
best_of() { # best_of NAME CMD...: two runs; sets B_SECS and B_RSS (empty if both failed)
    local name=$1
    shift
    rm -rf "$OUT" && mkdir -p "$OUT"
    timed "$name" -- "$@"
    if ((M_STATUS == 0)); then
        if [[ -z $B_SECS ]] || awk -v a="$M_SECS" -v b="$B_SECS" 'BEGIN { exit !(a < b) }'; then
            B_SECS=$M_SECS
            B_RSS=$M_RSS_KIB
        fi
    fi
}
pair() {
    local name=$1 target=$2
    shift 2
    local a=() b=()
    while [[ $1 != -- ]]; do a+=("$1"); shift; done
    shift
    b=("$@")
    local o_secs="" o_rss="" p_secs="" p_rss="" round
    for round in 1 2; do
        B_SECS=$o_secs B_RSS=$o_rss
        best_of "ocikit-$name" "${a[@]}"
        o_secs=$B_SECS o_rss=$B_RSS
        if command -v skopeo >/dev/null; then
            B_SECS=$p_secs B_RSS=$p_rss
            best_of "skopeo-$name" "${b[@]}"
            p_secs=$B_SECS p_rss=$B_RSS
        fi
    done
    rm -rf "$OUT"
    if [[ -n $o_secs ]]; then
        record "ocikit-$name" "$o_secs" "$o_rss"
        row "ocikit $name" "$o_secs" "$(mbps "$o_secs")" "$(mib "$o_rss")" "best of 2"
    else
        row "ocikit $name" - - - "failed, see $LOGS/ocikit-$name.log"
    fi
    if [[ -n $p_secs ]]; then
        record "skopeo-$name" "$p_secs" "$p_rss"
        row "skopeo $name" "$p_secs" "$(mbps "$p_secs")" "$(mib "$p_rss")" "skopeo copy, best of 2"
    else
        row "skopeo $name" - - - "failed or absent, see $LOGS/skopeo-$name.log"
    fi
    if [[ -n $o_secs && -n $p_secs ]]; then
        RATIOS+=("$(awk -v o="$o_secs" -v p="$p_secs" -v t="$target" -v n="$name" -v rss="$o_rss" 'BEGIN {
            r = o / p; m = rss / 1024
            printf "  %-28s %5.2f of skopeo (target <= %s: %s); peak RSS %.1f MiB (target < 100: %s)", n ":", r, t, (r <= t ? "met" : "NOT met"), m, (m < 100 ? "met" : "NOT met") }')")
    fi
}
if ((ocikit_ok)); then
    pair "export-oci-archive" 0.5 "$OCIKIT" export "oci:$IMAGE:base" "$OUT/base.tar" -- \
        skopeo copy "oci:$IMAGE:base" "oci-archive:$OUT/base.tar:base"
    pair "export-docker-archive" 0.33 "$OCIKIT" export "oci:$IMAGE:base" "docker-archive:$OUT/base.tar:bench/base:1" --uncompressed-layers -- \
        skopeo copy "oci:$IMAGE:base" "docker-archive:$OUT/base.tar:bench/base:1"
    # The import row reads skopeo's own docker-archive, made once outside the timings.
    SKOPEO_DA=$BENCH_DIR/skopeo-docker-archive.tar
    if command -v skopeo >/dev/null && [[ ! -s $SKOPEO_DA ]]; then
        skopeo copy "oci:$IMAGE:base" "docker-archive:$SKOPEO_DA:bench/base:1" >"$LOGS/skopeo-make-da.log" 2>&1 || rm -f "$SKOPEO_DA"
    fi
    if [[ -s $SKOPEO_DA ]]; then
        cat "$SKOPEO_DA" >/dev/null
        pair "import-docker-archive" 0.34 "$OCIKIT" import "$SKOPEO_DA" "$OUT/imported" -- \
            skopeo copy "docker-archive:$SKOPEO_DA" "oci:$OUT/imported:base"
    fi
    rm -rf "$OUT"
fi

# --- gc: ocikit gc against umoci gc ----------------------------------------------------
# MANY (benches/gen_many.py, cached by its stamp): 2,000 small images, 10,000 blobs of
# which 500 are garbage; every run gets a fresh copy on tmpfs ($OUT), made outside the
# timing. The big image has nothing to collect: `ocikit gc --dry-run` reads it in place (a
# dry run takes no lock and writes nothing); the other runs get $BENCH_DIR/big-gc, whose
# blobs/ are hard links to the image's (safe: gc only ever unlinks blobs; a copy would not
# fit the timing budget) and whose index.json and oci-layout are real copies. Best of 2.
MANY=$BENCH_DIR/many
BIG_GC=$BENCH_DIR/big-gc
fresh_many() { rm -rf "$OUT/many" && mkdir -p "$OUT" && cp -a "$MANY" "$OUT/many"; }
fresh_big() {
    rm -rf "$BIG_GC" && mkdir -p "$BIG_GC" && cp -al "$IMAGE/blobs" "$BIG_GC/blobs" &&
        cp "$IMAGE/index.json" "$IMAGE/oci-layout" "$BIG_GC/"
}
no_prep() { :; }
# gc_best NAME LABEL PREP DIR CMD...: best of 2 runs of CMD, each after PREP (untimed);
# records and adds a row; sets G_SECS (empty if no run succeeded) and G_LEFT (blob files
# left in DIR after the last good run).
gc_best() {
    local name=$1 label=$2 prep=$3 dir=$4 round
    shift 4
    G_SECS= G_RSS= G_LEFT=
    for round in 1 2; do
        if ! $prep; then
            warn "preparing $name failed"
            break
        fi
        timed "$name" -- "$@"
        if ((M_STATUS == 0)); then
            if [[ -z $G_SECS ]] || awk -v a="$M_SECS" -v b="$G_SECS" 'BEGIN { exit !(a < b) }'; then
                G_SECS=$M_SECS G_RSS=$M_RSS_KIB
            fi
            G_LEFT=$(find "$dir/blobs" -type f | wc -l)
        fi
    done
    if [[ -n $G_SECS ]]; then
        record "$name" "$G_SECS" "$G_RSS"
        row "$label" "$G_SECS" - "$(mib "$G_RSS")" "best of 2; $G_LEFT blob files left"
    else
        row "$label" - - - "failed, see $LOGS/$name.log"
    fi
}
# gc_ratio LABEL OCIKIT_SECS UMOCI_SECS
gc_ratio() {
    [[ -n $2 && -n $3 ]] || return 0
    RATIOS+=("$(awk -v o="$2" -v u="$3" -v n="$1" 'BEGIN {
        r = o / u; f = (r < 0.01 ? "%.4f" : "%5.2f")
        printf "  %-28s " f " of umoci gc (target: a small fraction of umoci gc)", n ":", r }')")
}
if ((ocikit_ok)) && "$OCIKIT" gc --help >/dev/null 2>&1; then
    have_umoci=0
    command -v umoci >/dev/null && have_umoci=1
    mkdir -p "$OUT"
    say "==> generating $MANY"
    if command -v python3 >/dev/null && python3 benches/gen_many.py "$MANY"; then
        gc_best ocikit-gc-dry-run-many "ocikit gc --dry-run (many)" fresh_many "$OUT/many" \
            "$OCIKIT" gc --dry-run "$OUT/many"
        gc_dry=$G_SECS
        gc_best ocikit-gc-many "ocikit gc (many)" fresh_many "$OUT/many" "$OCIKIT" gc "$OUT/many"
        gc_real=$G_SECS gc_left=$G_LEFT
        if ((have_umoci)); then
            gc_best umoci-gc-many "umoci gc (many)" fresh_many "$OUT/many" umoci gc --layout "$OUT/many"
            gc_ratio "gc --dry-run (many)" "$gc_dry" "$G_SECS"
            gc_ratio "gc (many)" "$gc_real" "$G_SECS"
            if [[ -n $gc_left && -n $G_LEFT && $gc_left != "$G_LEFT" ]]; then
                warn "ocikit gc left $gc_left blob files on the many-images layout, umoci gc $G_LEFT"
            fi
        else
            row "umoci gc (many)" - - - "skipped: umoci not installed"
        fi
        rm -rf "$OUT/many"
    else
        warn "benches/gen_many.py failed (python3 needed): no gc rows on the many-images layout"
    fi
    gc_best ocikit-gc-dry-run-big "ocikit gc --dry-run (big)" no_prep "$IMAGE" \
        "$OCIKIT" gc --dry-run "$IMAGE"
    gc_dry=$G_SECS
    gc_best ocikit-gc-big "ocikit gc (big, hard links)" fresh_big "$BIG_GC" "$OCIKIT" gc "$BIG_GC"
    gc_real=$G_SECS
    if ((have_umoci)); then
        gc_best umoci-gc-big "umoci gc (big, hard links)" fresh_big "$BIG_GC" umoci gc --layout "$BIG_GC"
        gc_ratio "gc --dry-run (big)" "$gc_dry" "$G_SECS"
        gc_ratio "gc (big)" "$gc_real" "$G_SECS"
    else
        row "umoci gc (big, hard links)" - - - "skipped: umoci not installed"
    fi
    rm -rf "$BIG_GC" "$OUT"
fi

# --- flatten and squash --------------------------------------------------------------
# flatten v2 (7 layers with whiteouts) against `umoci raw unpack --rootless`, both on
# tmpfs ($OUT) and, for the record, on disk ($BENCH_DIR/disk-out); both rootless so that
# neither chowns. Output removed before every run (untimed); best of 2 each, alternating.
# Then `flatten --tar -` to /dev/null and `squash` (into a hard-linked copy of the
# layout, as the gc rows do; squash only adds blobs and rewrites index.json).
# flat_best NAME LABEL DIR CMD...: best of 2 runs with DIR removed first.
flat_best() {
    local name=$1 label=$2 dir=$3 round
    shift 3
    F_SECS= F_RSS=
    for round in 1 2; do
        rm -rf "$dir"
        timed "$name" -- "$@"
        if ((M_STATUS == 0)); then
            if [[ -z $F_SECS ]] || awk -v a="$M_SECS" -v b="$F_SECS" 'BEGIN { exit !(a < b) }'; then
                F_SECS=$M_SECS F_RSS=$M_RSS_KIB
            fi
        fi
    done
    rm -rf "$dir"
    if [[ -n $F_SECS ]]; then
        record "$name" "$F_SECS" "$F_RSS"
        row "$label" "$F_SECS" - "$(mib "$F_RSS")" "best of 2"
    else
        row "$label" - - - "failed, see $LOGS/$name.log"
    fi
}
flat_ratio() { # LABEL OCIKIT_SECS OCIKIT_RSS UMOCI_SECS
    [[ -n $2 && -n $4 ]] || return 0
    RATIOS+=("$(awk -v o="$2" -v u="$4" -v n="$1" -v rss="$3" 'BEGIN {
        r = o / u; m = rss / 1024
        printf "  %-28s %5.2f of umoci unpack --rootless (target <= 0.25: %s); peak RSS %.1f MiB (target < 100: %s)", n ":", r, (r <= 0.25 ? "met" : "NOT met"), m, (m < 100 ? "met" : "NOT met") }')")
}
if ((ocikit_ok)) && "$OCIKIT" flatten --help >/dev/null 2>&1; then
    # The rows before leave the blobs out of the page cache (measured: `free` shows none
    # cached); warm them again so that both tools read from memory, as the other rows do.
    cat "$IMAGE"/blobs/sha256/* >/dev/null
    DISK_OUT=$BENCH_DIR/disk-out
    mkdir -p "$OUT" "$DISK_OUT"
    have_umoci=0
    command -v umoci >/dev/null && have_umoci=1
    for where in tmpfs disk; do
        base=$OUT
        [[ $where == disk ]] && base=$DISK_OUT
        o_secs= o_rss= u_secs=
        flat_best "ocikit-flatten-$where" "ocikit flatten ($where)" "$base/rootfs" \
            "$OCIKIT" flatten --rootless "oci:$IMAGE:v2" --output "$base/rootfs"
        o_secs=$F_SECS o_rss=$F_RSS
        if ((have_umoci)); then
            flat_best "umoci-unpack-$where" "umoci unpack --rootless ($where)" "$base/umoci" \
                umoci raw unpack --rootless --image "$IMAGE:v2" "$base/umoci"
            u_secs=$F_SECS
            flat_ratio "flatten ($where)" "$o_secs" "$o_rss" "$u_secs"
        fi
    done
    flat_best ocikit-flatten-tar "ocikit flatten --tar - >/dev/null" "$OUT/none" \
        sh -c 'TMPDIR="$3" "$1" flatten --rootless "oci:$2:v2" --tar - >/dev/null' sh "$OCIKIT" "$IMAGE" "$OUT"
    [[ -n $F_SECS ]] && RATIOS+=("$(awk -v s="$F_SECS" -v rss="$F_RSS" 'BEGIN { printf "  %-28s %.2f s, peak RSS %.1f MiB (target < 100: %s)", "flatten --tar -:", s, rss / 1024, (rss / 1024 < 100 ? "met" : "NOT met") }')")
    SQ=$BENCH_DIR/big-squash
    sq_prep() {
        rm -rf "$SQ" && mkdir -p "$SQ" && cp -al "$IMAGE/blobs" "$SQ/blobs" &&
            cp "$IMAGE/index.json" "$IMAGE/oci-layout" "$SQ/"
    }
    gc_best ocikit-squash "ocikit squash (v2 -> 1 gzip layer)" sq_prep "$SQ" \
        "$OCIKIT" squash --rootless "$SQ:v2" --tag squashed
    [[ -n $G_SECS ]] && RATIOS+=("$(awk -v s="$G_SECS" -v rss="$G_RSS" 'BEGIN { printf "  %-28s %.2f s, peak RSS %.1f MiB (target < 100: %s)", "squash:", s, rss / 1024, (rss / 1024 < 100 ? "met" : "NOT met") }')")
    rm -rf "$SQ" "$DISK_OUT" "$OUT"
fi

# --- diff: base vs v2 share all layers but the last ----------------------------------
if ((ocikit_ok)) && "$OCIKIT" diff --help >/dev/null 2>&1; then
    D_SECS= D_RSS=
    for round in 1 2; do
        timed ocikit-diff -- sh -c '"$1" diff --json "oci:$2:base" "oci:$2:v2" >"$3"; [ $? -eq 1 ]' sh "$OCIKIT" "$IMAGE" "$BENCH_DIR/diff.json"
        if ((M_STATUS == 0)); then
            if [[ -z $D_SECS ]] || awk -v a="$M_SECS" -v b="$D_SECS" 'BEGIN { exit !(a < b) }'; then
                D_SECS=$M_SECS D_RSS=$M_RSS_KIB
            fi
        fi
    done
    if [[ -n $D_SECS ]]; then
        decoded=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["layers_decoded"], len(d["differences"]))' "$BENCH_DIR/diff.json" 2>/dev/null || echo "? ?")
        record ocikit-diff "$D_SECS" "$D_RSS"
        row "ocikit diff base v2" "$D_SECS" - "$(mib "$D_RSS")" "best of 2; layers decoded, differences: $decoded"
        RATIOS+=("$(printf '  %-28s %s layer blobs decoded of 14 (target: only the differing layer, one per side)' "diff base v2:" "${decoded%% *}")")
    else
        row "ocikit diff base v2" - - - "failed, see $LOGS/ocikit-diff.log"
    fi
fi

# --- 4. report -----------------------------------------------------------------------
say ""
say "ocikit benchmark: $IMAGE (scale $SCALE): ${#BLOBS[@]} blobs, $TOTAL_BYTES bytes; $NPROC cores"
say "load average before the timings: $LOADAVG (other work on the machine skews every row)"
say "page cache warmed with 'cat blobs/* >/dev/null' before all timings (every tool reads from memory)"
say "MB/s = 10^6 bytes per second of blob data"
say ""
printf '%-34s %9s %10s %12s  %s\n' "row" "seconds" "MB/s" "peak RSS" "notes"
printf '%s\n' "${ROWS[@]}"
say ""
say "ratios:"
if [[ -n $VERIFY_SECS ]]; then
    awk -v b="$TOTAL_BYTES" -v s="$VERIFY_SECS" -v ideal="$IDEAL_MBPS" -v cores="$CORES" -v sum="$SHA256SUM_SECS" \
        -v dgst="$OPENSSL_DGST_SECS" -v rss="$VERIFY_RSS" 'BEGIN {
        if (s > 0) {
            pct = 100 * (b / s / 1e6) / ideal
            printf "  verify vs openssl x%d:  %7.1f %%   (target >= 80 %%: %s)\n", cores, pct, (pct >= 80 ? "met" : "NOT met")
            if (dgst != "") printf "  verify vs openssl dgst: %7.1f %%   (same files, same cores: like for like)\n", 100 * dgst / s
            if (sum != "") printf "  verify vs sha256sum:    %7.2f x faster\n", sum / s
        } else {
            print "  verify too fast to time at this scale: no throughput ratios"
        }
        if (rss ~ /^[0-9]+$/) {
            m = rss / 1024
            printf "  verify peak RSS:        %7.1f MiB (target < 100 MiB: %s)\n", m, (m < 100 ? "met" : "NOT met")
        }
    }'
else
    say "  ocikit verify did not produce a clean run: no ratios"
fi
[[ -n $DEEP_RATIO ]] && say "$DEEP_RATIO"
for r in "${RATIOS[@]}"; do say "$r"; done
say ""
say "results appended to $RESULTS; per-row output in $LOGS/"
