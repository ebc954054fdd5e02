"""How the Triton kernels' tests compare with the PyTorch twins: the largest difference relative to
the largest value of the reference (float32 sums in another order differ by a few ulps of the
largest partial sums, not of each element)."""

from __future__ import annotations

import torch


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.float().cpu(), want.float().cpu()
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / (scale if scale > 0 else 1.0)


def assert_relative_close(got: torch.Tensor, want: torch.Tensor, tol: float = 1e-5) -> None:
    err = relative_error(got, want)
    assert err <= tol, f"max |got - want| / max |want| = {err:.3g} > {tol:g}"
