#!/usr/bin/env bash
# Crash loop: kill -9 the daemon at a random moment while checkpoints and an
# fsync-per-block fio job are being written, then check the store and what
# survived.
#
# Each iteration mounts one backing dir (foreground, so $! is the daemon) with
# the next lossless layout (default, chunked, tensorstore-basic, recommended,
# passthrough), and with the previous iteration's crash behind it:
#   - every file committed before a kill (fsynced, or closed by a save that
#     returned) reads back byte-identical, in this and every later iteration;
#   - a safetensors / torch.save file that was mid-save is its last committed
#     version, or the new one complete, or absent when it had none: never
#     empty, never a mixture (sha256 against copies saved to local disk);
#   - fio's acknowledged blocks (--fsync=1, --verify_state_save) verify with
#     --verify_only --verify_state_load (size never above the file's: the
#     O_TRUNC trap);
#   - `ckptfs verify BACKING` on the dead mount's store reports nothing (exit 0).
# Then: a committed file written, fio verified, saves started, kill after a
# seeded random delay, detach, verify. After the loop: a clean unmount, verify,
# and one flipped byte in a committed file's chunk must make verify exit 1.
#
# Env: CRASH_ITERS (default 20), CRASH_SEED (default: the clock; printed),
# CRASH_MAX_BIG (largest "big" tensor in bytes, default 24 MiB),
# CRASH_LAYOUTS (space-separated config names, rotated), CRASH_TAG (the
# name results are recorded under, default crash-loop).

. "$(dirname "$0")/lib.sh"
need_root

ITERS=${CRASH_ITERS:-20}
SEED=${CRASH_SEED:-$(date +%s)}
MAX_BIG=${CRASH_MAX_BIG:-$((24 << 20))}
read -r -a LAYOUTS <<<"${CRASH_LAYOUTS:-default chunked tensorstore-basic recommended passthrough}"
TAG=${CRASH_TAG:-crash-loop}
RANDOM=$SEED

BIN=$(ckptfs_bin) || {
    record FAIL $TAG/build "no ckptfs binary"
    exit 1
}
for tool in fio python3 sha256sum; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        record FAIL $TAG/tools "$tool is missing"
        summary "$TAG"
        exit 1
    fi
done

WORK=$(mktemp -d "$WORK_ROOT/ckptfs-crash.XXXXXX")
BACKING=$WORK/backing
MNT=$WORK/mnt
mkdir -p "$BACKING" "$MNT" "$WORK/ref" "$WORK/fio"
DPID=""
log "crash loop: $ITERS iterations, seed $SEED, work dir $WORK"
local_ms=8000 # a first guess at a local save's duration

crash_cleanup() {
    if [ -n "$DPID" ] && kill -0 "$DPID" 2>/dev/null; then
        "$BIN" umount "$MNT" >/dev/null 2>&1 || kill -9 "$DPID" 2>/dev/null
        wait "$DPID" 2>/dev/null
    fi
    if grep -qs " $MNT fuse" /proc/mounts; then
        umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null
    fi
    [ "${CRASH_KEEP:-0}" = 1 ] || rm -rf "$WORK"
    _cleanup
}
trap crash_cleanup EXIT

# What each file in the mount must be: its sha256 (the last committed
# version), "-" for "never committed" (it must be absent).
declare -A COMMITTED=()
# A file being written when the daemon died: its new version's sha256.
declare -A PENDING=()

mount_fg() { # mount_fg LAYOUT
    local cfg
    cfg=$(config_path "$1")
    CKPTFS_LOG=warn "$BIN" mount --config "$cfg" "$BACKING" "$MNT" >>"$LOG_DIR/crash-daemon.log" 2>&1 &
    DPID=$!
    local t=0
    until is_mounted "$MNT"; do
        if ! kill -0 "$DPID" 2>/dev/null; then
            log "mount ($1) exited; see $LOG_DIR/crash-daemon.log"
            return 1
        fi
        sleep 0.1
        t=$((t + 1))
        if [ $t -gt 300 ]; then
            log "mount ($1) did not answer in 30 s"
            return 1
        fi
    done
    return 0
}

