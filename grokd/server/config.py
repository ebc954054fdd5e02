"""Server configuration, built once from CLI flags, ``GROKD_*`` environment variables and a TOML
file (precedence: CLI > env > file > defaults), then passed down; it also builds the
EngineConfig so there is one place that knows every knob.

The settings are a pydantic-settings model: that library is maintained, reads prefixed
environment variables and TOML files into a model, and validates every value with pydantic, so
this module only states what is grokd's own: the fields and their checks, sizes like ``8G``,
comma-separated lists, the TOML file's layout, and the order of the layers. Constructing
:class:`ServerConfig` directly takes keyword arguments and defaults only; :func:`load_config`
is the one place that layers the environment and the file in.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, get_args

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from grokd.engine.config import (
    KV_CACHE_DTYPES,
    REDUCE_DTYPES,
    CacheConfig,
    EngineConfig,
    ModelLoadConfig,
    ParallelConfig,
    SchedulerConfig,
    SpeculativeConfig,
    check_device,
    check_kernel_backend,
    default_token_budget,
)
from grokd.server.http_limits import H11_DEFAULT_MAX_HEADER_BYTES, ConnectionLimits
from grokd.server.jobs import JobsConfig

ENV_PREFIX = "GROKD_"
CONFIG_FILE_VARIABLE = ENV_PREFIX + "CONFIG"  # names the TOML file when --config is not given
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse_size(value: str) -> int:
    """``8G``, ``512MiB``, ``1000000`` → bytes (for memory budgets)."""
    v = value.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    try:
        if v and v[-1] in mult:
            return int(float(v[:-1]) * mult[v[-1]])
        return int(v)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (bytes, or 8G, 512M, ...)") from None


def _size(value: Any) -> Any:
    return parse_size(value) if isinstance(value, str) else value


def _names(value: Any) -> Any:
    """A comma-separated string (environment) or a list (TOML, CLI) → a list of strings."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return value


