"""Block pool accounting, hash-chained prefix reuse and LRU eviction."""

from dataclasses import dataclass, field

import pytest

from grokd.engine.block_manager import BlockManager


@dataclass
class Seq:
    token_ids: list[int]
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)


def run_prefill(bm: BlockManager, seq: Seq) -> None:
    """Admit like the scheduler: adopt cached prefix, allocate the rest, mark computed, commit."""
    cached, hashes = bm.match_prefix(seq)
    bm.record_lookup(len(seq.token_ids), len(cached))
    seq.num_computed_tokens = 0
    assert bm.allocate(seq, len(seq.token_ids), cached, hashes)
    seq.num_computed_tokens = len(seq.token_ids)
    bm.commit(seq)


def idle_ok(bm: BlockManager) -> None:
    bm.check_invariants()
    assert bm.num_used == 0
    assert bm.num_free == bm.num_blocks


def test_allocate_and_free_exact_accounting():
    bm = BlockManager(num_blocks=8, block_size=4)
    a, b = Seq(list(range(10))), Seq(list(range(100, 105)))
    run_prefill(bm, a)
    run_prefill(bm, b)
    assert len(a.block_table) == 3 and len(b.block_table) == 2
    assert bm.num_used == 5 and bm.num_free == 3
    bm.check_invariants()
    # decode growth crosses a block boundary only when needed
    a.token_ids += [1, 2]
    assert bm.allocate(a, 2) and len(a.block_table) == 3
    a.token_ids += [3]
    a.num_computed_tokens = 12
    assert bm.allocate(a, 1) and len(a.block_table) == 4
    a.num_computed_tokens = 13
    bm.commit(a)
    bm.free(a)
    bm.free(b)
    idle_ok(bm)
    # full blocks of a (3) and b (1) are now cached, still counted as free
    assert bm.num_cached == 4


def test_all_or_nothing_when_pool_exhausted():
    bm = BlockManager(num_blocks=3, block_size=4)
    a = Seq(list(range(8)))
    run_prefill(bm, a)
    big = Seq(list(range(50, 60)))
    assert not bm.can_append(big, 10)
    assert not bm.allocate(big, 10)
    assert big.block_table == [] and bm.num_used == 2
    bm.free(a)
    idle_ok(bm)


def test_prefix_hit_reuses_blocks_and_counts():
    bm = BlockManager(num_blocks=16, block_size=4)
    prompt = list(range(1, 14))  # 3 full blocks + 1 token
    a = Seq(list(prompt))
    run_prefill(bm, a)
    assert bm.prefix_hit_tokens == 0
    b = Seq(prompt[:12] + [99, 98])
    cached, _ = bm.match_prefix(b)
    bm.record_lookup(len(b.token_ids), len(cached))
    assert cached == a.block_table[:3]
    assert bm.prefix_hit_tokens == 12
    assert bm.prefix_queried_tokens == 13 + 14
    # a diverging block breaks the chain even if later blocks are equal
    c = Seq([0] + prompt[1:])
    assert bm.match_prefix(c)[0] == []
    # shared blocks are referenced twice; freeing one owner keeps them used
    b.num_computed_tokens = 0
    assert bm.allocate(b, len(b.token_ids), cached, _)
    b.num_computed_tokens = len(b.token_ids)
    bm.commit(b)
    assert b.block_table[:3] == a.block_table[:3]
    used = bm.num_used
    bm.free(a)
    assert bm.num_used == used - 1  # only a's private 4th block is released
    bm.free(b)
    idle_ok(bm)


def test_match_leaves_one_token_to_compute():
    bm = BlockManager(num_blocks=8, block_size=4)
    a = Seq(list(range(8)))  # exactly two full blocks
    run_prefill(bm, a)
    bm.free(a)
    again = Seq(list(range(8)))
    cached, _ = bm.match_prefix(again)
    assert len(cached) == 1  # the last block is recomputed so there are logits to sample from


