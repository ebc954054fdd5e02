"""Session 3 microbenchmark (benchmarks/RESULTS.md, "Session 3 CPU"): a decode step of a model with
SmolLM2's structure (30 layers, the same ops and kernels) but tiny matrices, so that what remains is
the fixed cost of eager PyTorch per step on this machine.

    .venv/bin/python benchmarks/results/session3/scripts/step_overhead_floor.py
"""

import time

import torch
from engine.models.llama import LlamaForCausalLM
from kernels.attention import kv_cache_shape
from kernels.dispatch import select_kernels
from kernels.metadata import AttentionMetadata

CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=30, num_attention_heads=3,
              num_key_value_heads=1, head_dim=64, vocab_size=512, rms_norm_eps=1e-5,
              max_position_embeddings=2048, tie_word_embeddings=True)
model = LlamaForCausalLM(CONFIG, dtype=torch.bfloat16, kernels=select_kernels("cpu"))
for p in model.parameters():
    p.data.normal_(0, 0.02)
model.pack_weights()
kv = [torch.zeros(kv_cache_shape(20, 16, 1, 64), dtype=torch.bfloat16) for _ in range(30)]
ids, pos = torch.tensor([5]), torch.tensor([127])


def step() -> torch.Tensor:
    meta = AttentionMetadata.build([1], [128], [list(range(1, 9))], 16)
    return model.compute_logits(model(ids, pos, kv, meta))


with torch.inference_mode():
    for _ in range(20):
        step()
    t, n = time.perf_counter(), 200
    for _ in range(n):
        step()
    print(f"tiny 30-layer decode step: {(time.perf_counter() - t) / n * 1e3:.2f} ms")
