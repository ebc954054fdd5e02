"""``grokd bench roofline``: this machine's limits and how close grokd gets to them.

Measures streaming memory bandwidth (copy, read, matrix-vector) and matmul peak (fp32, bf16)
with torch, then runs the engine and reports per decode step the model-bandwidth utilisation
(weights + KV bytes read per step / step time / bandwidth) and per prefill step the FLOP
utilisation against the measured matmul peak of the run's dtype. Decode on CPU is bandwidth
bound, so MBU says how much of a speed-up is still physically available.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm import tqdm


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="checkpoint path, 'default' or 'fixture'")
    p.add_argument("--dtype", nargs="+", default=["bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32])
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--buffer-mb", type=int, default=512, help="bandwidth test buffer (well above L3)")
    p.add_argument("--matmul-n", type=int, default=2048)
    p.add_argument("--machine-only", action="store_true", help="measure the machine, skip the engine")
    p.add_argument("--threads", type=int)
    p.add_argument("--json", dest="json_out")


def _best(fn: Callable[[], Any], reps: int) -> float:
    """Fastest of ``reps`` timed calls after one warm-up: the peak, not the noise."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def machine_limits(buffer_mb: int = 512, matmul_n: int = 2048, reps: int = 5) -> dict[str, float]:
    """GB/s for copy (read+write), read (sum) and bf16/fp32 matrix-vector; GFLOP/s for matmul."""
    import torch

    n = buffer_mb * (1 << 20) // 4
    a = torch.rand(n)
    b = torch.empty_like(a)
    nbytes = a.numel() * 4
    out = {
        "copy_GBps": 2 * nbytes / _best(lambda a=a, b=b: b.copy_(a), reps) / 1e9,
        "read_GBps": nbytes / _best(lambda a=a: a.sum(), reps) / 1e9,
    }
    del a, b
    for dt, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        rows = buffer_mb * (1 << 20) // (4096 * torch.empty((), dtype=dt).element_size())
        w = torch.rand(rows, 4096).to(dt)
        x = torch.rand(4096, 1).to(dt)
        out[f"matvec_{name}_GBps"] = w.numel() * w.element_size() / _best(lambda w=w, x=x: w @ x, reps) / 1e9
        del w
        m = torch.rand(matmul_n, matmul_n).to(dt)
        out[f"matmul_{name}_GFLOPs"] = 2 * matmul_n**3 / _best(lambda m=m: m @ m, reps) / 1e9
    return {k: round(v, 2) for k, v in out.items()}



def _unique_params(model: Any) -> list[tuple[str, Any]]:
    seen, out = set(), []
    for name, p in model.named_parameters():
        key = id(p) if p.is_mkldnn else p.data_ptr()  # packed weights have no plain storage
        if key not in seen:
            seen.add(key)
            out.append((name, p))
    return out


def _moe(model: Any) -> tuple[int, int]:
    cfg = getattr(model, "config", None)
    get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
    return int(get("num_experts", 0) or 0), int(get("num_experts_per_tok", 0) or 0)


def weight_bytes_per_step(model: Any, batch: int) -> float:
    """Bytes of weights one decode step must read. Embedding rows are gathered (negligible)
    unless the table doubles as the output head; MoE experts count by the expected number of
    distinct experts that ``batch`` tokens route to (uniform routing)."""
    head = getattr(model, "output_weight", None)  # a tied head's own packed/int8 copy, if any
    tied = getattr(model, "lm_head", None) is None and head is None
    e, k = _moe(model)
    touched = e * (1 - (1 - k / e) ** batch) if e else 0.0
    total = sum(w.nbytes() for w in _packed_weights(model) if w is not head)  # the head comes below
    for name, p in _unique_params(model):
        size = p.numel() * p.element_size()
        if "embed" in name and not tied:
            size = batch * size / p.shape[0]
        elif ".experts." in name and e:
            size *= touched / e
        total += size
    if head is not None:
        total += head.nbytes() if callable(getattr(head, "nbytes", None)) else head.numel() * head.element_size()
    return total


def _packed_weights(model: Any) -> list[Any]:
    """Projections kept outside ``parameters()``: every packed form (``kernels.linear.PackedWeight``:
    weight-only int8, the CPU kernels' panels, oneDNN's layout)."""
    from grokd.kernels.linear import PackedWeight

    return [w for m in model.modules() for w in vars(m).values() if isinstance(w, PackedWeight)]


