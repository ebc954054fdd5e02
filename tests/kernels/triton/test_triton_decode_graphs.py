"""Grok-1 on the Triton kernels through the padded static-buffer decode path CUDA graphs replay
(``engine.decode_graphs``, run eagerly on the CPU): rows padded to a bucket write into the sink
block, tables padded with it are masked, and every real row's hidden state matches the PyTorch
kernels' unpadded step. The model says it can be captured only on the sync-free kernels."""

from __future__ import annotations

import torch

from grokd import weights
from grokd.engine.decode_graphs import DecodeGraphs
from grokd.engine.models.grok1 import Grok1ForCausalLM
from grokd.kernels.attention import kv_cache_shape
from grokd.kernels.metadata import AttentionMetadata
from tests.kernels.triton.compare import assert_relative_close

BLOCK = 16


def _prefill(model: Grok1ForCausalLM, prompts: list[list[int]], num_blocks: int) -> list[torch.Tensor]:
    caches = [torch.zeros(kv_cache_shape(num_blocks, BLOCK, model.num_kv_heads, model.head_dim, torch.float32))
              for _ in range(model.num_layers)]
    tables = [[2 * i, 2 * i + 1] for i in range(len(prompts))]
    lens = [len(p) for p in prompts]
    meta = AttentionMetadata.build(lens, lens, tables, BLOCK)
    ids = torch.tensor([t for p in prompts for t in p])
    positions = torch.cat([torch.arange(n) for n in lens])
    with torch.inference_mode():
        model(ids, positions, caches, meta)
    return caches


def test_padded_decode_matches_torch_kernels(device, grok1_tiny_dir, grok1_tiny_reference):
    ckpt = weights.load(grok1_tiny_dir)
    triton_model = Grok1ForCausalLM.from_checkpoint(ckpt, torch.float32, "auto", device, kernel_backend="triton")
    torch_model = Grok1ForCausalLM.from_checkpoint(ckpt, torch.float32, "auto", device, kernel_backend="torch")
    assert triton_model.supports_cuda_graphs and not torch_model.supports_cuda_graphs
    prompts = [c["prompt"][:12] for c in grok1_tiny_reference["fp32"]["single"]]  # 3 rows: bucket 4
    sink = 2 * len(prompts)
    caches = _prefill(torch_model, prompts, sink + 1)  # the prompts' KV, by the PyTorch kernels (faster here)
    ref_caches = [c.clone() for c in caches]
    graphs = DecodeGraphs(triton_model, caches, BLOCK, sink, max_batch=4, max_blocks=4, capture=False)
    ids, positions = [5, 17, 800], [len(p) for p in prompts]
    seq_lens = [n + 1 for n in positions]
    tables = [[2 * i, 2 * i + 1] for i in range(len(prompts))]
    with torch.inference_mode():
        got = graphs.run(ids, positions, seq_lens, tables).clone()
        meta = AttentionMetadata.build([1] * 3, seq_lens, tables, BLOCK)
        want = torch_model(torch.tensor(ids), torch.tensor(positions), ref_caches, meta)
    assert graphs._steps and all(b == 4 for b, _ in graphs._steps)  # padded from 3 rows
    assert_relative_close(got, want)
    assert_relative_close(caches[0][:, :sink], ref_caches[0][:, :sink])  # the padding row wrote only the sink
