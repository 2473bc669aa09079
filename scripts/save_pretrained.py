#!/usr/bin/env python3
"""Save a Llama-shaped safetensors file with Hugging Face `save_pretrained`
(sharded safetensors): SRC.safetensors DST_DIR [MAX_SHARD_BYTES].

Used by `ckptfs bench --save-tool save-pretrained`. The model is a
`LlamaForCausalLM` built from a `LlamaConfig` whose sizes are read from the
tensors' shapes (nothing is downloaded), on the meta device, then given the
source tensors themselves (`load_state_dict(assign=True)`): what is saved is
exactly the source. `save_pretrained` then writes config.json,
model-0000K-of-0000N.safetensors and model.safetensors.index.json, and every
file is fsynced; the seconds of save_pretrained and the fsyncs are printed
(not of importing transformers or building the model). Default shard size: a quarter of the model (at least 1 MB),
so that even small models are sharded. Needs torch, safetensors, transformers.
"""
import os
import re
import sys
import time


def fsync_tree(root: str) -> None:
    for d, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(d, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def llama_config(state, transformers):
    emb = state["model.embed_tokens.weight"]
    vocab, hidden = emb.shape
    layers = 1 + max(
        int(m.group(1)) for m in (re.match(r"model\.layers\.(\d+)\.", k) for k in state) if m
    )
    inter = state["model.layers.0.mlp.gate_proj.weight"].shape[0]
    # Head count does not change any tensor's shape: any divisor of the
    # hidden size gives the same state dict; 128-wide heads where possible.
    heads = next(h for h in (hidden // 128, 32, 16, 8, 4, 2, 1) if h >= 1 and hidden % h == 0)
    kv = state["model.layers.0.self_attn.k_proj.weight"].shape[0] // (hidden // heads)
    return transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(kv, 1),
        tie_word_embeddings="lm_head.weight" not in state,
        torch_dtype=emb.dtype,
    )


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print("usage: save_pretrained.py SRC DST_DIR [MAX_SHARD_BYTES]", file=sys.stderr)
        return 2
    src, dst = sys.argv[1], sys.argv[2]
    try:
        import torch
        import transformers
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"save_pretrained.py needs torch, safetensors and transformers: {e}", file=sys.stderr)
        return 3
    state = load_file(src)
    if "model.embed_tokens.weight" not in state or "model.layers.0.mlp.gate_proj.weight" not in state:
        print("save_pretrained.py needs a Llama state dict (model.embed_tokens.weight, model.layers.N.*)", file=sys.stderr)
        return 4
    total = sum(t.numel() * t.element_size() for t in state.values())
    shard = int(sys.argv[3]) if len(sys.argv) == 4 else max(total // 4, 1 << 20)
    config = llama_config(state, transformers)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or [k for k in missing if not k.endswith("rotary_emb.inv_freq")]:
        print(f"state dict does not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}", file=sys.stderr)
        return 4
    transformers.utils.logging.disable_progress_bar()
    start = time.perf_counter()
    model.save_pretrained(dst, safe_serialization=True, max_shard_size=shard)
    fsync_tree(dst)
    print(f"{time.perf_counter() - start:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
