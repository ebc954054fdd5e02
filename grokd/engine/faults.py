"""Fault injection for tests: make the engine fail at a chosen point without mocking any part of it.

A ``FaultPlan`` is read once, when an ``LLMEngine`` is built: from ``EngineConfig.faults`` when
set, else from the ``GROKD_FAULTS`` environment variable, so a test can switch faults on in a real
``grokd serve`` subprocess or an in-process server alike. The variable holds comma-separated
``name=value`` entries; requests are picked by their sampling ``seed`` (the ``seed`` field of an
HTTP request), so one request of a batch can be made to fail while the others run:

``step=N``
    the engine's Nth step (counting from 1) raises inside the model step, where the per-step
    guard catches it: every request of that step fails, the engine goes on.
``step_seed=S``
    every model step whose batch holds a request with seed ``S`` raises (as ``step``).
``sampler_seed=S``
    the logits processing raises for the rows of requests with seed ``S`` (as a broken logits
    processor or grammar would): only those requests fail.
``nan_seed=S``
    the logits of rows with seed ``S`` are NaN: only those requests fail.
``loop_seed=S``
    the engine loop thread dies (an exception outside the per-step guard) when it takes in a
    request with seed ``S``: the engine stops for good and the server exits.

Unset (the default) every field is ``None`` and ``active`` is False; the engine tests ``active``
once per step and does nothing else, so a server without faults pays one attribute read a step.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields

import torch

ENV_VAR = "GROKD_FAULTS"


class InjectedFault(RuntimeError):
    """Raised where a ``FaultPlan`` says so; its message names the fault."""


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject (see the module doc); all ``None``: none."""

    step: int | None = None
    step_seed: int | None = None
    sampler_seed: int | None = None
    nan_seed: int | None = None
    loop_seed: int | None = None

    @property
    def active(self) -> bool:
        return any(getattr(self, f.name) is not None for f in fields(self))

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """``"name=value,..."`` (the ``GROKD_FAULTS`` syntax); a ValueError names a bad entry."""
        known = {f.name for f in fields(cls)}
        values: dict[str, int] = {}
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            name, sep, value = (p.strip() for p in entry.partition("="))
            if not sep or name not in known:
                raise ValueError(f"{ENV_VAR}: expected name=integer with name one of "
                                 f"{', '.join(sorted(known))}, got {entry!r}")
            try:
                values[name] = int(value)
            except ValueError:
                raise ValueError(f"{ENV_VAR}: {name} needs an integer, got {value!r}") from None
        return cls(**values)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultPlan:
        return cls.parse((os.environ if environ is None else environ).get(ENV_VAR, ""))

    # ---- the injection points (called only when ``active``) -----------------------------------
    def before_step(self, step: int, seeds: Iterable[int | None]) -> None:
        """In the model step, inside the per-step guard."""
        if self.step is not None and step == self.step:
            raise InjectedFault(f"injected fault: model step {step}")
        if self.step_seed is not None and self.step_seed in seeds:
            raise InjectedFault(f"injected fault: model step with a request of seed {self.step_seed}")

    def in_sampler(self, seeds: Iterable[int | None]) -> None:
        """While processing a group of rows' logits."""
        if self.sampler_seed is not None and self.sampler_seed in seeds:
            raise InjectedFault(f"injected fault: logits processor for seed {self.sampler_seed}")

    def poison(self, logits: torch.Tensor, seeds: list[int | None]) -> torch.Tensor:
        """``logits`` (one row per seed, in order) with NaN in the rows ``nan_seed`` picks (a copy:
        the model's output may be an inference-mode tensor)."""
        rows = [i for i, seed in enumerate(seeds) if self.nan_seed is not None and seed == self.nan_seed]
        if not rows:
            return logits
        out = logits.clone()
        out[rows] = float("nan")
        return out

    def in_loop(self, seeds: Iterable[int | None]) -> None:
        """In the engine loop, outside the per-step guard: kills the loop thread."""
        if self.loop_seed is not None and self.loop_seed in seeds:
            raise InjectedFault(f"injected fault: engine loop dies on a request of seed {self.loop_seed}")
