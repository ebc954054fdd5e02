"""FaultPlan: the GROKD_FAULTS syntax, its errors, and each injection point on its own."""

import pytest
import torch

from grokd.engine.faults import ENV_VAR, FaultPlan, InjectedFault


def test_unset_or_empty_is_inert():
    assert not FaultPlan.from_env({}).active
    assert not FaultPlan.parse(" , ").active
    plan = FaultPlan()
    plan.before_step(1, [None, 3])
    plan.in_sampler([3])
    plan.in_loop([3])


def test_parses_every_field_from_the_environment():
    plan = FaultPlan.from_env({ENV_VAR: "step=3, step_seed=7,sampler_seed=8,nan_seed=9,loop_seed=10"})
    assert plan == FaultPlan(step=3, step_seed=7, sampler_seed=8, nan_seed=9, loop_seed=10)
    assert plan.active


@pytest.mark.parametrize("text, named", [
    ("stpe=3", "'stpe=3'"),
    ("step", "'step'"),
    ("step=three", "step needs an integer, got 'three'"),
])
def test_a_bad_entry_is_named(text, named):
    with pytest.raises(ValueError, match=ENV_VAR) as exc:
        FaultPlan.parse(text)
    assert named in str(exc.value)


def test_each_point_fires_only_where_asked():
    plan = FaultPlan(step=2, step_seed=7, sampler_seed=8, nan_seed=9, loop_seed=10)
    plan.before_step(1, [None, 8])
    with pytest.raises(InjectedFault, match="model step 2"):
        plan.before_step(2, [None])
    with pytest.raises(InjectedFault, match="seed 7"):
        plan.before_step(5, [1, 7])
    plan.in_sampler([7, 9])
    with pytest.raises(InjectedFault, match="logits processor"):
        plan.in_sampler([1, 8])
    with pytest.raises(InjectedFault, match="engine loop"):
        plan.in_loop([10])
    logits = torch.zeros(3, 4)
    assert plan.poison(logits, [1, 1, None]) is logits
    poisoned = plan.poison(logits, [9, 1, None])
    assert poisoned[0].isnan().all() and torch.isfinite(poisoned[1:]).all() and torch.isfinite(logits).all()
