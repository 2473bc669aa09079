#!/usr/bin/env bash
# Many small files through the mount against the same work on plain disk
# with the same durability: every file durable when its writer is done.
#
#   scripts/bench-small-files.sh [WORKDIR]
#
# Workloads (a 203-file, ~62 MB tree like a model repository, made once):
#   tar x          mount: `tar x` (close commits);  plain: `tar x`, then an
#                  fsync of every file and directory (the same durability)
#   extract+fsync  Python tarfile extract, fsync of every file and directory,
#                  the same command on both
#   rsync -a       mount: `rsync -a`;  plain: `rsync -a --fsync`
#   tensorstore    a zarr3 array (2000x3000 f32, 256x256 chunks) written by
#                  TensorStore's file kvstore (which fsyncs each chunk), the
#                  same command on both
# CONFIGS (default "default ts-ocdbt") names mount configs; with BASE_BIN set
# (another ckptfs build) each also runs as CONFIG~base with that binary, in
# the same rounds, for a before/after comparison. ROUNDS (default 3)
# rounds run every target in turn; the table shows medians and the ratio to
# plain. Every copy is compared with its source. Needs root (mount).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CKPTFS_BIN:-$ROOT/target/release/ckptfs}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
WORK=${1:-$(mktemp -d /var/tmp/ckptfs-small.XXXXXX)}
CONFIGS=${CONFIGS:-default ts-ocdbt}
ROUNDS=${ROUNDS:-3}
mkdir -p "$WORK"
command -v rsync >/dev/null || { echo "rsync is not installed" >&2; exit 1; }
HAVE_TS=1
python3 -c "import tensorstore, numpy" 2>/dev/null || HAVE_TS=0

SRC=$WORK/src
if [ ! -f "$WORK/src.tar" ]; then
  python3 - "$SRC" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(7)
# 180 small files (1-64 KiB), 20 of 0.5-2 MiB, 3 of ~11 MiB, in 6 folders.
sizes = [rng.randint(1 << 10, 64 << 10) for _ in range(180)]
sizes += [rng.randint(512 << 10, 2 << 20) for _ in range(20)]
sizes += [11 << 20] * 3
for i, n in enumerate(sizes):
    d = os.path.join(root, f"part{i % 6}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"file{i:03}.bin"), "wb") as f:
        f.write(rng.randbytes(n))
EOF
  tar cf "$WORK/src.tar" -C "$SRC" .
fi

EXTRACT=$WORK/extract_fsync.py
cat >"$EXTRACT" <<'EOF'
import os, sys, tarfile
dest = sys.argv[2]
with tarfile.open(sys.argv[1]) as t:
    for m in t:
        p = os.path.join(dest, m.name)
        if m.isdir():
            os.makedirs(p, exist_ok=True)
            continue
        with t.extractfile(m) as src, open(p, "wb") as out:
            out.write(src.read())
            out.flush()
            os.fsync(out.fileno())
for d, dirs, _ in os.walk(dest):
    dirs[:] = [x for x in dirs if x != ".ckptfs"]
    fd = os.open(d, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
EOF
FSYNC_TREE=$WORK/fsync_tree.py
cat >"$FSYNC_TREE" <<'EOF'
import os, sys
for d, dirs, files in os.walk(sys.argv[1]):
    dirs[:] = [x for x in dirs if x != ".ckptfs"]
    for name in files + ["."]:
        fd = os.open(os.path.join(d, name), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
EOF
TSWRITE=$WORK/ts_write.py
cat >"$TSWRITE" <<'EOF'
import sys, time
import numpy as np
import tensorstore as ts
a = np.random.default_rng(3).standard_normal((2000, 3000), dtype=np.float32)
arr = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": sys.argv[1]},
               "metadata": {"shape": [2000, 3000], "data_type": "float32",
                            "chunk_grid": {"name": "regular",
                                           "configuration": {"chunk_shape": [256, 256]}}},
               "create": True}).result()
t0 = time.perf_counter()
arr.write(a).result()
print(f"{time.perf_counter() - t0:.3f}")
back = ts.open({"driver": "zarr3", "kvstore": {"driver": "file", "path": sys.argv[1]}}).result().read().result()
assert (back == a).all(), "tensorstore read back differs"
EOF

# A failed run leaves no mount behind.
trap 'mountpoint -q "$WORK/mnt" && "$BIN" umount "$WORK/mnt"' EXIT
now() { date +%s.%N; }
declare -A T
# $1 target (plain or a config name), $2 workload; prints seconds.
run() {
  local target=$1 work=$2 backing=$WORK/backing mnt=$WORK/mnt dir t0 t1 bin=$BIN
  rm -rf "$backing" "$mnt"
  mkdir -p "$backing" "$mnt"
  if [ "$target" = plain ]; then
    dir=$backing
  else
    if [ "${target%~base}" != "$target" ]; then bin=$BASE_BIN; fi
    "$bin" mount --daemon --log "$WORK/$target.log" --config "$ROOT/mount-configs/${target%~base}.toml" \
      "$backing" "$mnt" >/dev/null
    dir=$mnt
  fi
  sync
  t0=$(now)
  case "$work" in
  tar)
    tar xf "$WORK/src.tar" -C "$dir"
    if [ "$target" = plain ]; then python3 "$FSYNC_TREE" "$dir"; fi
    ;;
  extract) python3 "$EXTRACT" "$WORK/src.tar" "$dir" ;;
  rsync)
    if [ "$target" = plain ]; then rsync -a --fsync "$SRC/" "$dir/"; else rsync -a "$SRC/" "$dir/"; fi
    ;;
  tensorstore) secs=$(python3 "$TSWRITE" "$dir/array") ;;
  esac
  t1=$(now)
  # TensorStore's write alone, without Python's start and the read-back.
  if [ "$work" = tensorstore ]; then t1=$(python3 -c "print($t0 + $secs)"); fi
  if [ "$work" != tensorstore ]; then
    diff -r -x .ckptfs "$SRC" "$dir" >/dev/null || { echo "$target $work: copy differs from source" >&2; exit 1; }
  fi
  [ "$target" = plain ] || "$BIN" umount "$mnt"
  rm -rf "$backing"
  T[$target.$work]="${T[$target.$work]:-} $(python3 -c "print(f'{$t1-$t0:.3f}')")"
}

TARGETS=(plain)
for c in $CONFIGS; do
  TARGETS+=("$c")
  if [ -n "${BASE_BIN:-}" ]; then TARGETS+=("$c~base"); fi
done
WORKS=(tar extract rsync)
[ "$HAVE_TS" = 1 ] && WORKS+=(tensorstore) || echo "tensorstore not installed: its workload is left out" >&2
for round in $(seq "$ROUNDS"); do
  for w in "${WORKS[@]}"; do
    for target in "${TARGETS[@]}"; do run "$target" "$w"; done
  done
done

med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.3f}')" $1; }
printf "\n203 files, %s MB; medians of %s rounds; %s\n" \
  "$(du -sm "$SRC" | cut -f1)" "$ROUNDS" "$(date -u +%FT%TZ)"
printf "%-12s %-14s %9s %8s   %s\n" workload target "median s" "× plain" runs
for w in "${WORKS[@]}"; do
  p=$(med "${T[plain.$w]}")
  for target in "${TARGETS[@]}"; do
    m=$(med "${T[$target.$w]}")
    printf "%-12s %-14s %9s %8s  %s\n" "$w" "$target" "$m" \
      "$(python3 -c "print(f'{$m/$p:.2f}')")" "${T[$target.$w]}"
  done
done
rm -rf "$WORK/mnt"