def _flag(value: Any) -> bool:
    """A bool, or one of 1/0/true/false/yes/no/on/off in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
    raise ValueError(f"not a boolean: {value!r}")


Size = Annotated[int, BeforeValidator(_size)]  # bytes; accepts 8G, 512M, ...
Names = Annotated[list[str], NoDecode, BeforeValidator(_names)]  # no JSON decoding of env values
Flag = Annotated[bool, BeforeValidator(_flag)]
# the JSON object of --speculative-config (vLLM's spelling), or a TOML table
Speculative = Annotated[SpeculativeConfig | None, NoDecode, BeforeValidator(SpeculativeConfig.parse)]


class ServerConfig(BaseSettings):
    """Every ``grokd serve`` setting. Each field is a flag (``--max-num-seqs``), an environment
    variable (``GROKD_MAX_NUM_SEQS``; lists comma-separated, sizes like ``8G``) and a TOML key
    (``max_num_seqs`` or ``max-num-seqs``, top level or under ``[server]``)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", protected_namespaces=(),
                                      coerce_numbers_to_str=True)

    # model
    model: str | None = None
    served_model_name: str | None = None
    alias: Names = []
    model_version: str | None = None
    tokenizer: str | None = None
    dtype: str = "auto"  # engine.config.resolve_dtype: bf16 where the CPU tier has kernels for it
    weights_dtype: str = "auto"
    device: str = "cpu"
    max_model_len: int | None = None
    enforce_eager: Flag = False
    kernel_backend: str = "auto"  # kernels.dispatch.resolve_backend: auto | torch | triton
    seed: int = 0
    # tensor / expert parallelism (engine.parallel): ranks spawned by grokd serve, or torchrun's
    tensor_parallel_size: int = 1
    enable_expert_parallel: Flag = False
    tp_reduce_dtype: str = "float32"
    tp_timeout_s: float = 300.0
    tp_startup_timeout_s: float = 1800.0
    # cache / scheduler
    block_size: int = 16
    kv_cache_memory: Size | None = None
    num_kv_blocks: int | None = None
    enable_prefix_caching: Flag = True
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int | None = None  # None: engine.config.default_token_budget(device)
    max_prefill_tokens_while_decoding: int | None = None  # None: the budget (no separate cap)
    max_num_seqs: int = 64
    max_queued_requests: int = 1024
    speculative_config: Speculative = None
    # HTTP
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = Field(None, ge=0, le=65535)  # xAI's gRPC API (server.grpc); None: off
    api_key: Names = []
    api_key_file: str | None = None
    rate_limit_rpm: int = 0  # per key; 0 = unlimited
    rate_limit_tpm: int = 0
    max_body_bytes: int = 32 * 1024 * 1024
    # connections (server.http_limits): slow or idle clients are closed, see docs/API.md
    timeout_keep_alive_s: int = Field(5, ge=1)  # idle connection, before and between requests
    request_header_timeout_s: float = Field(10.0, gt=0)  # a request's head, from its first byte
    request_body_timeout_s: float = Field(60.0, gt=0)  # a request's whole body, once the head is in
    limit_concurrency: int | None = Field(None, ge=1)  # connections + running requests; beyond: 503
    max_header_bytes: Size = Field(H11_DEFAULT_MAX_HEADER_BYTES, ge=1024)  # a request head; beyond: 400
    retry_after_s: float = 1.0
    drain_timeout_s: float = 30.0
    # a stream whose client takes nothing for this long (a write to its socket makes no progress) is aborted
    stream_stall_timeout_s: float = Field(30.0, gt=0)
    state_dir: str | None = None
    log_prompts: Flag = False
    log_level: str = "info"
    ui: Flag = True  # the sampler lab page at / (server.routes.ui); --no-ui turns it off
    # jobs: files, batches, deferred completions (server.jobs.JobsConfig)
    batch_max_in_flight: int = 2  # batch lines in the engine at once while interactive work is around
    batch_idle_max_in_flight: int = 16  # ... and once the server has been idle for a moment
    max_upload_bytes: Size = 50 * 1024 * 1024  # /v1/files upload limit (the general body limit does not apply)
    deferred_retention_s: float = 24 * 3600.0  # how long deferred completion results are kept
    responses_retention_s: float = Field(30 * 24 * 3600.0, gt=0)  # how long stored /v1/responses are kept

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments and defaults only: the process environment is read by
        :func:`load_config`, never behind a direct construction's back."""
        return (init_settings,)

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        return check_device(device)  # fail at start-up, before the server listens

    @field_validator("kernel_backend")
    @classmethod
    def _known_kernel_backend(cls, backend: str) -> str:
        return check_kernel_backend(backend)

    @field_validator("kv_cache_dtype")
    @classmethod
    def _known_kv_cache_dtype(cls, dtype: str) -> str:
        if dtype not in KV_CACHE_DTYPES:
            raise ValueError(f"kv_cache_dtype: expected one of {', '.join(KV_CACHE_DTYPES)}, got {dtype!r}")
        return dtype

    @field_validator("tp_reduce_dtype")
    @classmethod
    def _known_reduce_dtype(cls, dtype: str) -> str:
        if dtype not in REDUCE_DTYPES:
            raise ValueError(f"tp_reduce_dtype: expected one of {', '.join(REDUCE_DTYPES)}, got {dtype!r}")
        return dtype

    @field_validator("tensor_parallel_size")
    @classmethod
    def _positive_tp(cls, size: int) -> int:
        if size < 1:
            raise ValueError(f"tensor_parallel_size: expected >= 1, got {size}")
        return size

    @field_validator("tp_timeout_s", "tp_startup_timeout_s")
    @classmethod
    def _positive_timeout(cls, seconds: float, info: ValidationInfo) -> float:
        if not seconds > 0:
            raise ValueError(f"{info.field_name}: expected > 0 seconds, got {seconds}")
        return seconds

    def jobs_config(self, state_dir: str | Path) -> JobsConfig:
        """The :class:`server.jobs.JobsConfig` for these settings."""
        return JobsConfig(
            state_dir=Path(state_dir),
            max_upload_bytes=self.max_upload_bytes,
            max_in_flight=self.batch_max_in_flight,
            idle_max_in_flight=self.batch_idle_max_in_flight,
            deferred_retention_s=self.deferred_retention_s,
        )

    def connection_limits(self) -> ConnectionLimits:
        """The :class:`server.http_limits.ConnectionLimits` for these settings."""
        return ConnectionLimits(
            timeout_keep_alive_s=self.timeout_keep_alive_s,
            request_header_timeout_s=self.request_header_timeout_s,
            request_body_timeout_s=self.request_body_timeout_s,
            limit_concurrency=self.limit_concurrency,
            max_header_bytes=self.max_header_bytes,
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
            parallel=ParallelConfig(
                tensor_parallel_size=self.tensor_parallel_size,
                enable_expert_parallel=self.enable_expert_parallel,
                reduce_dtype=self.tp_reduce_dtype,
                timeout_s=self.tp_timeout_s,
                startup_timeout_s=self.tp_startup_timeout_s,
            ),
            speculative=self.speculative_config,
            seed=self.seed,
        )


