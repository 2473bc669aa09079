#!/usr/bin/env python3
"""A checkpoint on the S3 test cluster, two ways, interleaved, medians:

  ckptfs       save_file() into a writer mount of s3://BUCKET/PREFIX (each
               config of --configs), then fsync (it returns once the store
               holds the file); cold load: a fresh read-only s3:// mount (no
               block cache), load_file() of every tensor.
  tensorstore  the same layout (zarr, min(64, dim) chunks, one OCDBT
               database) written and read by TensorStore over its own `s3`
               kvstore, as the seeds do (scripts/tensorstore_seed.py).

    bench_s3.py [--layers N] [--runs N] [--configs a,b] [--work DIR] [--bin PATH]

The model is OpenLLaMA-3B's shapes (first N layers, f32 values drawn as f16,
as `ckptfs bench --preset openllama-3b --f16-values`). Endpoint, keys and
bucket come from `scripts/s3-cluster.sh env`. Needs root (mounts, dropping
the page cache). Prints one line per run and a table of medians; every load
is checked against the model, outside the timings."""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import tensorstore as ts
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tensorstore_seed as seed  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model(layers):
    h, inter, vocab = 3200, 8640, 32000
    shapes = {"model.embed_tokens.weight": (vocab, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        for n in "qkvo":
            shapes[p + f"self_attn.{n}_proj.weight"] = (h, h)
        shapes[p + "mlp.gate_proj.weight"] = (inter, h)
        shapes[p + "mlp.up_proj.weight"] = (inter, h)
        shapes[p + "mlp.down_proj.weight"] = (h, inter)
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    shapes["lm_head.weight"] = (vocab, h)
    rng = np.random.default_rng(0)
    return {k: (rng.standard_normal(s, dtype=np.float32) * 0.02).astype(np.float16).astype(np.float32) for k, s in shapes.items()}


def s3_base(prefix):
    return {
        "driver": "s3",
        "bucket": os.environ["CKPTFS_S3_BUCKET"],
        "endpoint": os.environ["AWS_ENDPOINT_URL"],
        "aws_region": os.environ.get("AWS_REGION", "garage"),
        "path": prefix.strip("/") + "/",
    }


def ts_spec(prefix, i, arr, create):
    """tensorstore_seed's ts-ocdbt spec with the database on S3, and its
    context apart: every array of one database must share one context, or
    each commits the manifest on its own (and on a store that ignores
    conditional PUTs, such as Garage, one overwrites another's)."""
    s = seed.spec(f"/unused/t{i:05d}", arr, "ts-ocdbt", create)
    s["kvstore"] = {"driver": "ocdbt", "base": s3_base(prefix), "path": f"t{i:05d}/"}
    return s, ts.Context(s.pop("context"))


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def remove_prefix(prefix):
    kv = ts.KvStore.open(s3_base(prefix)).result()
    kv.delete_range(ts.KvStore.KeyRange()).result()


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, CKPTFS_LOG="warn"))


def daemon_hwm_mib(mnt):
    """Peak RSS (VmHWM) of the daemon serving `mnt`, in MiB."""
    with open(f"{mnt}/.ckptfs/stats") as f:
        pid = json.load(f)["daemon_pid"]
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def check(m, loaded, who):
    for k, v in m.items():
        if not np.array_equal(np.asarray(loaded[k]).reshape(v.shape), v):
            raise SystemExit(f"{who}: {k} read back differs")


