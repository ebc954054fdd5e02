"""The acceptance estimate and the adaptive pause of drafting."""

from grokd.engine.spec.stats import DraftStats


def test_pauses_only_after_enough_evidence_of_failure_then_retries_with_backoff():
    s = DraftStats()
    s.record(drafted=4, accepted=0, emitted=1)
    s.update_switch(step=1, min_drafted=8, min_rate=0.25, retry_after=10)
    assert not s.paused(2)  # 4 drafted tokens are not enough to judge
    s.record(drafted=4, accepted=1, emitted=2)
    s.update_switch(step=2, min_drafted=8, min_rate=0.25, retry_after=10)
    assert s.paused(3) and s.paused(11) and not s.paused(12)
    assert s.acceptance_rate == 1 / 8 and (s.steps, s.tokens) == (2, 3)
    for _ in range(2):  # the retry fails too: paused twice as long
        s.record(drafted=4, accepted=0, emitted=1)
    s.update_switch(step=14, min_drafted=8, min_rate=0.25, retry_after=10)
    assert s.paused(33) and not s.paused(34)


def test_stays_on_while_drafts_are_accepted():
    s = DraftStats()
    for i in range(10):
        s.record(drafted=4, accepted=2, emitted=3)
        s.update_switch(step=i, min_drafted=8, min_rate=0.25, retry_after=10)
    assert not s.paused(10) and s.acceptance_rate == 0.5


def test_position_rate_follows_the_recent_verdicts():
    s = DraftStats()
    assert s.position_rate == 0.5  # the prior
    for _ in range(20):
        s.record(drafted=4, accepted=4, emitted=5)  # every position passes
    assert s.position_rate > 0.95
    for _ in range(40):
        s.record(drafted=4, accepted=0, emitted=1)  # each draft fails at its first position
    assert s.position_rate < 0.15
