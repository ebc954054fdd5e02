"""Paged KV block pool with reference counts and hash-chained prefix caching.

Every block is in exactly one state:

* *free*: unreferenced and holding nothing worth keeping;
* *cached*: unreferenced but holding a full, hashed block a later request may reuse (LRU order,
  evicted on demand, so cached blocks count as available);
* *used*: referenced by one or more sequences (``ref_count > 0``).

A full block's hash covers its tokens and the previous block's hash, so equal hashes mean equal
prefixes. Tokens are stored beside the hash and compared on lookup, so a hash collision can never
serve wrong KV.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Protocol

from grokd.kernels.arith import ceil_div


class BlockOwner(Protocol):
    """What the block manager needs of a sequence."""

    token_ids: list[int]
    num_computed_tokens: int
    block_table: list[int]
    block_hashes: list[int]


@dataclass
class _Block:
    ref_count: int = 0
    hash: int | None = None
    tokens: tuple[int, ...] = ()


def chain_hash(prev: int | None, tokens: tuple[int, ...]) -> int:
    return hash((prev, tokens))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be >= 1")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self._blocks = [_Block() for _ in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))
        self._cached: OrderedDict[int, None] = OrderedDict()  # LRU: first = oldest
        self._by_hash: dict[int, int] = {}
        self.prefix_queried_tokens = 0
        self.prefix_hit_tokens = 0

    # ---- accounting -------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        """Blocks available to allocate (free + evictable cached)."""
        return len(self._free) + len(self._cached)

    @property
    def num_cached(self) -> int:
        return len(self._cached)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    def blocks_needed(self, num_tokens: int) -> int:
        return ceil_div(num_tokens, self.block_size)

    # ---- prefix cache -----------------------------------------------------------------------
    def match_prefix(self, seq: BlockOwner) -> tuple[list[int], list[int]]:
        """Cached blocks matching the sequence's leading full blocks: ``(block_ids, hashes)``.

        At least one token is always left to compute, so the step yields logits to sample from.
        A pure lookup: the caller records it with ``record_lookup`` once the sequence is admitted,
        so a request retried while waiting for space is counted once.
        """
        if not self.enable_prefix_caching:
            return [], []
        max_blocks = (len(seq.token_ids) - 1) // self.block_size
        ids: list[int] = []
        hashes: list[int] = []
        prev: int | None = None
        for i in range(max_blocks):
            tokens = tuple(seq.token_ids[i * self.block_size : (i + 1) * self.block_size])
            h = chain_hash(prev, tokens)
            bid = self._by_hash.get(h)
            if bid is None or self._blocks[bid].tokens != tokens:
                break
            ids.append(bid)
            hashes.append(h)
            prev = h
        return ids, hashes

    def record_lookup(self, num_queried_tokens: int, num_hit_blocks: int) -> None:
        self.prefix_queried_tokens += num_queried_tokens
        self.prefix_hit_tokens += num_hit_blocks * self.block_size

    # ---- allocation -------------------------------------------------------------------------
    def can_append(self, seq: BlockOwner, num_new_tokens: int, cached: list[int] | None = None) -> bool:
        need = self._new_blocks_needed(seq, num_new_tokens, cached)
        revivable = sum(1 for b in cached or () if self._blocks[b].ref_count == 0)
        return need + revivable <= self.num_free

    def _new_blocks_needed(self, seq: BlockOwner, num_new_tokens: int, cached: list[int] | None) -> int:
        have = len(seq.block_table) + len(cached or ())
        return max(0, self.blocks_needed(seq.num_computed_tokens + num_new_tokens) - have)

    def allocate(
        self,
        seq: BlockOwner,
        num_new_tokens: int,
        cached: list[int] | None = None,
        cached_hashes: list[int] | None = None,
    ) -> bool:
        """Grow ``seq.block_table`` to hold ``num_new_tokens`` more tokens; all-or-nothing.

        ``cached`` (from ``match_prefix``, for a sequence with no blocks yet) is adopted first and
        the caller advances ``num_computed_tokens`` past it.
        """
        if not self.can_append(seq, num_new_tokens, cached):
            return False
        if cached:
            assert not seq.block_table, "prefix blocks are only adopted by an empty sequence"
            for bid in cached:
                self._ref(bid)
            seq.block_table.extend(cached)
            seq.block_hashes.extend(cached_hashes or [])
        need = self._new_blocks_needed(seq, num_new_tokens, None)
        for _ in range(need):
            seq.block_table.append(self._take())
        return True

    def fork(self, parent: BlockOwner, child: BlockOwner, num_blocks: int) -> None:
        """Share the parent's first ``num_blocks`` (full, computed) blocks with an empty child."""
        assert not child.block_table
        for bid in parent.block_table[:num_blocks]:
            self._ref(bid)
        child.block_table.extend(parent.block_table[:num_blocks])
        child.block_hashes.extend(parent.block_hashes[:num_blocks])

    def commit(self, seq: BlockOwner) -> None:
        """Hash blocks that became full and computed, so later requests can reuse them."""
        if not self.enable_prefix_caching:
            return
        full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        bs = self.block_size
        for i in range(len(seq.block_hashes), full):
            prev = seq.block_hashes[-1] if seq.block_hashes else None
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = chain_hash(prev, tokens)
            seq.block_hashes.append(h)
            bid = seq.block_table[i]
            block = self._blocks[bid]
            if block.hash is None and h not in self._by_hash:
                block.hash, block.tokens = h, tokens
                self._by_hash[h] = bid

    def truncate(self, seq: BlockOwner, num_tokens: int) -> int:
        """Give back the tail blocks beyond those holding the first ``num_tokens`` tokens (the
        KV rows of rejected speculative tokens); returns how many. Such a block was allocated for
        this sequence alone in this step and never hashed (``commit`` only hashes full computed
        blocks), so it goes straight back to the free list and the prefix cache never sees it.
        Stale rows of rejected tokens in a block that is kept lie past ``num_computed_tokens``:
        attention never reads them and the next tokens overwrite them."""
        keep = self.blocks_needed(num_tokens)
        dropped = 0
        while len(seq.block_table) > keep:
            bid = seq.block_table.pop()
            block = self._blocks[bid]
            assert block.ref_count == 1 and block.hash is None, "only a private unhashed tail block is truncated"
            block.ref_count = 0
            self._free.append(bid)
            dropped += 1
        del seq.block_hashes[keep:]
        return dropped

    def free(self, seq: BlockOwner) -> None:
        """Drop the sequence's references, tail first so the LRU evicts tails before heads."""
        for bid in reversed(seq.block_table):
            block = self._blocks[bid]
            block.ref_count -= 1
            assert block.ref_count >= 0
            if block.ref_count == 0:
                if block.hash is not None:
                    self._cached[bid] = None
                else:
                    self._free.append(bid)
        seq.block_table.clear()
        seq.block_hashes.clear()
        seq.num_computed_tokens = 0

    def reset_prefix_cache(self) -> None:
        """Forget every cached block (e.g. after the weights changed)."""
        for bid in list(self._cached):
            self._evict(bid)
            self._free.append(bid)
        self._cached.clear()

    # ---- internals --------------------------------------------------------------------------
    def _ref(self, bid: int) -> None:
        block = self._blocks[bid]
        if block.ref_count == 0:
            self._cached.pop(bid, None)
        block.ref_count += 1

    def _take(self) -> int:
        if self._free:
            bid = self._free.popleft()
        else:
            bid, _ = self._cached.popitem(last=False)
            self._evict(bid)
        self._blocks[bid].ref_count = 1
        return bid

    def _evict(self, bid: int) -> None:
        block = self._blocks[bid]
        if block.hash is not None and self._by_hash.get(block.hash) == bid:
            del self._by_hash[block.hash]
        block.hash, block.tokens = None, ()

    def check_invariants(self) -> None:
        """Exact accounting (tests): every block is free, cached or referenced, never two of these."""
        free, cached = set(self._free), set(self._cached)
        assert len(free) == len(self._free) and not free & cached
        for bid, block in enumerate(self._blocks):
            states = (bid in free) + (bid in cached) + (block.ref_count > 0)
            assert states == 1, f"block {bid} in {states} states"
            if bid in cached:
                assert block.hash is not None