def _blanks_unset(values: dict[str, Any]) -> dict[str, Any]:
    """An empty string for a setting that may be None (``GROKD_MODEL=``) means None."""
    fields = ServerConfig.model_fields
    return {k: None if v == "" and k in fields and type(None) in get_args(fields[k].annotation) else v
            for k, v in values.items()}


class MappingEnvSource(EnvSettingsSource):
    """``GROKD_*`` variables read from the mapping given (``os.environ`` when serving)."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k if self.case_sensitive else k.lower(): v for k, v in self._environ.items()}

    def __call__(self) -> dict[str, Any]:
        return _blanks_unset(super().__call__())


class ServerTomlSource(TomlConfigSettingsSource):
    """Top-level keys (dashes or underscores) or a ``[server]`` table; ``api_keys`` is another
    name for ``api_key``; an unknown key is an error naming the file and the key."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | Path) -> None:
        if not Path(path).is_file():
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        self._path = path
        self._names = frozenset(settings_cls.model_fields)
        super().__init__(settings_cls, toml_file=Path(path))

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = super()._read_file(file_path)
        if isinstance(data.get("server"), dict):
            data = {**{k: v for k, v in data.items() if k != "server"}, **data["server"]}
        out: dict[str, Any] = {}
        for raw_key, value in data.items():
            name = raw_key.replace("-", "_")
            if name == "api_keys":
                name = "api_key"
            if name not in self._names:
                raise ValueError(f"{self._path}: unknown setting {raw_key!r}")
            out[name] = value
        return _blanks_unset(out)


def describe(exc: ValidationError) -> str:
    """One line per bad value, each starting with the setting's name."""
    lines = []
    for error in exc.errors(include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "config"
        if error["type"] == "value_error":
            text = str(error["ctx"]["error"])
        else:
            text = f"{error['msg']}, got {error['input']!r}"
        lines.append(text if text.startswith(f"{name}: ") else f"{name}: {text}")
    return "; ".join(lines)


def load_config(
    cli: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
) -> ServerConfig:
    """Merge the sources; ``cli`` holds only flags the user actually gave (None or an empty list =
    not given; keys that are not settings are ignored). ``env`` defaults to ``os.environ``; its
    ``GROKD_CONFIG`` names the TOML file when ``config_file`` is not given. A bad value is a
    ValueError naming the setting."""
    env = os.environ if env is None else env
    given = {k: v for k, v in (cli or {}).items()
             if k in ServerConfig.model_fields and v is not None and not (isinstance(v, list) and not v)}
    config_file = config_file or env.get(CONFIG_FILE_VARIABLE)
    layers: list[PydanticBaseSettingsSource] = []  # lowest precedence first
    if config_file:
        layers.append(ServerTomlSource(ServerConfig, config_file))
    layers.append(MappingEnvSource(ServerConfig, env))
    values: dict[str, Any] = {}
    for layer in layers:
        values.update(layer())
    values.update(given)
    try:
        return ServerConfig(**values)
    except ValidationError as exc:
        raise ValueError(describe(exc)) from None
