"""Per-token cost of constrained decoding: grammar mask time vs engine step time (a script).

    python -m grokd.benchmarks.structured_overhead                 # masks on Grok-1 + SmolLM2 vocabularies, engine on the default model
    python -m grokd.benchmarks.structured_overhead --no-engine     # masks only (no model load)
    python -m grokd.benchmarks.structured_overhead --json

Part 1 (no model): for each tokenizer, build the llguidance backend, compile a few schemas
(cold and cached), then drive states with seeded random logits and time ``allowed_mask`` per
token: in the free phase (no token budget) and near the end of ``max_tokens`` where the budget
logic simulates a closing path; plus one batched mask call for ``--batch`` states.
Part 2 (model): the same batch of requests through ``LLMEngine`` unconstrained vs with a JSON
schema; reports mean step time and generated tokens/s for both.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import torch

from grokd.benchmarks.fixture_paths import GROK1_TOKENIZER

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name"],
    },
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 24},
            "temp": {"type": "number", "minimum": -60, "maximum": 60},
            "unit": {"enum": ["C", "F"]},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "required": ["city", "temp", "unit"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"sku": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}},
                    "required": ["sku", "qty"],
                },
            },
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        },
        "required": ["items"],
    },
]


def _tokenizers(which: list[str]) -> list[tuple[str, Any]]:
    out = []
    if "grok1" in which and GROK1_TOKENIZER.is_file():
        from grokd.engine.sp_tokenizer import SentencePieceTokenizer

        out.append(("grok-1 (sentencepiece)", SentencePieceTokenizer(GROK1_TOKENIZER)))
    if "smollm2" in which:
        try:
            from grokd.engine.hf_tokenizer import HFTokenizer
            from grokd.weights.default_model import default_model_path
            from grokd.weights.gguf_reader import read_gguf

            out.append(
                (
                    "smollm2 (byte-level bpe)",
                    HFTokenizer.from_source(read_gguf(default_model_path()).tokenizer),
                )
            )
        except (FileNotFoundError, ImportError) as exc:
            print(f"skipping smollm2 tokenizer: {exc}", file=sys.stderr)
    return out


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else 0.0


def bench_masks(name: str, tok: Any, tokens: int, seeds: int, batch: int) -> dict[str, Any]:
    from grokd.engine.structured.backend import StructuredOutputBackend
    from grokd.engine.structured.specs import JsonSchemaSpec

    t0 = time.perf_counter()
    backend = StructuredOutputBackend(tok)
    build_s = time.perf_counter() - t0
    cold, warm = [], []
    for schema in SCHEMAS:
        t = time.perf_counter()
        backend.compile(JsonSchemaSpec(schema))
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        backend.compile(JsonSchemaSpec(schema))
        warm.append(time.perf_counter() - t)
    vocab = tok.vocab_size
    free_us: list[float] = []
    budget_us: list[float] = []
    for seed in range(seeds):
        for budget_phase in (False, True):
            for schema in SCHEMAS:
                gen = torch.Generator().manual_seed(seed)
                state = backend.new_state(JsonSchemaSpec(schema), max_tokens=tokens if budget_phase else None)
                for _ in range(tokens):
                    t = time.perf_counter()
                    mask = state.allowed_mask(vocab)
                    (budget_us if budget_phase else free_us).append((time.perf_counter() - t) * 1e6)
                    logits = torch.randn(vocab, generator=gen).masked_fill(~mask, float("-inf"))
                    tid = int(torch.multinomial(logits.softmax(-1), 1, generator=gen))
                    state.accept(tid)
                    if state.is_terminated() or tid in tok.eos_token_ids:
                        break
    states = [backend.new_state(JsonSchemaSpec(SCHEMAS[i % len(SCHEMAS)])) for i in range(batch)]
    for s in states:  # move each past the opening brace so masks are non-trivial
        s.accept(int(s.allowed_mask(vocab).nonzero()[0]))
    t = time.perf_counter()
    reps = 20
    for _ in range(reps):
        backend.batch_allowed_masks(states, vocab)
    batch_ms = (time.perf_counter() - t) / reps * 1e3
    return {
        "tokenizer": name,
        "vocab": vocab,
        "backend_build_s": round(build_s, 3),
        "compile_cold_ms": round(statistics.mean(cold) * 1e3, 2),
        "compile_cached_ms": round(statistics.mean(warm) * 1e3, 3),
        "mask_free_us_p50": round(_pct(free_us, 0.5), 1),
        "mask_free_us_p99": round(_pct(free_us, 0.99), 1),
        "mask_free_us_mean": round(statistics.mean(free_us), 1),
        "mask_budget_us_p50": round(_pct(budget_us, 0.5), 1),
        "mask_budget_us_p99": round(_pct(budget_us, 0.99), 1),
        "mask_budget_us_mean": round(statistics.mean(budget_us), 1),
        "batch": batch,
        "batch_mask_ms": round(batch_ms, 3),
    }


def bench_engine(concurrency: int, max_tokens: int, model: str | None, rounds: int = 2) -> dict[str, Any]:
    from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
    from grokd.engine.llm_engine import LLMEngine
    from grokd.engine.loader import load_model_and_tokenizer
    from grokd.engine.sampling_params import SamplingParams
    from grokd.engine.structured.specs import JsonSchemaSpec

    load = ModelLoadConfig(model=model, dtype="float32", device="cpu")
    model_obj, tok, ckpt = load_model_and_tokenizer(load)
    if tok is None:
        raise SystemExit("the model has no tokenizer: structured outputs need one")
    config = EngineConfig(
        model=load,
        cache=CacheConfig(num_blocks=concurrency * (64 + max_tokens) // 16 + concurrency + 8),
        scheduler=SchedulerConfig(max_num_seqs=concurrency, max_num_batched_tokens=2048),
    )
    engine = LLMEngine(config, model_obj, tok, checkpoint=ckpt)
    engine.structured_backend  # noqa: B018  (build the tokenizer table outside the timing)
    prompt = tok.encode("Reply with a JSON object describing the weather in Paris.")

    proc = engine.registry.get("structured")
    raw_apply = proc.apply
    mask_s: list[float] = []

    def timed_apply(logits: torch.Tensor, rows: list) -> torch.Tensor:
        t = time.perf_counter()
        out = raw_apply(logits, rows)
        mask_s.append(time.perf_counter() - t)
        return out

    proc.apply = timed_apply  # type: ignore[method-assign]

    def run(structured: bool, tag: str) -> dict[str, Any]:
        mask_s.clear()
        for i in range(concurrency):
            spec = JsonSchemaSpec(SCHEMAS[i % len(SCHEMAS)]) if structured else None
            params = SamplingParams(
                max_tokens=max_tokens, temperature=1.0, seed=i, structured=spec, ignore_eos=not structured
            )
            engine.add_request(f"{tag}-{i}", prompt, params)
        steps, gen, step_s = 0, 0, []
        t0 = time.perf_counter()
        while engine.has_unfinished():
            t = time.perf_counter()
            outs = engine.step()
            step_s.append(time.perf_counter() - t)
            steps += 1
            gen += sum(len(o.outputs[0].delta_token_ids) for o in outs)
        elapsed = time.perf_counter() - t0
        return {
            "structured": structured,
            "steps": steps,
            "generated_tokens": gen,
            "mean_step_ms": round(statistics.mean(step_s) * 1e3, 2),
            "mask_ms_per_step": round(sum(mask_s) / max(1, steps) * 1e3, 3),
            "gen_tokens_per_s": round(gen / elapsed, 1),
        }

    run(False, "warm")
    rows = []
    for rnd in range(rounds):  # alternate so background load hits both alike; keep the best round
        rows += [run(False, f"plain{rnd}"), run(True, f"json{rnd}")]
    best = [
        min((r for r in rows if r["structured"] == s), key=lambda r: r["mean_step_ms"]) for s in (False, True)
    ]
    return {"model": str(ckpt.path), "concurrency": concurrency, "rows": best}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizers", nargs="+", default=["grok1", "smollm2"])
    ap.add_argument("--tokens", type=int, default=64, help="tokens per state in the mask benchmark")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-engine", action="store_true")
    ap.add_argument(
        "--model", default=None, help="checkpoint for the engine part (default: the default model)"
    )
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    masks = [bench_masks(n, t, args.tokens, args.seeds, args.batch) for n, t in _tokenizers(args.tokenizers)]
    eng = None if args.no_engine else bench_engine(args.concurrency, args.max_tokens, args.model)
    if args.json:
        json.dump({"threads": args.threads, "masks": masks, "engine": eng}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"threads={args.threads} tokens/state={args.tokens} seeds={args.seeds}")
    print(
        f"{'tokenizer':<26} {'vocab':>7} {'build s':>8} {'compile ms':>10} {'cached ms':>9} "
        f"{'free p50/p99 us':>16} {'budget p50/p99 us':>18} {'batch ms':>9}"
    )
    for m in masks:
        print(
            f"{m['tokenizer']:<26} {m['vocab']:>7} {m['backend_build_s']:>8} {m['compile_cold_ms']:>10} "
            f"{m['compile_cached_ms']:>9} {m['mask_free_us_p50']:>7}/{m['mask_free_us_p99']:<8} "
            f"{m['mask_budget_us_p50']:>8}/{m['mask_budget_us_p99']:<9} {m['batch_mask_ms']:>9} (B={m['batch']})"
        )
    if eng:
        print(f"engine: {eng['model']} concurrency={eng['concurrency']}")
        for r in eng["rows"]:
            print(
                f"  {'json_schema' if r['structured'] else 'unconstrained':<14} step {r['mean_step_ms']} ms, "
                f"mask {r['mask_ms_per_step']} ms/step, {r['gen_tokens_per_s']} gen tok/s "
                f"({r['generated_tokens']} tokens, {r['steps']} steps)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
