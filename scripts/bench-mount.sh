#!/usr/bin/env bash
# Sequential write (with fsync) and cold sequential read of one large file:
# plain backing disk vs ckptfs `passthrough` vs a chunked lossless config,
# all in one run, each as a ratio to plain.
#
#   scripts/bench-mount.sh [SIZE_MIB] [WORKDIR]
#
# ROUNDS (default 3) rounds run every layout in turn, so slow spells of a
# shared disk hit all layouts alike; the table shows medians.
#
# Needs root (mount, drop_caches). Cold reads drop the page cache first.
set -euo pipefail
SIZE_MIB=${1:-2048}
WORK=${2:-$(mktemp -d /var/tmp/ckptfs-bench.XXXXXX)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CKPTFS_BIN:-$ROOT/target/release/ckptfs}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --quiet)
mkdir -p "$WORK"
SRC=/dev/shm/ckptfs-bench-src.bin
if [ ! -f "$SRC" ] || [ "$(stat -c %s "$SRC")" -ne $((SIZE_MIB * 1048576)) ]; then
  head -c $((SIZE_MIB * 1048576)) /dev/urandom > "$SRC"
fi

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
mbps() { python3 -c "print(f'{$SIZE_MIB*1.048576/($2-$1):.0f}')"; }

mount_ckptfs() { # config backing mnt [extra mount args]
  "$BIN" mount --daemon --log "$WORK/$(basename "$2").log" --config "$1" "${@:4}" "$2" "$3" 2>/dev/null
}

declare -A W R
run() { # name target-dir [config [extra mount args]]
  local name=$1 dir=$2 cfg=${3:-}
  local extra=("${@:4}")
  local backing="$WORK/$name-backing" mnt="$WORK/$name-mnt"
  rm -rf "$backing" "$mnt"; mkdir -p "$mnt"
  if [ -n "$cfg" ]; then mount_ckptfs "$cfg" "$backing" "$mnt" "${extra[@]}"; dir=$mnt; else mkdir -p "$backing"; dir=$backing; fi
  drop_caches
  local t0=$(now)
  dd if="$SRC" of="$dir/big.bin" bs=1M conv=fsync status=none
  local t1=$(now)
  if [ -n "$cfg" ]; then "$BIN" umount "$mnt"; drop_caches; mount_ckptfs "$cfg" "$backing" "$mnt" "${extra[@]}"; else drop_caches; fi
  local t2=$(now)
  dd if="$dir/big.bin" of=/dev/null bs=1M status=none
  local t3=$(now)
  cmp -s "$SRC" "$dir/big.bin" || { echo "$name: data differs" >&2; exit 1; }
  [ -n "$cfg" ] && "$BIN" umount "$mnt"
  W[$name]="${W[$name]:-} $(mbps "$t0" "$t1")"; R[$name]="${R[$name]:-} $(mbps "$t2" "$t3")"
  rm -rf "$backing"
}

ROWS=(plain passthrough chunked default default-prof-off default-prof-full)
for round in $(seq "${ROUNDS:-3}"); do
  run plain ""
  run passthrough "" "$ROOT/mount-configs/passthrough.toml"
  run chunked "" "$ROOT/mount-configs/chunked.toml"
  run default "" "$ROOT/mount-configs/default.toml"
  # Profiler overhead: the same layout with profiling off and full.
  run default-prof-off "" "$ROOT/mount-configs/default.toml" --profile off
  run default-prof-full "" "$ROOT/mount-configs/default.toml" --profile full
done
med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float, sys.argv[1:])):.0f}')" $1; }
printf "\n%s MiB, median of %s rounds, %s\n" "$SIZE_MIB" "${ROUNDS:-3}" "$(date -u +%FT%TZ)"
printf "%-18s %12s %8s %14s %8s\n" layout "write MB/s" "× plain" "cold read MB/s" "× plain"
for n in "${ROWS[@]}"; do
  w=$(med "${W[$n]}"); r=$(med "${R[$n]}"); wp=$(med "${W[plain]}"); rp=$(med "${R[plain]}")
  printf "%-18s %12s %8s %14s %8s   (write runs:%s; read runs:%s)\n" "$n" "$w" \
    "$(python3 -c "print(f'{$w/$wp:.2f}')")" "$r" "$(python3 -c "print(f'{$r/$rp:.2f}')")" "${W[$n]}" "${R[$n]}"
done
