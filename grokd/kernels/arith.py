"""Integer arithmetic shared by the kernels and the engine (block counts, aligned offsets)."""

from __future__ import annotations


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers, without going through a float (exact for any size): the
    number of ``b``-sized blocks that hold ``a`` items. Floor division rounds toward minus
    infinity, so ``-(-a // b)`` rounds ``a / b`` up."""
    return -(-a // b)
