"""Scheduler policy without a model: the test plays the model runner (advance + append a token)."""

from grokd.engine.block_manager import BlockManager
from grokd.engine.config import SchedulerConfig
from grokd.engine.request import Priority, Request, SeqStatus, Sequence
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.scheduler import Scheduler

_ids = iter(range(10**6))


def make_seq(
    n_prompt: int, priority: int = Priority.INTERACTIVE, arrival: float = 0.0, first: int = 0
) -> Sequence:
    prompt = list(range(first, first + n_prompt))
    req = Request(f"r{next(_ids)}", prompt, SamplingParams(), priority, arrival_time=arrival)
    seq = Sequence(next(_ids), req, 0, list(prompt), n_prompt)
    req.seqs.append(seq)
    return seq


def make_sched(num_blocks=64, block_size=4, budget=64, max_seqs=8, caching=True, prefill_cap=None) -> Scheduler:
    bm = BlockManager(num_blocks, block_size, caching)
    config = SchedulerConfig(max_num_batched_tokens=budget, max_num_seqs=max_seqs,
                             max_prefill_tokens_while_decoding=prefill_cap)
    return Scheduler(config, bm)


def fake_step(sched: Scheduler):
    """Schedule, then do what the engine does after the model ran: advance, commit, append."""
    out = sched.schedule()
    for item in out.scheduled:
        samples = item.samples
        item.seq.num_computed_tokens += item.num_tokens
        sched.bm.commit(item.seq)
        if samples:
            item.seq.token_ids.append(7)
    return out


def test_chunked_prefill_spreads_long_prompt_over_steps():
    sched = make_sched(budget=8)
    seq = make_seq(20)
    sched.add(seq)
    chunks = []
    for _ in range(3):
        out = fake_step(sched)
        chunks.append([(i.num_tokens, i.samples) for i in out.scheduled])
    assert chunks == [[(8, False)], [(8, False)], [(4, True)]]
    assert seq.num_output_tokens == 1


def test_decodes_first_then_prefills_within_budget():
    sched = make_sched(budget=10)
    a = make_seq(5, arrival=0)
    sched.add(a)
    fake_step(sched)  # a prefilled
    b = make_seq(30, arrival=1)
    sched.add(b)
    out = fake_step(sched)
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(a, 1), (b, 9)]
    assert out.num_tokens == 10


def test_prefill_cap_applies_only_to_steps_that_decode():
    sched = make_sched(budget=40, prefill_cap=6)
    a, b = make_seq(20, arrival=0, first=100), make_seq(20, arrival=1, first=200)  # no shared prefixes
    sched.add(a)
    sched.add(b)
    out = fake_step(sched)  # nothing decodes yet: the whole budget goes to prompts
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(a, 20), (b, 20)]
    c, d = make_seq(30, arrival=2, first=300), make_seq(9, arrival=3, first=400)
    sched.add(c)
    sched.add(d)
    out = fake_step(sched)  # a and b decode: c gets the cap, d waits
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(a, 1), (b, 1), (c, 6)]
    assert d.status == SeqStatus.WAITING
    out = fake_step(sched)  # c's next chunk is capped too, and d still waits
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(a, 1), (b, 1), (c, 6)]
    assert d.status == SeqStatus.WAITING
    uncapped = make_sched(budget=40)
    for seq in (a2 := make_seq(20, first=500), make_seq(20, first=600)):
        uncapped.add(seq)
    fake_step(uncapped)
    uncapped.add(c2 := make_seq(30, first=700))
    out = fake_step(uncapped)
    assert [i.num_tokens for i in out.scheduled if i.seq is c2] == [30] and a2.num_computed_tokens == 21


def test_max_num_seqs_limits_running():
    sched = make_sched(max_seqs=2)
    seqs = [make_seq(3, arrival=i) for i in range(4)]
    for s in seqs:
        sched.add(s)
    out = fake_step(sched)
    assert [i.seq for i in out.scheduled] == seqs[:2]
    assert len(sched.waiting) == 2


def test_interactive_admitted_before_batch():
    sched = make_sched(max_seqs=1)
    batch = make_seq(3, Priority.BATCH, arrival=0)
    inter = make_seq(3, Priority.INTERACTIVE, arrival=5)
    sched.add(batch)
    sched.add(inter)
    out = fake_step(sched)
    assert [i.seq for i in out.scheduled] == [inter]


