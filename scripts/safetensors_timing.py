#!/usr/bin/env python3
"""Helpers for bench-formats.sh.

  make NPZ SIZE_MIB    seeded f32 weights shaped like OpenLLaMA layers (once)
  save NPZ DST         safetensors.numpy.save_file + fsync
  load DST NPZ         safe_open every tensor and compare with the source
"""
import os
import sys

import numpy as np


def make(path, size_mib):
    if os.path.exists(path):
        return
    rng = np.random.default_rng(0)
    t, left, i = {}, size_mib << 20, 0
    shapes = [(3200, 3200), (8640, 3200), (3200, 8640), (3200,)]
    while left > 0:
        s = shapes[i % len(shapes)]
        n = int(np.prod(s)) * 4
        if n > left:
            s = (max(1, left // 4),)
            n = s[0] * 4
        t[f"layers.{i}.weight"] = (rng.standard_normal(s, dtype=np.float32) * 0.02)
        left -= n
        i += 1
    np.savez(path, **t)


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], int(sys.argv[3]))
    elif cmd == "save":
        import time
        from safetensors.numpy import save_file
        t = dict(np.load(sys.argv[2]))
        start = time.monotonic()
        save_file(t, sys.argv[3])
        fd = os.open(sys.argv[3], os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        print(f"{time.monotonic() - start:.3f}")
    elif cmd == "load":
        import time
        from safetensors import safe_open
        start = time.monotonic()
        got = {}
        with safe_open(sys.argv[2], "np") as f:
            for k in f.keys():
                got[k] = f.get_tensor(k)
        elapsed = time.monotonic() - start
        src = np.load(sys.argv[3])
        for k in src.files:
            if not np.array_equal(got[k], src[k]):
                sys.exit(f"tensor {k} differs")
        print(f"{elapsed:.3f}")


if __name__ == "__main__":
    main()
