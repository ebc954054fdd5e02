"""How far weight-only int8 and fp8 e4m3 move a model's logits (a script).

    python -m grokd.benchmarks.weight_quant_error            # trained default model + the tiny Groks
    python -m grokd.benchmarks.weight_quant_error --json

Part 1, a trained model (SmolLM2-135M, the default): every projection of every layer (qkv, o,
gate/up, down; the head stays float32) is quantised per output channel, to int8
(``quant.quantize_grouped_int8``) or to e4m3 (``quant.quantize_grouped_fp8``), and dequantised
back in place: with float32 activations that is exactly what weight-only inference computes.
One forward over a fixed text (prose and code) against the float32 model gives perplexity, the KL
divergence of each position's next-token distribution, top-1 agreement and the change of each
text token's logprob.

Part 2, the golden tiny Grok-1 (release int8) and Grok-2 (float32) fixtures through the real
``--weights-dtype`` storage: ``auto`` (and for Grok-2 ``int8``) vs ``fp8``, each against the
reference logits. Their weights are random, so a network this small and this untrained amplifies
any weight change (0.7% relative error from int8 already moves Grok-2-tiny's logits by whole
units): these bound nothing about real checkpoints and show only that fp8 is the lossier format.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from grokd.benchmarks.fixture_paths import TEST_DATA
from grokd.engine.models.grok1 import Grok1ForCausalLM
from grokd.engine.models.grok2 import Grok2ForCausalLM
from grokd.engine.models.llama import LlamaForCausalLM
from grokd.kernels.arith import ceil_div
from grokd.kernels.attention import kv_cache_shape
from grokd.kernels.dispatch import select_kernels
from grokd.kernels.metadata import AttentionMetadata
from grokd.kernels.quant import quantize_grouped_fp8, quantize_grouped_int8
from grokd.weights import load

TEXT = ("The Industrial Revolution began in Britain in the late eighteenth century. Steam engines, "
        "first used to pump water out of mines, were soon driving looms and locomotives. Cities grew "
        "quickly as workers moved from farms to factories, and new problems followed: crowded housing, "
        "polluted rivers and long working days. Reformers campaigned for shorter hours, public schools "
        "and clean water, and by the end of the next century many of these reforms had become law.\n"
        "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n")
BLOCK = 16
QUANTISERS = {"int8": quantize_grouped_int8, "fp8": quantize_grouped_fp8}


@dataclass
class TrainedRow:
    weights: str
    perplexity: float
    mean_kl: float
    max_kl: float
    top1_agreement: float
    mean_abs_dlogprob: float
    max_abs_dlogprob: float


@dataclass
class FixtureRow:
    model: str
    weights: str
    max_abs_dlogit: float
    max_abs_dlogprob: float
    top1_agreement: float


def _prefill(model: Grok1ForCausalLM | LlamaForCausalLM, prompts: list[list[int]]) -> list[torch.Tensor]:
    """Float32 logits at every position of each prompt, all prompts in one flat batch."""
    total_blocks = sum(ceil_div(len(p), BLOCK) for p in prompts) + 1
    shape = kv_cache_shape(total_blocks, BLOCK, model.num_kv_heads, model.head_dim)
    caches = [torch.zeros(shape) for _ in range(model.num_layers)]
    tables, first = [], 1
    for p in prompts:
        n = ceil_div(len(p), BLOCK)
        tables.append(list(range(first, first + n)))
        first += n
    lens = [len(p) for p in prompts]
    meta = AttentionMetadata.build(lens, lens, tables, BLOCK)
    ids = torch.tensor([t for p in prompts for t in p])
    pos = torch.cat([torch.arange(n) for n in lens])
    with torch.inference_mode():
        return list(torch.split(model.compute_logits(model(ids, pos, caches, meta)).float(), lens))


def _trained_model(kind: str) -> tuple[LlamaForCausalLM, list[int]]:
    from grokd.engine.loader import load_tokenizer
    from grokd.weights.default_model import default_model_path
    from grokd.weights.gguf_reader import read_gguf

    ckpt = read_gguf(default_model_path())
    tokenizer = load_tokenizer(ckpt)
    assert tokenizer is not None
    model = LlamaForCausalLM(ckpt.config, dtype=torch.float32, kernels=select_kernels("cpu", "torch"))
    model.load_weights(ckpt.tensors(), weights_dtype=torch.float32)
    if kind != "float32":
        quantise = QUANTISERS[kind]
        with torch.no_grad():
            for layer in model.decoder_layers:
                for module, name in ((layer.self_attn, "qkv_weight"), (layer.self_attn, "o_weight"),
                                     (layer.mlp, "gate_up_weight"), (layer.mlp, "down_weight")):
                    w = getattr(module, name)  # [out, in]; the grouped layout is [in, out]
                    w.copy_(quantise(w.t().float()).dequantize().float().t())
    model.pack_weights(int8=False)
    return model.eval(), tokenizer.encode(TEXT)


def trained() -> tuple[int, float, list[TrainedRow]]:
    ref_model, ids = _trained_model("float32")
    ref = _prefill(ref_model, [ids])[0].double().log_softmax(-1)
    target = torch.tensor(ids[1:])[:, None]
    ref_tok = ref[:-1].gather(1, target)
    rows = []
    for kind in QUANTISERS:
        model, _ = _trained_model(kind)
        lp = _prefill(model, [ids])[0].double().log_softmax(-1)
        kl = (ref.exp() * (ref - lp)).sum(-1)
        tok = lp[:-1].gather(1, target)
        rows.append(TrainedRow(kind, float((-tok.mean()).exp()), kl.mean().item(), kl.max().item(),
                               (lp.argmax(-1) == ref.argmax(-1)).double().mean().item(),
                               (tok - ref_tok).abs().mean().item(), (tok - ref_tok).abs().max().item()))
    return len(ids), float((-ref_tok.mean()).exp()), rows


def fixtures(data: Path) -> list[FixtureRow]:
    rows = []
    for name, cls, variants in (("grok1-tiny", Grok1ForCausalLM, ("auto", "fp8")),
                                ("grok2-tiny", Grok2ForCausalLM, ("auto", "int8", "fp8"))):
        ref = json.loads((data / name / "reference.json").read_text())
        cases = ref["fp32"]["single"] + ref["fp32"].get("chat", [])
        for wd in variants:
            model = cls.from_checkpoint(load(data / name), dtype=torch.float32, weights_dtype=wd)
            got = _prefill(model, [c["prompt"] for c in cases])
            dlogit = dlogprob = 0.0
            agree = total = 0
            for case, logits in zip(cases, got, strict=True):
                want = torch.tensor(case["logits"], dtype=torch.float64)
                dlogit = max(dlogit, (logits.double() - want).abs().max().item())
                dlogprob = max(dlogprob, (logits.double().log_softmax(-1) - want.log_softmax(-1)).abs().max().item())
                agree += int((logits.argmax(-1) == want.argmax(-1)).sum())
                total += want.shape[0]
            rows.append(FixtureRow(name, wd, dlogit, dlogprob, agree / total))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--json", action="store_true")
    p.add_argument("--test-data", type=Path, default=TEST_DATA, help="where grok1-tiny/ and grok2-tiny/ are")
    args = p.parse_args()
    n, ppl, rows = trained()
    fixture_rows = fixtures(args.test_data) if (args.test_data / "grok1-tiny").exists() else []
    if args.json:
        print(json.dumps({"tokens": n, "float32_perplexity": ppl, "trained": [asdict(r) for r in rows],
                          "fixtures": [asdict(r) for r in fixture_rows]}, indent=2))
        return
    print(f"SmolLM2-135M, {n} tokens, float32 perplexity {ppl:.3f}; weight-only, per output channel:")
    for r in rows:
        print(f"  {r.weights:5s} perplexity {r.perplexity:.3f}  KL mean {r.mean_kl:.5f} max {r.max_kl:.4f}  "
              f"top-1 {r.top1_agreement:.3f}  |dlogprob| of the text mean {r.mean_abs_dlogprob:.4f} "
              f"max {r.max_abs_dlogprob:.4f}")
    for f in fixture_rows:
        print(f"  {f.model} --weights-dtype {f.weights:5s} |dlogit| {f.max_abs_dlogit:.4f}  "
              f"|dlogprob| {f.max_abs_dlogprob:.4f}  top-1 vs reference {f.top1_agreement:.3f}")


if __name__ == "__main__":
    main()