def test_preempts_lowest_priority_newest_and_recomputes():
    # 4 blocks of 2 tokens; three 2-token prompts fill 3 blocks; growth forces preemption
    sched = make_sched(num_blocks=4, block_size=2, budget=64)
    old = make_seq(2, Priority.INTERACTIVE, arrival=0, first=0)
    new = make_seq(2, Priority.INTERACTIVE, arrival=1, first=10)
    low = make_seq(2, Priority.BATCH, arrival=0.5, first=20)
    for s in (old, new, low):
        sched.add(s)
    fake_step(sched)
    assert sched.bm.num_used == 3
    out = fake_step(sched)  # each needs a 2nd block, one is free: old takes it, low (batch) is preempted
    assert out.preempted == [low]
    assert [i.seq for i in out.scheduled] == [old, new]
    assert low.status is SeqStatus.WAITING and low.block_table == [] and low.num_computed_tokens == 0
    assert sched.waiting == [low]
    preempt_more = make_seq(2, Priority.INTERACTIVE, arrival=2, first=30)
    sched.add(preempt_more)
    assert sched.waiting == [preempt_more, low]  # interactive first, then batch
    sched.bm.check_invariants()
    # everyone eventually completes a few tokens without deadlock
    for _ in range(40):
        fake_step(sched)
        for s in list(sched.running):
            if s.num_output_tokens >= 3:
                sched.remove(s)
                s.status = SeqStatus.FINISHED
    assert all(s.num_output_tokens >= 3 for s in (old, new, low))
    assert not sched.has_work()
    assert sched.bm.num_used == 0
    sched.bm.check_invariants()


def test_request_that_can_never_fit_is_rejected_not_deadlocked():
    sched = make_sched(num_blocks=2, block_size=4)
    big = make_seq(20)
    ok = make_seq(3, arrival=1)
    sched.add(big)
    sched.add(ok)
    out = fake_step(sched)
    assert [s for s, _ in out.rejected] == [big]
    assert "pool holds only 8" in out.rejected[0][1]
    assert [i.seq for i in out.scheduled] == [ok]


def test_running_sequence_outgrowing_pool_is_rejected():
    sched = make_sched(num_blocks=2, block_size=2)
    seq = make_seq(3)
    sched.add(seq)
    rejected = []
    for _ in range(3):  # 3 prompt tokens, then it grows by one token per step past 4
        rejected += [s for s, _ in fake_step(sched).rejected]
    assert rejected == [seq]
    assert sched.bm.num_used == 0


def test_preempted_sequence_hits_prefix_cache_on_recompute():
    sched = make_sched(num_blocks=8, block_size=2)
    seq = make_seq(6)
    sched.add(seq)
    fake_step(sched)
    sched._preempt(seq, type(sched.schedule())())
    hits = sched.bm.prefix_hit_tokens
    out = fake_step(sched)
    assert sched.bm.prefix_hit_tokens - hits == 6  # 7 tokens known; 3 full blocks reused
    assert out.scheduled[0].num_tokens == 1


def test_remove_frees_everything_from_any_state():
    sched = make_sched(budget=4)
    run, wait = make_seq(10, arrival=0), make_seq(5, arrival=1)
    sched.add(run)
    sched.add(wait)
    fake_step(sched)  # run is mid-prefill, wait still waiting
    assert run.status is SeqStatus.RUNNING and wait.status is SeqStatus.WAITING
    sched.remove(run)
    sched.remove(wait)
    assert not sched.has_work()
    assert sched.bm.num_used == 0
    sched.bm.check_invariants()


def test_waiting_forks_holding_blocks_cannot_stall_the_queue():
    sched = make_sched(num_blocks=3, block_size=2)
    parent = make_seq(5, Priority.BATCH, arrival=0)
    sched.add(parent)
    fake_step(sched)
    child = Sequence(999_999, parent.request, 1, parent.token_ids[:5], 5)
    sched.bm.fork(parent, child, 2)
    child.num_computed_tokens = 4
    sched.add(child)
    sched.remove(parent)  # parent finished; its first two blocks live on in the waiting child
    urgent = make_seq(5, Priority.INTERACTIVE, arrival=1, first=50)
    sched.add(urgent)
    out = sched.schedule()
    assert [i.seq for i in out.scheduled] == [urgent]
    assert child.block_table == [] and child.num_computed_tokens == 0  # will recompute
    sched.bm.check_invariants()


