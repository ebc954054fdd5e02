"""Logits processors: one class per transformation, applied to a sub-batch of rows at once.

Each processor has a registered ``name``; a request's ``SamplingParams.samplers`` lists names in
the order to apply them (like llama.cpp's ``--samplers``), otherwise ``DEFAULT_ORDER`` is used.
A researcher adds a sampler by decorating a ``LogitsProcessor`` subclass with ``@sampler("name")``
and exposing it under the ``grokd.samplers`` Python entry-point group (or passing the class to
the engine); its per-request parameters come from ``SamplingParams.extra[name]``.

Each processor also describes its parameters (``params``: ``SamplerParam`` name, type, range,
default), so a client can build controls for every registered processor without knowing them in
advance (``ProcessorRegistry.describe``, served as ``GET /v1/samplers``). A built-in's parameters
are top-level request fields (``temperature``, ``top_k``, ...); a plugin's are the keys of the
object in the request field named after it (``{"my_sampler": {"strength": 0.5}}``).

Processors never see other requests' rows: ``apply`` gets only rows where ``is_active`` is true,
so one request's settings can never change another's distribution.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch

from grokd.engine.sampling_params import SamplingParams

NEG_INF = float("-inf")
ENTRY_POINT_GROUP = "grokd.samplers"


ParamType = Literal["number", "integer", "boolean", "string", "string_list", "token_bias"]


@dataclass(frozen=True)
class SamplerParam:
    """One parameter a processor reads: ``type`` is a JSON-ish kind (``string_list``: a list of
    strings; ``token_bias``: an object of token id -> bias); ``minimum``/``maximum`` are inclusive
    bounds unless ``exclusive_minimum`` (None = unbounded); ``default`` is the value that leaves
    the processor inactive or neutral."""

    name: str
    type: ParamType
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    description: str = ""

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SamplerInfo:
    """What ``ProcessorRegistry.describe`` says about one registered processor."""

    name: str
    builtin: bool
    description: str
    params: tuple[SamplerParam, ...]
    in_default_order: bool

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "builtin": self.builtin, "description": self.description,
                "in_default_order": self.in_default_order, "params": [p.describe() for p in self.params]}


@runtime_checkable
class StructuredState(Protocol):
    """Per-sequence grammar state from a structured-output backend (xgrammar, llguidance, ...)."""

    def allowed_mask(self, vocab_size: int) -> torch.Tensor:
        """Bool tensor ``[vocab_size]``: tokens the grammar allows next."""
        ...

    def accept(self, token_id: int) -> object:
        """Advance by one sampled token (the engine ignores what this returns)."""
        ...

    def is_terminated(self) -> bool: ...


class StructuredBackend(Protocol):
    """Compiles ``SamplingParams.structured`` into a fresh state per sequence."""

    def new_state(self, spec: Any, tokenizer: Any, max_tokens: int | None = None) -> StructuredState: ...


@dataclass
class SamplingRow:
    """What processors may read about one sequence at one step."""

    params: SamplingParams
    prompt_ids: list[int]
    output_ids: list[int]
    eos_ids: list[int] = field(default_factory=list)
    bad_words_ids: list[list[int]] = field(default_factory=list)
    generator: torch.Generator | None = None
    structured_state: StructuredState | None = None

    @property
    def greedy(self) -> bool:
        return self.params.temperature == 0.0


class LogitsProcessor:
    """Base class. ``apply`` returns new logits for the given rows ``[b, V]`` (may modify in place)."""

    name: ClassVar[str] = ""
    builtin: ClassVar[bool] = False
    params: ClassVar[tuple[SamplerParam, ...]] = ()

    def is_active(self, row: SamplingRow) -> bool:
        return self.name in row.params.extra or bool(row.params.samplers and self.name in row.params.samplers)

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def row_param(rows: list[SamplingRow], attr: str, like: torch.Tensor) -> torch.Tensor:
        """Per-row scalar parameter as a ``[b, 1]`` tensor."""
        return torch.tensor(
            [float(getattr(r.params, attr)) for r in rows], dtype=like.dtype, device=like.device
        )[:, None]


def sampler(name: str):
    """Class decorator naming a processor for registration."""

    def wrap(cls: type[LogitsProcessor]) -> type[LogitsProcessor]:
        cls.name = name
        return cls

    return wrap


def _padded(lists: list[list[int]], fill: int, device: torch.device) -> torch.Tensor:
    width = max((len(x) for x in lists), default=0)
    return torch.tensor(
        [x + [fill] * (width - len(x)) for x in lists], dtype=torch.int64, device=device
    ).reshape(len(lists), width)


def token_counts(lists: list[list[int]], vocab: int, device: torch.device) -> torch.Tensor:
    """``[b, V]`` float counts of each token id in each row's list."""
    ids = _padded(lists, vocab, device)
    counts = torch.zeros(len(lists), vocab + 1, device=device)
    counts.scatter_add_(1, ids, torch.ones_like(ids, dtype=counts.dtype))
    return counts[:, :vocab]


