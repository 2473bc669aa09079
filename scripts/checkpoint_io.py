#!/usr/bin/env python3
"""Save and check checkpoints with the real tools (numpy, safetensors, torch,
tensorstore, zarr). Used by the tests; each command exits non-zero with a
reason on any mismatch.

  checkpoint_io.py save DIR [--big-bytes N]   write model.safetensors and model.pt into DIR
  checkpoint_io.py compare DIR REFDIR [--lossy float16|bfloat16]
                                             load both copies and compare tensors
  checkpoint_io.py arrays BACKING REFDIR      open every tensor array of the backing
                                             store in TensorStore and zarr-python
  checkpoint_io.py hostile DIR REFDIR         write malformed files into DIR and REFDIR
"""
import glob
import json
import os
import sys
import zipfile

import numpy as np


def tensors(big_bytes):
    rng = np.random.default_rng(1234)
    big = max(1, big_bytes // 4)
    rows = max(1, big // 1000)
    return {
        "f32": rng.standard_normal((257, 129)).astype(np.float32),
        "f16": rng.standard_normal((3, 70, 9)).astype(np.float16),
        "f64": rng.standard_normal((1000,)),
        "i64": np.arange(-50, 50, dtype=np.int64).reshape(10, 10),
        "i32": np.arange(7, dtype=np.int32),
        "u8": np.arange(200, dtype=np.uint8),
        "bool": rng.standard_normal(33) > 0,
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big": rng.standard_normal((rows, 1000)).astype(np.float32),
    }


def save(d, big_bytes):
    import torch
    from safetensors.numpy import save_file

    t = tensors(big_bytes)
    save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "np"})
    sd = {k: torch.from_numpy(v.copy()) for k, v in t.items()}
    sd["bf16"] = torch.from_numpy(t["f32"][:5].copy()).bfloat16()
    sd["view"] = sd["big"][1:3]  # shares a storage
    torch.save(sd, os.path.join(d, "model.pt"))


def fail(msg):
    print("FAIL:", msg, file=sys.stderr)
    sys.exit(1)


def rounded(x, lossy):
    import torch

    if lossy is None or x.dtype not in (torch.float32, torch.float64):
        return x
    dt = torch.float16 if lossy == "float16" else torch.bfloat16
    return x.to(dt).to(x.dtype)


def compare(d, ref, lossy):
    import torch
    from safetensors import safe_open

    a = os.path.join(d, "model.safetensors")
    b = os.path.join(ref, "model.safetensors")
    with safe_open(a, "pt") as fa, safe_open(b, "pt") as fb:
        if sorted(fa.keys()) != sorted(fb.keys()):
            fail("safetensors keys differ")
        if fa.metadata() != fb.metadata():
            fail("safetensors metadata differs")
        for k in fb.keys():
            x, y = fa.get_tensor(k), rounded(fb.get_tensor(k), lossy)
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                fail(f"safetensors tensor {k} differs")
    for mmap in (False, True):
        x = torch.load(os.path.join(d, "model.pt"), mmap=mmap)
        y = torch.load(os.path.join(ref, "model.pt"))
        for k in y:
            if not torch.equal(x[k], rounded(y[k], lossy)):
                fail(f"torch tensor {k} differs (mmap={mmap})")
    bad = zipfile.ZipFile(os.path.join(d, "model.pt")).testzip()
    if bad is not None:
        fail(f"zip CRC of {bad} is wrong")
    print("compare ok")


def tensor_arrays(backing):
    """(array metadata, TensorStore kvstore spec) of each tensor array of
    backing/model.safetensors: files under it, or, with the packed index,
    keys of the OCDBT database at the backing root, found with TensorStore's
    own ocdbt driver from the file's id and generation in its manifest."""
    import tensorstore as ts

    fdir = os.path.join(backing, "model.safetensors")
    root = os.path.abspath(backing)
    while root != "/" and not os.path.exists(os.path.join(root, "manifest.ocdbt")):
        root = os.path.dirname(root)
    if os.path.exists(os.path.join(fdir, "zarr.json")):
        m = json.load(open(os.path.join(fdir, "zarr.json")))["attributes"]["ckptfs"]
    else:
        # The database's catalog is the record of the names: the file's id
        # is the value of its `.ns/<path>` key, its manifest `<id>/zarr.json`.
        kv = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{root}/"}).result()
        rel = os.path.relpath(os.path.abspath(fdir), root)
        entry = kv.read(f".ns/{rel}").result().value
        if not entry:
            fail(f"{rel}: no such name in the ocdbt database's catalog")
        fid = json.loads(entry)["id"]
        doc = json.loads(kv.read(f"{fid}/zarr.json").result().value)
        m = doc["attributes"]["ckptfs"]
    if not m.get("packed"):
        for meta in glob.glob(os.path.join(fdir, "g*", "t*", "zarr.json")):
            d = os.path.dirname(meta)
            yield json.load(open(meta)), {"driver": "file", "path": d}
        return
    kv = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{root}/"}).result()
    prefix = f"{m['id']}/g{m['generation']}/"
    keys = [k.decode() for k in kv.list().result()]
    metas = [k for k in keys if k.startswith(prefix + "t") and k.endswith("/zarr.json")]
    if not metas:
        fail(f"no tensor arrays under {prefix} in the ocdbt database ({len(keys)} keys)")
    for k in metas:
        meta = json.loads(kv.read(k).result().value)
        path = k[: -len("zarr.json")]
        yield meta, {"driver": "ocdbt", "base": f"file://{root}/", "path": path}


