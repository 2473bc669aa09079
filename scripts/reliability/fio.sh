#!/usr/bin/env bash
# fio through a ckptfs mount: a sequential 1 GiB write that stores a crc32c in
# every 1 MiB block, a commit (unmount + remount), dropped caches, then a
# sequential read that checks every block's header and crc32c. Two separate
# invocations: one job file with `stonewall` would lay the read job's file out
# again. The read's --size equals the written size, never more (a larger size
# makes fio re-create the file with O_TRUNC).
#
# Knobs: FIO_SIZE (default 1G), FIO_LAYOUT (default: the embedded default layout).
. "$(dirname "$0")/lib.sh"
need_root

FIO_SIZE=${FIO_SIZE:-1G}
FIO_LAYOUT=${FIO_LAYOUT:-}

need_apt fio fio || { record FAIL fio/install "apt-get install fio failed"; summary fio; exit 1; }
BIN=$(ckptfs_bin) || { record FAIL fio/build "cargo build --release failed"; summary fio; exit 1; }

WORK=$(mktemp -d "$WORK_ROOT/ckptfs-fio.XXXXXX")
backing=$WORK/backing
mnt=$WORK/mnt
mount_layout "$FIO_LAYOUT" "$backing" "$mnt" || { record FAIL fio/mount "could not mount"; summary fio; exit 1; }

COMMON=(--directory="$mnt" --filename=seq.dat --bs=1M --size="$FIO_SIZE" --ioengine=psync
    --verify=crc32c --verify_state_save=0 --output-format=json)

# bw_bytes of jobs[0].<rw> in MB/s, or "error" when the job reported one.
fio_result() { # json rw
    python3 - "$1" "$2" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
# fio may print notes before the JSON document.
doc = json.loads(text[text.index("{"):])
job = doc["jobs"][0]
if job.get("error", 0) != 0:
    print(f"error {job['error']}")
    sys.exit(1)
side = job[sys.argv[2]]
if side["io_bytes"] <= 0:
    print("no bytes moved")
    sys.exit(1)
print(f"{side['bw_bytes'] / 1e6:.1f} MB/s ({side['io_bytes'] / 2**20:.0f} MiB in {side['runtime'] / 1000:.1f} s)")
EOF
}

fio_write() {
    fio --name=seqwrite "${COMMON[@]}" --rw=write --do_verify=0 --end_fsync=1 >"$LOG_DIR/fio-write.json" || return 1
    fio_result "$LOG_DIR/fio-write.json" write
}
fio_read() {
    fio --name=seqread "${COMMON[@]}" --rw=read --verify_fatal=1 --invalidate=1 >"$LOG_DIR/fio-read.json" || return 1
    # A verify error sets a non-zero exit above; check the JSON's error too.
    fio_result "$LOG_DIR/fio-read.json" read
}

if check fio/write-crc32c fio_write; then
    unmount "$mnt" || record FAIL fio/unmount "ckptfs umount failed"
    drop_caches
    if mount_layout "$FIO_LAYOUT" "$backing" "$mnt"; then
        check fio/read-verify-crc32c fio_read
        unmount "$mnt" || record FAIL fio/unmount "ckptfs umount after read failed"
    else
        record FAIL fio/remount "could not remount"
    fi
fi
for rw in write read; do
    f=$(ls "$LOG_DIR"/fio_*"$rw"*.log 2>/dev/null | head -n 1)
    [ -n "$f" ] && echo "fio: sequential $rw $(tail -n 1 "$f")"
done
rm -rf "$WORK"
summary fio
