"""``grokd bench offline``: generated tokens/s of grokd's engine (in process, no HTTP) for
batch sizes 1/8/16/32, side by side with HF transformers ``generate`` on the same weights and
dtype. Greedy, random token-id prompts, exactly ``--max-tokens`` new tokens per request
(ignore_eos; HF gets ``min_new_tokens``), so both sides do identical work.

The grokd rounds reuse ``grokd.benchmarks.engine_throughput.run_round``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from grokd.benchmarks.fixture_paths import GROK1_TINY

FIXTURE = GROK1_TINY


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="checkpoint path, 'default' (SmolLM2) or 'fixture' (grok1-tiny)")
    p.add_argument("--dtype", nargs="+", default=["bfloat16"], choices=["float32", "bfloat16"])
    p.add_argument("--weights-dtype", default="auto")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "int8"], help="grokd's KV cache storage")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16, 32])
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--hf", action=argparse.BooleanOptionalAction, default=True,
                   help="also run HF transformers generate (needs transformers)")
    p.add_argument("--hf-model", help="HF dir or GGUF for the HF side (default: --model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (both sides run there)")
    p.add_argument("--enforce-eager", action="store_true", help="grokd: no CUDA-graph decode replay")
    p.add_argument("--threads", type=int, help="torch intra-op threads")
    p.add_argument("--json", dest="json_out", help="write results JSON here")


def model_path(name: str) -> str | None:
    """'default' → None (the engine's default model), 'fixture' → grok1-tiny."""
    if name == "default":
        return None
    return str(FIXTURE) if name == "fixture" else name


def build_engine(model: str | None, dtype: str, max_batch: int, prompt_len: int, max_tokens: int,
                 weights_dtype: str = "auto", device: str = "cpu", enforce_eager: bool = False,
                 kv_cache_dtype: str = "auto") -> tuple[Any, float]:
    """An LLMEngine sized for ``max_batch`` full sequences; returns (engine, load seconds)."""
    from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
    from grokd.engine.llm_engine import LLMEngine
    from grokd.engine.loader import load_model_and_tokenizer

    load = ModelLoadConfig(model=model, dtype=dtype, weights_dtype=weights_dtype, device=device,
                           enforce_eager=enforce_eager)
    t0 = time.perf_counter()
    mdl, tok, ckpt = load_model_and_tokenizer(load)
    load_s = time.perf_counter() - t0
    need = max_batch * (prompt_len + max_tokens)
    config = EngineConfig(
        model=load,
        cache=CacheConfig(num_blocks=need // 16 + 2 * max_batch + 8, enable_prefix_caching=False,
                          dtype=kv_cache_dtype),
        scheduler=SchedulerConfig(max_num_seqs=max_batch, max_num_batched_tokens=max(2048, max_batch * prompt_len)),
    )
    return LLMEngine(config, mdl, tok, checkpoint=ckpt), load_s


def grokd_rounds(engine: Any, batch_sizes: list[int], prompt_len: int, max_tokens: int) -> list[dict]:
    from grokd.benchmarks.engine_throughput import run_round

    run_round(engine, 1, prompt_len, 2, seed=-1)  # warm-up
    rows = []
    for b in tqdm(batch_sizes, desc="grokd", leave=False):
        rows.append(run_round(engine, b, prompt_len, max_tokens, seed=b))
    return rows


def _prompts(batch: int, prompt_len: int, vocab: int, seed: int) -> list[list[int]]:
    """The same prompts ``run_round`` draws for this seed, so both sides see identical inputs."""
    rng = random.Random(seed)
    return [[rng.randrange(3, vocab) for _ in range(prompt_len)] for _ in range(batch)]


def hf_rounds(model: Any, batch_sizes: list[int], prompt_len: int, max_tokens: int) -> list[dict]:
    import torch

    vocab = int(model.config.vocab_size)

    def gen(ids: list[list[int]], n: int) -> None:
        x = torch.tensor(ids, device=model.device)
        model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=0)
        if x.is_cuda:
            torch.cuda.synchronize()

    with torch.inference_mode():
        gen(_prompts(1, prompt_len, vocab, -1), 2)  # warm-up
        rows = []
        for b in tqdm(batch_sizes, desc="hf", leave=False):
            ids = _prompts(b, prompt_len, vocab, b)
            t0 = time.perf_counter()
            gen(ids, max_tokens)
            dt = time.perf_counter() - t0
            rows.append({"concurrency": b, "seconds": round(dt, 3),
                         "gen_tokens_per_s": round(b * max_tokens / dt, 1)})
    return rows


def main(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    path = model_path(args.model)
    out: dict[str, Any] = {"meta": {
        "model": args.model, "prompt_len": args.prompt_len, "max_tokens": args.max_tokens,
        "threads": torch.get_num_threads(), "torch": torch.__version__, "loadavg": list(os.getloadavg()),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "enforce_eager": args.enforce_eager,
    }, "runs": []}
    mb = max(args.batch_sizes)
    for dtype in args.dtype:
        engine, load_s = build_engine(path, dtype, mb, args.prompt_len, args.max_tokens, args.weights_dtype,
                                      args.device, args.enforce_eager, args.kv_cache_dtype)
        run: dict[str, Any] = {"dtype": dtype, "grokd_load_s": round(load_s, 2),
                               "grokd": grokd_rounds(engine, args.batch_sizes, args.prompt_len, args.max_tokens)}
        checkpoint = str(engine.checkpoint.path)
        del engine
        if args.hf:
            from grokd.benchmarks.hf_ref import load_hf_model

            hf = load_hf_model(args.hf_model or checkpoint, dtype).to(args.device)
            run["hf"] = hf_rounds(hf, args.batch_sizes, args.prompt_len, args.max_tokens)
            del hf
        out["runs"].append(run)
        _print_run(run)
    out["meta"]["loadavg_end"] = list(os.getloadavg())
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _print_run(run: dict) -> None:
    print(f"dtype={run['dtype']} (grokd load {run['grokd_load_s']} s)")
    print(f"{'batch':>5} {'grokd tok/s':>12} {'hf tok/s':>10} {'ratio':>6} {'grokd TTFT s':>12}")
    hf = {r["concurrency"]: r for r in run.get("hf", [])}
    for g in run["grokd"]:
        h = hf.get(g["concurrency"])
        ratio = f"{g['gen_tokens_per_s'] / h['gen_tokens_per_s']:.2f}" if h else "-"
        print(f"{g['concurrency']:>5} {g['gen_tokens_per_s']:>12} {h['gen_tokens_per_s'] if h else '-':>10} "
              f"{ratio:>6} {g['mean_ttft_s']:>12}")
    sys.stdout.flush()
