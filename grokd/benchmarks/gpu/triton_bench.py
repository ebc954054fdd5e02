"""The Triton kernels on a GPU, in one run of a few minutes: their tests compiled, then the
numbers that say whether they do their job.

1. ``pytest tests/kernels/triton`` on CUDA (compiled kernels against the PyTorch twins).
2. The card's copy bandwidth (a device-to-device copy, bytes read plus written per second): the
   ceiling a weight-bound kernel is measured against.
3. The fused MoE, int8, at Grok-1's TP=8 shard shapes (8 experts, 6144 -> 2 x 4096 and 4096 ->
   6144, the release's scale groups) for 1, 8, 64 and 256 tokens: time, and the weight bytes of
   the experts the tokens chose read per second, against the copy bandwidth; the PyTorch twin too.
4. Decode attention at batch 64, 8k context, 6 query heads per KV head (one KV head, Grok-1's
   head dim 128, bf16 pool): time and KV bytes read per second, Triton vs the batched PyTorch path.
5. A Grok-architecture model of a few full-width layers with random int8 weights decoding at batch
   1, 16 and 64 through ``engine.decode_graphs``: captured CUDA graphs vs the same padded step run
   eagerly, and the PyTorch kernels eagerly (their MoE cannot be captured).

Writes ``results.json`` and ``summary.md`` into the output directory. Usage, from the repository
root: ``python3 -m grokd.benchmarks.gpu.triton_bench OUT_DIR [--skip-tests] [--layers N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

TOKENS = (1, 8, 64, 256)
BATCHES = (1, 16, 64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path, help="where results.json and summary.md go")
    p.add_argument("--skip-tests", action="store_true", help="no pytest run (the measurements only)")
    p.add_argument("--test-timeout-s", type=int, default=200)
    p.add_argument("--layers", type=int, default=2, help="full-width Grok layers of the decode model")
    p.add_argument("--context", type=int, default=512, help="tokens per row in the model decode")
    p.add_argument("--only", nargs="*", choices=["tests", "copy", "moe", "attention", "model"],
                   help="run these parts only")
    return p.parse_args(argv)


def time_ms(fn: Callable[[], object], iters: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of ``fn`` on the current CUDA stream (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def run_tests(timeout_s: int) -> dict[str, Any]:
    """The Triton kernel tests, compiled (the conftest leaves ``TRITON_INTERPRET`` unset on CUDA)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", "tests/kernels/triton"]
    t0 = time.monotonic()
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        rc, text = out.returncode, out.stdout + out.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = 124, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else str(e.stdout)
    return {"rc": rc, "seconds": round(time.monotonic() - t0, 1), "tail": text[-3000:]}


def copy_bandwidth() -> dict[str, float]:
    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    ms = time_ms(lambda: b.copy_(a), iters=10)
    return {"bytes": 2 * a.numel(), "ms": ms, "gb_per_s": 2 * a.numel() / ms / 1e6}


def _int8_experts(e: int, k: int, n: int, groups: int, gen: torch.Generator) -> Any:
    from grokd.kernels.moe import ExpertWeights

    q = torch.randint(-127, 128, (e, k, n), dtype=torch.int8, device="cuda", generator=gen)
    s = (torch.rand(e, groups, n, device="cuda", generator=gen) * 0.01).to(torch.bfloat16)
    return ExpertWeights(q, s)


def _as_fp8(w: Any) -> Any:
    """The same experts as ``--weights-dtype fp8`` holds them: e4m3 of the effective weight."""
    from grokd.kernels.moe import ExpertWeights
    from grokd.kernels.quant import GroupedInt8Weight, quantize_grouped_fp8

    q = quantize_grouped_fp8(GroupedInt8Weight(w.weight, w.scales).dequantize(), w.scales.shape[1])
    return ExpertWeights(q.qweight, q.scales)