sha_of() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

# check_files: every committed file reads back as committed; every pending
# file is its old version, its new one, or (never committed) absent.
# Prints problems; status 1 when any. Updates COMMITTED from what it saw.
check_files() {
    local bad=0 name want got
    for name in "${!PENDING[@]}"; do
        want=${COMMITTED[$name]:-"-"}
        if [ -e "$MNT/$name" ]; then
            got=$(sha_of "$MNT/$name")
            if [ "$got" = "${PENDING[$name]}" ]; then
                COMMITTED[$name]=$got
                STATES+=" $name:new"
            elif [ "$got" = "$want" ]; then
                STATES+=" $name:old"
            elif [ "$want" = "-" ]; then
                # Never committed and no fsync of its directory: it must be
                # absent, not empty or partial.
                echo "interrupted $name: never committed, yet left behind ($(stat -c %s "$MNT/$name") bytes)"
                bad=1
                COMMITTED[$name]=$got
            else
                echo "interrupted $name: $(stat -c %s "$MNT/$name") bytes, sha256 $got is neither the last committed version ($want) nor the new one (${PENDING[$name]})"
                bad=1
                # Reported once: later iterations start from what is there now.
                COMMITTED[$name]=$got
            fi
        elif [ "$want" != "-" ]; then
            echo "interrupted $name: gone, but version $want had been committed"
            bad=1
            COMMITTED[$name]="-"
        else
            STATES+=" $name:absent"
        fi
    done
    PENDING=()
    for name in "${!COMMITTED[@]}"; do
        want=${COMMITTED[$name]}
        [ "$want" = "-" ] && continue
        got=$(sha_of "$MNT/$name")
        if [ "$got" != "$want" ]; then
            echo "committed $name: sha256 ${got:-missing}, expected $want"
            bad=1
        fi
    done
    return $bad
}

# check_fio ITER: the blocks fio had fsynced before the kill verify.
FIO_ARGS=(--rw=write --bs=1M --ioengine=psync --verify=crc32c)
check_fio() {
    local i=$1 f="$MNT/fio-$1.dat" dir="$WORK/fio/$1"
    local size acked mib
    size=$(stat -c %s "$f" 2>/dev/null || echo 0)
    acked=$(python3 -c 'import json,sys
try:
    text = open(sys.argv[1]).read()
    print(json.loads(text[text.index("{"):])["jobs"][0]["write"]["io_bytes"])
except Exception: print(-1)' "$dir/write.json" 2>/dev/null)
    [ -z "$acked" ] && acked=-1
    # Writes fio counted minus the last one (completed, maybe not yet fsynced).
    if [ "$acked" -gt $((size + (1 << 20))) ]; then
        echo "fio-$i: fio completed $acked bytes, the file holds $size"
        return 1
    fi
    mib=$((size >> 20))
    if [ "$mib" -eq 0 ]; then
        echo "fio-$i: nothing fsynced before the kill ($size bytes, fio counted $acked)"
        return 0
    fi
    if ! (cd "$dir" && fio --name="crash$i" --directory="$MNT" --filename="fio-$i.dat" \
        "${FIO_ARGS[@]}" --size="${mib}M" --verify_only=1 --verify_state_load=1 \
        --verify_fatal=1 >"$dir/verify.log" 2>&1); then
        echo "fio-$i: verify of ${mib} MiB failed: $(grep -m1 -i 'verify\|error' "$dir/verify.log")"
        return 1
    fi
    echo "fio-$i: ${mib} MiB verified (fio counted $acked bytes)"
    rm -f "$f"
}

# corrupt_check: one flipped byte in a committed file's chunk is found.
corrupt_check() {
    local chunk=""
    local name
    if [ -f "$BACKING/manifest.ocdbt" ]; then
        corrupt_packed
        return $?
    fi
    for name in "${!COMMITTED[@]}"; do
        case $name in keep-*) ;; *) continue ;; esac
        # Chunk 0: its first 4 KiB are the file's (every keep file is at
        # least 4 KiB); past the file's end a chunk is padding, which no
        # checksum covers.
        chunk=$(find "$BACKING/$name" -path '*/c/0' -type f -size +0 2>/dev/null | head -n 1)
        [ -n "$chunk" ] && break
    done
    if [ -z "$chunk" ]; then
        echo "no chunk file of a committed file found"
        return 1
    fi
    python3 - "$chunk" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    data = f.read()
    at = min(len(data), 4096) // 2
    f.seek(at)
    f.write(bytes([data[at] ^ 0x01]))
