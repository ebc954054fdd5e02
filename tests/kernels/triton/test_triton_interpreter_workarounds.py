"""The interpreter faults ``kernels.triton.numerics`` works around (triton 3.9 on the CPU), each
checked to still be there: a test here that fails says the fault is gone, and that the workaround
it names can be removed (then delete the test). Skipped when the kernels are compiled."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl

from grokd.kernels.triton import runtime
from grokd.kernels.triton.numerics import round_bf16, tanh

pytestmark = pytest.mark.skipif(not runtime.INTERPRETED, reason="the kernels are compiled, not interpreted")


@triton.jit
def _bf16_dot(a_ptr, b_ptr, out_ptr, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    a = tl.load(a_ptr + r[:, None] * BLOCK + r[None, :])
    b = tl.load(b_ptr + r[:, None] * BLOCK + r[None, :])
    tl.store(out_ptr + r[:, None] * BLOCK + r[None, :], tl.dot(a, b))


@triton.jit
def _cast_and_round(x_ptr, cast_ptr, rounded_ptr, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + r)
    tl.store(cast_ptr + r, x.to(tl.bfloat16))
    tl.store(rounded_ptr + r, round_bf16(x))


@triton.jit
def _tanhs(x_ptr, ours_ptr, BLOCK: tl.constexpr):
    r = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + r)
    tl.store(ours_ptr + r, tanh(x))


@triton.jit
def _libdevice_tanh(x_ptr, out_ptr, BLOCK: tl.constexpr):
    from triton.language.extra import libdevice

    r = tl.arange(0, BLOCK)
    tl.store(out_ptr + r, libdevice.tanh(tl.load(x_ptr + r)))


def test_bf16_dot_is_still_broken():
    a, b = torch.randn(16, 16).bfloat16(), torch.randn(16, 16).bfloat16()
    out = torch.empty(16, 16)
    _bf16_dot[(1,)](a, b, out, BLOCK=16)
    correct = torch.allclose(out, a.float() @ b.float(), rtol=1e-3, atol=1e-3)
    assert not correct, ("the interpreter's bf16 tl.dot is right now: runtime.low_precision_dot can let "
                         "interpreted kernels multiply bf16 tiles too")


def test_cast_still_truncates_and_round_bf16_rounds():
    x = torch.tensor([1 + 2**-8 + 2**-12] * 16)  # halfway-plus: nearest is up, truncation is down
    cast, rounded = torch.empty(16, dtype=torch.bfloat16), torch.empty(16)
    _cast_and_round[(1,)](x, cast, rounded, BLOCK=16)
    assert torch.equal(rounded, x.bfloat16().float())
    assert not torch.equal(cast, x.bfloat16()), ("the interpreter's float32 -> bf16 cast rounds to nearest "
                                                 "now: numerics.round_bf16 could be a plain cast")


def test_round_bf16_ties_to_even():
    x = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 3.0e-30, 65504.0, 0.0, -0.0, 1e30] * 2)
    cast, rounded = torch.empty(16, dtype=torch.bfloat16), torch.empty(16)
    _cast_and_round[(1,)](x, cast, rounded, BLOCK=16)
    assert torch.equal(rounded, x.bfloat16().float())


def test_tanh_through_sigmoid_and_libdevice_still_fails():
    x = torch.linspace(-40, 40, 16)
    ours = torch.empty(16)
    _tanhs[(1,)](x, ours, BLOCK=16)
    torch.testing.assert_close(ours, torch.tanh(x), rtol=0, atol=3e-7)
    try:
        _libdevice_tanh[(1,)](x, torch.empty(16), BLOCK=16)
    except Exception:
        return
    pytest.fail("libdevice.tanh runs in the interpreter now: numerics.tanh can call it")
