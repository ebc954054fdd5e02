"""The one table of dtype names: every name maps to its torch dtype, the table is read-only, and an
unknown name is refused with the choices."""

import pytest
import torch

from grokd.kernels.dtypes import DTYPES, torch_dtype


def test_names_map_to_torch_dtypes_and_unknown_ones_are_refused() -> None:
    assert {name: torch_dtype(name) for name in DTYPES} == {
        "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    with pytest.raises(TypeError):
        DTYPES["int8"] = torch.int8  # type: ignore[index]
    with pytest.raises(ValueError, match="choose from float32, bfloat16, float16"):
        torch_dtype("int4")
