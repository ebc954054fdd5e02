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

A row fails alone: one whose raw logits are not finite (a NaN anywhere, a +inf, or nothing above
-inf: one reduction over the batch, ``amax`` propagates NaN) is never sampled, and when sampling
the batch raises (a processor or grammar that breaks on one request's rows) each row is sampled
on its own, so the rows that still raise fail and the others get their token; a seeded row's
generator is put back first, so its retry draws the noise it would have drawn undisturbed.
Failed rows come back in ``SamplerOutput.failed`` with the reason; the engine ends their
requests with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from grokd.engine.faults import FaultPlan
from grokd.engine.logits_processors import ProcessorRegistry, SamplingRow
from grokd.engine.outputs import TokenLogprob
from grokd.kernels.argmax import argmax as kernel_argmax

NONFINITE_LOGITS = "the model produced non-finite logits (NaN or inf) for this request"
FAILED_TOKEN = -1  # token id of a failed row (never appended: the engine fails the request)


@dataclass
class SamplerOutput:
    token_ids: list[int]
    logprobs: list[TokenLogprob | None]
    failed: dict[int, str] = field(default_factory=dict)  # row index -> why it could not be sampled


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
        faults: FaultPlan | None = None,
    ) -> None:
        """``argmax``: the device's kernel (``kernels.dispatch.Kernels.argmax``), for greedy rows and
        the exponential race alike. ``faults``: injected failures (``engine.faults``; tests)."""
        self.registry = registry
        self.generator = generator  # for unseeded rows; owned by the engine
        self.argmax = argmax
        self.faults = faults if faults is not None and faults.active else None

    def process(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        """Apply every row's processors in its order; returns new logits ``[b, V]``, or ``logits``
        itself (never modified) when no processor is active: plain greedy rows cost no copy."""
        out: torch.Tensor | None = None
        groups: dict[tuple[str, ...], list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(self.registry.order_for(row.params), []).append(i)
        for order, members in groups.items():
            if self.faults is not None:
                self.faults.in_sampler(rows[i].params.seed for i in members)
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
        """One token per row; rows that cannot be sampled are in ``failed`` (see the module doc)."""
        if not rows:
            return SamplerOutput([], [])
        logits = logits.float()
        failed: dict[int, str] = {}
        finite = torch.isfinite(logits.amax(-1))
        if not bool(finite.all()):
            failed = {i: NONFINITE_LOGITS for i in (~finite).nonzero()[:, 0].tolist()}
        tokens = [FAILED_TOKEN] * len(rows)
        logprobs: list[TokenLogprob | None] = [None] * len(rows)
        keep = [i for i in range(len(rows)) if i not in failed]
        # a retried seeded row must draw the noise the failed attempt drew: its generator restarts
        seeded = {i: gen.get_state() for i in keep if not rows[i].greedy and (gen := rows[i].generator) is not None}
        tries = [keep] if keep else []
        while tries:
            idx = tries.pop()
            sub = logits if len(idx) == len(rows) else logits[torch.tensor(idx, device=logits.device)]
            try:
                out = self._sample(sub, [rows[i] for i in idx])
            except Exception as exc:  # noqa: BLE001 - the rows are retried one by one
                if len(idx) == 1:
                    failed[idx[0]] = _reason(exc)  # this row's request fails, the others go on
                else:
                    for i in idx:
                        if i in seeded:
                            rows[i].generator.set_state(seeded[i])  # type: ignore[union-attr]
                    tries.extend([i] for i in reversed(idx))
                continue
            for j, i in enumerate(idx):
                tokens[i], logprobs[i] = out.token_ids[j], out.logprobs[j]
        return SamplerOutput(tokens, logprobs, failed)

    def _sample(self, logits: torch.Tensor, rows: list[SamplingRow]) -> SamplerOutput:
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


def _reason(exc: Exception) -> str:
    return f"sampling failed: {type(exc).__name__}: {exc}"