# ---- masks and penalties (also applied to greedy requests) -----------------------------------
@sampler("penalties")
class Penalties(LogitsProcessor):
    """Repetition penalty (CTRL/HF: divide positive / multiply negative logits of every token seen
    in prompt or output), then OpenAI's ``logit -= count * frequency + (count > 0) * presence``
    over generated tokens."""

    builtin = True
    params = (
        SamplerParam("repetition_penalty", "number", 1.0, 0.0, None, True,
                     "divide positive / multiply negative logits of tokens already seen; 1 = off"),
        SamplerParam("frequency_penalty", "number", 0.0, -2.0, 2.0, description="per occurrence in the output"),
        SamplerParam("presence_penalty", "number", 0.0, -2.0, 2.0, description="once per token present in the output"),
    )

    def is_active(self, row: SamplingRow) -> bool:
        p = row.params
        return p.repetition_penalty != 1.0 or p.frequency_penalty != 0.0 or p.presence_penalty != 0.0

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        vocab, dev = logits.shape[1], logits.device
        counts = token_counts([r.output_ids for r in rows], vocab, dev)
        rep = self.row_param(rows, "repetition_penalty", logits)
        if (rep != 1.0).any():
            seen = (token_counts([r.prompt_ids for r in rows], vocab, dev) + counts) > 0
            scaled = torch.where(logits > 0, logits / rep, logits * rep)
            logits = torch.where(seen, scaled, logits)
        freq = self.row_param(rows, "frequency_penalty", logits)
        pres = self.row_param(rows, "presence_penalty", logits)
        return logits - counts * freq - (counts > 0).to(logits.dtype) * pres


@sampler("logit_bias")
class LogitBias(LogitsProcessor):
    """Adds a fixed bias to chosen token ids' logits (OpenAI's ``logit_bias``)."""

    builtin = True
    params = (SamplerParam("logit_bias", "token_bias", {}, -100.0, 100.0, description="token id -> bias"),)

    def is_active(self, row: SamplingRow) -> bool:
        return bool(row.params.logit_bias)

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        for i, r in enumerate(rows):
            ids = torch.tensor([int(t) for t in r.params.logit_bias], dtype=torch.int64, device=logits.device)
            vals = torch.tensor(list(r.params.logit_bias.values()), dtype=logits.dtype, device=logits.device)
            logits[i].index_add_(0, ids, vals)
        return logits


@sampler("bad_words")
class BadWords(LogitsProcessor):
    """Bans the last token of a banned sequence when the output ends with the rest of it."""

    builtin = True
    params = (SamplerParam("bad_words", "string_list", [], description="words the output must not contain"),)

    def is_active(self, row: SamplingRow) -> bool:
        return bool(row.bad_words_ids)

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        for i, r in enumerate(rows):
            out = r.output_ids
            for words in r.bad_words_ids:
                prefix = words[:-1]
                if not prefix or (len(out) >= len(prefix) and out[len(out) - len(prefix) :] == prefix):
                    logits[i, words[-1]] = NEG_INF
        return logits


