"""The synchronous engine core: add requests, run steps, get incremental outputs.

One ``step()`` = schedule a batch, run the model once, sample, append tokens, detokenise, check
stop conditions, free finished sequences, and return a ``RequestOutput`` for every request that
changed. Not thread-safe: ``AsyncEngine`` drives it from a single thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from grokd.engine.block_manager import BlockManager
from grokd.engine.config import EngineConfig
from grokd.engine.detokenizer import Detokenizer
from grokd.engine.errors import ContextLengthError, EngineDeadError, QueueFullError
from grokd.engine.faults import FaultPlan
from grokd.engine.logits_processors import LogitsProcessor, ProcessorRegistry, SamplingRow, StructuredBackend
from grokd.engine.model_runner import ModelRunner
from grokd.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from grokd.engine.parallel.group import ParallelGroup
from grokd.engine.parallel.report import shard_loaded
from grokd.engine.request import Request, SeqIdCounter, SeqStatus, Sequence, make_generator
from grokd.engine.sampler import NONFINITE_LOGITS, Sampler, top_logprobs
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.scheduler import ScheduledSeq, Scheduler
from grokd.engine.spec.budget import plan_drafts, share_draft_budget
from grokd.engine.spec.cost import StepCostModel
from grokd.engine.spec.proposer import Proposer, build_proposer
from grokd.engine.spec.rejection import sample, verify_sampled
from grokd.engine.step_model import StepModel
from grokd.engine.structured.backend import StructuredOutputBackend
from grokd.engine.tokenizer import Tokenizer
from grokd.kernels.arith import ceil_div
from grokd.kernels.dispatch import select_kernels
from grokd.kernels.dtypes import torch_dtype

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    num_waiting: int
    num_running: int
    num_preempted_total: int
    kv_blocks_total: int
    kv_blocks_used: int
    kv_blocks_cached: int  # free but holding reusable prefix blocks
    prefix_cache_queried_tokens: int
    prefix_cache_hit_tokens: int
    steps_total: int
    last_step_tokens: int
    last_step_seconds: float
    prompt_tokens_total: int
    generation_tokens_total: int
    kv_block_bytes: int = 0  # one block's keys and values over all layers
    weights_bytes: int = 0  # the loaded weights (engine.memory.weight_bytes)
    # speculative decoding: drafted and accepted tokens, and the decode steps of sequences with a
    # draft and the tokens those steps emitted (accepted drafts plus one sampled token each)
    spec_draft_tokens_total: int = 0
    spec_accepted_tokens_total: int = 0
    spec_verify_steps_total: int = 0
    spec_emitted_tokens_total: int = 0


def build_runner(config: EngineConfig, model: StepModel, group: ParallelGroup | None = None) -> ModelRunner:
    """The model runner ``config`` asks for; every rank of a tensor-parallel engine builds its own
    with this, from the same config."""
    max_model_len = int(config.model.max_model_len or model.max_position_embeddings)
    bs = config.cache.block_size
    useful = config.scheduler.max_num_seqs * ceil_div(max_model_len, bs)
    return ModelRunner(
        model, config.cache, torch_dtype(config.model.dtype), torch.device(config.model.device), useful,
        decode_graphs="off" if config.model.enforce_eager else "auto",
        max_batch=config.scheduler.max_num_seqs, max_blocks_per_seq=ceil_div(max_model_len, bs), group=group,
    )


class LLMEngine:
    def __init__(
        self,
        config: EngineConfig,
        model: StepModel,
        tokenizer: Tokenizer | None,
        checkpoint: Any = None,
        structured_backend: StructuredBackend | None = None,
        extra_samplers: Iterable[type[LogitsProcessor]] = (),
        group: ParallelGroup | None = None,
        proposer: Proposer | None = None,
    ) -> None:
        """``proposer``: the drafter when ``config.speculative`` is set (default: the one it names).

        ``group``: on a tensor-parallel server, rank 0's view of the ranks holding ``model``'s
        shards; this engine then drives them (``ModelRunner``'s channel) and is the only one that
        schedules and samples."""
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.checkpoint = checkpoint
        self._structured_backend = structured_backend
        self._structured_lock = threading.Lock()
        self.device = torch.device(config.model.device)
        self.max_model_len = int(config.model.max_model_len or model.max_position_embeddings)
        self.vocab_size = int(model.vocab_size)
        bs = config.cache.block_size
        self.runner = build_runner(config, model, group)
        self.block_manager = BlockManager(self.runner.num_blocks, bs, config.cache.enable_prefix_caching)
        self.scheduler = Scheduler(config.scheduler, self.block_manager)
        self.registry = ProcessorRegistry(extra_samplers)
        gen = torch.Generator(device=self.device)
        gen.manual_seed(config.seed)
        # injected failures for tests (engine.faults): read once, here; inert unless asked for
        self.faults = config.faults if config.faults is not None else FaultPlan.from_env()
        self._inject = self.faults.active
        self.sampler = Sampler(self.registry, gen, argmax=select_kernels(self.device).argmax, faults=self.faults)
        self.eos_ids = list(tokenizer.eos_token_ids) if tokenizer is not None else []
        self.requests: dict[str, Request] = {}
        self._seq_ids = SeqIdCounter()
        self._req_ids = SeqIdCounter()
        self.steps_total = 0
        self.last_step_tokens = 0
        self.last_step_seconds = 0.0
        self.prompt_tokens_total = 0
        self.generation_tokens_total = 0
        self.consecutive_failures = 0
        self.spec = config.speculative
        if proposer is not None and self.spec is None:
            raise ValueError("proposer: given without a speculative config")
        self.proposer: Proposer | None = proposer
        if self.spec is not None and proposer is None:
            self.proposer = build_proposer(config, tokenizer, self.vocab_size)
        self.step_cost = StepCostModel()
        self.spec_draft_tokens_total = 0
        self.spec_accepted_tokens_total = 0
        self.spec_verify_steps_total = 0
        self.spec_emitted_tokens_total = 0

    @classmethod
    def from_config(cls, config: EngineConfig, group: ParallelGroup | None = None, **kwargs: Any) -> LLMEngine:
        """Load the model (``group``: rank 0's shard of it) and build the engine around it."""
        from grokd.engine.loader import load_model_and_tokenizer
        from grokd.engine.parallel.shard import TensorParallel

        tp = TensorParallel(group, config.parallel) if group is not None else None
        model, tokenizer, ckpt = load_model_and_tokenizer(config.model, tp)
        if group is not None and group.world_size > 1:
            log.info("%s", shard_loaded(group.rank, group.world_size, model))
        return cls(config, model, tokenizer, checkpoint=ckpt, group=group, **kwargs)

    def keepalive(self) -> None:
        """Called when idle: keeps the other ranks of a tensor-parallel engine waiting (no-op on one)."""
        self.runner.keepalive()

    def close(self) -> None:
        """Let the other ranks of a tensor-parallel engine exit (no-op on one)."""
        self.runner.close()

    @property
    def structured_backend(self) -> StructuredBackend | None:
        """The grammar backend, built on first use (compiling a tokenizer table is not free);
        ``None`` when the model has no tokenizer."""
        with self._structured_lock:
            if self._structured_backend is None and self.tokenizer is not None:
                self._structured_backend = StructuredOutputBackend(self.tokenizer)
            return self._structured_backend

    # ---- admission ---------------------------------------------------------------------------
    def validate(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise ``ValueError``/``ContextLengthError`` for a request that can never be served."""
        params.validate()
        self.registry.validate(params)
        if not prompt_token_ids:
            raise ValueError("prompt: must contain at least one token")
        if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= self.vocab_size:
            raise ValueError(f"prompt: token ids must be in [0, {self.vocab_size})")
        if any(not 0 <= int(t) < self.vocab_size for t in params.logit_bias):
            raise ValueError(f"logit_bias: token ids must be in [0, {self.vocab_size})")
        if params.structured is not None:
            backend = self.structured_backend
            if backend is None:
                raise ValueError("structured: no structured-output backend is configured")
            check = getattr(backend, "check", None)
            if check is not None:
                check(params.structured)  # compile errors surface before the request is queued
        if (params.stop or params.bad_words) and self.tokenizer is None:
            raise ValueError("stop/bad_words: need a tokenizer")
        n_prompt = len(prompt_token_ids)
        n_total = n_prompt + (params.max_tokens or 1)
        if n_total > self.max_model_len:
            raise ContextLengthError(
                f"this request needs {n_total} tokens (prompt {n_prompt} + max_tokens "
                f"{params.max_tokens or 1}), over the model's context limit {self.max_model_len}"
            )

    def queue_full(self) -> bool:
        return self.scheduler.num_waiting_requests() >= self.config.scheduler.max_queued_requests

    def add_request(
        self,
        request_id: str | None,
        prompt_token_ids: list[int],
        params: SamplingParams,
        priority: int = 0,
        arrival_time: float | None = None,
    ) -> str:
        self.validate(prompt_token_ids, params)
        if request_id is None:
            request_id = f"req-{self._req_ids.next()}"
        if request_id in self.requests:
            raise ValueError(f"request_id: {request_id!r} is already in flight")
        if self.queue_full():
            raise QueueFullError(
                f"waiting queue is full ({self.config.scheduler.max_queued_requests} requests)"
            )
        req = Request(request_id, list(prompt_token_ids), params, int(priority))
        if arrival_time is not None:
            req.arrival_time = arrival_time
        req.bad_words_ids = self._bad_words_ids(params.bad_words)
        if params.prompt_logprobs is not None:
            req.prompt_logprobs = [None]
        for i in range(params.n):
            seq = Sequence(self._seq_ids.next(), req, i, list(prompt_token_ids), len(prompt_token_ids))
            seq.generator = make_generator(params.seed, i, self.device)
            if params.structured is not None:
                backend = self.structured_backend
                assert backend is not None, "validate() refuses structured requests without a backend"
                seq.structured_state = backend.new_state(
                    params.structured,
                    self.tokenizer,
                    # the grammar must close before the last token the request may produce
                    max_tokens=params.max_tokens or (self.max_model_len - len(prompt_token_ids)),
                )
            if self.tokenizer is not None:
                seq.detok = Detokenizer(
                    self.tokenizer, params.stop, params.skip_special_tokens, params.include_stop_str_in_output
                )
            if params.logprobs is not None:
                seq.logprobs = []
            req.seqs.append(seq)
        self.requests[request_id] = req
        for seq in req.seqs[1:]:
            seq.status = SeqStatus.PARKED
        self.scheduler.add(req.seqs[0])
        self.prompt_tokens_total += len(prompt_token_ids)
        return request_id

    def _bad_words_ids(self, words: list[str]) -> list[list[int]]:
        out: list[list[int]] = []
        if not words:
            return out
        tokenizer = self.tokenizer
        assert tokenizer is not None, "validate() refuses bad_words without a tokenizer"
        seen: set[tuple[int, ...]] = set()
        for w in words:
            for variant in (w, " " + w.lstrip()):
                ids = tokenizer.encode(variant)
                if ids and tuple(ids) not in seen:
                    seen.add(tuple(ids))
                    out.append(ids)
        return out

    # ---- abort / errors ----------------------------------------------------------------------
    def abort(self, request_id: str) -> RequestOutput | None:
        req = self.requests.get(request_id)
        if req is None:
            return None
        del self.requests[request_id]
        return self._finish_request(req, "abort")

    def abort_all(self, error: str | None = None) -> list[RequestOutput]:
        reason = "error" if error else "abort"
        reqs, self.requests = list(self.requests.values()), {}
        return [self._finish_request(r, reason, error) for r in reqs]

    def _finish_request(self, req: Request, reason: str, error: str | None = None) -> RequestOutput:
        for seq in req.seqs:
            if not seq.is_finished:
                self._finish_seq(seq, reason)
        if error:
            req.error = error
        return self._output(req)

    def _finish_seq(self, seq: Sequence, reason: str, stop_reason: str | int | None = None) -> None:
        if seq.status is not SeqStatus.PARKED:
            self.scheduler.remove(seq)
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = reason
        seq.stop_reason = stop_reason
        if seq.detok is not None:
            seq.detok.finish()

    # ---- the step ----------------------------------------------------------------------------
    def has_unfinished(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[RequestOutput]:
        t0 = time.perf_counter()
        if self.proposer is not None:
            self._propose(self.proposer)
        sched = self.scheduler.schedule()
        touched: dict[str, Request] = {}
        for seq, msg in sched.rejected:
            seq.request.error = msg
            touched[seq.request.request_id] = seq.request
            self._finish_request(seq.request, "error", msg)
        batch = sched.scheduled
        if batch:
            try:
                self._run(batch, touched)
                self.consecutive_failures = 0
            except EngineDeadError:  # no later step can run: the caller stops the engine
                raise
            except Exception as exc:  # fail this step's requests, keep the engine going
                log.exception("engine step failed")
                self.consecutive_failures += 1
                msg = f"engine step failed: {type(exc).__name__}: {exc}"
                for item in batch:
                    req = item.seq.request
                    if not req.finished:
                        self._finish_request(req, "error", msg)
                    touched[req.request_id] = req
        self.steps_total += 1
        self.last_step_tokens = sched.num_tokens
        self.last_step_seconds = time.perf_counter() - t0
        outputs = [self._output(r) for r in touched.values()]
        for r in touched.values():
            if r.finished:
                self.requests.pop(r.request_id, None)
        return outputs

    def _run(self, batch: list[ScheduledSeq], touched: dict[str, Request]) -> None:
        want_prompt = {
            i
            for i, item in enumerate(batch)
            if item.seq.index == 0
            and item.seq.request.wants_prompt_logprobs
            and item.seq.num_computed_tokens < item.seq.num_prompt_tokens
        }
        t0 = time.perf_counter()
        self._run_rows(batch, touched, want_prompt)
        if self.spec is not None and all(item.num_known == 1 for item in batch):
            self.step_cost.observe(sum(item.num_tokens for item in batch), time.perf_counter() - t0)

    def _run_rows(self, batch: list[ScheduledSeq], touched: dict[str, Request], want_prompt: set[int]) -> None:
        if self._inject:
            self.faults.before_step(self.steps_total + 1, [item.seq.params.seed for item in batch])
        result = self.runner.execute(batch, want_prompt)
        # the sampled rows: one per plain sampling sequence, 1 + len(draft) per speculative one
        plain_rows: list[int] = []
        drafted: list[tuple[ScheduledSeq, torch.Tensor]] = []
        row = 0
        for item in batch:
            if not item.samples:
                continue
            if item.draft:
                drafted.append((item, result.sample_logits[row : row + 1 + len(item.draft)]))
                row += 1 + len(item.draft)
            else:
                plain_rows.append(row)
                row += 1
        sampling = [item.seq for item in batch if item.samples and not item.draft]
        logits = result.sample_logits
        if drafted:
            logits = logits[torch.tensor(plain_rows, dtype=torch.int64, device=logits.device)]
        if self._inject:
            logits = self.faults.poison(logits, [seq.params.seed for seq in sampling])
        rows = [self._row(seq) for seq in sampling]
        sampled = self.sampler(logits, rows)
        # a row that could not be sampled fails its request alone (its blocks are freed below)
        failed = {sampling[i].request.request_id: (sampling[i].request, why) for i, why in sampled.failed.items()}
        for i in want_prompt:
            self._prompt_logprobs(batch[i], result.prompt_logits[i])
        for item in batch:
            if item.draft:
                continue  # advanced over the accepted tokens only, in _verify
            item.seq.num_computed_tokens += item.num_tokens
            self.block_manager.commit(item.seq)
        now = time.time()  # wall clock, like RequestOutput.arrival_time
        for seq, tok, lp in zip(sampling, sampled.token_ids, sampled.logprobs, strict=True):
            req = seq.request
            touched[req.request_id] = req
            if req.request_id in failed:
                continue
            if req.first_token_time is None:
                req.first_token_time = now
            seq.num_steps += 1
            try:
                self._append(seq, tok, lp)
            except Exception as exc:  # e.g. a grammar that refuses the token: this request only
                failed[req.request_id] = (req, f"could not take the sampled token: {type(exc).__name__}: {exc}")
        for item, item_logits in drafted:
            item.seq.num_steps += 1
            req = item.seq.request
            touched[req.request_id] = req
            try:
                self._verify(item, item_logits)
            except Exception as exc:  # a processor or grammar that breaks on this draft: this request only
                failed[req.request_id] = (req, f"could not verify the draft: {type(exc).__name__}: {exc}")
        for req, why in failed.values():
            log.warning("request %s failed: %s", req.request_id, why)
            self._finish_request(req, "error", why)

    # ---- speculative decoding ----------------------------------------------------------------
    def _propose(self, proposer: Proposer) -> None:
        """Give each running decode its draft for this step (the scheduler takes what fits).
        No draft beyond what the request may still emit (the step adds one token past the
        accepted drafts) or past the context limit, and none while a sequence's drafting is
        paused (``DraftStats.update_switch``). The drafted tokens kept are those whose expected
        accepted tokens pay for the rows they add (``spec.budget``)."""
        assert self.spec is not None
        decoding = [seq for seq in self.scheduler.running if seq.num_uncomputed == 1]
        wanted: list[tuple[Sequence, int]] = []
        for seq in self.scheduler.running:
            seq.spec_draft = []
        for seq in decoding:
            if seq.draft_stats.paused(seq.num_steps):
                continue
            p = seq.params
            max_new = p.max_tokens if p.max_tokens is not None else self.max_model_len - seq.num_prompt_tokens
            limit = min(max_new - seq.num_output_tokens, self.max_model_len - len(seq.token_ids)) - 1
            if limit > 0:
                wanted.append((seq, limit))
        if not wanted:
            return
        drafts = proposer.propose_batch([seq.token_ids for seq, _ in wanted], [limit for _, limit in wanted])
        proposed = [(seq, d) for (seq, _), d in zip(wanted, drafts, strict=True) if d]
        proposed.sort(key=lambda sd: -sd[0].draft_stats.position_rate)
        cap = self.spec.max_draft_tokens_per_step
        if self.spec.plan_by_step_cost:
            grants = plan_drafts(len(decoding), [(seq.draft_stats.position_rate, len(d)) for seq, d in proposed],
                                 self.step_cost.estimate, cap)
        else:
            grants = share_draft_budget([len(d) for _, d in proposed], cap)
        for (seq, draft), n in zip(proposed, grants, strict=True):
            seq.spec_draft = draft[:n]

    def _verify(self, item: ScheduledSeq, logits: torch.Tensor) -> None:
        """Walk the draft of ``item`` with its rows' logits ``[1 + len(draft), V]``: row ``j``
        predicts the token after ``draft[:j]``. Each step of the walk is a plain decode step done
        late: the sequence's KV now covers its tokens (``commit`` may hash a block they filled),
        the row's processors see the sequence as it is (penalties over the accepted output, the
        grammar advanced over the accepted tokens only), one token is chosen (``_choose``) and
        appended with every stop check. The walk ends at the first rejected draft (its
        replacement is the last token), after the bonus token past a fully accepted draft, or when
        the sequence finishes. The blocks that held only rejected tokens are then given back."""
        seq, draft = item.seq, item.draft
        start = seq.num_computed_tokens
        accepted = emitted = 0
        now = time.time()
        for j in range(len(draft) + 1):
            seq.num_computed_tokens = start + j + 1
            self.block_manager.commit(seq)
            proposal = draft[j] if j < len(draft) else None
            tok, lp = self._choose(seq, logits[j : j + 1], proposal)
            if seq.request.first_token_time is None:
                seq.request.first_token_time = now
            self._append(seq, tok, lp)
            emitted += 1
            if tok != proposal or seq.is_finished:
                break
            accepted += 1
        stats = seq.draft_stats
        stats.record(len(draft), accepted, emitted)
        assert self.spec is not None
        stats.update_switch(seq.num_steps, self.spec.min_drafted_tokens, self.spec.disable_acceptance_rate,
                            self.spec.retry_after_steps)
        self.spec_draft_tokens_total += len(draft)
        self.spec_accepted_tokens_total += accepted
        self.spec_verify_steps_total += 1
        self.spec_emitted_tokens_total += emitted
        if not seq.is_finished:
            self.block_manager.truncate(seq, seq.num_computed_tokens)

    def _choose(self, seq: Sequence, logits: torch.Tensor, proposal: int | None) -> tuple[int, TokenLogprob | None]:
        """The token at one verified position, from its raw ``logits [1, V]``: greedy rows take the
        processed argmax (the sampler's kernel, so ties break as without speculation); sampled
        rows accept or replace ``proposal`` by rejection sampling, or, past the draft, draw from
        the processed distribution. Logprobs are the raw ones, as the sampler reports them."""
        if not bool(torch.isfinite(logits.float().amax(-1)).all()):
            raise ValueError(NONFINITE_LOGITS)  # as the sampler does for a plain row: this request fails
        row = self._row(seq)
        processed = self.sampler.process(logits, [row])
        if row.greedy:
            tok = int(self.sampler.argmax(processed)[0])
        else:
            probs = processed[0].softmax(-1)
            gen = row.generator if row.generator is not None else self.sampler.generator
            tok = sample(probs, gen) if proposal is None else verify_sampled(probs, proposal, gen).token_id
        lp = None
        k = seq.params.logprobs
        if k is not None:
            chosen = torch.tensor([tok], dtype=torch.int64, device=logits.device)
            lp = top_logprobs(logits.log_softmax(-1), chosen, [k])[0]
        return tok, lp

    def _row(self, seq: Sequence) -> SamplingRow:
        return SamplingRow(
            params=seq.params,
            prompt_ids=seq.token_ids[: seq.num_prompt_tokens],
            output_ids=seq.output_token_ids,
            eos_ids=self.eos_ids,
            bad_words_ids=seq.request.bad_words_ids,
            generator=seq.generator,
            structured_state=seq.structured_state,
        )

    def _prompt_logprobs(self, item: ScheduledSeq, logits: torch.Tensor) -> None:
        seq, req = item.seq, item.seq.request
        start = seq.num_computed_tokens
        targets = [p + 1 for p in range(start, start + item.num_tokens) if p + 1 < seq.num_prompt_tokens]
        if not targets:
            return
        k, kept = seq.params.prompt_logprobs, req.prompt_logprobs
        assert k is not None and kept is not None, "add_request starts the list for prompt_logprobs"
        raw = logits[: len(targets)].float().log_softmax(-1)
        chosen = torch.tensor([seq.token_ids[t] for t in targets], dtype=torch.int64, device=raw.device)
        lps = top_logprobs(raw, chosen, [k] * len(targets))
        for t, lp in zip(targets, lps, strict=True):
            if t == len(kept):
                kept.append(lp)

    def _append(self, seq: Sequence, tok: int, lp: TokenLogprob | None) -> None:
        p = seq.params
        first_token = seq.num_output_tokens == 0
        seq.token_ids.append(tok)
        self.generation_tokens_total += 1
        if seq.logprobs is not None and lp is not None:
            seq.logprobs.append(lp)
        if seq.structured_state is not None:
            seq.structured_state.accept(tok)
        if first_token and seq.index == 0:
            self._fork_siblings(seq)
        n_out = seq.num_output_tokens
        checks = n_out >= p.min_tokens
        if checks and tok in p.stop_token_ids:
            if p.include_stop_str_in_output and seq.detok is not None:
                seq.detok.add_token(tok, check_stop=False)
            return self._finish_seq(seq, "stop", tok)
        if checks and not p.ignore_eos and tok in self.eos_ids:
            return self._finish_seq(seq, "stop")
        if seq.detok is not None:
            matched = seq.detok.add_token(tok, check_stop=checks)
            if matched is not None:
                return self._finish_seq(seq, "stop", matched)
        if seq.structured_state is not None and seq.structured_state.is_terminated():
            return self._finish_seq(seq, "stop")
        max_new = p.max_tokens if p.max_tokens is not None else self.max_model_len - seq.num_prompt_tokens
        if n_out >= max_new or len(seq.token_ids) >= self.max_model_len:
            return self._finish_seq(seq, "length")

    def _fork_siblings(self, parent: Sequence) -> None:
        """Start the other ``n - 1`` samples on the parent's full prompt blocks (shared, not copied);
        each recomputes only the prompt tail that does not fill a block, then samples on its own."""
        bs = self.block_manager.block_size
        shared = (parent.num_prompt_tokens - 1) // bs
        for seq in parent.request.seqs[1:]:
            if seq.status is not SeqStatus.PARKED:
                continue
            self.block_manager.fork(parent, seq, shared)
            seq.num_computed_tokens = shared * bs
            seq.num_cached_tokens = shared * bs
            self.scheduler.add(seq)

    # ---- outputs -----------------------------------------------------------------------------
    def _output(self, req: Request) -> RequestOutput:
        outs = []
        for seq in req.seqs:
            tokens = seq.output_token_ids
            new_tokens = tokens[seq.delta_start_tokens :]
            seq.delta_start_tokens = len(tokens)
            delta_lp = None
            if seq.logprobs is not None:
                delta_lp = seq.logprobs[seq.delta_start_logprobs :]
                seq.delta_start_logprobs = len(seq.logprobs)
            delta_text = seq.detok.take_delta() if seq.detok is not None else ""
            outs.append(
                CompletionOutput(
                    index=seq.index,
                    text=seq.detok.output_text if seq.detok is not None else "",
                    token_ids=list(tokens),
                    logprobs=list(seq.logprobs) if seq.logprobs is not None else None,
                    delta_text=delta_text,
                    delta_token_ids=new_tokens,
                    delta_logprobs=delta_lp,
                    finish_reason=seq.finish_reason,
                    stop_reason=seq.stop_reason,
                    num_steps=seq.num_steps,
                    spec_drafted=seq.draft_stats.drafted,
                    spec_accepted=seq.draft_stats.accepted,
                )
            )
        prompt_lp = None
        if req.prompt_logprobs is not None and not req.wants_prompt_logprobs:
            prompt_lp = list(req.prompt_logprobs)
        return RequestOutput(
            request_id=req.request_id,
            prompt_token_ids=req.prompt_token_ids,
            outputs=outs,
            finished=req.finished,
            num_cached_tokens=req.seqs[0].num_cached_tokens,
            prompt_logprobs=prompt_lp,
            error=req.error,
            arrival_time=req.wall_arrival_time,
            first_token_time=req.first_token_time,
        )

    # ---- stats -------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        bm = self.block_manager
        return EngineStats(
            num_waiting=self.scheduler.num_waiting_requests(),
            num_running=len(self.scheduler.running),
            num_preempted_total=self.scheduler.num_preempted_total,
            kv_blocks_total=bm.num_blocks,
            kv_blocks_used=bm.num_used,
            kv_blocks_cached=bm.num_cached,
            prefix_cache_queried_tokens=bm.prefix_queried_tokens,
            prefix_cache_hit_tokens=bm.prefix_hit_tokens,
            steps_total=self.steps_total,
            last_step_tokens=self.last_step_tokens,
            last_step_seconds=self.last_step_seconds,
            prompt_tokens_total=self.prompt_tokens_total,
            generation_tokens_total=self.generation_tokens_total,
            kv_block_bytes=self.runner.bytes_per_block,
            weights_bytes=self.runner.weights_bytes,
            spec_draft_tokens_total=self.spec_draft_tokens_total,
            spec_accepted_tokens_total=self.spec_accepted_tokens_total,
            spec_verify_steps_total=self.spec_verify_steps_total,
            spec_emitted_tokens_total=self.spec_emitted_tokens_total,
        )
