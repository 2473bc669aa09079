#!/usr/bin/env python3
"""One run of a direct peer of `ckptfs bench --compare`: the tool a user
would otherwise use, writing and reading the same model on plain disk.

  peer_bench.py PEER MODEL.safetensors WORKDIR [--leave-workdir]
  peer_bench.py --serve MODEL.safetensors   (PEER<TAB>WORKDIR lines on stdin)

PEER is `torch` (torch.save / torch.load), `safetensors` (save_file /
load_file), or `tensorstore:<layout>` with a seed layout of
tensorstore_seed.py (tensorstore-basic, t5x, ts-concurrency, ts-chunks,
ts-compression, ts-float16, ts-ocdbt): TensorStore writing every tensor as a
Zarr array itself and reading it back.

The save is timed until the data is durable (fsync of the file, or sync for
TensorStore's trees); the page cache is then dropped (root) and the load is
timed until every tensor is in memory. Every tensor is then compared with the
source, outside the timings: exactly, or within float16 rounding for
ts-float16. WORKDIR is removed at the end unless --leave-workdir (the
benchmark removes it itself, unlinking in parallel: TensorStore's basic
layouts leave 110,771 files). Prints one JSON line: {"save_s", "load_s", "bytes", "files",
"verified", "max_abs_error"}. Exit 3: the peer's Python package is missing.
"""
import json
import os
import shutil
import sys
import time

try:
    import numpy as np
except ImportError:  # reported as unavailable by main()
    np = None


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def footprint(root):
    total = files = 0
    for d, _, names in os.walk(root):
        for n in names:
            files += 1
            total += os.path.getsize(os.path.join(d, n))
    return total, files


def compare(model, loaded, tolerance):
    """Largest absolute difference; raises on a missing or misshapen tensor."""
    worst = 0.0
    for name, want in model.items():
        got = loaded[name]
        if tuple(got.shape) != tuple(want.shape) and got.size != max(want.size, 1):
            raise SystemExit(f"{name}: read back shape {got.shape}, wrote {want.shape}")
        got = np.asarray(got).reshape(want.shape)
        if tolerance == 0.0:
            if not np.array_equal(got.view(np.uint8), want.view(np.uint8)):
                raise SystemExit(f"{name}: read back different bytes")
        else:
            diff = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0.0))
            limit = tolerance * float(np.max(np.abs(want), initial=0.0)) + 1e-7
            if diff > limit:
                raise SystemExit(f"{name}: max abs error {diff} beyond {limit}")
            worst = max(worst, diff)
    return worst


def run_file_tool(tool, model, work):
    os.makedirs(work, exist_ok=True)
    if tool == "torch":
        import torch

        path = os.path.join(work, "model.bin")
        state = {k: torch.from_numpy(v) for k, v in model.items()}
        start = time.perf_counter()
        torch.save(state, path)
    else:
        from safetensors.numpy import save_file

        path = os.path.join(work, "model.safetensors")
        start = time.perf_counter()
        save_file(model, path)
    fsync_path(path)
    fsync_path(work)
    save_s = time.perf_counter() - start
    size, files = footprint(work)
    drop_caches()
    start = time.perf_counter()
    if tool == "torch":
        import torch

        loaded = torch.load(path, weights_only=True, map_location="cpu")
        loaded = {k: v.numpy() for k, v in loaded.items()}
    else:
        from safetensors.numpy import load_file

        loaded = load_file(path)
    load_s = time.perf_counter() - start
    return save_s, load_s, size, files, loaded, 0.0


def run_tensorstore(layout, model, work):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import tensorstore_seed as seed

    if layout not in seed.STRATEGIES:
        raise SystemExit(f"unknown TensorStore layout {layout}; known: {', '.join(seed.STRATEGIES)}")
    root = os.path.join(work, layout)
    os.makedirs(root, exist_ok=True)
    start = time.perf_counter()
    seed.save(model, root, layout)
    os.sync()
    save_s = time.perf_counter() - start
    size, files = footprint(root)
    drop_caches()
    start = time.perf_counter()
    loaded = seed.load(model, root, layout)
    load_s = time.perf_counter() - start
    stored = seed.STRATEGIES[layout][2]
    # float16 keeps 11 significant bits: relative error up to 2^-11.
    tolerance = 2.0**-11 if stored else 0.0
    return save_s, load_s, size, files, loaded, tolerance


class Unavailable(Exception):
    """The peer's Python package is missing, or numpy cannot hold the model."""


def check_peer(peer):
    """Imports what `peer` needs; ValueError for an unknown peer."""
    try:
        if np is None:
            raise ImportError("numpy")
        import safetensors.numpy  # noqa: F401

        if peer == "torch":
            import torch  # noqa: F401
        elif peer.startswith("tensorstore:"):
            import tensorstore  # noqa: F401
        elif peer != "safetensors":
            raise ValueError(f"unknown peer {peer}")
    except ImportError as e:
        raise Unavailable(f"peer {peer} needs a Python package that is missing: {e}")


def read_model(source):
    from safetensors.numpy import load_file

    try:
        return load_file(source)
    except (TypeError, ValueError) as e:
        # numpy has no bfloat16: the peers cannot hold a bf16 model.
        raise Unavailable(f"the peers cannot read the model with numpy: {e}")


def run_peer(peer, model, work, leave):
    """One save, cold load and check; the result line as a dict. A wrong
    tensor raises SystemExit (from compare)."""
    shutil.rmtree(work, ignore_errors=True)
    try:
        if peer.startswith("tensorstore:"):
            result = run_tensorstore(peer.split(":", 1)[1], model, work)
        else:
            result = run_file_tool(peer, model, work)
        save_s, load_s, size, files, loaded, tolerance = result
        worst = compare(model, loaded, tolerance)
    finally:
        if not leave:
            shutil.rmtree(work, ignore_errors=True)
    return {
        "save_s": save_s,
        "load_s": load_s,
        "bytes": size,
        "files": files,
        "verified": True,
        "max_abs_error": worst,
    }


def serve(source):
    """One process for every peer run of a benchmark: Python and the
    packages start once and the model is read once (each run used to pay
    both, ~10 s of a 20-minute comparison per run). Reads `PEER<TAB>WORKDIR`
    lines; answers each with one JSON line: the run's figures under "ok",
    or "unavailable" / "failed" with the reason. WORKDIR is left to the
    caller."""
    model = None
    model_error = None
    for line in sys.stdin:
        line = line.rstrip("\n")
        if not line:
            continue
        peer, _, work = line.partition("\t")
        try:
            check_peer(peer)
            if model is None and model_error is None:
                try:
                    model = read_model(source)
                except Unavailable as e:
                    model_error = e
            if model_error is not None:
                raise model_error
            answer = {"ok": run_peer(peer, model, work, True)}
        except Unavailable as e:
            answer = {"unavailable": str(e)}
        except SystemExit as e:
            answer = {"failed": str(e.code)}
        except Exception as e:  # noqa: BLE001 - reported to the benchmark
            answer = {"failed": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)
    return 0


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "--serve":
        return serve(args[1])
    leave = "--leave-workdir" in args
    args = [a for a in args if a != "--leave-workdir"]
    if len(args) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    peer, source, work = args
    try:
        check_peer(peer)
        model = read_model(source)
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    except Unavailable as e:
        print(e, file=sys.stderr)
        return 3
    print(json.dumps(run_peer(peer, model, work, leave)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
