"""The adaptive switch-off of drafting."""

from grokd.engine.spec.stats import DraftStats


def test_switches_off_only_after_enough_evidence_of_failure():
    s = DraftStats()
    s.record(drafted=4, accepted=0, emitted=1)
    s.update_switch(min_drafted=8, min_rate=0.25)
    assert not s.disabled  # 4 drafted tokens are not enough to judge
    s.record(drafted=4, accepted=1, emitted=2)
    s.update_switch(min_drafted=8, min_rate=0.25)
    assert s.disabled and s.acceptance_rate == 1 / 8 and (s.steps, s.tokens) == (2, 3)


def test_stays_on_while_drafts_are_accepted():
    s = DraftStats()
    for _ in range(10):
        s.record(drafted=4, accepted=2, emitted=3)
        s.update_switch(min_drafted=8, min_rate=0.25)
    assert not s.disabled and s.acceptance_rate == 0.5
