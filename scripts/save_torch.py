#!/usr/bin/env python3
"""Save a safetensors file's tensors with torch.save: SRC.safetensors DST.

Used by `ckptfs bench --save-tool torch`: the benchmark writes the model once
to SRC on plain disk, and this script writes DST inside the mount with the
tool users already have, and prints the seconds of the save call itself (not
of starting Python). Needs `pip install torch safetensors`.
"""
import sys
import time


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: save_torch.py SRC DST", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    try:
        import torch
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"save_torch.py needs torch and safetensors: {e}", file=sys.stderr)
        return 3
    state = load_file(src)
    start = time.perf_counter()
    torch.save(state, dst)
    print(f"{time.perf_counter() - start:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
