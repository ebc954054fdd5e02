"""The served model's public identity: id, version, aliases, modalities, fingerprint.

Clients may name the model by its id (latest stable), ``<id>-latest``, the pinned
``<id>-<version>`` or any ``--alias``; responses always carry the resolved id.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from grokd.engine.async_engine import ModelInfo


class ModelPrices(TypedDict, total=False):
    """The prices ``GET /v1/language-models`` reports (``protocol.LanguageModel``'s fields; 0 if absent)."""

    prompt_text_token_price: int
    cached_prompt_text_token_price: int
    prompt_image_token_price: int
    completion_text_token_price: int
    search_price: int


def engine_version() -> str:
    try:
        return importlib.metadata.version("grokd")
    except importlib.metadata.PackageNotFoundError:  # running from a bare checkout
        return "0.0.0"


def system_fingerprint(weights_fingerprint: str, version: str | None = None) -> str:
    """``fp_`` + 10 hex digits: changes whenever the weights or the engine version change."""
    digest = hashlib.sha256(f"{weights_fingerprint}|grokd-{version or engine_version()}".encode()).hexdigest()
    return "fp_" + digest[:10]


def default_served_name(model: str | None, fallback: str) -> str:
    """A served id from a model path: the file or directory name, lower-cased, no extension."""
    if not model:
        return fallback
    p = Path(model)
    name = p.name if p.is_dir() or not p.suffix else p.stem
    return name.lower() or fallback


@dataclass
class ServedModel:
    id: str
    version: str
    fingerprint: str
    system_fingerprint: str
    created: int
    owned_by: str = "grokd"
    input_modalities: list[str] = field(default_factory=lambda: ["text"])
    output_modalities: list[str] = field(default_factory=lambda: ["text"])
    aliases: list[str] = field(default_factory=list)
    max_model_len: int | None = None
    prices: ModelPrices = field(default_factory=ModelPrices)

    @property
    def accepts_images(self) -> bool:
        return "image" in self.input_modalities


class ModelRegistry:
    """Name → served model. One model per server today; the map allows more later."""

    def __init__(self, models: list[ServedModel]) -> None:
        self.models = list(models)
        self._by_name: dict[str, ServedModel] = {}
        for m in self.models:
            for name in (m.id, *m.aliases):
                self._by_name.setdefault(name, m)

    def resolve(self, name: str) -> ServedModel | None:
        return self._by_name.get(name)

    @property
    def default(self) -> ServedModel:
        return self.models[0]

    @classmethod
    def for_engine(
        cls,
        model_info: ModelInfo,
        *,
        served_name: str,
        version: str | None = None,
        aliases: list[str] | None = None,
        owned_by: str = "grokd",
        input_modalities: list[str] | None = None,
        prices: ModelPrices | None = None,
    ) -> ModelRegistry:
        """Build from the engine's ``model_info`` (fingerprint, max_model_len, checkpoint_path)."""
        fingerprint = model_info.fingerprint or ""
        version = version or (fingerprint[:8] if fingerprint else engine_version())
        names = [f"{served_name}-latest", f"{served_name}-{version}", *(aliases or [])]
        created = int(time.time())
        ckpt = model_info.checkpoint_path
        if ckpt:
            try:
                created = int(Path(ckpt).stat().st_mtime)
            except OSError:
                pass
        modalities = input_modalities or ["text"]
        served = ServedModel(
            id=served_name,
            version=version,
            fingerprint=fingerprint,
            system_fingerprint=system_fingerprint(fingerprint),
            created=created,
            owned_by=owned_by,
            input_modalities=modalities,
            aliases=list(dict.fromkeys(n for n in names if n != served_name)),
            max_model_len=model_info.max_model_len,
            prices=ModelPrices(**prices) if prices else ModelPrices(),
        )
        return cls([served])
