"""Rejection sampling is exact: whatever the draft, the emitted token follows the target's
distribution. Checked by chi-square on a 5-token vocabulary (fixed seeds, so the checks are
deterministic) and by exact properties (a forbidden draft is never emitted, seeds repeat)."""

import pytest
import torch

from grokd.engine.spec.rejection import verify_sampled

TARGET = torch.tensor([0.05, 0.40, 0.25, 0.0, 0.30])
N = 6_000
CHI2_DF4_P001 = 18.47  # the 0.999 quantile of chi-square with 4 degrees of freedom


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    keep = expected > 0
    assert counts[~keep].sum() == 0, "a token of probability 0 was emitted"
    return float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())


def emitted_counts(draft: int, draft_probs: torch.Tensor | None, seed: int) -> tuple[torch.Tensor, int]:
    gen = torch.Generator().manual_seed(seed)
    counts = torch.zeros(TARGET.numel())
    accepted = 0
    for _ in range(N):
        verdict = verify_sampled(TARGET, draft, gen, draft_probs)
        counts[verdict.token_id] += 1
        accepted += verdict.accepted
    return counts, accepted


@pytest.mark.parametrize("draft", [1, 0, 4])
def test_point_mass_draft_emits_the_target_distribution(draft):
    counts, accepted = emitted_counts(draft, None, seed=draft)
    assert chi_square(counts, TARGET) < CHI2_DF4_P001
    # the acceptance probability of a point-mass draft is p(draft)
    assert abs(accepted / N - TARGET[draft].item()) < 4 * (TARGET[draft].item() / N) ** 0.5 + 1e-3


def test_drafter_distribution_emits_the_target_distribution():
    q = torch.tensor([0.30, 0.10, 0.20, 0.30, 0.10])
    gen = torch.Generator().manual_seed(7)
    counts = torch.zeros(TARGET.numel())
    accepted = 0
    for _ in range(N):
        draft = int(torch.multinomial(q, 1, generator=gen))
        verdict = verify_sampled(TARGET, draft, gen, q)
        counts[verdict.token_id] += 1
        accepted += verdict.accepted
    assert chi_square(counts, TARGET) < CHI2_DF4_P001
    # acceptance rate is sum(min(p, q)) = 0.05 + 0.10 + 0.20 + 0 + 0.10
    assert abs(accepted / N - 0.45) < 0.02


def test_a_draft_the_target_forbids_is_always_replaced():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        verdict = verify_sampled(TARGET, 3, gen)
        assert not verdict.accepted and verdict.token_id != 3


def test_a_certain_draft_is_always_accepted():
    certain = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    assert all(verify_sampled(certain, 2, gen).accepted for _ in range(100))


def test_seeded_draws_repeat():
    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return [verify_sampled(TARGET, 1, gen).token_id for _ in range(50)]

    assert run(3) == run(3)
    assert run(3) != run(4)
