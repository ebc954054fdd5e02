"""The C kernels' argument structs as the compiler lays them out (``grokd_struct_layout``) against
their ctypes mirror (``grokd.kernels.c_abi``): the same size and every field at the same offset."""

from __future__ import annotations

import ctypes

import pytest

from grokd.kernels import c_abi, cpu_build

pytestmark = pytest.mark.c_kernels


@pytest.mark.parametrize("which, struct", list(enumerate(c_abi.STRUCTS)), ids=lambda s: getattr(s, "__name__", s))
def test_every_struct_has_the_c_layout(which, struct):
    library = cpu_build.library()
    out = (ctypes.c_int64 * 32)()
    count = library.lib.grokd_struct_layout(which, out)
    assert count == len(struct._fields_) + 1  # the size, then one offset per field
    assert list(out[:count]) == c_abi.layout(struct)
    names = library.lib.grokd_struct_fields(which).decode().split(",")[:-1]
    assert names == [name for name, *_ in struct._fields_]  # the same fields in the same order


def test_an_unknown_struct_reports_nothing():
    out = (ctypes.c_int64 * 32)()
    library = cpu_build.library()
    assert library.lib.grokd_struct_layout(len(c_abi.STRUCTS), out) == 0
    assert library.lib.grokd_struct_fields(len(c_abi.STRUCTS)) == b""
