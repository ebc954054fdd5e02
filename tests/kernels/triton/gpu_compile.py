"""Compiles each Triton kernel of grokd, bf16 variants (the weight GEMMs over int8 and fp8), for an sm_90 GPU (H100/H200) down to a
cubin, on a machine without one: Triton's front end and NVIDIA back end need no device. Run as a
script in a process without ``TRITON_INTERPRET`` (``triton.jit`` would otherwise interpret);
prints one line per kernel and exits non-zero if any fails."""

from __future__ import annotations

import os
import sys

assert not os.environ.get("TRITON_INTERPRET"), "run without TRITON_INTERPRET"

import triton  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource  # noqa: E402

from grokd.kernels.triton import fused_moe, int8_linear, paged_attention  # noqa: E402

I32 = "i32"


def _strides(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, I32)


def _const(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, "constexpr")


TILE = _const("ACT_BF16", "LOW_DOT", "BLOCK_M", "BLOCK_N", "BLOCK_K")
BF16 = {"ACT_BF16": True, "LOW_DOT": True}
CASES = [
    (int8_linear._int8_matmul,
     {"x_ptr": "*bf16", "w_ptr": "*i8", "s_ptr": "*bf16", "out_ptr": "*bf16",
      **_strides("M", "K", "N", "stride_xm", "stride_wk", "stride_wn", "stride_sg", "group_size", "stride_om"),
      **_const("GROUPED", "SCALE_ROW", "SCALE_AFTER"), **TILE},
     {"GROUPED": True, "SCALE_ROW": True, "SCALE_AFTER": False, **BF16, "BLOCK_M": 16, "BLOCK_N": 128, "BLOCK_K": 64}),
    (fused_moe._gate_up,
     {"x_ptr": "*bf16", "wg_ptr": "*i8", "wu_ptr": "*i8", "sg_ptr": "*bf16", "su_ptr": "*bf16", "h_ptr": "*bf16",
      "slots_ptr": "*i64", "block_expert_ptr": "*i64",
      **_strides("K", "N", "num_slots", "top_k", "stride_xm", "stride_we", "stride_wk", "stride_wn", "stride_se",
                 "stride_sg", "group_size", "stride_hm"),
      **_const("QUANT", "ROUND_W", "SCALE_ROW", "ERF_GELU"), **TILE},
     {"QUANT": True, "ROUND_W": False, "SCALE_ROW": True, "ERF_GELU": False, **BF16, "BLOCK_M": 16, "BLOCK_N": 64,
      "BLOCK_K": 128}),
    (fused_moe._down,
     {"h_ptr": "*bf16", "w_ptr": "*i8", "s_ptr": "*bf16", "gate_ptr": "*fp32", "out_ptr": "*fp32",
      "slots_ptr": "*i64", "block_expert_ptr": "*i64",
      **_strides("K", "N", "num_slots", "stride_hm", "stride_we", "stride_wk", "stride_wn", "stride_se", "stride_sg",
                 "group_size", "stride_om"),
      **_const("QUANT", "ROUND_W", "SCALE_ROW"), **TILE},
     {"QUANT": True, "ROUND_W": False, "SCALE_ROW": False, **BF16, "BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128}),
    (paged_attention._attention_tile,
     {"q_ptr": "*bf16", "kv_ptr": "*i8", "kv_scale_ptr": "*fp32", "tables_ptr": "*i64", "seq_lens_ptr": "*i64",
      "q_start_ptr": "*i64", "o_ptr": "*fp32", "lse_ptr": "*fp32",
      **_strides("stride_qt", "stride_qh", "stride_kv", "stride_blk", "stride_head", "stride_slot", "stride_tab",
                 "stride_os", "stride_ot", "stride_oh", "stride_ls", "stride_lt"),
      "sm_scale": "fp32", "softcap": "fp32", "temperature_len": I32, "inv_log2_len": "fp32",
      "keys_per_split": I32, "num_splits": I32,
      **_const("GROUP", "GROUP_PAD", "BLOCK_Q", "BLOCK_N", "HEAD_DIM", "PAGE", "KV_INT8", "HAS_CAP", "HAS_TEMP",
               "ACT_BF16", "LOW_DOT")},
     {"GROUP": 6, "GROUP_PAD": 8, "BLOCK_Q": 2, "BLOCK_N": 64, "HEAD_DIM": 128, "PAGE": 16, "KV_INT8": True,
      "HAS_CAP": True, "HAS_TEMP": False, **BF16}),
]
# --weights-dtype fp8: the same weight GEMMs over e4m3 values (sm_89 and later convert them)
CASES += [(fn, {k: "*fp8e4nv" if v == "*i8" else v for k, v in signature.items()}, constexprs)
          for fn, signature, constexprs in CASES[:3]]


def main() -> int:
    failed = 0
    for fn, signature, constexprs in CASES:
        try:
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs),
                                      target=GPUTarget("cuda", 90, 32))
            name = fn.__name__ + (" (fp8 weights)" if "*fp8e4nv" in signature.values() else "")
            print(f"{name}: {'cubin' if 'cubin' in compiled.asm else sorted(compiled.asm)}")
        except Exception as e:  # report every kernel, not just the first failure
            failed += 1
            print(f"{fn.__name__}: FAILED {type(e).__name__}: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
