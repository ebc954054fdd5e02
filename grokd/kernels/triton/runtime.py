"""Where the Triton kernels run: compiled for a CUDA device, or interpreted on CPU tensors.

``triton.jit`` decides at decoration time (when a kernel module is imported) whether a kernel is
compiled or interpreted, from ``TRITON_INTERPRET``; ``INTERPRETED`` records that decision, and
the kernels receive it as a compile-time flag that switches on the interpreter workarounds
(``numerics``). ``check_tensors`` turns the mismatch (CPU tensors for compiled kernels, or CUDA
tensors for interpreted ones) into an error that says what to set, instead of a crash inside
Triton."""

from __future__ import annotations

import os

import torch
import triton

INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
VERSION: str = triton.__version__

# activation dtypes the kernels compute in (float16 takes the PyTorch twins)
ACTIVATION_DTYPES = (torch.float32, torch.bfloat16)


def check_tensors(*tensors: torch.Tensor) -> None:
    """Raise a ``RuntimeError`` unless every tensor is where these kernels run: CUDA when
    compiled, CPU when interpreted."""
    want = "cpu" if INTERPRETED else "cuda"
    for t in tensors:
        if t.device.type != want:
            hint = ("set TRITON_INTERPRET=1 before grokd starts to run the Triton kernels on the CPU"
                    if t.device.type == "cpu" else "unset TRITON_INTERPRET to compile the kernels for the GPU")
            raise RuntimeError(f"Triton kernels {'interpreted' if INTERPRETED else 'compiled'} "
                               f"but a tensor is on {t.device}: {hint}")


def loads_weights(weight: torch.Tensor) -> bool:
    """Whether the kernels can read ``weight``'s values: fp8 e4m3 (``--weights-dtype fp8``) needs
    an sm_89 or later GPU (Ada, Hopper) to convert, or the interpreter; any other dtype, always."""
    if weight.dtype != torch.float8_e4m3fn or INTERPRETED:
        return True
    return weight.device.type == "cuda" and torch.cuda.get_device_capability(weight.device) >= (8, 9)


def low_precision_dot(dtype: torch.dtype) -> bool:
    """Whether a product over ``dtype`` operands feeds ``tl.dot`` bf16 tiles (tensor cores, float32
    accumulation). Interpreted, never: Triton's interpreter returns garbage for a bf16 ``tl.dot``
    (triton 3.9), so it multiplies the same bf16 values held in float32, which is exact."""
    return dtype == torch.bfloat16 and not INTERPRETED


def next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


INTERPRETED_TILE = 128  # the widest tile dimension an interpreted kernel takes


def interpreted_tile(n: int) -> int:
    """An interpreted kernel's tile along a dimension of ``n``: as wide as it (a power of two, 16
    to ``INTERPRETED_TILE``). The interpreter's cost is per operation and program, hardly per
    element (each is one numpy call over the tile), so few wide tiles run far faster than a GPU's."""
    return max(16, min(INTERPRETED_TILE, next_pow2(n)))
