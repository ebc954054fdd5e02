"""The fused decode layer (one C call) against its twin, the Llama model's own ops."""

from __future__ import annotations

import ctypes
import dataclasses

import pytest
import torch

from grokd.engine.models.llama import LlamaForCausalLM
from grokd.kernels.attention import dequantize_kv, kv_cache_shape, quantize_kv
from grokd.kernels.cpu_linear import Int8PanelWeight, PanelWeight
from grokd.kernels.decoder_layer import StackOutput
from grokd.kernels.dispatch import select_kernels
from grokd.kernels.metadata import AttentionMetadata
from tests.kernels.paged_step import scattered_tables

pytestmark = pytest.mark.c_kernels

CONFIG = {"hidden_size": 128, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "vocab_size": 96, "rms_norm_eps": 1e-5, "max_position_embeddings": 512,
          "tie_word_embeddings": True}


def model_pair(int8: bool = False):
    """The same random bf16 model twice (its projections in bf16 panels, or weight-only int8 ones when
    ``int8``): with the CPU kernels (fused layer) and without the layer."""
    torch.manual_seed(0)
    fused = LlamaForCausalLM(CONFIG, dtype=torch.bfloat16, kernels=select_kernels("cpu"))
    with torch.no_grad():
        for p in fused.parameters():
            p.copy_(torch.randn(p.shape) * (0.05 if p.dim() > 1 else 1.0) + (1.0 if p.dim() == 1 else 0.0))
    fused.pack_weights(int8=int8)
    plain = LlamaForCausalLM(CONFIG, dtype=torch.bfloat16, kernels=select_kernels("cpu"))
    plain.load_state_dict(fused.state_dict(), strict=False)
    for src, dst in zip(fused.layers, plain.layers, strict=True):  # packed forms live outside the state dict
        for mod, name in ((src.self_attn, "qkv_weight"), (src.self_attn, "o_weight"), (src.mlp, "gate_up_weight"),
                          (src.mlp, "down_weight")):
            other = dst.self_attn if mod is src.self_attn else dst.mlp
            delattr(other, name)
            setattr(other, name, getattr(mod, name))
    no_layer = dataclasses.replace(select_kernels("cpu"), decoder_layer=None, decoder_stack=None)
    for m in plain.modules():
        if hasattr(m, "kernels"):
            m.kernels = no_layer
    return fused, plain


def decode_step(rows: int, seed: int, kv_dtype: torch.dtype = torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    seq_lens = [int(n) for n in torch.randint(1, 300, (rows,), generator=g)]
    tables, num_blocks = scattered_tables(seq_lens, 16, g, spare=2)
    meta = AttentionMetadata.build([1] * rows, seq_lens, tables, 16)
    caches = [torch.randn(kv_cache_shape(num_blocks, 16, 2, 32), generator=g) for _ in range(2)]
    caches = [quantize_kv(c) if kv_dtype == torch.int8 else c.to(kv_dtype) for c in caches]
    ids = torch.randint(0, 96, (rows,), generator=g)
    return ids, torch.tensor([n - 1 for n in seq_lens]), caches, meta


def counting_calls(fused: LlamaForCausalLM, path: str) -> list[bool]:
    """Route ``fused``'s decode steps through the whole-stack call (``stack``) or layer by layer
    (``layer``), and record whether each call of that path took the step."""
    calls: list[bool] = []
    if path == "stack":
        stack = fused.decoder_stack

        def counting_stack(*args):
            out = stack(*args)
            calls.append(out is not None and out.done == len(fused.layers) and out.normed is not None)
            return out

        fused.decoder_stack = counting_stack
        return calls
    kernel = fused.layers[0].kernels.decoder_layer

    def counting(*args):
        out = kernel(*args)
        calls.append(out is not None)
        return out

    for m in fused.modules():
        if hasattr(m, "kernels"):
            m.kernels = dataclasses.replace(m.kernels, decoder_layer=counting, decoder_stack=None)
    return calls


@pytest.mark.parametrize("path", ["stack", "layer"])
@pytest.mark.parametrize("weights", ["bf16", "int8"])
@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.int8])
@pytest.mark.parametrize("rows", [1, 5, 16])
def test_fused_layer_matches_the_models_ops(rows, kv_dtype, weights, path):
    fused, plain = model_pair(int8=weights == "int8")
    assert isinstance(fused.layers[0].mlp.down_weight, Int8PanelWeight if weights == "int8" else PanelWeight)
    ids, positions, caches, meta = decode_step(rows, seed=rows, kv_dtype=kv_dtype)
    plain_caches = [c.clone() for c in caches]
    calls = counting_calls(fused, path)
    with torch.no_grad():
        got = fused(ids, positions, caches, meta)
        expected = plain(ids, positions, plain_caches, meta)
    assert calls == ([True] if path == "stack" else [True, True])  # every layer took a fused path
    torch.testing.assert_close(got.float(), expected.float(), atol=3e-2, rtol=3e-2)
    assert (got == expected).float().mean() > 0.9  # the same kernels; only silu's expf may differ
    for a, b in zip(caches, plain_caches, strict=True):  # the same keys and values written
        if kv_dtype == torch.int8:
            a, b = dequantize_kv(a, torch.float32), dequantize_kv(b, torch.float32)
        torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)


