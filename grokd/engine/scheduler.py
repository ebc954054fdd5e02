"""Continuous-batching scheduler: one batch per step over a paged KV pool.

Order of business each step:

1. Running sequences: decodes first (one token each), then unfinished (chunked) prefills with
   what is left of the token budget, each group in priority order (priority, then age). When the
   pool is out of blocks the lowest-priority, newest running sequence is preempted (possibly one
   already placed in this batch, which is then taken back out): its blocks are freed and it goes
   back to the waiting queue to be recomputed later (with the prefix cache, recompute of its
   full blocks is usually a cache hit).
2. Waiting sequences in priority order, while the token budget, ``max_num_seqs`` and the pool
   allow; a long prompt is admitted with a first chunk and continues in later steps. No admission
   happens in a step that had to preempt, so a freed sequence is not immediately displaced again.
   A waiting sequence that does not fit may preempt running sequences of strictly lower priority
   (batch work yields to interactive requests), never equal or higher ones.

A sequence that cannot fit even with the whole pool to itself is finished with an error instead
of waiting forever.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from grokd.engine.block_manager import BlockManager
from grokd.engine.config import SchedulerConfig
from grokd.engine.request import SeqStatus, Sequence


@dataclass
class ScheduledSeq:
    """``num_tokens`` rows of the step for ``seq``: its tokens ``token_ids[num_computed:]`` and,
    for a decode with a speculative ``draft``, the drafted tokens after them (``num_tokens = 1 +
    len(draft)``), each verified in this same step."""

    seq: Sequence
    num_tokens: int
    draft: list[int] = field(default_factory=list)
    samples: bool = field(init=False)  # this step reaches the end of the known tokens: sample

    def __post_init__(self) -> None:
        known = self.num_tokens - len(self.draft)
        self.samples = self.seq.num_computed_tokens + known == len(self.seq.token_ids)

    @property
    def num_known(self) -> int:
        """Rows of tokens the sequence already has (the drafted ones are not its tokens yet)."""
        return self.num_tokens - len(self.draft)


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSeq] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    rejected: list[tuple[Sequence, str]] = field(default_factory=list)  # cannot ever fit

    @property
    def num_tokens(self) -> int:
        return sum(s.num_tokens for s in self.scheduled)


class Scheduler:
    def __init__(self, config: SchedulerConfig, block_manager: BlockManager) -> None:
        self.config = config
        self.bm = block_manager
        self.waiting: list[Sequence] = []  # sorted by Sequence.sort_key
        self.running: list[Sequence] = []
        self.num_preempted_total = 0

    # ---- queue management --------------------------------------------------------------------
    def add(self, seq: Sequence) -> None:
        seq.status = SeqStatus.WAITING
        bisect.insort(self.waiting, seq, key=Sequence.sort_key)

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the queues and free its blocks (finish or abort)."""
        if seq.status is SeqStatus.WAITING and seq in self.waiting:
            self.waiting.remove(seq)
        elif seq.status is SeqStatus.RUNNING and seq in self.running:
            self.running.remove(seq)
        self.bm.free(seq)

    def num_waiting_requests(self) -> int:
        return len({id(s.request) for s in self.waiting})

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- the step ----------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.config.max_num_batched_tokens
        # decodes before unfinished (chunked) prefills, so a long prompt never stalls token streams
        pending = sorted(self.running, key=lambda s: (s.num_uncomputed > 1, *s.sort_key()))
        kept: list[Sequence] = []
        decoding = False
        while pending and budget > 0:
            if pending[0].num_uncomputed > 1 and decoding:  # the decodes are scheduled: cap the prefills
                budget = self._prefill_budget(budget, out)
                if budget <= 0:
                    break
            seq = pending.pop(0)
            decoding = decoding or seq.num_uncomputed == 1
            draft = self._fit_draft(seq, budget)
            if draft:
                kept.append(seq)
                out.scheduled.append(ScheduledSeq(seq, 1 + len(draft), draft))
                budget -= 1 + len(draft)
                continue
            num = min(seq.num_uncomputed, budget)
            dropped = False  # rejected or preempted itself: not scheduled this step
            while not self.bm.allocate(seq, num):
                victim = max([*pending, *kept, seq], key=Sequence.sort_key)  # lowest priority, newest
                if victim is seq:
                    if (
                        not kept
                        and not pending
                        and self.bm.blocks_needed(seq.num_computed_tokens + num) > (self.bm.num_blocks)
                    ):
                        out.rejected.append((seq, self._too_big(seq)))
                    else:
                        self._preempt(seq, out)
                    dropped = True
                    break
                if victim in kept:
                    kept.remove(victim)
                    budget += self._unschedule(victim, out)
                    num = min(seq.num_uncomputed, budget)
                else:
                    pending.remove(victim)
                self._preempt(victim, out)
            if dropped:
                continue
            kept.append(seq)
            out.scheduled.append(ScheduledSeq(seq, num))
            budget -= num
        # sequences the budget did not reach stay running, unscheduled this step
        self.running = kept + pending
        for seq, _ in out.rejected:
            self.bm.free(seq)
        if out.preempted:
            return out
        if decoding:
            budget = self._prefill_budget(budget, out)
        budget = self._admit(out, budget)
        if not out.scheduled and not self.running and self.waiting and self._release_waiting_blocks():
            self._admit(out, budget)
        return out

    def _fit_draft(self, seq: Sequence, budget: int) -> list[int]:
        """The part of a decoding sequence's proposed draft this step takes: what the token
        budget leaves and the pool can hold without preempting anyone (a draft is an
        optimisation, never a reason to evict work). Its blocks are allocated here; the engine
        gives back those of rejected tokens after verification. Empties ``seq.spec_draft``."""
        draft, seq.spec_draft = seq.spec_draft, []
        if not draft or seq.num_uncomputed != 1:
            return []
        draft = draft[: max(0, budget - 1)]
        if draft and self.bm.allocate(seq, 1 + len(draft)):
            return draft
        return []

    def _prefill_budget(self, budget: int, out: SchedulerOutput) -> int:
        """What is left of ``budget`` for prompt tokens in a step that decodes: capped at
        ``max_prefill_tokens_while_decoding`` minus the prompt tokens already scheduled."""
        cap = self.config.max_prefill_tokens_while_decoding
        if cap is None:
            return budget
        prefilled = sum(item.num_tokens for item in out.scheduled if item.num_known > 1)
        return min(budget, cap - prefilled)

    def _admit(self, out: SchedulerOutput, budget: int) -> int:
        """Move waiting sequences to running in priority order while budget and blocks allow."""
        bs = self.bm.block_size
        while self.waiting and budget > 0:
            seq = self.waiting[0]
            if len(self.running) >= self.config.max_num_seqs:
                refund = self._preempt_lower_priority(seq, out)
                if refund is None:
                    break
                budget += refund
                continue
            if self.bm.blocks_needed(len(seq.token_ids)) > self.bm.num_blocks:
                self.waiting.pop(0)
                out.rejected.append((seq, self._too_big(seq)))
                continue
            cached: list[int] = []
            hashes: list[int] = []
            lookup = not seq.block_table and seq.num_computed_tokens == 0
            if lookup and not seq.request.wants_prompt_logprobs:
                cached, hashes = self.bm.match_prefix(seq)
            base = seq.num_computed_tokens + len(cached) * bs
            num = min(len(seq.token_ids) - base, budget)
            if not self.bm.allocate(seq, num + len(cached) * bs, cached, hashes):
                refund = self._preempt_lower_priority(seq, out)
                if refund is None:
                    break
                budget += refund
                continue
            if lookup and self.bm.enable_prefix_caching:
                self.bm.record_lookup(len(seq.token_ids), len(cached))
            if cached:
                seq.num_computed_tokens = base
                # prompt tokens served from cache (usage reporting); recompute may also hit outputs
                seq.num_cached_tokens = max(seq.num_cached_tokens, min(base, seq.num_prompt_tokens))
            self.waiting.pop(0)
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            out.scheduled.append(ScheduledSeq(seq, num))
            budget -= num
        return budget

    def _preempt_lower_priority(self, seq: Sequence, out: SchedulerOutput) -> int | None:
        """Make room for ``seq`` by preempting the newest running sequence of strictly lower
        priority (an interactive request never waits behind batch work). Returns the tokens its
        cancelled work gave back to the budget, or ``None`` if there is no such sequence."""
        victims = [r for r in self.running if r.priority > seq.priority]
        if not victims:
            return None
        victim = max(victims, key=Sequence.sort_key)
        refund = self._unschedule(victim, out)
        self._preempt(victim, out)
        return refund

    @staticmethod
    def _unschedule(seq: Sequence, out: SchedulerOutput) -> int:
        """Take ``seq`` back out of this step's batch; returns the tokens given back to the budget."""
        refund = sum(item.num_tokens for item in out.scheduled if item.seq is seq)
        out.scheduled = [item for item in out.scheduled if item.seq is not seq]
        return refund

    def _release_waiting_blocks(self) -> bool:
        """Last resort against a stall: nothing runs, yet waiting sequences (forked samples) hold
        shared blocks the head of the queue needs. Drop their blocks; they recompute later."""
        released = False
        for seq in self.waiting:
            if seq.block_table:
                self.bm.free(seq)
                released = True
        return released

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        if seq in self.running:
            self.running.remove(seq)
        self.bm.free(seq)
        seq.num_preemptions += 1
        self.num_preempted_total += 1
        out.preempted.append(seq)
        self.add(seq)

    def _too_big(self, seq: Sequence) -> str:
        cap = self.bm.num_blocks * self.bm.block_size
        return f"request needs {len(seq.token_ids)} tokens of KV cache but the pool holds only {cap}"
