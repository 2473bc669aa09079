#!/usr/bin/env bash
# Save and cold-load one safetensors checkpoint with Python's safetensors
# through several mount configs, beside the plain disk, in one run.
# Save time covers save_file + fsync + unmount (the commit); load time is a
# cold safe_open of every tensor after dropping the page cache.
#
#   scripts/bench-formats.sh [SIZE_MIB] [CONFIGS...]
set -euo pipefail
SIZE_MIB=${1:-1024}; shift || true
CONFIGS=("${@:-tensorstore-basic ts-chunks t5x}")
read -r -a CONFIGS <<< "${CONFIGS[*]}"
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CKPTFS_BIN:-$ROOT/target/release/ckptfs}
WORK=$(mktemp -d /var/tmp/ckptfs-fmt.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PY="$ROOT/scripts/safetensors_timing.py"
drop() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
printf "%-20s %8s %8s %10s %8s\n" layout "save s" "load s" "backing MB" files
one() { # name config
  local name=$1 cfg=$2 b="$WORK/$1-b" m="$WORK/$1-m"
  mkdir -p "$b" "$m"
  if [ "$cfg" != plain ]; then "$BIN" mount --daemon --log "$WORK/$name.log" --config "$ROOT/mount-configs/$cfg.toml" "$b" "$m" 2>/dev/null; else m=$b; fi
  python3 "$PY" make "$WORK/src.npz" "$SIZE_MIB" >/dev/null
  drop
  local save t0 t1 load
  save=$(python3 "$PY" save "$WORK/src.npz" "$m/model.safetensors")
  t0=$(now); if [ "$cfg" != plain ]; then "$BIN" umount "$m"; fi; t1=$(now)
  drop
  if [ "$cfg" != plain ]; then "$BIN" mount --daemon --log "$WORK/$name.log" --config "$ROOT/mount-configs/$cfg.toml" "$b" "$m" 2>/dev/null; fi
  load=$(python3 "$PY" load "$m/model.safetensors" "$WORK/src.npz")
  if [ "$cfg" != plain ]; then "$BIN" umount "$m"; fi
  local mb files
  mb=$(du -sm --exclude=.ckptfs "$b" | cut -f1); files=$(find "$b" -type f -not -path '*/.ckptfs/*' | wc -l)
  printf "%-20s %8.2f %8.2f %10s %8s\n" "$name" "$(python3 -c "print($save + $t1 - $t0)")" "$load" "$mb" "$files"
  rm -rf "$b" "$m"
}
one plain plain
for c in "${CONFIGS[@]}"; do one "$c" "$c"; done
