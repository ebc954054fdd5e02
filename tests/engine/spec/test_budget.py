"""Sharing a step's draft budget over the batch."""

from grokd.engine.spec.budget import share_draft_budget


def test_under_budget_everyone_keeps_their_draft():
    assert share_draft_budget([4], 8) == [4]
    assert share_draft_budget([3, 2], 8) == [3, 2]
    assert share_draft_budget([], 8) == []


def test_an_even_share_then_the_leftover_to_longer_drafts():
    assert share_draft_budget([4, 4, 4, 4, 4, 4, 4, 4], 8) == [1] * 8
    assert share_draft_budget([4, 4, 4, 4], 8) == [2, 2, 2, 2]
    assert share_draft_budget([1, 4, 4], 8) == [1, 4, 3]  # share 2: 1 + 2 + 2, then 3 left over


def test_more_proposals_than_budget_go_in_the_order_given():
    assert share_draft_budget([4, 4, 4], 2) == [1, 1, 0]
    assert sum(share_draft_budget([5] * 7, 16)) == 16
