"""Server configuration, built once from CLI flags, ``GROKD_*`` environment variables and a TOML
file (precedence: CLI > env > file > defaults), then passed down; it also builds the
EngineConfig so there is one place that knows every knob.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from grokd.engine.config import (
    KV_CACHE_DTYPES,
    CacheConfig,
    EngineConfig,
    ModelLoadConfig,
    SchedulerConfig,
    check_device,
    default_token_budget,
)

ENV_PREFIX = "GROKD_"


@dataclass
class ServerConfig:
    """Every ``grokd serve`` setting. Each field is a flag (``--max-num-seqs``), an environment
    variable (``GROKD_MAX_NUM_SEQS``; lists comma-separated, sizes like ``8G``) and a TOML key
    (``max_num_seqs`` or ``max-num-seqs``, top level or under ``[server]``)."""

    # model
    model: str | None = None
    served_model_name: str | None = None
    alias: list[str] = field(default_factory=list)
    model_version: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"  # engine.config.resolve_dtype: bf16 where the CPU tier has kernels for it
    weights_dtype: str = "auto"
    device: str = "cpu"
    max_model_len: int | None = None
    enforce_eager: bool = False
    seed: int = 0
    # cache / scheduler
    block_size: int = 16
    kv_cache_memory: int | None = None
    num_kv_blocks: int | None = None
    enable_prefix_caching: bool = True
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int | None = None  # None: engine.config.default_token_budget(device)
    max_prefill_tokens_while_decoding: int | None = None  # None: the budget (no separate cap)
    max_num_seqs: int = 64
    max_queued_requests: int = 1024
    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: list[str] = field(default_factory=list)
    api_key_file: str | None = None
    rate_limit_rpm: int = 0  # per key; 0 = unlimited
    rate_limit_tpm: int = 0
    max_body_bytes: int = 32 * 1024 * 1024
    retry_after_s: float = 1.0
    drain_timeout_s: float = 30.0
    state_dir: str | None = None
    log_prompts: bool = False
    log_level: str = "info"
    # jobs: files, batches, deferred completions (server.jobs.JobsConfig)
    batch_max_in_flight: int = 2  # batch lines in the engine at once while interactive work is around
    batch_idle_max_in_flight: int = 16  # ... and once the server has been idle for a moment
    max_upload_bytes: int = 50 * 1024 * 1024  # /v1/files upload limit (the general body limit does not apply)
    deferred_retention_s: float = 24 * 3600.0  # how long deferred completion results are kept

    def __post_init__(self) -> None:
        check_device(self.device)  # fail at start-up, before the server listens
        if self.kv_cache_dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype: expected one of {', '.join(KV_CACHE_DTYPES)}, "
                             f"got {self.kv_cache_dtype!r}")

    def jobs_config(self, state_dir: str | Path) -> Any:
        """The :class:`server.jobs.JobsConfig` for these settings (imported lazily: optional)."""
        from grokd.server.jobs import JobsConfig

        return JobsConfig(
            state_dir=Path(state_dir),
            max_upload_bytes=self.max_upload_bytes,
            max_in_flight=self.batch_max_in_flight,
            idle_max_in_flight=self.batch_idle_max_in_flight,
            deferred_retention_s=self.deferred_retention_s,
        )

    def engine_config(self) -> EngineConfig:
        return EngineConfig(
            model=ModelLoadConfig.from_namespace(self),
            cache=CacheConfig(
                block_size=self.block_size,
                kv_cache_memory=self.kv_cache_memory,
                num_blocks=self.num_kv_blocks,
                enable_prefix_caching=self.enable_prefix_caching,
                dtype=self.kv_cache_dtype,
            ),
            scheduler=SchedulerConfig(
                max_num_batched_tokens=self.max_num_batched_tokens or default_token_budget(self.device),
                max_prefill_tokens_while_decoding=self.max_prefill_tokens_while_decoding,
                max_num_seqs=self.max_num_seqs,
                max_queued_requests=self.max_queued_requests,
            ),
            seed=self.seed,
        )


_SIZE_FIELDS = frozenset({"kv_cache_memory", "max_upload_bytes"})  # accept 8G, 512M, ...


def _field_types() -> dict[str, Any]:
    hints = get_type_hints(ServerConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(ServerConfig)}


def _coerce(name: str, value: Any, typ: Any) -> Any:
    """Turn a string (env var) or TOML value into the field's type; ValueError names the field."""
    text = str(typ)
    if value is None:
        return None
    try:
        if text.startswith("list"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            return [str(v) for v in value]
        if isinstance(value, str):
            if value == "" and "None" in text:
                return None
            if typ is bool:
                low = value.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(f"not a boolean: {value!r}")
                return low in ("1", "true", "yes", "on")
            if "int" in text and "float" not in text:
                return _parse_size(value) if name in _SIZE_FIELDS else int(value)
            if "float" in text:
                return float(value)
            return value
        if typ is bool and not isinstance(value, bool):
            raise ValueError(f"not a boolean: {value!r}")
        return value
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: {exc}") from None


def _parse_size(value: str) -> int:
    """``8G``, ``512MiB``, ``1000000`` → bytes (for memory budgets)."""
    v = value.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    if v and v[-1] in mult:
        return int(float(v[:-1]) * mult[v[-1]])
    return int(v)


def from_env(env: Mapping[str, str]) -> dict[str, Any]:
    types = _field_types()
    out: dict[str, Any] = {}
    for name, typ in types.items():
        key = ENV_PREFIX + name.upper()
        if key in env:
            out[name] = _coerce(name, env[key], typ)
    return out


def from_toml(path: str | Path) -> dict[str, Any]:
    """Top-level keys (dashes or underscores) or a ``[server]`` table; unknown keys are an error."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    if "server" in data and isinstance(data["server"], dict):
        data = {**{k: v for k, v in data.items() if k != "server"}, **data["server"]}
    types = _field_types()
    out: dict[str, Any] = {}
    for raw_key, value in data.items():
        name = raw_key.replace("-", "_")
        if name == "api_keys":
            name = "api_key"
        if name not in types:
            raise ValueError(f"{path}: unknown setting {raw_key!r}")
        out[name] = _coerce(name, value, types[name])
    return out


def load_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> ServerConfig:
    """Merge the sources; ``cli`` holds only flags the user actually gave (None = not given)."""
    env = os.environ if env is None else env
    cli = {k: v for k, v in (cli or {}).items() if v is not None and k in _field_types()}
    cli = {k: v for k, v in cli.items() if not (isinstance(v, list) and not v)}
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    merged: dict[str, Any] = {}
    if config_file:
        merged.update(from_toml(config_file))
    merged.update(from_env(env))
    merged.update(cli)
    return ServerConfig(**merged)