def bench_moe(copy_gbps: float) -> list[dict[str, Any]]:
    """TP=8 shard of Grok-1's MoE: each rank holds 4096 of every expert's 32768 intermediate rows
    (the release's down projection has 8 scale groups over 32768 rows: one per shard); the
    release's int8, then the same experts in fp8 e4m3 (``--weights-dtype fp8``)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    e, d, f = 8, 6144, 4096
    gate, up = _int8_experts(e, d, f, 1, gen), _int8_experts(e, d, f, 1, gen)
    down = _int8_experts(e, f, d, 1, gen)
    router = torch.randn(e, d, device="cuda", generator=gen)
    rows = _bench_moe_weights(copy_gbps, "int8", router, gate, up, down, gen)
    gate, up, down = _as_fp8(gate), _as_fp8(up), _as_fp8(down)
    return rows + _bench_moe_weights(copy_gbps, "fp8", router, gate, up, down, gen)


def _bench_moe_weights(copy_gbps: float, weights: str, router: torch.Tensor, gate: Any, up: Any, down: Any,
                       gen: torch.Generator) -> list[dict[str, Any]]:
    from grokd.kernels.moe import moe_forward
    from grokd.kernels.triton.fused_moe import fused_moe

    d, top_k = router.shape[1], 2
    per_expert = sum(w.weight[0].numel() + w.scales[0].numel() * 2 for w in (gate, up, down))
    rows = []
    for tokens in TOKENS:
        x = torch.randn(tokens, d, device="cuda", generator=gen).to(torch.bfloat16)
        used = torch.softmax(x.float() @ router.t(), -1).topk(top_k).indices.unique().numel()
        weight_bytes = used * per_expert
        def fused(x: torch.Tensor = x) -> torch.Tensor:
            return fused_moe(x, router, gate, up, down, top_k, out_dtype=torch.float32)

        def twin(x: torch.Tensor = x) -> torch.Tensor:
            return moe_forward(x, router, gate, up, down, top_k, out_dtype=torch.float32)

        tri, ref = time_ms(fused), time_ms(twin, iters=5)
        got = fused_moe(x, router, gate, up, down, top_k, out_dtype=torch.float32)
        want = moe_forward(x, router, gate, up, down, top_k, out_dtype=torch.float32)
        err = ((got - want).abs().max() / want.abs().max()).item()
        gbps = weight_bytes / tri / 1e6
        rows.append({"weights": weights, "tokens": tokens, "experts_used": used, "weight_bytes": weight_bytes,
                     "triton_ms": tri, "torch_ms": ref, "gb_per_s": gbps, "of_copy_bandwidth": gbps / copy_gbps,
                     "rel_err_vs_torch": err})
    return rows


def _decode_step(batch: int, context: int, q_heads: int, kv_heads: int, head_dim: int, block_size: int,
                 dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, Any]:
    from grokd.kernels.attention import kv_cache_shape
    from grokd.kernels.metadata import AttentionMetadata

    blocks = context // block_size
    cache = torch.randn(kv_cache_shape(batch * blocks, block_size, kv_heads, head_dim, dtype), device="cuda").to(dtype)
    tables = torch.randperm(batch * blocks, device="cuda").view(batch, blocks)
    seq_lens = torch.full((batch,), context, dtype=torch.int64, device="cuda")
    slots = tables[:, -1] * block_size + block_size - 1
    meta = AttentionMetadata.for_decode(slots, seq_lens, tables, block_size)
    q = torch.randn(batch, q_heads, head_dim, device="cuda").to(dtype)
    return q, cache, meta


def bench_attention(copy_gbps: float) -> dict[str, Any]:
    from grokd.kernels.batched_attention import paged_attention_batched
    from grokd.kernels.triton.paged_attention import paged_attention

    batch, context, q_heads, kv_heads, head_dim = 64, 8192, 6, 1, 128
    q, cache, meta = _decode_step(batch, context, q_heads, kv_heads, head_dim, 16, torch.bfloat16)
    kv_bytes = 2 * batch * context * kv_heads * head_dim * 2
    tri = time_ms(lambda: paged_attention(q, cache, meta, 0.0883883, 30.0))
    ref = time_ms(lambda: paged_attention_batched(q, cache, meta, 0.0883883, 30.0), iters=5)
    got = paged_attention(q, cache, meta, 0.0883883, 30.0).float()
    want = paged_attention_batched(q, cache, meta, 0.0883883, 30.0).float()
    gbps = kv_bytes / tri / 1e6
    return {"batch": batch, "context": context, "q_heads": q_heads, "kv_heads": kv_heads, "kv_bytes": kv_bytes,
            "triton_ms": tri, "torch_ms": ref, "gb_per_s": gbps, "of_copy_bandwidth": gbps / copy_gbps,
            "max_abs_diff_vs_torch": (got - want).abs().max().item()}


def _random_grok_tensors(cfg: Any, gen: torch.Generator) -> Iterator[tuple[str, Any]]:
    """Names and random values of a Grok-1 checkpoint (hpcai names): int8 projections and experts
    with bf16 scales in the release's layout and groups, float32 router, norms and embeddings."""
    from grokd.weights.checkpoint import QuantizedWeight

    d, f, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim

    def q8(k: int, n: int, groups: int = 1) -> QuantizedWeight:
        w = torch.randint(-127, 128, (k, n), dtype=torch.int8, device="cuda", generator=gen)
        return QuantizedWeight(w, (torch.rand(groups, n, device="cuda", generator=gen) * 2e-3).to(torch.bfloat16))

    yield "model.embed_tokens.weight", torch.randn(cfg.vocab_size, d, device="cuda", generator=gen) * 0.02
    yield "model.norm.scale", torch.ones(d, device="cuda")
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        yield p + "attn.q_proj.weight", q8(d, cfg.num_attention_heads * hd)
        yield p + "attn.k_proj.weight", q8(d, cfg.num_key_value_heads * hd)
        yield p + "attn.v_proj.weight", q8(d, cfg.num_key_value_heads * hd)
        yield p + "attn.o_proj.weight", q8(cfg.num_attention_heads * hd, d, 8)
        yield p + "moe_block.gate.weight", torch.randn(cfg.num_experts, d, device="cuda", generator=gen) * 0.02
        for norm in ("pre_attn_norm", "post_attn_norm", "pre_moe_norm", "post_moe_norm"):
            yield p + norm + ".scale", torch.ones(d, device="cuda")
        for e in range(cfg.num_experts):
            yield p + f"moe_block.experts.{e}.linear.weight", q8(d, f)
            yield p + f"moe_block.experts.{e}.linear_v.weight", q8(d, f)
            yield p + f"moe_block.experts.{e}.linear_1.weight", q8(f, d, 8)


