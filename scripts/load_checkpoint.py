#!/usr/bin/env python3
"""Load a checkpoint the way users load it and print the seconds it took:
TOOL PATH, TOOL = safetensors-mmap | torch.

Used by `ckptfs bench --load-tool`. The time printed covers the load only
(opening the file, mapping it, and copying every tensor out of the mapping
into memory, as a model load does), not the interpreter and its imports.

- safetensors-mmap: `safetensors.safe_open(framework="pt")` (mmaps the file)
  and `get_tensor` of every tensor, copied (get_tensor may hand back a view
  of the mapping, which reads nothing until used).
- torch: `torch.load(mmap=True, weights_only=True)` and a copy of every
  tensor (the pages are read as the copy touches them).
"""
import sys
import time


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("safetensors-mmap", "torch"):
        print("usage: load_checkpoint.py safetensors-mmap|torch PATH", file=sys.stderr)
        return 2
    tool, path = sys.argv[1], sys.argv[2]
    try:
        import torch
        from safetensors import safe_open
    except ImportError as e:
        print(f"load_checkpoint.py needs torch and safetensors: {e}", file=sys.stderr)
        return 3
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"
    if tool == "torch" and not is_zip:
        print("--load-tool torch needs a torch.save checkpoint (use --save-tool torch)", file=sys.stderr)
        return 4
    if tool == "safetensors-mmap" and is_zip:
        print("--load-tool safetensors-mmap needs a safetensors checkpoint", file=sys.stderr)
        return 4
    total = 0
    start = time.perf_counter()
    if tool == "torch":
        state = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        for t in state.values():
            total += t.clone().numel() * t.element_size()
    else:
        with safe_open(path, framework="pt") as f:
            for name in f.keys():
                t = f.get_tensor(name).clone()
                total += t.numel() * t.element_size()
    seconds = time.perf_counter() - start
    print(f"{seconds:.6f} {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
