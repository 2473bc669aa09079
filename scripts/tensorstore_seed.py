#!/usr/bin/env python3
"""The seeds' strategies run by TensorStore itself, on plain disk: the baseline
the mounted layouts are compared with.

  tensorstore_seed.py MODEL.safetensors WORKDIR [STRATEGY ...]

For each strategy (default: all seven): write every tensor of MODEL as a Zarr
array with the strategy's chunks, codec, stored dtype, concurrency and index
(TensorStore's `file` kvstore, which fsyncs what it writes; `ocdbt` over it
for ts-ocdbt), drop the page cache, read every array back, and print one JSON
line: {"strategy", "save_s", "load_s", "bytes", "files"}. Cold loads need
root (the page cache is dropped through /proc/sys/vm/drop_caches).
"""
import json
import os
import shutil
import sys
import time

import numpy as np
import tensorstore as ts
from peer_bench import drop_caches, footprint
from safetensors.numpy import load_file

MIB = 1 << 20


def choose_chunk_shape(shape, target_elements):
    """T5X's choose_chunk_shape: shrink the largest dimension to its next
    smaller divisor until the chunk fits the target."""
    shape = list(shape)
    divisors = [[d for d in range(1, n + 1) if n % d == 0] for n in shape]
    chunk = shape[:]
    while np.prod(chunk) > target_elements and any(c > 1 for c in chunk):
        i = max(range(len(chunk)), key=lambda k: (chunk[k], -k))
        smaller = [d for d in divisors[i] if d < chunk[i]]
        chunk[i] = smaller[-1] if smaller else 1
    return chunk


def basic(shape):
    return [min(64, d) for d in shape]


STRATEGIES = {
    # name: (chunk rule, codec, stored dtype, concurrency, ocdbt)
    "tensorstore-basic": (basic, None, None, 1, False),
    "t5x": (lambda s, it: choose_chunk_shape(s, 64 * MIB // it), "gzip", None, 128, False),
    "ts-concurrency": (basic, None, None, 128, False),
    "ts-chunks": (lambda s, it: choose_chunk_shape(s, 262144), None, None, 1, False),
    "ts-compression": (basic, "gzip", None, 1, False),
    "ts-float16": (basic, None, "<f2", 1, False),
    "ts-ocdbt": (basic, None, None, 1, True),
}


def spec(path, arr, strategy, create):
    rule, codec, stored, conc, ocdbt = STRATEGIES[strategy]
    shape = list(arr.shape) or [1]
    itemsize = np.dtype(stored or arr.dtype).itemsize
    chunks = rule(shape, itemsize) if rule is not basic else basic(shape)
    kv = {"driver": "file", "path": path}
    if ocdbt:
        kv = {"driver": "ocdbt", "base": {"driver": "file", "path": os.path.dirname(path)}, "path": os.path.basename(path) + "/"}
    s = {
        "driver": "zarr",
        "kvstore": kv,
        "context": {
            "file_io_concurrency": {"limit": conc},
            "data_copy_concurrency": {"limit": conc},
        },
    }
    if create:
        s["metadata"] = {
            "shape": shape,
            "chunks": chunks,
            "dtype": stored or arr.dtype.str,
            "compressor": {"id": "gzip", "level": 1} if codec == "gzip" else None,
        }
        s["create"] = True
        s["delete_existing"] = True
    return s


def save(model, root, strategy):
    """Writes every tensor of `model` as a Zarr array under `root` and waits
    until all writes are done (TensorStore's `file` kvstore fsyncs them)."""
    stored = STRATEGIES[strategy][2]
    futures = []
    for i, (name, arr) in enumerate(model.items()):
        path = os.path.join(root, f"t{i:05d}")
        data = arr.astype(stored) if stored else arr
        store = ts.open(spec(path, arr, strategy, True)).result()
        futures.append(store.write(data.reshape(list(arr.shape) or [1])))
    for f in futures:
        f.result()


def load(model, root, strategy):
    """Reads back every array `save` wrote, by the source tensor's name."""
    loaded = {}
    for i, (name, arr) in enumerate(model.items()):
        path = os.path.join(root, f"t{i:05d}")
        loaded[name] = ts.open(spec(path, arr, strategy, False)).result().read().result()
    return loaded


def run(model, work, strategy):
    root = os.path.join(work, strategy)
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    start = time.perf_counter()
    save(model, root, strategy)
    os.sync()
    save_s = time.perf_counter() - start
    size, files = footprint(root)
    drop_caches()
    start = time.perf_counter()
    loaded = load(model, root, strategy)
    load_s = time.perf_counter() - start
    for name, arr in model.items():
        if loaded[name].size != max(arr.size, 1):
            raise SystemExit(f"{strategy}: {name} read back {loaded[name].size} elements")
    shutil.rmtree(root, ignore_errors=True)
    return {"strategy": strategy, "save_s": save_s, "load_s": load_s, "bytes": size, "files": files}


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    model = load_file(sys.argv[1])
    work = sys.argv[2]
    names = sys.argv[3:] or list(STRATEGIES)
    for n in names:
        if n not in STRATEGIES:
            print(f"unknown strategy {n}; known: {', '.join(STRATEGIES)}", file=sys.stderr)
            return 2
    for n in names:
        print(json.dumps(run(model, work, n)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
