"""The ctypes mirror of the C kernels' argument structs (``kernels/csrc/grokd.h``), the one place
Python spells them. ``tests/kernels/test_c_abi.py`` compares each one's size and field offsets
with what the compiled library reports (``grokd_struct_layout``), so a field that drifts between
the two fails a test instead of corrupting memory."""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # _SimpleCData is generic only in the stubs
    _Fields = list[tuple[str, type[ctypes._SimpleCData[Any]]]]  # what ``_fields_`` holds here: scalars only

_i64, _f32, _i32, _ptr = ctypes.c_int64, ctypes.c_float, ctypes.c_int32, ctypes.c_void_p


class Shape(ctypes.Structure):
    """One decode-attention call's sizes, strides in elements."""

    _fields_: ClassVar[_Fields] = [(name, _i64) for name in (
        "rows", "q_heads", "kv_heads", "block_size", "head_dim", "num_blocks",
        "q_row_stride", "q_head_stride", "table_stride", "len_stride")] + [
        ("scale", _f32), ("softcap", _f32), ("bf16", _i32), ("temperature_len", _i32)]


class LayerWeights(ctypes.Structure):
    """One decoder layer's norms, packed projections (``kind``: 0 bf16 panels, 1 int8 panels, 2 int8
    pairs for vpdpwssd) and int8 scales."""

    _fields_: ClassVar[_Fields] = [(name, _ptr) for name in ("norm1", "norm2", "qkv", "o", "gate_up", "down", "qkv_scales",
                                          "o_scales", "gate_up_scales", "down_scales")] + [
        (name, _i64) for name in ("hidden", "heads", "kv_heads", "head_dim", "intermediate")] + [
        ("eps", _f32), ("scale", _f32), ("kind", _i32)]


class StepKV(ctypes.Structure):
    """A decode step's KV arguments, shared by its layers."""

    _fields_: ClassVar[_Fields] = [("cos", _ptr), ("sin", _ptr), ("pool", _ptr), ("num_blocks", _i64), ("block_size", _i64),
                ("slots", _ptr), ("tables", _ptr), ("seq_lens", _ptr), ("table_stride", _i64),
                ("len_stride", _i64), ("pool_int8", _i32)]


# grokd.h's enum order: the `which` argument of grokd_struct_layout
STRUCTS: tuple[type[ctypes.Structure], ...] = (Shape, LayerWeights, StepKV)


def layout(struct: type[ctypes.Structure]) -> list[int]:
    """``struct``'s size, then each field's offset in declaration order, as ctypes lays it out."""
    return [ctypes.sizeof(struct), *(getattr(struct, name).offset for name, *_ in struct._fields_)]
