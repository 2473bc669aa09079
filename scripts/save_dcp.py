#!/usr/bin/env python3
"""Save a safetensors file's tensors with PyTorch Distributed Checkpoint
(`torch.distributed.checkpoint.save`, one process): SRC.safetensors DST_DIR.

Used by `ckptfs bench --save-tool dcp`. DCP writes DST_DIR/.metadata and
one `__0_0.distcp` data file per rank; every file is fsynced, and the
seconds of the save and the fsyncs are printed. Needs torch
and safetensors.
"""
import os
import sys
import time
import warnings


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: save_dcp.py SRC DST_DIR", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    try:
        import torch.distributed.checkpoint as dcp
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"save_dcp.py needs torch and safetensors: {e}", file=sys.stderr)
        return 3
    state = load_file(src)
    start = time.perf_counter()
    with warnings.catch_warnings():
        # Without a process group DCP says it assumes one process: that is the intent.
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=dst)
    for d, _, files in os.walk(dst):
        for f in files + ["."]:
            fd = os.open(os.path.join(d, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    print(f"{time.perf_counter() - start:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
