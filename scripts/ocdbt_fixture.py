#!/usr/bin/env python3
"""Writes the OCDBT fixtures under tests/fixtures/ocdbt/ with TensorStore's
own ocdbt driver, so tests can check that ckptfs reads what TensorStore
writes.

  defaults/    TensorStore's default config (zstd nodes, 100-byte inline
               limit, version_tree_arity_log2 4) and 20 commits, so older
               versions live in version-tree nodes.
  small_nodes/ max_decoded_node_bytes 1024: interior B+tree levels.

Each directory gets expected.json: {"generation": N, "keys": {key: hex}}
for the newest version. Run: python3 scripts/ocdbt_fixture.py
"""
import json
import os
import shutil
import sys

import tensorstore as ts

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "ocdbt"))


def value(i, n):
    return bytes((i * 31 + j * 7) % 256 for j in range(n))


def write(name, config, commits):
    d = os.path.join(ROOT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    spec = {"driver": "ocdbt", "base": "file://" + d + "/"}
    if config:
        spec["config"] = config
    kv = ts.KvStore.open(spec).result()
    expected = {}
    for c in range(commits):
        # Each transaction is one commit, hence one generation.
        txn = ts.Transaction()
        for i in range(c % 3 + 2):
            key = f"arr{c % 4}/c/{c}/{i}"
            v = value(c * 10 + i, 40 if i % 2 else 300 + c)
            kv.with_transaction(txn)[key] = v
            expected[key] = v
        if c == 5:
            del kv.with_transaction(txn)["arr1/c/1/0"]
            expected.pop("arr1/c/1/0", None)
        txn.commit_sync()
    meta = b'{"zarr_format":3,"node_type":"group"}'
    kv["zarr.json"] = meta
    expected["zarr.json"] = meta
    listed = sorted(k.decode() for k in kv.list().result())
    assert listed == sorted(expected), (listed, sorted(expected))
    for k, v in expected.items():
        assert kv[k] == v
    dump = ts.ocdbt.dump(ts.KvStore.open("file://" + d + "/").result()).result()
    generation = dump["versions"][-1]["generation_number"]
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"generation": generation, "keys": {k: v.hex() for k, v in sorted(expected.items())}}, f, indent=1)
        f.write("\n")
    print(name, "generation", generation, "keys", len(expected), file=sys.stderr)


write("defaults", None, 20)
write("small_nodes", {"max_decoded_node_bytes": 1024, "max_inline_value_bytes": 64}, 6)