PY
    local out rc
    out=$("$BIN" verify "$BACKING" 2>&1)
    rc=$?
    echo "$out" | tail -n 3
    if [ $rc -ne 1 ]; then
        echo "verify exited $rc after a flipped byte in ${chunk#"$BACKING"/}, expected 1"
        return 1
    fi
    echo "flipped byte in ${chunk#"$BACKING"/} reported (exit 1)"
}

# corrupt_packed: with the packed index a committed file's chunk is a value
# in a data file under d/; find it by its bytes (a keep file is random and
# stored uncompressed) and flip a byte in it. A chunk's bytes can sit in
# more than one place (a compaction cut short by a kill leaves its copies
# unreferenced; a chunk rewritten before its file committed leaves the old
# value as garbage until compaction), and only the referenced one is
# checked: flip every copy, so the one the newest version reads is among them.
corrupt_packed() {
    local name found=""
    for name in "${!COMMITTED[@]}"; do
        case $name in keep-*) ;; *) continue ;; esac
        found=$(python3 - "$WORK/ref/$name" "$BACKING/d" <<'PY'
import os, sys
needle = open(sys.argv[1], "rb").read()[:256]
places = []
for f in sorted(os.listdir(sys.argv[2])):
    p = os.path.join(sys.argv[2], f)
    data = open(p, "rb").read()
    at = data.find(needle)
    while at >= 0:
        with open(p, "r+b") as out:
            out.seek(at + 100)
            out.write(bytes([data[at + 100] ^ 0x01]))
        places.append(f"d/{f}+{at + 100}")
        at = data.find(needle, at + 1)
print(" ".join(places))
PY
)
        [ -n "$found" ] && break
    done
    if [ -z "$found" ]; then
        echo "no committed file's bytes found in the packed data files"
        return 1
    fi
    local out rc
    out=$("$BIN" verify "$BACKING" 2>&1)
    rc=$?
    echo "$out" | tail -n 3
    if [ $rc -ne 1 ] || ! echo "$out" | grep -q "$name"; then
        echo "verify exited $rc after a flipped byte in $name's chunk ($found), expected 1 naming it"
        return 1
    fi
    echo "flipped byte in $name's chunk ($found) reported (exit 1)"
}

# readback ITER: after the crash of iteration ITER, on a fresh mount. Runs in
# this shell (check_files updates COMMITTED).
readback() {
    local rc1 rc2 n=0 name
    STATES=""
    check_files >"$WORK/files.out"
    rc1=$?
    check_fio "$1" >"$WORK/fio.out"
    rc2=$?
    for name in "${!COMMITTED[@]}"; do
        [ "${COMMITTED[$name]}" != "-" ] && n=$((n + 1))
    done
    if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ]; then
        record PASS "$TAG/readback-$1" "$n committed files byte-identical; interrupted:${STATES:- none}; $(head -n 1 "$WORK/fio.out")"
    else
        record FAIL "$TAG/readback-$1" "$(cat "$WORK/files.out" "$WORK/fio.out" | head -n 5)"
    fi
}

if ! mount_fg "${LAYOUTS[0]}"; then
    record FAIL $TAG/mount "first mount failed"
    summary "$TAG"
    exit 1
fi