def _grok_model(layers: int, backend: str) -> Any:
    from grokd.engine.models.grok1 import Grok1Config, Grok1ForCausalLM
    from grokd.kernels.dispatch import select_kernels

    cfg = Grok1Config(vocab_size=4096, num_hidden_layers=layers)
    model = Grok1ForCausalLM(cfg, torch.bfloat16, "auto", select_kernels("cuda", backend))
    model.to("cuda")
    model.load_weights(_random_grok_tensors(cfg, torch.Generator(device="cuda").manual_seed(0)), "cuda")
    return model


def bench_model(layers: int, context: int) -> list[dict[str, Any]]:
    """Decode steps of a ``layers``-layer full-width Grok at each batch: graphs, and eager."""
    from grokd.engine.decode_graphs import DecodeGraphs
    from grokd.kernels.attention import kv_cache_shape

    block_size = 16
    blocks = context // block_size
    max_batch = max(BATCHES)
    rows: list[dict[str, Any]] = []
    for backend in ("triton", "torch"):
        model = _grok_model(layers, backend)
        shape = kv_cache_shape(max_batch * blocks + 1, block_size, model.num_kv_heads, model.head_dim, torch.bfloat16)
        caches = [torch.zeros(shape, dtype=torch.bfloat16, device="cuda") for _ in range(layers)]
        modes = [("graphs", True), ("eager", False)] if backend == "triton" else [("eager", False)]
        for mode, capture in modes:
            graphs = DecodeGraphs(model, caches, block_size, max_batch * blocks, max_batch, blocks, capture)
            for batch in BATCHES:
                tables = [list(range(r * blocks, (r + 1) * blocks)) for r in range(batch)]
                args = ([1] * batch, [context - 1] * batch, [context] * batch, tables)
                def step(args: tuple[Any, ...] = args, graphs: DecodeGraphs = graphs) -> torch.Tensor:
                    return graphs.run(*args)

                with torch.inference_mode():
                    ms = time_ms(step, iters=10)
                rows.append({"backend": backend, "mode": mode, "batch": batch, "layers": layers,
                             "context": context, "step_ms": ms, "graphs_captured": graphs.num_graphs})
        del model, caches
        torch.cuda.empty_cache()
    return rows


