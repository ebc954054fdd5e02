"""The C argmax against its twin, torch.argmax: the same index, ties and NaNs included."""

from __future__ import annotations

import pytest
import torch

from grokd.kernels import argmax as am
from grokd.kernels.dispatch import select_kernels

needs_library = pytest.mark.c_kernels


@needs_library
@pytest.mark.parametrize("shape", [(1, 49152), (16, 49152), (3, 17), (5, 1), (2, 15), (4, 1000)])
def test_matches_torch_argmax(shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g)
    assert torch.equal(am.argmax_cpu(x), x.argmax(dim=-1))


@needs_library
def test_ties_nans_infinities_and_strided_rows():
    x = torch.zeros(8, 100)
    x[0, [7, 40, 93]] = 5.0  # ties: the first
    x[1, [33, 17]] = 2.0  # the first lies in another lane of the vector loop than the second
    x[2] = float("-inf")  # all -inf: index 0, as torch says
    x[3, [12, 60]] = float("nan")  # the first NaN wins over any number
    x[3, 5] = float("inf")
    x[4, 99] = float("nan")  # a NaN in the scalar tail
    x[5, 98] = 1.0  # the maximum in the tail
    x[6, [3, 19, 35]] = float("inf")  # tied infinities
    x[7] = -torch.arange(100.0)  # the maximum at index 0
    got = am.argmax_cpu(x)
    assert torch.equal(got, x.argmax(dim=-1))
    assert got.tolist() == [7, 17, 0, 12, 99, 98, 3, 0]
    wide = torch.randn(4, 300)
    view = wide[:, 50:250]  # rows 300 apart
    assert view.stride() == (300, 1) and torch.equal(am.argmax_cpu(view), view.argmax(dim=-1))


def test_what_it_does_not_take_goes_to_torch():
    x = torch.randn(3, 40).bfloat16()
    assert torch.equal(am.argmax_cpu(x), x.argmax(dim=-1))
    t = torch.randn(40, 3).t()  # columns: not unit-stride rows
    assert torch.equal(am.argmax_cpu(t), t.argmax(dim=-1))


@needs_library
def test_cpu_kernels_use_it():
    assert select_kernels("cpu").argmax is am.argmax_cpu
