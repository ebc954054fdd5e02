"""Resolve a ``ModelLoadConfig`` into ``(model, tokenizer, checkpoint)``.

Architectures and tokenizer kinds map to classes by dotted path, imported lazily, so adding one
is a line here and nothing imports a model it does not serve.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from grokd.engine.config import ModelLoadConfig
from grokd.engine.parallel.shard import TensorParallel
from grokd.engine.step_model import StepModel
from grokd.engine.tokenizer import Tokenizer
from grokd.kernels.dtypes import torch_dtype

log = logging.getLogger(__name__)

MODEL_REGISTRY = {
    "grok-1": "grokd.engine.models.grok1:Grok1ForCausalLM",
    "grok-2": "grokd.engine.models.grok2:Grok2ForCausalLM",
    "llama": "grokd.engine.models.llama:LlamaForCausalLM",
}
TOKENIZER_REGISTRY = {
    "sentencepiece": "grokd.engine.sp_tokenizer:SentencePieceTokenizer",
    "hf": "grokd.engine.hf_tokenizer:HFTokenizer",
    "gguf": "grokd.engine.hf_tokenizer:HFTokenizer",
    "tiktoken": "grokd.engine.tiktoken_tokenizer:TiktokenTokenizer",
}


def resolve(dotted: str) -> Any:
    module, _, attr = dotted.partition(":")
    return getattr(importlib.import_module(module), attr)


def load_tokenizer(ckpt: Any) -> Tokenizer | None:
    """The checkpoint's tokenizer, or ``None`` when it ships none (the engine then works on ids)."""
    src = ckpt.tokenizer
    if src is None:
        log.warning("%s: no tokenizer found (pass --tokenizer PATH); serving token ids only", ckpt.path)
        return None
    if src.kind not in TOKENIZER_REGISTRY:
        raise ValueError(f"unsupported tokenizer kind {src.kind!r}")
    return resolve(TOKENIZER_REGISTRY[src.kind]).from_source(src)


TENSOR_PARALLEL_ARCHITECTURES = ("grok-1", "grok-2", "llama")


def load_model_and_tokenizer(cfg: ModelLoadConfig, tp: TensorParallel | None = None
                             ) -> tuple[StepModel, Tokenizer | None, Any]:
    """``tp``: this rank's place in a tensor-parallel group; the model then holds only its shard
    (architectures in ``TENSOR_PARALLEL_ARCHITECTURES`` only)."""
    from grokd.weights.load import load as load_checkpoint

    path = cfg.model
    if path is None:
        from grokd.weights.default_model import default_model_path

        path = str(default_model_path())
    ckpt = load_checkpoint(path, tokenizer=cfg.tokenizer)
    if ckpt.architecture not in MODEL_REGISTRY:
        raise ValueError(
            f"unsupported architecture {ckpt.architecture!r} (known: {', '.join(MODEL_REGISTRY)})"
        )
    model_cls = resolve(MODEL_REGISTRY[ckpt.architecture])
    sharded: dict[str, Any] = {}
    if tp is not None and tp.world_size > 1:
        if ckpt.architecture not in TENSOR_PARALLEL_ARCHITECTURES:
            raise ValueError(f"tensor_parallel_size {tp.world_size}: {ckpt.architecture!r} models run on one "
                             f"rank only (tensor parallel: {', '.join(TENSOR_PARALLEL_ARCHITECTURES)})")
        sharded["tp"] = tp
    model = model_cls.from_checkpoint(
        ckpt, dtype=torch_dtype(cfg.dtype), weights_dtype=cfg.weights_dtype, device=cfg.device,
        kernel_backend=cfg.kernel_backend, **sharded
    )
    return model, load_tokenizer(ckpt), ckpt
