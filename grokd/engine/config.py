"""Engine configuration: built once from CLI flags / env / config file, then passed down."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, fields
from typing import Any

from grokd.engine.faults import FaultPlan
from grokd.kernels import cpu_tier
from grokd.kernels.backends import check_kernel_backend

log = logging.getLogger(__name__)

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def resolve_dtype(dtype: str, device: str) -> str:
    """The activation dtype ``auto`` stands for: bfloat16 on CUDA and on CPU tiers with grokd's C
    kernels (AVX2 and up: bf16 weights are read as bf16 and multiplied in float32 registers, half the
    bytes of float32), float32 on the generic tier (aarch64, or x86 without AVX2 and FMA), where
    PyTorch's own bf16 matmul prefills several times slower than its float32 one
    (benchmarks/RESULTS.md#cpu-tiers). The choice is logged; a named dtype is kept as it is."""
    if dtype != "auto":
        return dtype
    if not device.startswith("cpu"):
        return "bfloat16"
    tier = cpu_tier.active()
    chosen = "bfloat16" if tier.has_c_kernels else "float32"
    log.info("dtype auto: %s (cpu kernels: %s)", chosen, tier.name)
    return chosen


def check_device(device: str) -> str:
    """``device`` if grokd can run on it (``cpu``, ``cuda``, ``cuda:N``), else a ValueError that
    names the setting, raised when the config is built rather than deep inside model loading."""
    if not _DEVICE.fullmatch(device):
        raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    return device


@dataclass
class ModelLoadConfig:
    """Which weights to load and how to hold them.

    ``model`` is a path (release dir, HF/safetensors dir, .gguf file) or ``None`` for the
    default model. ``dtype`` is the activation dtype (``auto``: ``resolve_dtype``, once, here);
    ``weights_dtype`` how linear weights are
    stored (``auto`` keeps what the checkpoint has, e.g. int8 for the Grok-1 release).
    ``enforce_eager`` turns off CUDA-graph replay of decode steps (``engine.decode_graphs``).
    ``kernel_backend``: ``auto``, ``torch`` or ``triton`` (``kernels.dispatch.resolve_backend``;
    ``auto`` is Triton on CUDA where it imports), checked here.
    """

    model: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"  # auto | bfloat16 | float32 | float16
    weights_dtype: str = "auto"  # auto | int8 | fp8 (Grok models, lossy) | bfloat16 | float32
    device: str = "cpu"
    max_model_len: int | None = None
    enforce_eager: bool = False
    kernel_backend: str = "auto"  # auto | torch | triton

    def __post_init__(self) -> None:
        check_device(self.device)
        check_kernel_backend(self.kernel_backend)
        self.dtype = resolve_dtype(self.dtype, self.device)

    @classmethod
    def from_namespace(cls, ns: Any) -> ModelLoadConfig:
        """From any object with attributes named like the fields (parsed CLI flags, the server's
        config); absent or ``None`` attributes keep the defaults."""
        given = {f.name: getattr(ns, f.name, None) for f in fields(cls)}
        return cls(**{k: v for k, v in given.items() if v is not None})


KV_CACHE_DTYPES = ("auto", "int8")


@dataclass
class CacheConfig:
    """Paged KV cache: fixed-size blocks in one pool sized from a memory budget.

    ``dtype``: ``auto`` stores keys and values in the activation dtype; ``int8`` quantizes each
    token's head with its own float32 scale (``kernels.attention.quantize_kv``), about half the
    bytes: twice the tokens in the same budget, and less to read per decode step at long contexts.
    """

    block_size: int = 16
    kv_cache_memory: int | None = None  # bytes; None = kv_cache_fraction of free memory
    kv_cache_fraction: float = 0.2
    num_blocks: int | None = None  # explicit override (tests)
    enable_prefix_caching: bool = True
    dtype: str = "auto"  # auto | int8

    def __post_init__(self) -> None:
        if self.dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype: expected one of {', '.join(KV_CACHE_DTYPES)}, got {self.dtype!r}")


def default_token_budget(device: str) -> int:
    """``grokd serve``'s ``max_num_batched_tokens`` when none is given. On the CPU a step costs
    about its token count times the model's FLOPs, so a burst of prompts prefilled in one 2,048-token
    step makes every one of them wait for all: 1,024 about halves TTFT p50 at 32 streams for a few
    percent of throughput (benchmarks/RESULTS.md#cpu-token-budget). A GPU
    prefills 2,048 tokens in milliseconds."""
    return 1024 if device == "cpu" else 2048


@dataclass
class SchedulerConfig:
    """Batching limits per step and admission control.

    ``max_prefill_tokens_while_decoding``: in a step that also decodes, at most this many prompt
    tokens (``None``: up to the whole budget). A step's time grows with its tokens, and every
    decoding stream waits for the step, so this bounds the inter-token latency a burst of prompts
    inflicts on the streams already running; a step without decodes still prefills a full budget.

    ``max_pending_outputs``: outputs of one request its consumer may leave unread (one per step
    that produced something) before the request is aborted with an error, so a client that stops
    reading a stream cannot make the server buffer without bound.
    """

    max_num_batched_tokens: int = 2048
    max_prefill_tokens_while_decoding: int | None = None
    max_num_seqs: int = 64
    max_queued_requests: int = 1024
    max_pending_outputs: int = 256

    def __post_init__(self) -> None:
        if self.max_pending_outputs < 1:
            raise ValueError(f"max_pending_outputs: expected >= 1, got {self.max_pending_outputs}")


REDUCE_DTYPES = ("float32", "bfloat16")


@dataclass(frozen=True)
class ParallelConfig:
    """How one model is spread over several ranks (``engine.parallel``).

    ``tensor_parallel_size`` ranks each hold a slice of every layer: attention by heads, the MoE
    or MLP by the intermediate dimension, the vocabulary by rows. ``enable_expert_parallel``
    gives each rank whole experts instead (``num_experts / tensor_parallel_size`` of them).
    ``reduce_dtype`` is the dtype partial sums travel and add up in: float32 (one rounding to the
    activation dtype after the sum, as a single device computes it) or bfloat16 (half the bytes).
    ``timeout_s`` bounds every collective of a running multi-rank server (a step, the keep-alive
    an idle leader sends): a rank that died or hangs fails the step after it instead of blocking
    the others forever. ``startup_timeout_s`` bounds joining the world and waiting for the slowest
    rank to load its shard (minutes for Grok-1 from disk).
    """

    tensor_parallel_size: int = 1
    enable_expert_parallel: bool = False
    reduce_dtype: str = "float32"
    timeout_s: float = 300.0
    startup_timeout_s: float = 1800.0

    def __post_init__(self) -> None:
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size: expected >= 1, got {self.tensor_parallel_size}")
        if self.reduce_dtype not in REDUCE_DTYPES:
            raise ValueError(f"reduce_dtype: expected one of {', '.join(REDUCE_DTYPES)}, got {self.reduce_dtype!r}")
        for name in ("timeout_s", "startup_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0 seconds, got {getattr(self, name)}")


SPEC_METHODS = ("ngram", "draft_model")


@dataclass(frozen=True)
class SpeculativeConfig:
    """Speculative decoding (``engine.spec``), spelled as vLLM's ``--speculative-config`` JSON.

    ``method``: ``ngram`` drafts by prompt lookup: the longest suffix of the sequence, between
    ``prompt_lookup_min`` and ``prompt_lookup_max`` tokens, that occurred earlier in it proposes
    the up to ``num_speculative_tokens`` tokens that followed it. ``draft_model``: a smaller
    ``model`` of the same tokenizer drafts that many tokens greedily (``spec.draft_model``). Each step verifies every draft in the one forward pass of the batch.

    Adaptive: once a sequence has had ``min_drafted_tokens`` drafted tokens verified, it pauses
    drafting if fewer than ``disable_acceptance_rate`` of them were accepted, for
    ``retry_after_steps`` of its steps, doubling with each failed retry (``spec.stats``). Each step
    grants drafted tokens where their expected accepted tokens pay for the step time their rows
    add, by a per-row-count step time learnt from the steps run (``spec.budget``, ``spec.cost``):
    this sets each sequence's draft length from its acceptance record and the batch size.
    ``max_draft_tokens_per_step`` caps the drafted tokens of one step over the whole batch;
    ``plan_by_step_cost = false`` grants every draft in full within that cap instead (shared out
    evenly: reproducible step layouts, and for machines where the learnt costs mislead).
    """

    method: str = "ngram"
    num_speculative_tokens: int = 4
    prompt_lookup_max: int = 4
    prompt_lookup_min: int = 2
    model: str | None = None
    disable_acceptance_rate: float = 0.25
    min_drafted_tokens: int = 24
    retry_after_steps: int = 64
    max_draft_tokens_per_step: int = 32
    plan_by_step_cost: bool = True

    def __post_init__(self) -> None:
        if self.method not in SPEC_METHODS:
            raise ValueError(f"speculative_config.method: expected one of {', '.join(SPEC_METHODS)}, "
                             f"got {self.method!r}")
        if not 1 <= self.num_speculative_tokens <= 16:
            raise ValueError("speculative_config.num_speculative_tokens: expected 1..16, "
                             f"got {self.num_speculative_tokens}")
        if not 1 <= self.prompt_lookup_min <= self.prompt_lookup_max:
            raise ValueError("speculative_config.prompt_lookup_min/prompt_lookup_max: expected "
                             f"1 <= min <= max, got {self.prompt_lookup_min} and {self.prompt_lookup_max}")
        if self.method == "draft_model" and not self.model:
            raise ValueError("speculative_config.model: the draft_model method needs a model path")
        if not 0.0 <= self.disable_acceptance_rate <= 1.0:
            raise ValueError("speculative_config.disable_acceptance_rate: expected a value in [0, 1], "
                             f"got {self.disable_acceptance_rate}")
        if self.max_draft_tokens_per_step < 1:
            raise ValueError("speculative_config.max_draft_tokens_per_step: expected >= 1, "
                             f"got {self.max_draft_tokens_per_step}")
        if self.retry_after_steps < 1:
            raise ValueError(f"speculative_config.retry_after_steps: expected >= 1, got {self.retry_after_steps}")
        if self.min_drafted_tokens < 1:
            raise ValueError(f"speculative_config.min_drafted_tokens: expected >= 1, got {self.min_drafted_tokens}")

    @classmethod
    def parse(cls, value: str | dict[str, Any] | SpeculativeConfig | None) -> SpeculativeConfig | None:
        """From the flag's JSON text, a mapping (TOML), or an instance; ``None``/empty: off. Unknown
        keys and wrong types are a ValueError naming them."""
        if value is None or isinstance(value, SpeculativeConfig):
            return value
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"speculative_config: not valid JSON ({exc.msg} at character {exc.pos})") from None
        if not isinstance(value, dict):
            raise ValueError("speculative_config: expected a JSON object")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"speculative_config: unknown key(s) {', '.join(unknown)}; "
                             f"expected {', '.join(known)}")
        for key, v in value.items():
            want: tuple[type, ...] = {"method": (str,), "model": (str, type(None)),
                                      "disable_acceptance_rate": (int, float),
                                      "plan_by_step_cost": (bool,)}.get(key, (int,))
            if (isinstance(v, bool) and bool not in want) or not isinstance(v, want):
                raise ValueError(f"speculative_config.{key}: expected {' or '.join(t.__name__ for t in want)}, "
                                 f"got {v!r}")
        return cls(**value)


@dataclass
class EngineConfig:
    model: ModelLoadConfig = field(default_factory=ModelLoadConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    speculative: SpeculativeConfig | None = None
    seed: int = 0
    faults: FaultPlan | None = None  # None: from GROKD_FAULTS when the engine is built (engine.faults)
