"""Engine throughput: generated tokens/s for 1, 8 and 32 concurrent requests (a script, not a test).

    python -m grokd.benchmarks.engine_throughput                       # the grok1-tiny fixture
    python -m grokd.benchmarks.engine_throughput --model default       # the default model
    python -m grokd.benchmarks.engine_throughput --model PATH --dtype bfloat16 --json

All requests of a round are submitted at once and run to completion through ``LLMEngine`` (the
same continuous-batching path the server uses, without HTTP). ``ignore_eos`` keeps every request
at exactly ``--max-tokens`` so rounds are comparable.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

from grokd.benchmarks.fixture_paths import GROK1_TINY
from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.loader import load_model_and_tokenizer
from grokd.engine.sampling_params import SamplingParams

FIXTURE = GROK1_TINY


def run_round(engine: LLMEngine, concurrency: int, prompt_len: int, max_tokens: int, seed: int) -> dict:
    rng = random.Random(seed)
    vocab = engine.vocab_size
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    t0 = time.perf_counter()
    for i in range(concurrency):
        prompt = [rng.randrange(3, vocab) for _ in range(prompt_len)]
        engine.add_request(f"b{seed}-{i}", prompt, params)
    first: dict[str, float] = {}
    steps = 0
    while engine.has_unfinished():
        for out in engine.step():
            if out.outputs[0].token_ids and out.request_id not in first:
                first[out.request_id] = time.perf_counter() - t0
        steps += 1
    elapsed = time.perf_counter() - t0
    gen = concurrency * max_tokens
    return {
        "concurrency": concurrency,
        "generated_tokens": gen,
        "seconds": round(elapsed, 3),
        "gen_tokens_per_s": round(gen / elapsed, 1),
        "total_tokens_per_s": round((gen + concurrency * prompt_len) / elapsed, 1),
        "mean_ttft_s": round(sum(first.values()) / max(1, len(first)), 4),
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(FIXTURE), help="checkpoint path, or 'default' for the default model")
    ap.add_argument("--dtype", default=None, help="activation dtype (fixture: float32, else bfloat16)")
    ap.add_argument("--weights-dtype", default="auto")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = None if args.model == "default" else args.model
    is_fixture = model_path is not None and Path(model_path).resolve() == FIXTURE.resolve()
    dtype = args.dtype or ("float32" if is_fixture or args.device == "cpu" else "bfloat16")
    load = ModelLoadConfig(model=model_path, dtype=dtype, weights_dtype=args.weights_dtype, device=args.device)
    t0 = time.perf_counter()
    model, tokenizer, ckpt = load_model_and_tokenizer(load)
    load_s = time.perf_counter() - t0
    need = max(args.concurrency) * (args.prompt_len + args.max_tokens)
    config = EngineConfig(
        model=load,
        cache=CacheConfig(num_blocks=need // 16 + max(args.concurrency) + 8),
        scheduler=SchedulerConfig(max_num_seqs=max(args.concurrency), max_num_batched_tokens=2048),
    )
    engine = LLMEngine(config, model, tokenizer, checkpoint=ckpt)
    run_round(engine, 1, args.prompt_len, 2, seed=-1)  # warm-up
    rows = [run_round(engine, c, args.prompt_len, args.max_tokens, seed=c) for c in args.concurrency]
    meta = {
        "model": str(ckpt.path),
        "architecture": ckpt.architecture,
        "dtype": dtype,
        "weights_dtype": args.weights_dtype,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "load_seconds": round(load_s, 2),
        "prompt_len": args.prompt_len,
        "max_tokens": args.max_tokens,
    }
    if args.json:
        json.dump({"meta": meta, "results": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(" ".join(f"{k}={v}" for k, v in meta.items()))
    print(f"{'conc':>5} {'gen tok/s':>10} {'all tok/s':>10} {'ttft s':>8} {'seconds':>8} {'steps':>6}")
    for r in rows:
        print(
            f"{r['concurrency']:>5} {r['gen_tokens_per_s']:>10} {r['total_tokens_per_s']:>10} "
            f"{r['mean_ttft_s']:>8} {r['seconds']:>8} {r['steps']:>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
