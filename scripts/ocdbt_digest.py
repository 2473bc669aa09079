#!/usr/bin/env python3
"""Reads every key and value of an OCDBT database with TensorStore's own
`ocdbt` kvstore, over a local directory (`file`) or an object store (`s3`),
and prints one line: `KEYS keys BYTES bytes SHA256` (over the sorted keys and
their values). Two copies of one database print the same line.

    ocdbt_digest.py DIR
    ocdbt_digest.py s3://BUCKET/PREFIX     (endpoint and keys from AWS_*)

Exit status 1 on any error."""
import hashlib
import os
import sys

import tensorstore as ts


def base(where):
    if where.startswith("s3://"):
        bucket, _, prefix = where[len("s3://"):].partition("/")
        return {
            "driver": "s3",
            "bucket": bucket,
            "endpoint": os.environ["AWS_ENDPOINT_URL"],
            "aws_region": os.environ.get("AWS_REGION", "garage"),
            "path": prefix.strip("/") + "/" if prefix.strip("/") else "",
        }
    return {"driver": "file", "path": os.path.abspath(where) + "/"}


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    kv = ts.KvStore.open({"driver": "ocdbt", "base": base(sys.argv[1])}).result()
    keys = sorted(kv.list().result())
    h = hashlib.sha256()
    total = 0
    # All reads in flight at once: one at a time, each pays a round trip.
    reads = [kv.read(k) for k in keys]
    for k, r in zip(keys, reads):
        v = r.result().value
        total += len(v)
        h.update(len(k).to_bytes(8, "little") + k + len(v).to_bytes(8, "little") + v)
    print(f"{len(keys)} keys {total} bytes {h.hexdigest()}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # TensorStore's errors: one line, exit 1
        print(f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        sys.exit(1)
