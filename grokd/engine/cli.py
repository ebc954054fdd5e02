"""``grokd generate``: one quick offline generation from the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("generate", help="generate text offline from a prompt")
    p.add_argument("--model", default=None, help="checkpoint path (default: the bundled default model)")
    p.add_argument("--tokenizer", default=None, help="tokenizer path overriding the checkpoint's")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="prompt text")
    src.add_argument("--prompt-ids", help="comma-separated prompt token ids, e.g. 1,2,3")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--n", type=int, default=1)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--logprobs", type=int, default=None)
    p.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32", "float16"])
    p.add_argument("--weights-dtype", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--kv-cache-memory", type=int, default=None, help="KV cache bytes")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "int8"], help="KV cache storage")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig
    from grokd.engine.llm import LLM
    from grokd.engine.sampling_params import SamplingParams

    config = EngineConfig(
        model=ModelLoadConfig.from_namespace(args),
        cache=CacheConfig(kv_cache_memory=args.kv_cache_memory, dtype=args.kv_cache_dtype),
    )
    params = SamplingParams(
        n=args.n,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        seed=args.seed,
        stop=args.stop,
        logprobs=args.logprobs,
    )
    llm = LLM(config)
    if args.prompt_ids is not None:
        prompt: str | list[int] = [int(t) for t in args.prompt_ids.split(",") if t.strip()]
    else:
        prompt = args.prompt
    t0 = time.perf_counter()
    out = llm.generate(prompt, params, use_tqdm=False)[0]
    elapsed = time.perf_counter() - t0
    if args.json:
        body = {
            "prompt_token_ids": out.prompt_token_ids,
            "outputs": [
                {
                    "index": c.index,
                    "text": c.text,
                    "token_ids": c.token_ids,
                    "finish_reason": c.finish_reason,
                    "stop_reason": c.stop_reason,
                    "logprobs": None
                    if c.logprobs is None
                    else [
                        {"token_id": lp.token_id, "logprob": lp.logprob, "top": lp.top} for lp in c.logprobs
                    ],
                }
                for c in out.outputs
            ],
            "error": out.error,
            "seconds": round(elapsed, 4),
        }
        json.dump(body, sys.stdout)
        sys.stdout.write("\n")
    else:
        for c in out.outputs:
            sys.stdout.write(
                (c.text if llm.tokenizer is not None else " ".join(map(str, c.token_ids))) + "\n"
            )
    return 1 if out.error else 0
