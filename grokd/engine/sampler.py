"""Turns a batch of logits into one token per row, with per-request parameters.

Rows are grouped by their processor order; each processor runs once per group on the rows where
it is active. Greedy rows take the argmax of the processed logits. Sampled rows use the
exponential-race trick (``argmax(p / E)`` with ``E ~ Exp(1)``, equivalent to drawing from ``p``);
a seeded row draws its noise from its own generator, so its tokens do not depend on the batch.

Logprobs are the model's raw ``log_softmax`` before any processor (vLLM's default "raw
logprobs"): they describe what the model thinks, not the sampling filter. A row whose params set
``processed_logprobs`` also gets the ``log_softmax`` of its processed logits (what the draw used;
for a greedy row that is the masked and penalised logits at temperature 1, of which the chosen
token is the argmax), with the same number of alternatives and the removed tokens left out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from grokd.engine.logits_processors import ProcessorRegistry, SamplingRow
from grokd.engine.outputs import TokenLogprob
from grokd.kernels.argmax import argmax as kernel_argmax


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[TokenLogprob | None]


def top_logprobs(logprobs: torch.Tensor, chosen: torch.Tensor, ks: list[int]) -> list[TokenLogprob]:
    """``TokenLogprob`` per row of ``logprobs [b, V]`` for tokens ``chosen [b]`` with ``ks[i]`` alternatives."""
    chosen_lp = logprobs.gather(1, chosen[:, None])[:, 0].tolist()
    kmax = max(ks, default=0)
    best = logprobs.topk(kmax, dim=-1) if kmax else None
    out = []
    for i, tok in enumerate(chosen.tolist()):
        top: list[tuple[int, float]] = []
        if ks[i] and best is not None:
            top = list(zip(best.indices[i, : ks[i]].tolist(), best.values[i, : ks[i]].tolist(), strict=True))
        out.append(TokenLogprob(token_id=int(tok), logprob=float(chosen_lp[i]), top=top))
    return out


class Sampler:
    def __init__(
        self,
        registry: ProcessorRegistry,
        generator: torch.Generator | None = None,
        argmax: Callable[[torch.Tensor], torch.Tensor] = kernel_argmax,
    ) -> None:
        """``argmax``: the device's kernel (``kernels.dispatch.Kernels.argmax``), for greedy rows and
        the exponential race alike."""
        self.registry = registry
        self.generator = generator  # for unseeded rows; owned by the engine
        self.argmax = argmax

    def process(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Apply every row's processors in its order; returns new logits ``[b, V]``, or ``logits``
        itself (never modified) when no processor is active: plain greedy rows cost no copy."""
        out: torch.Tensor | None = None
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(self.registry.order_for(row.params), []).append(i)
        for order, members in groups.items():
            for name in order:
                proc = self.registry.get(name)
                active = [i for i in members if proc.is_active(rows[i])]
                if not active:
                    continue
                if out is None:
                    out = logits.clone()
                idx = torch.tensor(active, dtype=torch.int64, device=logits.device)
                sub = proc.apply(out.index_select(0, idx), [rows[i] for i in active])
                out.index_copy_(0, idx, sub)
        return logits if out is None else out

    def __call__(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
        if not rows:
            return SamplerOutput([], [])
        logits = logits.float()
        processed = self.process(logits, rows)
        chosen = self.argmax(processed)
        sampled = [i for i, r in enumerate(rows) if not r.greedy]
        if sampled:
            idx = torch.tensor(sampled, dtype=torch.int64, device=logits.device)
            probs = processed.index_select(0, idx).softmax(-1)
            noise = torch.empty_like(probs)
            unseeded = []
            for j, i in enumerate(sampled):
                gen = rows[i].generator
                if gen is None:
                    unseeded.append(j)
                else:
                    noise[j].exponential_(generator=gen)
            if unseeded:
                u = torch.tensor(unseeded, dtype=torch.int64, device=logits.device)
                noise[u] = torch.empty(len(unseeded), probs.shape[1], device=logits.device).exponential_(
                    generator=self.generator
                )
            chosen[idx] = self.argmax(probs / noise).to(chosen.device)
        logprobs: list[TokenLogprob | None] = [None] * len(rows)
        want = [i for i, r in enumerate(rows) if r.params.logprobs is not None]
        if want:
            idx = torch.tensor(want, dtype=torch.int64, device=logits.device)
            raw = logits.index_select(0, idx).log_softmax(-1)
            ks = [k for r in rows if (k := r.params.logprobs) is not None]
            for i, lp in zip(want, top_logprobs(raw, chosen[idx], ks), strict=True):
                logprobs[i] = lp
            after = [i for i in want if rows[i].params.processed_logprobs]
            if after:
                pidx = torch.tensor(after, dtype=torch.int64, device=logits.device)
                post = processed.index_select(0, pidx).log_softmax(-1)
                pks = [rows[i].params.logprobs or 0 for i in after]
                for i, plp in zip(after, top_logprobs(post, chosen[pidx], pks), strict=True):
                    raw_lp = logprobs[i]
                    assert raw_lp is not None
                    raw_lp.processed_logprob = plp.logprob
                    raw_lp.processed_top = [(t, v) for t, v in plp.top if v != float("-inf")]
        return SamplerOutput(chosen.tolist(), logprobs)