def test_interactive_preempts_running_batch_work_but_not_peers():
    sched = make_sched(max_seqs=1)
    batch = make_seq(3, Priority.BATCH, arrival=0)
    sched.add(batch)
    fake_step(sched)
    peer = make_seq(3, Priority.BATCH, arrival=1)
    sched.add(peer)
    out = fake_step(sched)
    assert [i.seq for i in out.scheduled] == [batch] and not out.preempted  # equal priority waits
    inter = make_seq(3, Priority.INTERACTIVE, arrival=2)
    sched.add(inter)
    out = fake_step(sched)
    assert out.preempted == [batch] and [i.seq for i in out.scheduled] == [inter]
    assert out.num_tokens == 3  # batch's decode token was taken back out of the batch
    assert sched.waiting == [batch, peer]
    sched.bm.check_invariants()


def test_interactive_preempts_batch_for_blocks():
    sched = make_sched(num_blocks=3, block_size=2)
    batch = make_seq(5, Priority.BATCH, arrival=0)
    sched.add(batch)
    fake_step(sched)
    inter = make_seq(4, Priority.INTERACTIVE, arrival=1, first=40)
    sched.add(inter)
    out = fake_step(sched)
    assert out.preempted == [batch] and [i.seq for i in out.scheduled] == [inter]
    sched.bm.check_invariants()


def test_decodes_go_before_an_older_long_prefill():
    sched = make_sched(budget=8)
    short = make_seq(3, arrival=1, first=100)
    sched.add(short)
    fake_step(sched)
    long = make_seq(40, arrival=0)  # older, so it sorts first by age
    sched.add(long)
    out = fake_step(sched)
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(short, 1), (long, 7)]
    out = fake_step(sched)  # long is still prefilling: the decode goes first anyway
    assert [(i.seq, i.num_tokens) for i in out.scheduled] == [(short, 1), (long, 7)]


def test_a_decode_takes_its_draft_as_extra_rows_within_budget_and_pool():
    sched = make_sched(num_blocks=64, block_size=4, budget=64)
    a, b = make_seq(6), make_seq(6, first=100)
    sched.add(a)
    sched.add(b)
    fake_step(sched)  # both prefilled, one token sampled each
    a.spec_draft = [1, 2, 3]
    out = sched.schedule()
    by_seq = {item.seq.seq_id: item for item in out.scheduled}
    assert by_seq[a.seq_id].num_tokens == 4 and by_seq[a.seq_id].draft == [1, 2, 3]
    assert by_seq[a.seq_id].samples and by_seq[a.seq_id].num_known == 1
    assert by_seq[b.seq_id].num_tokens == 1 and not by_seq[b.seq_id].draft
    assert len(a.block_table) == sched.bm.blocks_needed(a.num_computed_tokens + 4)
    assert a.spec_draft == []  # taken: a later step proposes anew


def test_a_draft_is_cut_to_the_budget_and_dropped_rather_than_preempting():
    sched = make_sched(num_blocks=4, block_size=4, budget=3)
    a = make_seq(7)
    sched.add(a)
    fake_step(sched)
    fake_step(sched)
    fake_step(sched)  # prefilled in chunks of 3 and sampled: 8 tokens, 7 computed, 2 blocks
    assert a.num_uncomputed == 1 and len(a.block_table) == 2
    a.spec_draft = [1, 2, 3, 4]
    out = sched.schedule()
    assert [item.draft for item in out.scheduled] == [[1, 2]]  # budget 3: the token and 2 drafted
    sched.bm.truncate(a, a.num_computed_tokens + 1)
    other = make_seq(8, first=200)  # holds the other 2 blocks
    sched.running.append(other)
    assert sched.bm.allocate(other, 8)
    other.num_computed_tokens = 7
    a.spec_draft = [1, 2]  # positions 7..9 would need a third block: none free
    out = sched.schedule()
    assert all(not item.draft for item in out.scheduled) and not out.preempted
