#!/usr/bin/env bash
# fsx (the Rust port, crate `fsx`) against files in a ckptfs mount, for every
# lossless layout: seeded random pwrite/pread/mmap/truncate/... sequences on
# one file, every read compared with fsx's in-memory model. Each layout also
# checks that the files fsx left read back identical after a remount.
#
# Knobs:
#   FSX_OPS      operations per run (default 10000)
#   FSX_SEEDS    seeds per layout and op mix (default 3); seeds are random and
#                printed, FSX_SEED_LIST="11 22 33" replays given ones
#   FSX_LAYOUTS  space-separated layout names; default (or "all"): every
#                lossless layout this build accepts (lossless_layouts in
#                lib.sh), with small-chunks, small-packed and small-wb
#   FSX_MIXES    "default wide" (default) or one of them
#   FSX_FLEN     maximum file length (default 256 KiB); FSX_OPSIZE max op size
#                (default 64 KiB): fsx's own C defaults. Every msync/fsync
#                commits the whole file, so these keep the CI run short while
#                the op counts stay. The default list adds "small-chunks"
#                (64 KiB raw chunks, zstd) so ops cross chunk boundaries.
#   FSX_JOBS     layouts run at once (default 2)
#   FSX_BACKING  tmpfs (default) or disk
# A local soak: FSX_OPS=1000000 FSX_SEEDS=1 FSX_LAYOUTS=default scripts/reliability/fsx.sh
. "$(dirname "$0")/lib.sh"
need_root

FSX_OPS=${FSX_OPS:-10000}
FSX_SEEDS=${FSX_SEEDS:-3}
FSX_MIXES=${FSX_MIXES:-default wide}
FSX_FLEN=${FSX_FLEN:-262144}
FSX_OPSIZE=${FSX_OPSIZE:-65536}

# fsx 0.3.2 never unmaps its mapped reads: a long run hits vm.max_map_count
# (65530) and its mmap fails with ENOMEM (a tool limit, not a filesystem
# error). Raise the limit, only upward, for soaks.
if [ "$FSX_OPS" -gt 50000 ] && [ "$(cat /proc/sys/vm/max_map_count)" -lt 4194304 ]; then
    echo 4194304 >/proc/sys/vm/max_map_count || echo "fsx: could not raise vm.max_map_count" >&2
fi

need_cargo fsx fsx || { record FAIL fsx/install "cargo install --locked fsx failed"; summary fsx; exit 1; }
BIN=$(ckptfs_bin) || { record FAIL fsx/build "cargo build --release failed"; summary fsx; exit 1; }

# small-chunks: 64 KiB raw chunks with zstd, so fsx's ops cross chunk
# boundaries (the shipped layouts' raw chunks, 1 to 64 MiB, hold its whole file).
cat >"$LOG_DIR/small-chunks.toml" <<EOF
[layout]
raw_chunk_bytes = 65536
codec = "zstd"
level = 1
EOF
# small-packed: the same chunks in the packed index (every fsync is a
# database commit; 2 versions kept, compaction in the background past 20%).
cat >"$LOG_DIR/small-packed.toml" <<EOF
[layout]
raw_chunk_bytes = 65536
codec = "zstd"
level = 1
index = "packed"
[packed]
keep_versions = 2
auto_compact_ratio = 0.2
EOF
# small-wb: small-chunks with the kernel's writeback cache (io.writeback_cache):
# writes reach the daemon at writeback, msync and close, and the kernel reads
# partial pages back through write-only opens.
cat >"$LOG_DIR/small-wb.toml" <<EOF
[layout]
raw_chunk_bytes = 65536
codec = "zstd"
level = 1
[io]
writeback_cache = true
EOF
# Every msync/fsync commits the file. A file shorter than one chunk is stored
# as a chunk of its own length, so the layouts with 16 and 64 MiB chunks
# (recommended, t5x) run fsx about as fast as the others (per 10,000 ops on
# this 2-core VM, backing on disk: default 6.7 s, recommended 8.4 s, t5x
# 11.4 s). Every lossless layout runs; FSX_MAX_CHUNK (bytes) leaves out the
# layouts whose raw chunk is larger, for a quicker local run.
FSX_MAX_CHUNK=${FSX_MAX_CHUNK:-}
small_chunk_layouts() {
    local name chunk
    for name in $(lossless_layouts); do
        chunk=$("$BIN" check-config "$(config_path "$name")" 2>/dev/null | sed -n 's/.*"raw_chunk_bytes": \([0-9]*\).*/\1/p')
        if [ -n "$chunk" ] && [ "$chunk" -le "$FSX_MAX_CHUNK" ]; then
            echo "$name"
        else
            log "layout $name left out: raw chunk ${chunk:-?} bytes > FSX_MAX_CHUNK $FSX_MAX_CHUNK"
        fi
    done
}
case ${FSX_LAYOUTS:-} in
"" | all)
    if [ -n "$FSX_MAX_CHUNK" ]; then
        layouts="$(small_chunk_layouts | tr '\n' ' ')small-chunks small-packed small-wb"
    else
        layouts="$(lossless_layouts | tr '\n' ' ')small-chunks small-packed small-wb"
    fi
    ;;
