"""Speculative decoding (n-gram prompt lookup or a draft model) against plain decoding, side by side in one run.

    grokd bench spec                          # = python -m grokd.benchmarks.speculative
    grokd bench spec --streams 1 8 --max-tokens 96 --rounds 3 --json out.json
    grokd bench spec --speculative-config '{"method": "draft_model", "model": PATH, "num_speculative_tokens": 3}'

Two workloads on the default model, as chats through its template, greedy, each request ending at
EOS or ``--max-tokens``: *grounded* ("rewrite this paragraph with one word changed": the answer
repeats the prompt) and *free* (open-ended writing: drafts seldom match, so this shows what
speculation costs when it does not help). For each workload and stream count the same requests
run through two engines sharing one model, ``--rounds`` times in alternating order (plain, spec,
spec, plain, ...), so load from other work on the machine falls on both alike. Greedy output is
identical with and without speculation (checked here), so both engines generate the same tokens and
tokens/s compare directly. Reported: generated tokens/s (median over rounds), the speed-up, the
acceptance rate, tokens per decode step of a drafting sequence, engine steps, and the 1-minute load
average before and after each case (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from grokd.engine.chat_template import render_chat
from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig, SpeculativeConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.loader import load_model_and_tokenizer
from grokd.engine.sampling_params import SamplingParams
from grokd.kernels import cpu_tier

PARAGRAPHS = [
    "The old lighthouse stood on the northern cliff for two hundred years. Every night its keeper climbed the "
    "spiral stairs, trimmed the wick and watched the ships pass safely through the narrow channel below.",
    "Our team meets every Monday morning to review the previous week. We discuss open issues, assign new tasks "
    "and agree on the priorities, so that everyone knows what to work on next.",
    "The museum opens at nine in the morning and closes at six in the evening. Tickets can be bought at the "
    "entrance or online, and children under twelve enter for free with an adult.",
    "To bake the bread, mix the flour, water, salt and yeast in a large bowl. Knead the dough for ten minutes, "
    "let it rise for an hour, then bake it in a hot oven until the crust is golden.",
    "The river flows from the mountains in the east to the sea in the west. Along its banks there are small "
    "villages, green fields and old stone bridges that have stood for centuries.",
    "The library has a quiet reading room on the second floor. Visitors may borrow up to five books at a time "
    "and keep them for three weeks before they have to return or renew them.",
    "Every spring the birds return to the garden and build their nests in the tall hedge. By early summer the "
    "young birds leave the nests and learn to find food on their own.",
    "The train to the city leaves the station every half hour. The journey takes forty minutes, and passengers "
    "can buy a ticket from the machine on the platform before they board.",
]
SWAPS = [("old", "ancient"), ("Monday", "Tuesday"), ("nine", "ten"), ("large", "big"), ("small", "tiny"),
         ("quiet", "silent"), ("tall", "high"), ("city", "town")]
FREE = ["Write a short story about a dragon who learns to cook.", "Describe your ideal holiday in a few sentences.",
        "Write a poem about autumn leaves.", "Explain why the sky is blue to a child.",
        "Invent a new board game and describe its rules.", "Write a letter to a friend about a recent trip.",
        "Describe a city of the future.", "Tell a joke and explain why it is funny."]


def texts(workload: str, n: int) -> list[str]:
    """The ``n`` user messages of ``workload`` (``grounded`` or ``free``), the same in every run."""
    out = []
    for i in range(n):
        if workload == "grounded":
            old, new = SWAPS[i % len(SWAPS)]
            out.append(f"Rewrite this paragraph exactly, changing only the word '{old}' to '{new}':\n\n"
                       f"{PARAGRAPHS[i % len(PARAGRAPHS)]}")
        else:
            out.append(FREE[i % len(FREE)])
    return out


def prompts(tokenizer: Any, workload: str, n: int) -> list[list[int]]:
    return [tokenizer.encode(render_chat([{"role": "user", "content": text}], template=tokenizer.chat_template,
                                         tokenizer=tokenizer))
            for text in texts(workload, n)]


def run_batch(engine: LLMEngine, batch: list[list[int]], max_tokens: int) -> tuple[float, list[list[int]], int]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    steps_before = engine.steps_total
    t0 = time.perf_counter()
    for i, p in enumerate(batch):
        engine.add_request(f"b{i}", p, params)
    done: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out.outputs[0].token_ids
    elapsed = time.perf_counter() - t0
    return elapsed, [done[f"b{i}"] for i in range(len(batch))], engine.steps_total - steps_before


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--streams", type=int, nargs="+", default=[1, 8], help="concurrent requests per batch")
    p.add_argument("--workloads", nargs="+", default=["grounded", "free"], choices=["grounded", "free"])
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--rounds", type=int, default=3, help="timed runs per engine and case (alternating order)")
    p.add_argument("--speculative-config", default='{"method": "ngram", "num_speculative_tokens": 4, '
                   '"prompt_lookup_max": 4, "prompt_lookup_min": 2}')
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", dest="json_out", help="write results JSON here")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = SpeculativeConfig.parse(args.speculative_config)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip()
    model_cfg = ModelLoadConfig(model=None)
    model, tokenizer, ckpt = load_model_and_tokenizer(model_cfg)
    assert tokenizer is not None

    def engine(speculative: SpeculativeConfig | None) -> LLMEngine:
        cfg = EngineConfig(model=model_cfg, cache=CacheConfig(num_blocks=512),
                           scheduler=SchedulerConfig(max_num_batched_tokens=1024, max_num_seqs=max(args.streams)),
                           speculative=speculative)
        return LLMEngine(cfg, model, tokenizer, checkpoint=ckpt)

    engines = {"plain": engine(None), "spec": engine(spec)}
    run_batch(engines["plain"], prompts(tokenizer, "free", 1), 8)  # first-call costs, untimed
    rows = []
    for workload in args.workloads:
        for n in args.streams:
            batch = prompts(tokenizer, workload, n)
            times: dict[str, list[float]] = {"plain": [], "spec": []}
            outputs: dict[str, list[list[int]]] = {}
            steps: dict[str, int] = {}
            before = engines["spec"].stats()
            load_start = os.getloadavg()[0]
            for r in range(args.rounds):
                for name in (("plain", "spec") if r % 2 == 0 else ("spec", "plain")):
                    elapsed, outs, nsteps = run_batch(engines[name], batch, args.max_tokens)
                    times[name].append(elapsed)
                    outputs[name], steps[name] = outs, nsteps
            after = engines["spec"].stats()
            generated = sum(len(o) for o in outputs["plain"])
            drafted = after.spec_draft_tokens_total - before.spec_draft_tokens_total
            accepted = after.spec_accepted_tokens_total - before.spec_accepted_tokens_total
            verify = after.spec_verify_steps_total - before.spec_verify_steps_total
            emitted = after.spec_emitted_tokens_total - before.spec_emitted_tokens_total
            tps = {k: generated / statistics.median(v) for k, v in times.items()}
            rows.append({
                "workload": workload, "streams": n, "generated_tokens": generated,
                "plain_tok_s": round(tps["plain"], 1), "spec_tok_s": round(tps["spec"], 1),
                "speedup": round(tps["spec"] / tps["plain"], 3),
                "acceptance_rate": round(accepted / drafted, 3) if drafted else 0.0,
                "tokens_per_drafting_step": round(emitted / verify, 2) if verify else 0.0,
                "steps_plain": steps["plain"], "steps_spec": steps["spec"],
                "identical": outputs["plain"] == outputs["spec"],
                "seconds": {k: [round(t, 3) for t in v] for k, v in times.items()},
                "loadavg_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
            })
            print(json.dumps(rows[-1]), flush=True)
    step_ms = {rows: round(1000 * sec, 1) for rows, sec in engines["spec"].step_cost.observed().items()}
    print(f"speculative engine's learnt decode step ms by rows: {step_ms}", flush=True)
    meta = {"cpu": cpu_tier.cpu_model(), "tier": cpu_tier.active().name, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": sys.version.split()[0], "commit": commit,
            "speculative_config": args.speculative_config, "max_tokens": args.max_tokens, "rounds": args.rounds,
            "loadavg_end": list(os.getloadavg()), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {"meta": meta, "rows": rows, "spec_step_ms_by_rows": step_ms}


def main(args: argparse.Namespace) -> int:
    result = measure(args)
    m = result["meta"]
    print(f"cpu={m['cpu']} tier={m['tier']} threads={m['threads']} commit={m['commit']} load={m['loadavg_end']}")
    print("| workload | streams | plain tok/s | spec tok/s | speed-up | acceptance | tokens/step | steps plain → spec |"
          " identical | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {r['workload']} | {r['streams']} | {r['plain_tok_s']} | {r['spec_tok_s']} | {r['speedup']}× | "
              f"{r['acceptance_rate']:.0%} | {r['tokens_per_drafting_step']} | {r['steps_plain']} → {r['steps_spec']} |"
              f" {'yes' if r['identical'] else 'NO'} | {r['loadavg_1min'][0]}–{r['loadavg_1min'][1]} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0 if all(r["identical"] for r in result["rows"]) else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
