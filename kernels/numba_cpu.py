"""Loads the numba-compiled CPU kernels (``kernels._numba_cpu``) once, on first use.

numba is a dependency, but a missing or broken numba must only cost speed: ``compiled()`` is then
``None`` and dispatch keeps the PyTorch paths. The first call compiles the kernels, or loads
numba's on-disk cache of them: about 3 s on a fresh install and 1 s after. Dispatch calls it while
a model loads, so no request pays for it.
"""

from __future__ import annotations

import functools
import logging
from types import ModuleType

log = logging.getLogger("grokd.kernels")


@functools.cache
def compiled() -> ModuleType | None:
    try:
        from kernels import _numba_cpu
    except Exception as exc:  # numba missing or broken: not fatal, just slower
        log.warning("numba CPU kernels unavailable, using the PyTorch paths: %s", exc)
        return None
    return _numba_cpu


def available() -> bool:
    return compiled() is not None