@sampler("min_tokens")
class MinTokens(LogitsProcessor):
    """Blocks eos and stop token ids until ``min_tokens`` tokens have been generated."""

    builtin = True
    params = (SamplerParam("min_tokens", "integer", 0, 0, None, description="tokens before eos may end the output"),)

    def is_active(self, row: SamplingRow) -> bool:
        return len(row.output_ids) < row.params.min_tokens

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        for i, r in enumerate(rows):
            ids = [t for t in [*r.eos_ids, *r.params.stop_token_ids] if 0 <= t < logits.shape[1]]
            if ids:
                logits[i, ids] = NEG_INF
        return logits


@sampler("structured")
class StructuredMask(LogitsProcessor):
    """Grammar mask from the sequence's ``StructuredState`` (the structured-output seam), set by
    the request's ``response_format`` or ``tools``; it runs whatever ``samplers`` order asks."""

    builtin = True

    def is_active(self, row: SamplingRow) -> bool:
        return row.structured_state is not None

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        # One call for the whole batch: llguidance computes the rows' masks in parallel with the
        # GIL released; states of other backends fall back to their own allowed_mask.
        from grokd.engine.structured.state import batch_allowed_masks

        masks = batch_allowed_masks([r.structured_state for r in rows], logits.shape[1]).to(logits.device)
        return logits.masked_fill(~masks, NEG_INF)


# ---- distribution shaping (skipped for greedy requests) --------------------------------------
class _Shaping(LogitsProcessor):
    builtin = True

    def is_active(self, row: SamplingRow) -> bool:
        return not row.greedy and self.wanted(row.params)

    def wanted(self, p: SamplingParams) -> bool:
        raise NotImplementedError


@sampler("temperature")
class Temperature(_Shaping):
    """Divides the logits by ``temperature`` (0 = greedy: the shaping processors are skipped)."""

    params = (SamplerParam("temperature", "number", 1.0, 0.0, 2.0),)

    def wanted(self, p: SamplingParams) -> bool:
        return p.temperature != 1.0

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        return logits / self.row_param(rows, "temperature", logits)


@sampler("top_k")
class TopK(_Shaping):
    """Keeps the ``top_k`` most likely tokens."""

    params = (SamplerParam("top_k", "integer", 0, -1, None, description="0 or -1 = off"),)

    def wanted(self, p: SamplingParams) -> bool:
        return p.top_k > 0

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        ks = torch.tensor([min(r.params.top_k, logits.shape[1]) for r in rows], device=logits.device)
        top = logits.topk(int(ks.max()), dim=-1).values
        kth = top.gather(1, (ks - 1)[:, None])
        return logits.masked_fill(logits < kth, NEG_INF)


@sampler("top_p")
class TopP(_Shaping):
    """Keeps the smallest set of most likely tokens whose mass reaches ``top_p``."""

    params = (SamplerParam("top_p", "number", 1.0, 0.0, 1.0, True),)

    def wanted(self, p: SamplingParams) -> bool:
        return p.top_p < 1.0

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        sorted_logits, idx = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass strictly above each token
        drop = before >= self.row_param(rows, "top_p", logits)
        drop[:, 0] = False
        return logits.masked_fill(drop.scatter(1, idx, drop), NEG_INF)


@sampler("min_p")
class MinP(_Shaping):
    """Drops tokens less likely than ``min_p`` times the most likely one."""

    params = (SamplerParam("min_p", "number", 0.0, 0.0, 1.0),)

    def wanted(self, p: SamplingParams) -> bool:
        return p.min_p > 0.0

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        probs = logits.softmax(-1)
        floor = probs.max(-1, keepdim=True).values * self.row_param(rows, "min_p", logits)
        return logits.masked_fill(probs < floor, NEG_INF)