*) layouts=$FSX_LAYOUTS ;;
esac
layout_config() {
    case $1 in
    small-chunks | small-packed | small-wb) echo "$LOG_DIR/$1.toml" ;;
    *) echo "$1" ;;
    esac
}
if [ -n "${FSX_SEED_LIST:-}" ]; then
    seeds=$FSX_SEED_LIST
else
    seeds=$(for _ in $(seq "$FSX_SEEDS"); do od -An -N4 -tu4 /dev/urandom | tr -d ' '; done | tr '\n' ' ')
fi

# The default mix is fsx's own (read, write, mapread, mapwrite, truncate).
# The wide mix adds every op a FUSE filesystem should handle; fallocate and
# hole punching are left out: ckptfs does not implement fallocate (EOPNOTSUPP).
cat >"$LOG_DIR/fsx-default.toml" <<EOF
flen = $FSX_FLEN
[opsize]
max = $FSX_OPSIZE
EOF
cat >"$LOG_DIR/fsx-wide.toml" <<EOF
flen = $FSX_FLEN
[opsize]
max = $FSX_OPSIZE
[weights]
close_open = 1
read = 10
write = 10
mapread = 5
mapwrite = 5
invalidate = 1
truncate = 2
fsync = 1
fdatasync = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
EOF

echo "fsx: layouts: $layouts"
echo "fsx: seeds: $seeds; mixes: $FSX_MIXES; $FSX_OPS ops per run; flen $FSX_FLEN, op size <= $FSX_OPSIZE"

run_fsx() { # layout mix seed file
    local pdir="$LOG_DIR/fsx-$1-$2-$3" out rc
    mkdir -p "$pdir"
    out=$(fsx -f "$LOG_DIR/fsx-$2.toml" -N "$FSX_OPS" -S "$3" -P "$pdir" "$4" 2>&1)
    rc=$?
    printf '%s\n' "$out"
    [ "$rc" -eq 0 ] || return "$rc"
    # fsx prints this line only after exactly -N operations, every read
    # compared with its model: the count reached is then FSX_OPS.
    case $out in
    *"All operations completed A-OK!"*) echo "$FSX_OPS operations completed, 0 miscompares (fsx: All operations completed A-OK!)" ;;
    *) echo "fsx exited 0 without reporting its $FSX_OPS operations complete" && return 1 ;;
    esac
}

WORK=$(mktemp -d "$WORK_ROOT/ckptfs-fsx.XXXXXX")
# The backing dir lives on a tmpfs: fsx's msync and fsync ops each commit the
# file, and a disk's fsync latency would dominate the run without testing
# anything fsx can see. FSX_BACKING=disk keeps it on $WORK_ROOT.
if [ "${FSX_BACKING:-tmpfs}" = tmpfs ]; then
    mount_tmpfs "$WORK/tmpfs" "${FSX_TMPFS_SIZE:-2g}" ||
        { record FAIL fsx/tmpfs "mount -t tmpfs failed"; summary fsx; exit 1; }
    BACKING_ROOT=$WORK/tmpfs
else
    BACKING_ROOT=$WORK
fi

# One layout: mount, every mix and seed, unmount, remount, compare sums.
# Runs in a subshell; its verdicts go to its own results file.
fsx_layout() {
    local layout=$1
    RESULTS=$WORK/$layout.results
    : >"$RESULTS"
    _MOUNTS=()
    _TMPFS=()
    trap _cleanup EXIT
    local backing=$BACKING_ROOT/$layout-backing
    local mnt=$WORK/$layout/mnt
    if ! mount_layout "$(layout_config "$layout")" "$backing" "$mnt"; then
        record FAIL "fsx/$layout/mount" "could not mount"
        return
    fi
    local mix seed
    for mix in $FSX_MIXES; do
        for seed in $seeds; do
            check "fsx/$layout/$mix/seed-$seed" run_fsx "$layout" "$mix" "$seed" "$mnt/fsx-$mix-$seed.dat"
        done
    done
    (cd "$mnt" && sha256sum fsx-*.dat) >"$WORK/$layout.sha256" 2>"$WORK/$layout.sha256.err"
    if ! unmount "$mnt"; then
        record FAIL "fsx/$layout/unmount" "ckptfs umount failed"
        return
    fi
    if ! mount_layout "$(layout_config "$layout")" "$backing" "$mnt"; then
        record FAIL "fsx/$layout/remount" "could not remount"
        return
    fi
    check "fsx/$layout/after-remount" sh -c "cd '$mnt' && sha256sum --strict -c '$WORK/$layout.sha256'"
    unmount "$mnt" || record FAIL "fsx/$layout/unmount" "ckptfs umount after remount failed"
    rm -rf "${backing:?}"
}

# FSX_JOBS layouts at a time (default 2): each fsx waits on its daemon's
# commits, so two keep both cores busy.
FSX_JOBS=${FSX_JOBS:-2}
started=$(date +%s)
running=0
for layout in $layouts; do
    (fsx_layout "$layout") >"$WORK/$layout.out" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge "$FSX_JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
for layout in $layouts; do
    cat "$WORK/$layout.out"
    while read -r verdict name detail; do
        record "$verdict" "$name" "$detail" >/dev/null
    done <"$WORK/$layout.results"
done
echo "fsx: $(($(date +%s) - started)) s for $(echo $layouts | wc -w) layouts"
for m in "${_TMPFS[@]}"; do umount "$m" && _TMPFS=(); done
rm -rf "$WORK"
summary fsx
