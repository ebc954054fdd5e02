"""The learnt step cost by row count."""

import pytest

from grokd.engine.spec.cost import StepCostModel


def test_prior_shape_before_any_step():
    cost = StepCostModel(prior_row_cost=0.1)
    assert cost.estimate(1) == pytest.approx(1.0) and cost.estimate(5) == pytest.approx(1.4)


def test_one_point_extrapolates_with_the_prior_slope():
    cost = StepCostModel(prior_row_cost=0.1)
    cost.observe(1, 0.020)
    assert cost.estimate(5) == pytest.approx(0.028)
    assert cost.estimate(1) == 0.020


def test_moving_average_and_a_flat_cost_stays_flat():
    cost = StepCostModel(smoothing=0.5)
    cost.observe(4, 0.010)
    cost.observe(4, 0.020)
    assert cost.estimate(4) == pytest.approx(0.015) and cost.observed() == {4: pytest.approx(0.015)}
    cost.observe(8, 0.015)  # a GPU-like flat cost: more rows are free
    assert cost.estimate(30) == pytest.approx(0.015)
    assert cost.estimate(2) == pytest.approx(0.015 * 0.9 * 0.2 / (0.9 * 0.2) * (1.0 - 0.1 + 0.2) / (1.0 - 0.1 + 0.4))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="smoothing"):
        StepCostModel(smoothing=0.0)


def test_a_row_count_not_seen_for_max_age_steps_is_forgotten():
    m = StepCostModel(max_age_steps=8)
    m.observe(1, 1.0)
    m.observe(5, 9.0)  # timed during a load spike: drafting looks far too dear
    for _ in range(7):
        m.observe(1, 1.0)  # the planner then only runs one-row steps
    assert 5 in m.observed()  # seen 7 steps ago
    m.observe(1, 1.0)
    assert 5 not in m.observed() and m.observed() == {1: 1.0}
    assert m.estimate(5) == pytest.approx(1.4)  # from the fresh one-row step and the prior slope: tried again
    m.observe(5, 1.6)
    assert m.estimate(5) == 1.6