def test_lru_evicts_oldest_unused_cached_block_first():
    bm = BlockManager(num_blocks=4, block_size=2)
    a, b = Seq([1, 2, 3]), Seq([7, 8, 9])
    run_prefill(bm, a)
    bm.free(a)  # a's full block cached first (older)
    run_prefill(bm, b)
    bm.free(b)
    assert bm.num_cached == 2
    # need 3 blocks: 2 plain free ones + evict the oldest cached (a's)
    c = Seq([20, 21, 22, 23, 24, 25])
    assert bm.allocate(c, 6)
    assert bm.match_prefix(Seq([1, 2, 3]))[0] == []
    assert len(bm.match_prefix(Seq([7, 8, 9]))[0]) == 1
    bm.free(c)
    idle_ok(bm)


def test_touching_cached_block_removes_it_from_lru():
    bm = BlockManager(num_blocks=3, block_size=2)
    a = Seq([1, 2, 3])
    run_prefill(bm, a)
    bm.free(a)
    b = Seq([1, 2, 5])
    run_prefill(bm, b)  # revives a's cached block
    assert bm.num_cached == 0 and bm.num_used == 2
    bm.check_invariants()
    bm.free(b)
    idle_ok(bm)


def test_fork_shares_blocks_by_reference():
    bm = BlockManager(num_blocks=8, block_size=4)
    parent = Seq(list(range(10)))
    run_prefill(bm, parent)
    child = Seq(list(range(10)))
    bm.fork(parent, child, 2)
    assert child.block_table == parent.block_table[:2]
    bm.free(parent)
    assert bm.num_used == 2
    bm.free(child)
    idle_ok(bm)


def test_prefix_caching_disabled_never_hits():
    bm = BlockManager(num_blocks=8, block_size=4, enable_prefix_caching=False)
    a = Seq(list(range(9)))
    run_prefill(bm, a)
    bm.free(a)
    assert bm.num_cached == 0
    assert bm.match_prefix(Seq(list(range(9))))[0] == []
    idle_ok(bm)


def test_duplicate_content_blocks_are_not_double_registered():
    bm = BlockManager(num_blocks=8, block_size=2)
    a, b = Seq([1, 2, 3]), Seq([1, 2, 4])
    for s in (a, b):  # prefilled in the same step: neither sees the other's block yet
        assert bm.allocate(s, 3)
    for s in (a, b):
        s.num_computed_tokens = 3
        bm.commit(s)
    bm.free(a)
    bm.free(b)
    assert bm.num_cached == 1
    idle_ok(bm)


def test_invalid_pool():
    with pytest.raises(ValueError):
        BlockManager(0, 16)


def test_truncate_gives_back_the_blocks_of_rejected_tokens_and_never_caches_them():
    bm = BlockManager(num_blocks=8, block_size=4)
    seq = Seq(list(range(6)))
    run_prefill(bm, seq)  # 6 tokens: 2 blocks
    start_free = bm.num_free
    # a decode of the last token plus a 5-token draft: positions 5..10 need 3 blocks
    seq.num_computed_tokens = 5
    assert bm.allocate(seq, 6) and len(seq.block_table) == 3
    # one draft token accepted: the KV of positions 5 and 6 is kept, 7..10 were rejected
    seq.token_ids += [50, 51]
    seq.num_computed_tokens = 7
    bm.commit(seq)
    assert bm.truncate(seq, seq.num_computed_tokens) == 1 and len(seq.block_table) == 2
    assert bm.num_free == start_free
    bm.check_invariants()
    # the block of rejected tokens went to the free list, not the prefix cache: only the first full
    # block (tokens 0..3) is registered, so a lookup of the accepted text hits one block
    bm.free(seq)
    idle_ok(bm)
    assert bm.num_cached == 1
    assert len(bm.match_prefix(Seq([0, 1, 2, 3, 4, 5, 50, 51, 60]))[0]) == 1


def test_truncate_keeps_a_block_holding_an_accepted_token():
    bm = BlockManager(num_blocks=4, block_size=4)
    seq = Seq(list(range(4)))
    run_prefill(bm, seq)
    seq.num_computed_tokens = 3
    assert bm.allocate(seq, 3) and len(seq.block_table) == 2  # positions 3..5
    seq.token_ids += [9]
    seq.num_computed_tokens = 4  # nothing accepted: the token sampled at position 4 has no KV yet
    assert bm.truncate(seq, 4) == 1 and len(seq.block_table) == 1
    assert bm.truncate(seq, 4) == 0
    bm.free(seq)
    idle_ok(bm)
