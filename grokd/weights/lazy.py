"""Tensors left on disk until a slice of them is asked for, so that one rank of a sharded model
reads only its own rows and columns.

A ``LazyTensor`` is a view of an on-disk array (an ``ArraySource``): some leading indices fixed
(one expert of a stacked ``[E, in, out]`` file) and optionally the last two dimensions swapped
(the release's ``[in, out]`` floats seen as torch ``[out, in]``). Indexing it with basic slices
(``t[a:b, :]``) reads just those elements and returns an ordinary tensor; ``materialize()`` reads
all of it. ``LazyQuantized`` pairs the int8 weight with its scales, as ``QuantizedWeight`` does.

Every read is recorded in an optional ``ReadLog`` (bytes copied out of the file, and how many
reads), which is how a test proves that a rank never touched another rank's slices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


@dataclass
class ReadLog:
    """Bytes read from checkpoint files and the number of reads (slices or headers)."""

    bytes: int = 0
    reads: int = 0

    def add(self, nbytes: int) -> None:
        self.bytes += int(nbytes)
        self.reads += 1


class ArraySource(Protocol):
    """An array in a file: its shape, and ``read(index)`` of basic slices / ints over all dims."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def read(self, index: tuple[slice | int, ...]) -> torch.Tensor: ...


def _norm(index: object, ndim: int) -> tuple[slice, ...]:
    items = index if isinstance(index, tuple) else (index,)
    if len(items) > ndim or not all(isinstance(i, slice) and i.step in (None, 1) for i in items):
        raise IndexError(f"lazy tensors take up to {ndim} unit-step slices, got {index!r}")
    return tuple(items) + (slice(None),) * (ndim - len(items))


@dataclass(frozen=True)
class LazyTensor:
    source: ArraySource
    lead: tuple[int, ...] = ()
    transposed: bool = False

    @property
    def shape(self) -> torch.Size:
        dims = list(self.source.shape[len(self.lead):])
        if self.transposed:
            dims[-2], dims[-1] = dims[-1], dims[-2]
        return torch.Size(dims)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index: object) -> torch.Tensor:
        sl = list(_norm(index, self.ndim))
        if self.transposed:
            sl[-2], sl[-1] = sl[-1], sl[-2]
        out = self.source.read((*self.lead, *sl))
        return out.transpose(-1, -2).contiguous() if self.transposed else out

    def materialize(self) -> torch.Tensor:
        return self[()] if self.ndim else self.source.read(self.lead)


@dataclass(frozen=True)
class LazyQuantized:
    """int8 ``weight [in, out]`` and bf16 ``scales [G, out]`` on disk (``QuantizedWeight``'s layout)."""

    weight: LazyTensor
    scales: LazyTensor

    @property
    def shape(self) -> torch.Size:
        return self.weight.shape
