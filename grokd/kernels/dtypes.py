"""The activation and storage dtypes the engine accepts, by the names configs and flags use.

Defined once here, in the lowest layer that needs them, so the loader, the model runner and the
models (which may import kernels but not the engine) read one table."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import torch

# read-only: a module-level table must not be changed at run time
DTYPES: Mapping[str, torch.dtype] = MappingProxyType(
    {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
)


def torch_dtype(name: str) -> torch.dtype:
    """The ``torch.dtype`` called ``name`` in ``DTYPES``; a ``ValueError`` naming the choices otherwise."""
    if name not in DTYPES:
        raise ValueError(f"dtype: unsupported {name!r} (choose from {', '.join(DTYPES)})")
    return DTYPES[name]
