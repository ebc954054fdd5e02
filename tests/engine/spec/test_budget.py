"""Planning a step's drafted tokens: expected tokens per second, and the plain even share."""

import pytest

from grokd.engine.spec.budget import plan_drafts, share_draft_budget
from grokd.engine.spec.cost import StepCostModel


def linear(fixed: float, per_row: float):
    return lambda rows: fixed + per_row * rows


def test_free_rows_get_every_draft_in_full():
    assert plan_drafts(2, [(0.3, 4), (0.9, 3)], linear(1.0, 0.0), cap=32) == [4, 3]


def test_the_cap_takes_the_most_likely_tokens_first():
    # gains 0.9, 0.81, 0.729 for the second sequence beat 0.3 for the first
    assert plan_drafts(2, [(0.3, 4), (0.9, 3)], linear(1.0, 0.0), cap=3) == [0, 3]


def test_costly_rows_keep_only_drafts_that_pay_for_them():
    # at one row a draft row costs 10%: a 0.8 draft pays for 4 tokens, a 0.05 draft for none
    assert plan_drafts(1, [(0.8, 4)], linear(0.9, 0.1), cap=32) == [4]
    assert plan_drafts(1, [(0.05, 4)], linear(0.9, 0.1), cap=32) == [0]
    # with 8 rows in and a row costing as much as a plain one, no draft pays
    assert plan_drafts(8, [(0.37, 4)] * 8, linear(0.0, 1.0), cap=32) == [0] * 8
    # a cheaper row: 60% drafts pay for their first token only, 95% ones in full
    assert plan_drafts(8, [(0.6, 4)] * 8, linear(4.0, 0.5), cap=32) == [1] * 8
    assert plan_drafts(8, [(0.95, 4)] * 8, linear(4.0, 0.5), cap=32) == [4] * 8


def test_a_learnt_step_cost_plans_like_the_steps_it_saw():
    cost = StepCostModel()
    for _ in range(3):
        cost.observe(8, 0.040)
        cost.observe(16, 0.060)  # a second tile of rows: +50%
    assert cost.estimate(12) == pytest.approx(0.050) and cost.estimate(24) == pytest.approx(0.080)  # interpolated, extrapolated
    assert plan_drafts(8, [(0.4, 4)] * 8, cost.estimate, cap=32) == [0] * 8
    assert sum(plan_drafts(8, [(0.9, 4)] * 8, cost.estimate, cap=32)) >= 8


def test_share_without_a_cost_model():
    assert share_draft_budget([4], 8) == [4]
    assert share_draft_budget([3, 2], 8) == [3, 2]
    assert share_draft_budget([], 8) == []
    assert share_draft_budget([4, 4, 4, 4, 4, 4, 4, 4], 8) == [1] * 8
    assert share_draft_budget([1, 4, 4], 8) == [1, 4, 3]  # share 2: 1 + 2 + 2, then 3 left over
    assert share_draft_budget([4, 4, 4], 2) == [1, 1, 0]
