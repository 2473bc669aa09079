#!/usr/bin/env bash
# pjdfstest (the Rust rewrite, crate `pjdfstest`): POSIX syscall conformance
# (chmod chown ftruncate link mkdir mkfifo mknod open posix_fallocate rename
# rmdir symlink truncate unlink utimensat; 398 cases) in $MNT/pjd, with a tmpfs
# as the second filesystem for the EXDEV cases. Known gaps are listed with
# their reasons in pjdfstest.toml (expected_failures); any other failure, and
# any expected failure that passes, fails the suite.
#
# Knobs: PJD_LAYOUT (default: the embedded default layout), PJD_FILTER (test
# name patterns, e.g. "rename unlink").
. "$(dirname "$0")/lib.sh"
need_root

CONFIG=$RELIABILITY_DIR/pjdfstest.toml
PJD_LAYOUT=${PJD_LAYOUT:-}

need_dpkg libacl1-dev acl || { record FAIL pjdfstest/install "apt-get install libacl1-dev acl failed"; summary pjdfstest; exit 1; }
need_cargo pjdfstest pjdfstest || { record FAIL pjdfstest/install "cargo install --locked pjdfstest failed"; summary pjdfstest; exit 1; }
BIN=$(ckptfs_bin) || { record FAIL pjdfstest/build "cargo build --release failed"; summary pjdfstest; exit 1; }

WORK=$(mktemp -d "$WORK_ROOT/ckptfs-pjd.XXXXXX")
# The cases switch to the dummy users, who must reach the mount.
chmod 755 "$WORK"
mount_tmpfs "$WORK/other-fs" 16m || { record FAIL pjdfstest/tmpfs "mount -t tmpfs failed"; summary pjdfstest; exit 1; }
mount_layout "$PJD_LAYOUT" "$WORK/backing" "$WORK/mnt" || { record FAIL pjdfstest/mount "could not mount"; summary pjdfstest; exit 1; }
mkdir -p "$WORK/mnt/pjd"

out=$LOG_DIR/pjdfstest.out
# shellcheck disable=SC2086
NO_COLOR=1 pjdfstest -c "$CONFIG" -p "$WORK/mnt/pjd" -s "$WORK/other-fs" ${PJD_FILTER:-} >"$out" 2>&1
rc=$?
sed -i 's/\x1b\[[0-9;]*m//g' "$out"

count() { grep -cE "$1" "$out"; }
passed=$(count '^[^ ]+ +ok$')
failed=$(count '^[^ ]+ +FAILED$')
skipped=$(count '^[^ ]+ +skipped$')
expected=$(count '^[^ ]+ +failed as expected$')
unexpected=$(count '^[^ ]+ +PASSED UNEXPECTEDLY$')
echo "pjdfstest: $passed passed, $failed failed, $skipped skipped, $expected expected failures, $unexpected passed unexpectedly (exit $rc)"
grep -E '^Summary:' "$out" | sed 's/^/pjdfstest: /'

if [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ] && grep -q '^Summary:' "$out"; then
    record PASS pjdfstest/conformance "$passed passed, $skipped skipped, $expected expected failures (pjdfstest.toml)"
else
    record FAIL pjdfstest/conformance "$failed new failures: $(grep -E ' FAILED$' "$out" | awk '{print $1}' | tr '\n' ' ') (log: $out)"
fi
if [ "$unexpected" -eq 0 ]; then
    record PASS pjdfstest/expected-list-current "every listed expected failure still fails"
else
    record FAIL pjdfstest/expected-list-current "now passing, take off pjdfstest.toml: $(grep -E 'PASSED UNEXPECTEDLY$' "$out" | awk '{print $1}' | tr '\n' ' ')"
fi
check pjdfstest/unmount unmount "$WORK/mnt"
rm -rf "$WORK/backing"
summary pjdfstest
