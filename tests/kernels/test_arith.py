"""``ceil_div`` against the float formula on small values and exactly on values a float cannot hold."""

import math

from grokd.kernels.arith import ceil_div


def test_ceil_div_rounds_up_and_stays_exact() -> None:
    for a in range(0, 70):
        for b in (1, 2, 16, 64):
            assert ceil_div(a, b) == math.ceil(a / b)
    big = 2**60 + 1  # a / b in float64 loses the +1: math.ceil would give 2**56
    assert ceil_div(big, 16) == 2**56 + 1