def prefill_flops(model: Any, tokens: int, seqs: int, prompt_len: int) -> float:
    """2·(active matrix params)·tokens + causal attention (2·T²·heads·head_dim per layer and
    sequence) + the output head for the ``seqs`` sampled positions."""
    e, k = _moe(model)
    per_token = 0.0
    head = 0.0
    for name, p in _unique_params(model):
        if p.dim() < 2:
            continue
        if "embed" in name or name.startswith("lm_head"):
            head = p.numel()
            continue
        if "scales" in name or name.endswith(".gate") and p.shape[0] == e:
            continue
        per_token += p.numel() * (k / e if ".experts." in name and e else 1.0)
    heads = int(getattr(model, "num_heads", 0) or 0)
    attn = 2 * prompt_len**2 * heads * int(model.head_dim) * int(model.num_layers) * seqs
    return 2 * per_token * tokens + attn + 2 * head * seqs


def engine_utilisation(model_name: str, dtype: str, batch_sizes: list[int], prompt_len: int,
                       max_tokens: int, limits: dict[str, float]) -> list[dict]:
    """Time every engine step of one round per batch size; split prefill from decode steps."""
    from grokd.benchmarks.engine_throughput import run_round
    from grokd.benchmarks.offline import build_engine, model_path

    engine, _ = build_engine(model_path(model_name), dtype, max(batch_sizes), prompt_len, max_tokens)
    model = engine.model
    kv_per_token = engine.runner.bytes_per_block / engine.runner.block_size
    bw = max(limits["read_GBps"], limits["copy_GBps"]) * 1e9  # best measured streaming traffic
    peak = limits["matmul_bf16_GFLOPs" if dtype == "bfloat16" else "matmul_fp32_GFLOPs"] * 1e9
    steps: list[tuple[float, int]] = []
    inner = engine.step

    def timed_step() -> list:
        t0 = time.perf_counter()
        outs = inner()
        steps.append((time.perf_counter() - t0, engine.last_step_tokens))
        return outs

    engine.step = timed_step  # run_round drives engine.step(); we only observe it
    run_round(engine, 1, prompt_len, 2, seed=-1)
    rows = []
    for b in tqdm(batch_sizes, desc=f"roofline {dtype}", leave=False):
        steps.clear()
        r = run_round(engine, b, prompt_len, max_tokens, seed=b)
        decode = [t for t, n in steps if 0 < n <= b]
        prefill = [(t, n) for t, n in steps if n > b]
        step_s = statistics.median(decode) if decode else float("nan")
        kv = b * (prompt_len + max_tokens / 2) * kv_per_token  # mean context over the round
        wbytes = weight_bytes_per_step(model, b)
        row = {
            "batch": b, "gen_tokens_per_s": r["gen_tokens_per_s"], "decode_step_ms": round(step_s * 1e3, 2),
            "weights_MB": round(wbytes / 1e6, 1), "kv_MB_per_step": round(kv / 1e6, 2),
            "achieved_GBps": round((wbytes + kv) / step_s / 1e9, 1),
            "MBU": round((wbytes + kv) / step_s / bw, 3), "bandwidth_GBps": round(bw / 1e9, 1),
        }
        if prefill:
            pt = sum(t for t, _ in prefill)
            ptok = sum(n for _, n in prefill)
            fl = prefill_flops(model, ptok, b, prompt_len)
            row.update({"prefill_s": round(pt, 3), "prefill_tokens": ptok,
                        "prefill_GFLOPs": round(fl / pt / 1e9, 1), "prefill_MFU": round(fl / pt / peak, 3)})
        rows.append(row)
    return rows


def main(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out: dict[str, Any] = {"meta": {"threads": torch.get_num_threads(), "torch": torch.__version__,
                                    "loadavg": list(os.getloadavg()), "model": args.model,
                                    "prompt_len": args.prompt_len, "max_tokens": args.max_tokens}}
    limits = machine_limits(args.buffer_mb, args.matmul_n)
    out["machine"] = limits
    print("machine: " + ", ".join(f"{k}={v}" for k, v in limits.items()), flush=True)
    if not args.machine_only:
        out["runs"] = {}
        for dtype in args.dtype:
            rows = engine_utilisation(args.model, dtype, args.batch_sizes, args.prompt_len, args.max_tokens, limits)
            out["runs"][dtype] = rows
            print(f"dtype={dtype}")
            for r in rows:
                print("  " + ", ".join(f"{k}={v}" for k, v in r.items()), flush=True)
    out["meta"]["loadavg_end"] = list(os.getloadavg())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0