def test_prefill_steps_take_the_models_ops():
    fused, _ = model_pair()
    meta = AttentionMetadata.build([3], [3], [[0]], 16)
    layer = fused.layers[0]
    x = torch.randn(3, 128).bfloat16()
    rope = fused.rope.tables(torch.arange(3), torch.bfloat16)
    cache = torch.zeros(kv_cache_shape(2, 16, 2, 32), dtype=torch.bfloat16)
    assert layer.kernels.decoder_layer(layer.fused_weights(), x, *rope, cache, meta) is None


@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.int8])
def test_the_stack_is_the_layers_one_after_another(kv_dtype):
    """One call for the whole stack runs the same kernels as one call per layer: the same bits, in
    the residual stream and in every pool."""
    fused, _ = model_pair()
    assert fused.decoder_stack is not None
    ids, positions, caches, meta = decode_step(7, seed=3, kv_dtype=kv_dtype)
    layer_caches = [c.clone() for c in caches]
    with torch.no_grad():
        got = fused(ids, positions, caches, meta)
        counting_calls(fused, "layer")
        expected = fused(ids, positions, layer_caches, meta)
    assert torch.equal(got, expected)
    for a, b in zip(caches, layer_caches, strict=True):
        assert torch.equal(a, b)


def test_a_refusing_layer_stops_the_stack_with_its_input_restored():
    """Layer 1 of the C stack refuses (a head dim RoPE does not take): the call reports one layer
    done and leaves the residual stream as layer 0 left it, not half-way through layer 1."""
    from grokd.kernels import cpu_build
    from grokd.kernels.c_abi import LayerWeights
    from grokd.kernels.decoder_layer import DecoderStack, _layer_struct, _step_struct

    fused, _ = model_pair()
    assert fused.decoder_stack is not None
    wide = LlamaForCausalLM({**CONFIG, "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 544},
                            dtype=torch.bfloat16, kernels=select_kernels("cpu"))
    wide.pack_weights()
    structs = [_layer_struct(fused.layers[0].fused_weights()), _layer_struct(wide.layers[0].fused_weights())]
    assert all(isinstance(w, LayerWeights) for w in structs)
    ids, positions, caches, meta = decode_step(3, seed=5)
    x = torch.nn.functional.embedding(ids, fused.embed_tokens).bfloat16()
    cos, sin = fused.rope.tables(positions, torch.bfloat16)
    step = _step_struct(x, cos, sin, caches[0], meta, 2, 32)
    pools = (ctypes.c_void_p * 2)(caches[0].data_ptr(), caches[1].data_ptr())
    library = cpu_build.library()
    out = x.clone()
    normed = torch.full_like(x, 7.0)
    done = library.lib.grokd_decoder_layers_bf16(out.data_ptr(), 3, (LayerWeights * 2)(*structs), pools, 2, step,
                                                 fused.norm.weight.data_ptr(), 1e-5, normed.data_ptr(),
                                                 library.threads())
    assert done == 1
    assert (normed == 7.0).all()  # the final norm runs only after the last layer
    reference_caches = [c.clone() for c in caches]
    layer0 = fused.layers[0].kernels.decoder_layer(fused.layers[0].fused_weights(), x, cos, sin,
                                                   reference_caches[0], meta)
    assert torch.equal(out, layer0)
    assert DecoderStack.build([fused.layers[0].fused_weights(), wide.layers[0].fused_weights()]) is None  # shapes differ


def test_the_model_runs_the_layers_a_stack_left():
    """When the stack stops after layer 0, the model runs layer 1 itself: the same result as the
    whole stack."""
    fused, _ = model_pair()
    assert fused.decoder_stack is not None
    ids, positions, caches, meta = decode_step(4, seed=9)
    partial_caches = [c.clone() for c in caches]
    with torch.no_grad():
        whole = fused(ids, positions, caches, meta)
        layer = fused.layers[0]

        def first_layer_only(x, cos, sin, kv_caches, step_meta):
            out = layer.kernels.decoder_layer(layer.fused_weights(), x, cos, sin, kv_caches[0], step_meta)
            return StackOutput(out, 1, None)

        fused.decoder_stack = first_layer_only
        resumed = fused(ids, positions, partial_caches, meta)
    assert torch.equal(resumed, whole)
    for a, b in zip(caches, partial_caches, strict=True):
        assert torch.equal(a, b)
