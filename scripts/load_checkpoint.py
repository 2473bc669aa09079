#!/usr/bin/env python3
"""Load a checkpoint the way users load it and print the seconds it took:
TOOL PATH [DUMP], TOOL = safetensors-mmap | torch | dcp.

Used by `ckptfs bench --load-tool`. The time printed covers the load only
(opening the file, mapping it, and copying every tensor out of the mapping
into memory, as a model load does), not the interpreter and its imports.

- safetensors-mmap: `safetensors.safe_open(framework="pt")` (mmaps the file)
  and `get_tensor` of every tensor, copied (get_tensor may hand back a view
  of the mapping, which reads nothing until used).
- torch: `torch.load(mmap=True, weights_only=True)` and a copy of every
  tensor (the pages are read as the copy touches them).
- dcp: `torch.distributed.checkpoint.load` (one process) into tensors
  allocated from the checkpoint's metadata, as a resuming job does.

A folder of safetensors shards (`save_pretrained`) is loaded shard by shard.
DUMP, when given, receives the loaded tensors as one safetensors file after
the timing, so the caller can check them.
"""
import os
import sys
import time
import warnings


def load_dcp(path, torch, dcp):
    meta = dcp.FileSystemReader(path).read_metadata()
    state = {
        name: torch.empty(tuple(m.size), dtype=m.properties.dtype)
        for name, m in meta.state_dict_metadata.items()
    }
    with warnings.catch_warnings():
        # No process group: DCP assumes one process, which is the intent.
        warnings.simplefilter("ignore")
        dcp.load(state, checkpoint_id=path)
    return state


def main() -> int:
    tools = ("safetensors-mmap", "torch", "dcp")
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in tools:
        print("usage: load_checkpoint.py safetensors-mmap|torch|dcp PATH [DUMP]", file=sys.stderr)
        return 2
    tool, path = sys.argv[1], sys.argv[2]
    dump = sys.argv[3] if len(sys.argv) == 4 else None
    try:
        import torch
        from safetensors import safe_open
    except ImportError as e:
        print(f"load_checkpoint.py needs torch and safetensors: {e}", file=sys.stderr)
        return 3
    if os.path.isdir(path):
        files = sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors")
        )
        if tool == "safetensors-mmap" and not files:
            print(f"{path} holds no .safetensors shards", file=sys.stderr)
            return 4
        if tool == "torch":
            print("--load-tool torch needs a torch.save file", file=sys.stderr)
            return 4
    else:
        files = [path]
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"
        if tool == "dcp":
            print("--load-tool dcp needs a DCP checkpoint folder (use --save-tool dcp)", file=sys.stderr)
            return 4
        if tool == "torch" and not is_zip:
            print("--load-tool torch needs a torch.save checkpoint (use --save-tool torch)", file=sys.stderr)
            return 4
        if tool == "safetensors-mmap" and is_zip:
            print("--load-tool safetensors-mmap needs a safetensors checkpoint", file=sys.stderr)
            return 4
    if tool == "dcp":
        # Imported before the clock starts, as a running job has it already.
        import torch.distributed.checkpoint as dcp
    else:
        dcp = None
    loaded = {}
    start = time.perf_counter()
    if tool == "torch":
        state = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
        for name, t in state.items():
            loaded[name] = t.clone()
    elif tool == "dcp":
        loaded = load_dcp(path, torch, dcp)
    else:
        for file in files:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    loaded[name] = f.get_tensor(name).clone()
    seconds = time.perf_counter() - start
    total = sum(t.numel() * t.element_size() for t in loaded.values())
    if dump:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in loaded.items()}, dump)
    print(f"{seconds:.6f} {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