for ((i = 0; i < ITERS; i++)); do
    layout=${LAYOUTS[$((i % ${#LAYOUTS[@]}))]}

    # What the previous crash left, on this fresh mount.
    [ "$i" -gt 0 ] && readback $((i - 1))

    # A file committed by fsync before anything races.
    keep="keep-$i.bin"
    head -c $((RANDOM * 64 + 4096)) /dev/urandom >"$WORK/ref/$keep"
    if dd if="$WORK/ref/$keep" of="$MNT/$keep" bs=1M conv=fsync status=none; then
        COMMITTED[$keep]=$(sha_of "$WORK/ref/$keep")
    else
        record FAIL "$TAG/write-$i" "writing $keep failed"
    fi

    # The racing writers: the checkpoints (and, alongside, the same save to
    # local disk, whose bytes they must have), fio; then the kill.
    big=$(((RANDOM << 15 | RANDOM) % MAX_BIG + 4096))
    rm -rf "$WORK/ref/ckpt" && mkdir -p "$WORK/ref/ckpt" "$MNT/ckpt" "$WORK/fio/$i"
    t0=$(date +%s%N)
    python3 scripts/checkpoint_io.py save "$WORK/ref/ckpt" --big-bytes "$big" >"$WORK/ref.log" 2>&1 &
    RPID=$!
    python3 scripts/checkpoint_io.py save "$MNT/ckpt" --big-bytes "$big" >"$WORK/save.log" 2>&1 &
    SPID=$!
    (cd "$WORK/fio/$i" && exec fio --name="crash$i" --directory="$MNT" --filename="fio-$i.dat" \
        "${FIO_ARGS[@]}" --size=256M --fsync=1 --do_verify=0 --verify_state_save=1 \
        --output-format=json --output="$WORK/fio/$i/write.json" >/dev/null 2>&1) &
    FPID=$!
    # Anywhere from before the saves open their files to after they finish
    # (scaled by how long the previous local save took).
    delay_ms=$((100 + (RANDOM % 1000) * (local_ms + 1500) / 1000))
    printf -v delay '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000))
    sleep "$delay"
    kill -9 "$DPID"
    wait "$DPID" 2>/dev/null
    wait "$SPID"
    save_rc=$?
    wait "$FPID"
    if ! wait "$RPID"; then
        record FAIL "$TAG/local-save-$i" "$(tail -n 1 "$WORK/ref.log")"
        break
    fi
    local_ms=$((($(date +%s%N) - t0) / 1000000))
    for f in model.safetensors model.pt; do
        PENDING[ckpt/$f]=$(sha_of "$WORK/ref/ckpt/$f")
        [ -n "${COMMITTED[ckpt/$f]:-}" ] || COMMITTED[ckpt/$f]="-"
    done
    if [ $save_rc -eq 0 ]; then
        # The save returned before the kill: both files were closed, so committed.
        COMMITTED[ckpt/model.safetensors]=${PENDING[ckpt/model.safetensors]}
        COMMITTED[ckpt/model.pt]=${PENDING[ckpt/model.pt]}
        PENDING=()
        state="saves done"
    else
        state="saves interrupted"
    fi
    log "iteration $i: layout $layout, seed $SEED, big $big bytes, kill after ${delay}s: $state"

    # The dead mount: detach, check the store offline, remount.
    umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT" 2>/dev/null
    DPID=""
    check "$TAG/verify-$i" "$BIN" verify "$BACKING"
    next=${LAYOUTS[$(((i + 1) % ${#LAYOUTS[@]}))]}
    if ! mount_fg "$next"; then
        record FAIL "$TAG/mount-$i" "remount with $next after the kill failed"
        break
    fi
done

# The last crash's leftovers, then a clean unmount, verify, and a flipped byte.
readback $((ITERS - 1))
if "$BIN" umount "$MNT" >&2; then
    wait "$DPID" 2>/dev/null
    DPID=""
    check $TAG/verify-clean "$BIN" verify "$BACKING"
    check $TAG/verify-finds-flipped-byte corrupt_check
else
    record FAIL $TAG/umount "clean unmount failed"
fi
log "crash loop seed $SEED (rerun with CRASH_SEED=$SEED)"
summary "$TAG"
exit $?
