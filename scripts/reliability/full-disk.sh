#!/usr/bin/env bash
# A full backing filesystem: the backing dir lives on a 64 MiB tmpfs and a
# writer fills it through the mount. Checks: the writer gets ENOSPC (from
# write, fsync or close; never EIO, never a short write), the daemon stays up,
# files committed earlier keep their bytes, deleting a file makes room and
# writing works again, and everything committed survives a remount.
#
# Knobs: FULL_DISK_SIZE (tmpfs size, default 64m), FULL_DISK_TAG (name of the
# results, default full-disk), FULL_DISK_LAYOUT (default:
# the embedded default layout).
. "$(dirname "$0")/lib.sh"
need_root

SIZE=${FULL_DISK_SIZE:-64m}
LAYOUT=${FULL_DISK_LAYOUT:-}
TAG=${FULL_DISK_TAG:-full-disk}
BIN=$(ckptfs_bin) || { record FAIL $TAG/build "cargo build --release failed"; summary "$TAG"; exit 1; }

WORK=$(mktemp -d "$WORK_ROOT/ckptfs-full.XXXXXX")
disk=$WORK/disk
mnt=$WORK/mnt
src=$WORK/src
mkdir -p "$src"
mount_tmpfs "$disk" "$SIZE" || { record FAIL $TAG/tmpfs "mount -t tmpfs -o size=$SIZE failed"; summary "$TAG"; exit 1; }
backing=$disk/backing

# Sources live outside the tmpfs; their sums are the reference.
head -c $((8 << 20)) /dev/urandom >"$src/before.bin"
head -c $((4 << 20)) /dev/urandom >"$src/after.bin"
(cd "$src" && sha256sum before.bin >before.sha256 && sha256sum after.bin >after.sha256)

mount_layout "$LAYOUT" "$backing" "$mnt" || { record FAIL $TAG/mount "could not mount"; summary "$TAG"; exit 1; }

daemon_alive() {
    is_mounted "$mnt" && ls "$mnt" >/dev/null
}

check $TAG/commit-before cp "$src/before.bin" "$mnt/before.bin"

# Writes 1 MiB blocks of random bytes until an error; prints where it came
# from. Exit 0 only for ENOSPC (or EDQUOT) with no short write and no EIO.
fill() {
    python3 - "$1" <<'EOF'
import errno, os, sys
path = sys.argv[1]
block = os.urandom(1 << 20)
written = 0
fd = None
stage = "open"
try:
    # A full disk may refuse the create itself (the file's entry needs room).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stage = "write"
    while written < (4 << 30):
        n = os.write(fd, block)
        if n != len(block):
            print(f"short write: {n} of {len(block)} bytes at offset {written}")
            sys.exit(1)
        written += n
    stage = "fsync"
    os.fsync(fd)
    stage = "close"
    os.close(fd)
    print(f"no error after {written} bytes: the disk never filled")
    sys.exit(1)
except OSError as e:
    name = errno.errorcode.get(e.errno, str(e.errno))
    if stage == "write" and fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        print(f"{name} from {stage} after {written >> 20} MiB")
        sys.exit(0)
    print(f"{name} ({e.strerror}) from {stage} after {written >> 20} MiB; expected ENOSPC")
    sys.exit(1)
EOF
}

check $TAG/writer-gets-enospc fill "$mnt/fill.bin"
check $TAG/daemon-up-after-enospc daemon_alive
check $TAG/committed-file-intact sh -c "cd '$mnt' && sha256sum --strict -c '$src/before.sha256'"
# A second writer on the still-full disk must fail cleanly too.
check $TAG/second-writer-gets-enospc fill "$mnt/fill2.bin"
check $TAG/daemon-up-after-second daemon_alive
check $TAG/delete-frees-space rm -f "$mnt/fill.bin" "$mnt/fill2.bin"
check $TAG/write-after-delete sh -c "cp '$src/after.bin' '$mnt/after.bin' && cd '$mnt' && sha256sum --strict -c '$src/after.sha256'"

if unmount "$mnt"; then
    record PASS $TAG/unmount "ckptfs umount exited 0"
    # Every chunk a committed file references is intact (checksums), after
    # whatever the full disk made the store give back.
    check $TAG/verify-after-full-disk "$BIN" verify "$backing"
else
    record FAIL $TAG/unmount "ckptfs umount failed"
fi
if mount_layout "$LAYOUT" "$backing" "$mnt"; then
    check $TAG/intact-after-remount sh -c "cd '$mnt' && sha256sum --strict -c '$src/before.sha256' '$src/after.sha256'"
    check $TAG/no-leftovers-after-remount sh -c "ls '$mnt' | sort | tr '\n' ' ' | grep -qx 'after.bin before.bin '"
    unmount "$mnt" || record FAIL $TAG/unmount "ckptfs umount after remount failed"
else
    record FAIL $TAG/remount "could not remount"
fi
rm -rf "$WORK/src"
summary "$TAG"