def zarr_python_read(kvstore):
    """The array read by zarr-python, from a scratch copy of its keys: a
    directory's files, or, inside an OCDBT database (which zarr-python cannot
    open), the keys TensorStore's ocdbt driver returns. zarr-python has no
    bfloat16: such an array is read as the uint16 bit patterns it stores."""
    import shutil
    import tempfile

    import tensorstore as ts
    import zarr

    with tempfile.TemporaryDirectory() as tmp:
        if kvstore["driver"] == "file":
            shutil.copytree(kvstore["path"], tmp, dirs_exist_ok=True)
        else:
            kv = ts.KvStore.open(kvstore).result()
            for k in kv.list().result():
                dst = os.path.join(tmp, k.decode())
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(dst, "wb") as f:
                    f.write(kv.read(k).result().value)
        meta_path = os.path.join(tmp, "zarr.json")
        meta = json.load(open(meta_path))
        if meta["data_type"] == "bfloat16":
            meta["data_type"], meta["fill_value"] = "uint16", 0
            json.dump(meta, open(meta_path, "w"))
        return zarr.open_array(tmp, mode="r")[...]


def arrays(backing, ref):
    """Every tensor array read back by TensorStore and zarr-python equals the
    reference tensor. Arrays with the `numcodecs.shuffle` filter (layouts with
    `shuffle = true`) are outside TensorStore's codecs: zarr-python alone."""
    import tensorstore as ts
    from safetensors.numpy import load_file

    want = load_file(os.path.join(ref, "model.safetensors"))
    seen = shuffled = 0
    for meta, kvstore in tensor_arrays(backing):
        attrs = meta["attributes"]["ckptfs"]
        name = attrs["tensor"]
        exp = want[name]
        stored = {"F16": np.float16, "F32": np.float32, "F64": np.float64}.get(attrs["stored_dtype"])
        if stored is not None and exp.dtype != stored:
            exp = exp.astype(stored)
        codecs = [c["name"] for c in meta["codecs"]]
        if "numcodecs.shuffle" in codecs:
            shuffled += 1
            got = zarr_python_read(kvstore)
            if attrs["stored_dtype"] == "BF16":
                import ml_dtypes  # comes with tensorstore

                exp = exp.astype(ml_dtypes.bfloat16).view(np.uint16)
            if got.shape != exp.shape or not np.array_equal(got, exp):
                fail(f"zarr-python read of shuffled {name} differs")
        else:
            got = ts.open({"driver": "zarr3", "kvstore": kvstore}).result().read().result()
            if attrs["stored_dtype"] == "BF16" and exp.dtype != got.dtype:
                exp = exp.astype(got.dtype)  # ml_dtypes.bfloat16, rounded like torch
            if got.shape != exp.shape or not np.array_equal(got, exp):
                fail(f"tensorstore read of {name} differs")
            if attrs["stored_dtype"] != "BF16":
                z = zarr_python_read(kvstore)
                if not np.array_equal(z, exp):
                    fail(f"zarr-python read of {name} differs")
        lo, hi = attrs["byte_range"]
        if hi - lo != want[name].nbytes:
            fail(f"byte_range of {name} is wrong")
        seen += 1
    if seen < 6:
        fail(f"only {seen} tensor arrays found")
    print(f"arrays ok: {seen} ({shuffled} byte-shuffled)")


def hostile(d, ref):
    def st(header, data=b""):
        h = json.dumps(header).encode()
        return len(h).to_bytes(8, "little") + h + data

    f = {
        "len_past_end.safetensors": (10**6).to_bytes(8, "little") + b'{"a":1}',
        "overlap.safetensors": st({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
        "traversal.safetensors": st({"../../x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                     "a/b\u0000c": {"dtype": "U8", "shape": [3], "data_offsets": [16, 19]}},
                                    bytes(range(19))),
        "overflow.safetensors": st({"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 4]}}, bytes(4)),
        "short.safetensors": st({"a": {"dtype": "F32", "shape": [1000], "data_offsets": [0, 4000]}}, bytes(100)),
    }
    evil = b"\x80\x02cos\nsystem\nq\x00X\x0e\x00\x00\x00touch /tmp/pwnq\x01\x85q\x02Rq\x03."
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", evil)
        z.writestr("archive/data/0", bytes(64))
    f["evil.pt"] = buf.getvalue()
    good = open(os.path.join(d, "model.pt"), "rb").read() if os.path.exists(os.path.join(d, "model.pt")) else buf.getvalue()
    f["truncated.pt"] = good[: len(good) // 2]
    for name, data in f.items():
        with open(os.path.join(d, name), "wb") as out:
            out.write(data)
        with open(os.path.join(ref, name), "wb") as out:
            out.write(data)
    print("hostile ok")


def main():
    cmd = sys.argv[1]
    if cmd == "save":
        big = int(sys.argv[sys.argv.index("--big-bytes") + 1]) if "--big-bytes" in sys.argv else 1 << 20
        save(sys.argv[2], big)
    elif cmd == "compare":
        lossy = sys.argv[sys.argv.index("--lossy") + 1] if "--lossy" in sys.argv else None
        compare(sys.argv[2], sys.argv[3], lossy)
    elif cmd == "arrays":
        arrays(sys.argv[2], sys.argv[3])
    elif cmd == "hostile":
        hostile(sys.argv[2], sys.argv[3])
    else:
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
