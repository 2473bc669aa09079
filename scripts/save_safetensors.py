#!/usr/bin/env python3
"""Save a safetensors file's tensors with safetensors.torch.save_file: SRC DST.

Used by `ckptfs bench --save-tool safetensors-py`: the benchmark writes the
model once to SRC on plain disk, and this script writes DST inside the mount
with the Python tool users already have, and prints the seconds of the
save call itself (not of starting Python). Needs `pip install torch safetensors`.
"""
import sys
import time


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: save_safetensors.py SRC DST", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    try:
        from safetensors.torch import load_file, save_file
    except ImportError as e:
        print(f"save_safetensors.py needs torch and safetensors: {e}", file=sys.stderr)
        return 3
    state = load_file(src)
    start = time.perf_counter()
    save_file(state, dst, metadata={"format": "pt"})
    print(f"{time.perf_counter() - start:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
