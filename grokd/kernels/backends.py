"""The kernel backends ``--kernel-backend`` names, in the lowest layer that needs them, so the
engine's and the server's configs check the same names ``kernels.dispatch`` resolves."""

from __future__ import annotations

KERNEL_BACKENDS = ("auto", "torch", "triton")


def check_kernel_backend(backend: str) -> str:
    """``backend`` if it names a kernel backend, else a ValueError naming the choices (whether
    Triton can run is decided when the model loads: ``kernels.dispatch.resolve_backend``)."""
    if backend not in KERNEL_BACKENDS:
        raise ValueError(f"kernel_backend: expected one of {', '.join(KERNEL_BACKENDS)}, got {backend!r}")
    return backend
