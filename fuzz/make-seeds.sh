#!/usr/bin/env bash
# Writes the seed corpus: checkpoints saved by the real tools
# (scripts/checkpoint_io.py, safetensors, torch.save), the hostile files of the
# format tests, the pickles inside the torch files, and the shipped configs.
# A planner seed is two bytes (how the file is cut into writes) + the file.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/real" "$tmp/ref" "$tmp/small"
python3 ../scripts/checkpoint_io.py save "$tmp/real" --big-bytes 4000
python3 ../scripts/checkpoint_io.py hostile "$tmp/real" "$tmp/ref"
python3 - "$tmp/small" <<'PY'
import os, sys
import numpy as np
import torch
from safetensors.numpy import save_file
d = sys.argv[1]
save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.arange(3, dtype=np.int64)},
          os.path.join(d, "small.safetensors"))
save_file({"h": np.ones((4, 2), dtype=np.float16)}, os.path.join(d, "one.safetensors"),
          metadata={"format": "pt"})
torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.arange(3)},
           os.path.join(d, "small.pt"))
torch.save([torch.ones(2, dtype=torch.bfloat16), {"n": 1, "s": "x"}], os.path.join(d, "list.pt"))
PY
rm -rf corpus/safetensors/seed-* corpus/torch_zip/seed-* corpus/pickle/seed-* corpus/config/seed-*
mkdir -p corpus/safetensors corpus/torch_zip corpus/pickle corpus/config
seed() { # seed TARGET NAME PREFIX FILE
    { printf "$3"; cat "$4"; } >"corpus/$1/seed-$2"
}
for f in "$tmp"/real/*.safetensors "$tmp"/small/*.safetensors; do
    n=$(basename "$f")
    seed safetensors "$n" '\x00\x00' "$f"
    seed safetensors "$n-w7" '\x07\x00' "$f"
done
for f in "$tmp"/real/*.pt "$tmp"/small/*.pt; do
    n=$(basename "$f")
    seed torch_zip "$n" '\x00\x00' "$f"
    seed torch_zip "$n-w7" '\x07\x00' "$f"
    python3 - "$f" "corpus/pickle/seed-$n.pkl" <<'PY' || true
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("data.pkl"))
    open(sys.argv[2], "wb").write(z.read(name))
PY
done
for f in ../mount-configs/*.toml; do
    cp "$f" "corpus/config/seed-$(basename "$f")"
done
# The store decoders: bodies of a real OCDBT database's records (a unit test
# writes them), and the file manifests and packed manifest a real mount
# wrote (root: it mounts with ../target/release/ckptfs).
rm -rf corpus/store/seed-*
mkdir -p corpus/store
CKPTFS_FUZZ_SEEDS="$PWD/corpus/store" cargo test --release --quiet --manifest-path ../Cargo.toml \
    --lib real_records_decode_and_seed_the_store_fuzzer
bin=../target/release/ckptfs
mkdir -p "$tmp/backing" "$tmp/mnt"
"$bin" mount -d -c ../mount-configs/ts-ocdbt.toml "$tmp/backing" "$tmp/mnt"
cp "$tmp"/real/* "$tmp/mnt/" && head -c 70000 /dev/urandom >"$tmp/mnt/raw.bin"
"$bin" umount "$tmp/mnt"
i=0
for f in $(find "$tmp/backing" -name zarr.json | sort); do
    seed store "zarr-$i.json" '\x04' "$f"
    i=$((i + 1))
done
seed store manifest-mounted '\x05' "$tmp/backing/manifest.ocdbt"
ls corpus/* | head -100
