"""What every reader returns: config, a stream of named tensors, and where the tokenizer lives."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class QuantizedWeight:
    """int8 weight with bf16 scales, as in the Grok-1 release (layout ``[*lead, K, N]``, ``x @ W``).

    ``scales`` is ``[*lead, G, N]``: row ``k`` uses scale row ``k // (K // G)``. The effective
    weight is ``bf16(int8 -> bf16 * scales)``.
    """

    weight: torch.Tensor  # int8
    scales: torch.Tensor  # bfloat16

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape


@dataclass
class TokenizerSource:
    """Where the tokenizer comes from: ``sentencepiece`` (path), ``hf`` (tokenizer.json path) or
    ``gguf`` (metadata fields read from the GGUF file, in ``fields``)."""

    kind: str
    path: Path | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Checkpoint:
    """A model on disk, opened but not yet materialised.

    ``architecture`` selects the model class (``grok-1``, ``grok-2``, ``llama``). ``config`` uses Hugging Face
    key names. ``tensors()`` streams ``(name, tensor_or_quantized)`` one at a time in the HF
    port's naming (hpcai-tech names for Grok-1, ``model.layers.N.self_attn.q_proj.weight`` for
    Llama), torch ``[out, in]`` layout for plain tensors; release int8 weights come as
    ``QuantizedWeight`` in their original ``[in, out]`` layout. Grok-1 experts always stream one
    tensor per expert (``model.layers.N.moe_block.experts.E.{linear,linear_v,linear_1}.weight``),
    also when the source stacks them. ``fingerprint`` identifies the weights (manifest hash) for
    ``system_fingerprint``.

    ``lazy_tensors()``, where the format allows it (release pickles, safetensors), streams the
    same names, layouts and order as ``tensors()`` but as ``weights.lazy`` views that read
    nothing until sliced: how one rank of a sharded model loads only its own slices.
    """

    path: Path
    format: str  # release | tp-release (Grok-2's) | safetensors | gguf
    architecture: str
    config: dict[str, Any]
    tensors: Callable[[], Iterator[tuple[str, torch.Tensor | QuantizedWeight]]]
    tokenizer: TokenizerSource | None = None
    chat_template: str | None = None
    fingerprint: str = ""
    lazy_tensors: Callable[[], Iterator[tuple[str, Any]]] | None = None


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as claimed: the message names the file and the tensor."""