@sampler("typical_p")
class TypicalP(_Shaping):
    """Locally typical sampling: keep tokens whose surprise is closest to the entropy, up to
    ``typical_p`` of the mass (Meister et al.; the HF warper's definition)."""

    params = (SamplerParam("typical_p", "number", 1.0, 0.0, 1.0, True),)

    def wanted(self, p: SamplingParams) -> bool:
        return p.typical_p < 1.0

    def apply(self, logits: torch.Tensor, rows: list[SamplingRow]) -> torch.Tensor:
        logp = logits.log_softmax(-1)
        p = logp.exp()
        entropy = -(torch.nan_to_num(logp * p)).sum(-1, keepdim=True)
        score = (-logp - entropy).abs()
        sorted_score, idx = score.sort(dim=-1)
        cum = p.gather(1, idx).cumsum(-1)
        mass = self.row_param(rows, "typical_p", logits)
        last = (cum < mass).sum(-1, keepdim=True).clamp(max=logits.shape[1] - 1)
        drop_sorted = torch.arange(logits.shape[1], device=logits.device)[None, :] > last
        return logits.masked_fill(drop_sorted.scatter(1, idx, drop_sorted), NEG_INF)


BUILTIN_PROCESSORS: tuple[type[LogitsProcessor], ...] = (
    Penalties,
    LogitBias,
    BadWords,
    MinTokens,
    StructuredMask,
    Temperature,
    TopK,
    TypicalP,
    TopP,
    MinP,
)
DEFAULT_ORDER: tuple[str, ...] = tuple(cls.name for cls in BUILTIN_PROCESSORS)


class ProcessorRegistry:
    """Name -> processor instance for one engine: built-ins, entry points, and explicit extras."""

    def __init__(self, extra: Iterable[type[LogitsProcessor]] = (), load_entry_points: bool = True) -> None:
        self._procs: dict[str, LogitsProcessor] = {}
        for cls in BUILTIN_PROCESSORS:
            self.register(cls)
        if load_entry_points:
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                self.register(ep.load())
        for cls in extra:
            self.register(cls)

    def register(self, cls: type[LogitsProcessor]) -> None:
        if not cls.name:
            raise ValueError(f"{cls.__name__}: processor needs a name (use @sampler('name'))")
        self._procs[cls.name] = cls()

    def __contains__(self, name: str) -> bool:
        return name in self._procs

    def get(self, name: str) -> LogitsProcessor:
        return self._procs[name]

    @property
    def names(self) -> list[str]:
        return list(self._procs)

    def order_for(self, params: SamplingParams) -> tuple[str, ...]:
        """The processors a request may run, in order: its ``samplers`` list, or the default order
        followed by any custom processor whose parameters it carries in ``extra``. Each still runs
        only on rows where it ``is_active``."""
        if params.samplers:
            order = tuple(params.samplers)
            # a grammar is a contract, not a taste: it applies whatever order was asked for
            return order if "structured" in order else ("structured", *order)
        custom = tuple(n for n in params.extra if n in self._procs and not self._procs[n].builtin)
        return DEFAULT_ORDER + custom

    def describe(self) -> list[SamplerInfo]:
        """Every registered processor, default order first, then the plugins: its name, first
        docstring paragraph and parameters (``LogitsProcessor.params``)."""
        infos = []
        for name, proc in self._procs.items():
            doc = inspect.cleandoc(type(proc).__dict__.get("__doc__") or "")  # its own, not inherited
            infos.append(SamplerInfo(name=name, builtin=proc.builtin, description=" ".join(doc.split("\n\n")[0].split()),
                                     params=tuple(type(proc).params), in_default_order=name in DEFAULT_ORDER))
        return infos

    def validate(self, params: SamplingParams) -> None:
        for name in params.samplers or ():
            if name not in self._procs:
                raise ValueError(f"samplers: unknown sampler {name!r} (known: {', '.join(self.names)})")