def run_ckptfs(m, a, run, config):
    """Saved through a writer mount of the prefix: save_file(), then fsync,
    which returns once the store holds the file; loaded cold through a
    fresh read-only mount without block cache."""
    cache, mnt = f"{a.work}/cache", f"{a.work}/mnt"
    prefix = f"bench-ckptfs-{config}-{os.getpid()}-{run}"
    url = f"s3://{os.environ['CKPTFS_S3_BUCKET']}/{prefix}"
    subprocess.run(["rm", "-rf", cache], check=True)
    os.makedirs(mnt, exist_ok=True)
    drop_caches()
    t0 = time.perf_counter()
    sh(a.bin, "mount", "--daemon", "--config", f"{REPO}/mount-configs/{config}.toml",
       "--cache-dir", cache, url, mnt)
    save_file(m, f"{mnt}/model.safetensors")
    fd = os.open(f"{mnt}/model.safetensors", os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    t1 = time.perf_counter()
    with open(f"{mnt}/.ckptfs/stats") as f:
        published = json.load(f)["publish"]
    save_rss = daemon_hwm_mib(mnt)
    sh(a.bin, "umount", mnt)
    t2 = time.perf_counter()
    subprocess.run(["rm", "-rf", cache], check=True)
    drop_caches()
    t3 = time.perf_counter()
    sh(a.bin, "mount", "--daemon", "--read-only", "--cache-size", "0", url, mnt)
    loaded = load_file(f"{mnt}/model.safetensors")
    t4 = time.perf_counter()
    load_rss = daemon_hwm_mib(mnt)
    check(m, loaded, "ckptfs")
    del loaded
    sh(a.bin, "umount", mnt)
    remove_prefix(prefix)
    return {"save_s": t1 - t0, "umount_s": t2 - t1, "load_s": t4 - t3,
            "publishes": published["publishes"], "uploaded_gb": published["uploaded_bytes"] / 1e9,
            "save_daemon_rss_mib": save_rss, "load_daemon_rss_mib": load_rss}


def run_tensorstore(m, a, run):
    prefix = f"bench-ts-{os.getpid()}-{run}"
    drop_caches()
    t0 = time.perf_counter()
    futures = []
    ctx = None
    for i, arr in enumerate(m.values()):
        spec, own = ts_spec(prefix, i, arr, True)
        ctx = ctx or own
        store = ts.open(spec, context=ctx).result()
        futures.append(store.write(arr))
    for f in futures:
        f.result()
    t1 = time.perf_counter()
    drop_caches()
    t2 = time.perf_counter()
    ctx = None
    reads = {}
    for i, (k, arr) in enumerate(m.items()):
        spec, own = ts_spec(prefix, i, arr, False)
        ctx = ctx or own
        reads[k] = ts.open(spec, context=ctx).result().read()
    loaded = {k: r.result() for k, r in reads.items()}
    t3 = time.perf_counter()
    check(m, loaded, "tensorstore")
    del loaded
    remove_prefix(prefix)
    return {"save_s": t1 - t0, "load_s": t3 - t2}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/ckptfs-bench-s3")
    ap.add_argument("--bin", default=f"{REPO}/target/release/ckptfs")
    ap.add_argument("--configs", default="ts-ocdbt,default",
                    help="mount configs saved through a writer s3:// mount, comma-separated")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    m = model(a.layers)
    gb = sum(v.nbytes for v in m.values()) / 1e9
    print(f"model: {len(m)} tensors, {gb:.2f} GB; cluster {os.environ['AWS_ENDPOINT_URL']}", flush=True)
    ts_name = "tensorstore ts-ocdbt on s3"
    configs = a.configs.split(",")
    results = {f"ckptfs s3-{c}": [] for c in configs}
    results[ts_name] = []
    for run in range(1, a.runs + 1):
        # Interleaved, the order turned every run.
        order = [(f"ckptfs s3-{c}", lambda m, a, run, c=c: run_ckptfs(m, a, run, c)) for c in configs]
        order.append((ts_name, run_tensorstore))
        k = (run - 1) % len(order)
        for name, fn in order[k:] + order[:k]:
            r = fn(m, a, run)
            results[name].append(r)
            print(f"{name} run {run}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.items()), flush=True)
    med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in results.items()}
    t = med[ts_name]
    print(f"\nmedians of {a.runs} runs, {gb:.2f} GB (ckptfs save: until fsync returned, the store holding the file):")
    print("| | save s | cold load s | save GB/s | load GB/s | save × TensorStore | load × TensorStore |")
    print("|---|---|---|---|---|---|---|")
    for n, r in med.items():
        print(f"| {n} | {r['save_s']:.2f} | {r['load_s']:.2f} | {gb / r['save_s']:.2f} | {gb / r['load_s']:.2f} "
              f"| {r['save_s'] / t['save_s']:.2f} | {r['load_s'] / t['load_s']:.2f} |")
    print(json.dumps({"medians": med, "runs": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
