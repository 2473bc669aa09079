#!/usr/bin/env python3
"""TensorStore against the S3 test cluster (scripts/s3-cluster.sh): writes or
reads a zarr3 array inside an OCDBT database on TensorStore's own `s3` kvstore,
the way the seeds save a checkpoint to object storage.

    s3_tensorstore.py write PREFIX SEED MIB [--chunk N]
    s3_tensorstore.py read PREFIX SEED MIB

The array holds MIB MiB of float32 values drawn from SEED, so `read` checks
every value against what `write` stored. Endpoint, bucket and keys come from
the environment `s3-cluster.sh up` prints (AWS_*, CKPTFS_S3_BUCKET). Prints one
line: the bytes moved, the seconds and the rate. Exit status 1 on any error
(TensorStore's own, or a mismatch)."""
import argparse
import os
import sys
import time

import numpy as np
import tensorstore as ts


def spec(prefix, create, chunk):
    kv = {
        "driver": "ocdbt",
        "base": {
            "driver": "s3",
            "bucket": os.environ["CKPTFS_S3_BUCKET"],
            "endpoint": os.environ["AWS_ENDPOINT_URL"],
            "aws_region": os.environ.get("AWS_REGION", "garage"),
            "path": prefix.rstrip("/") + "/",
        },
    }
    # Bounded retries: with the cluster down, a save fails in seconds, not minutes.
    retries = {"max_retries": 4, "initial_delay": "0.2s", "max_delay": "2s"}
    s = {
        "driver": "zarr3",
        "kvstore": kv,
        "path": "weights/",
        "context": {"s3_request_retries": retries},
    }
    if create:
        s["create"] = True
        s["metadata"] = {
            "shape": None,  # filled in by the caller
            "data_type": "float32",
            "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [chunk, 1024]}},
        }
    return s


def values(seed, mib):
    rows = mib * 256  # 1024 float32 per row: 4 KiB, 256 rows per MiB
    return np.random.default_rng(seed).standard_normal((rows, 1024), dtype=np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("op", choices=["write", "read"])
    ap.add_argument("prefix")
    ap.add_argument("seed", type=int)
    ap.add_argument("mib", type=int)
    ap.add_argument("--chunk", type=int, default=256, help="rows per chunk (1 MiB at 256)")
    a = ap.parse_args()
    want = values(a.seed, a.mib)
    start = time.monotonic()
    if a.op == "write":
        s = spec(a.prefix, True, a.chunk)
        s["metadata"]["shape"] = list(want.shape)
        arr = ts.open(s).result()
        arr.write(want).result()
    else:
        arr = ts.open(spec(a.prefix, False, a.chunk)).result()
        got = arr.read().result()
        if got.shape != want.shape or not np.array_equal(got, want):
            bad = int(np.count_nonzero(got != want)) if got.shape == want.shape else -1
            print(f"{a.prefix}: read back differs ({bad} values of {want.size}; shape {got.shape})")
            return 1
    secs = time.monotonic() - start
    print(f"{a.op} {a.prefix}: {want.nbytes} bytes in {secs:.2f} s ({want.nbytes / secs / 1e6:.0f} MB/s)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # TensorStore's errors: one line, exit 1
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        sys.exit(1)