def write_results(out_dir: Path, results: dict[str, Any]) -> None:
    """``results.json`` as measured and ``summary.md``: one table per part that ran."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    lines = ["# Triton kernels on the GPU", "", f"device: {results.get('device', '?')}; "
             f"torch {results.get('torch', '?')}, triton {results.get('triton', '?')}", ""]
    if "tests" in results:
        t = results["tests"]
        lines += [f"tests/kernels/triton compiled: rc {t['rc']} in {t['seconds']} s", "",
                  "```", t["tail"].strip().splitlines()[-1] if t["tail"].strip() else "", "```", ""]
    if "copy" in results:
        lines += [f"device copy: {results['copy']['gb_per_s']:.0f} GB/s (read + write)", ""]
    if "moe" in results:
        lines += ["## Fused MoE, TP=8 shard (E=8, 6144 -> 2x4096, 4096 -> 6144)", "",
                  "| weights | tokens | experts used | triton ms | torch ms | weight GB/s | of copy | rel err |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['weights']} | {r['tokens']} | {r['experts_used']} | {r['triton_ms']:.3f} | {r['torch_ms']:.3f} | "
                  f"{r['gb_per_s']:.0f} | {r['of_copy_bandwidth']:.0%} | {r['rel_err_vs_torch']:.1e} |"
                  for r in results["moe"]]
        lines.append("")
    if "attention" in results:
        a = results["attention"]
        lines += [f"## Decode attention: batch {a['batch']}, context {a['context']}, "
                  f"{a['q_heads']} q heads / {a['kv_heads']} KV head", "",
                  f"triton {a['triton_ms']:.3f} ms ({a['gb_per_s']:.0f} GB/s of KV, "
                  f"{a['of_copy_bandwidth']:.0%} of copy), torch {a['torch_ms']:.3f} ms, "
                  f"max |diff| {a['max_abs_diff_vs_torch']:.1e}", ""]
    if "model" in results:
        lines += ["## Grok-architecture decode step (full-width layers, random int8 weights)", "",
                  "| backend | mode | batch | layers | step ms |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['backend']} | {r['mode']} | {r['batch']} | {r['layers']} | {r['step_ms']:.2f} |"
                  for r in results["model"]]
        lines.append("")
    for part, err in results.get("errors", {}).items():
        lines += [f"**{part} failed**: `{err}`", ""]
    (out_dir / "summary.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = set(args.only or ["tests", "copy", "moe", "attention", "model"])
    if args.skip_tests:
        parts.discard("tests")
    import triton

    results: dict[str, Any] = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                               "triton": triton.__version__, "errors": {}}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("tests", lambda: run_tests(args.test_timeout_s)),
        ("copy", copy_bandwidth),
        ("moe", lambda: bench_moe(results["copy"]["gb_per_s"])),
        ("attention", lambda: bench_attention(results["copy"]["gb_per_s"])),
        ("model", lambda: bench_model(args.layers, args.context)),
    ]
    if parts & {"moe", "attention"}:
        parts.add("copy")
    for name, step in steps:
        if name not in parts:
            continue
        t0 = time.monotonic()
        try:
            results[name] = step()
        except Exception as e:  # one part failing must not lose the others' numbers
            results["errors"][name] = f"{type(e).__name__}: {e}"
        print(f"{name}: {time.monotonic() - t0:.1f} s", flush=True)
        write_results(args.out_dir, results)
    return 0 if not results["errors"] and results.get("tests", {"rc": 0})["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
