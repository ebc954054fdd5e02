"""Asyncio front of the engine: the step loop runs in its own thread so HTTP never waits on a
forward pass.

Callers' adds and aborts go through a locked inbox the loop drains before each step; outputs
come back through ``loop.call_soon_threadsafe`` into one ``asyncio.Queue`` per request. Only the
loop thread touches the ``LLMEngine``, and it also builds it: torch's OpenMP runtime (libgomp)
keeps one worker team per thread that ever ran a parallel op, and once the process holds more
OpenMP threads than there are CPUs its barriers stop spinning and sleep in the kernel instead.
Loading the model on another thread left a second team behind and made every decode step ~40%
slower on a 2-core box (hundreds of futex sleeps per step); one thread for all model work avoids it.

On a tensor-parallel server this is rank 0's engine: an idle loop wakes every
``keepalive_interval`` to send the other ranks a keep-alive, and a ``ParallelFailure`` (a rank
died or a collective timed out) or ``fail`` (a spawned rank exited) stops the loop for good: every
in-flight request ends with a ``fatal`` error (HTTP 503), ``is_ready`` turns false, and
``on_fatal`` tells the server to exit. Any exception that escapes the per-step guard (the loop's
own bookkeeping; ``engine.faults``' ``loop_seed`` injects one) ends the loop the same way.

Each request's queue is bounded by ``SchedulerConfig.max_pending_outputs``: when its consumer
leaves that many outputs unread (a client that stopped reading a stream, its writer blocked on a
full socket) the request is aborted in the engine, its KV blocks return, and the consumer finds
one last error output after the unread ones instead of an ever-growing backlog.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass

from grokd.engine.config import EngineConfig
from grokd.engine.errors import EngineDeadError, QueueFullError
from grokd.engine.llm_engine import EngineStats, LLMEngine
from grokd.engine.logits_processors import SamplerInfo
from grokd.engine.outputs import CompletionOutput, RequestOutput
from grokd.engine.parallel.channel import keepalive_interval
from grokd.engine.parallel.group import ParallelGroup
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.tokenizer import Tokenizer

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_FAILURES = 3  # after this many failed steps in a row the model is deemed broken

__all__ = ["AsyncEngine", "EngineStats", "KVCacheInfo", "ModelInfo"]


@dataclass
class ModelInfo:
    architecture: str
    max_model_len: int
    vocab_size: int
    fingerprint: str
    chat_template: str | None
    dtype: str
    checkpoint_path: str


@dataclass(frozen=True)
class KVCacheInfo:
    """The KV cache pool as sized at load time (``dtype`` without the ``torch.`` prefix)."""

    num_blocks: int
    block_size: int
    dtype: str
    bytes_per_block: int

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def num_bytes(self) -> int:
        return self.num_blocks * self.bytes_per_block


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    overflowed: bool = False  # aborted for unread outputs: nothing more is queued


class AsyncEngine:
    def __init__(self, config: EngineConfig, engine: LLMEngine | None = None, *,
                 group: ParallelGroup | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        """Load model and tokenizer on the loop thread (or wrap a ready ``LLMEngine``); the loop
        starts stepping in ``start``. Load errors are raised here, as from a direct build.
        ``group``: rank 0 of a tensor-parallel world (the engine loads rank 0's shard and drives
        the others). ``on_fatal(exc)`` is called (on the loop thread) if the loop dies."""
        self.config = config
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._started = False
        self._stop = False
        self._group = group
        self._on_fatal = on_fatal
        self._fatal: BaseException | None = None
        self.engine = self._spawn_loop_thread(engine)
        self.tokenizer: Tokenizer | None = self.engine.tokenizer
        ckpt = self.engine.checkpoint
        self.model_info = ModelInfo(
            architecture=getattr(ckpt, "architecture", type(self.engine.model).__name__),
            max_model_len=self.engine.max_model_len,
            vocab_size=self.engine.vocab_size,
            fingerprint=getattr(ckpt, "fingerprint", "") or "",
            chat_template=getattr(ckpt, "chat_template", None)
            or getattr(self.tokenizer, "chat_template", None),
            dtype=config.model.dtype,
            checkpoint_path=str(getattr(ckpt, "path", config.model.model or "")),
        )
        runner = self.engine.runner
        self.kv_cache = KVCacheInfo(
            num_blocks=runner.num_blocks,
            block_size=runner.block_size,
            dtype=str(runner.kv_dtype).removeprefix("torch."),
            bytes_per_block=runner.bytes_per_block,
        )
        self._adds: list[tuple[str, list[int], SamplingParams, int]] = []
        self._aborts: list[str] = []
        self._streams: dict[str, _Stream] = {}
        self._accepting = True
        self._stats = self.engine.stats()

    @property
    def structured_backend(self):
        """The engine's grammar backend (the server may ``check`` specs with it for early 400s)."""
        return self.engine.structured_backend

    def samplers(self) -> list[SamplerInfo]:
        """The engine's registered logits processors and their parameters (built-ins and plugins)."""
        return self.engine.registry.describe()

    # ---- lifecycle ---------------------------------------------------------------------------
    def _spawn_loop_thread(self, engine: LLMEngine | None) -> LLMEngine:
        """Start the loop thread, which builds the engine (unless given one) and then waits for
        ``start``; returns the engine once it is built."""
        built: queue.SimpleQueue[LLMEngine | BaseException] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._thread_main, args=(engine, built), name="grokd-engine",
                                        daemon=True)
        self._thread.start()
        result = built.get()
        if isinstance(result, BaseException):
            self._thread.join()
            raise result
        return result

    def _thread_main(self, engine: LLMEngine | None, built: queue.SimpleQueue) -> None:
        try:
            engine = engine if engine is not None else LLMEngine.from_config(self.config, group=self._group)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the constructor
            built.put(exc)
            return
        built.put(engine)
        with self._lock:
            self._wake.wait_for(lambda: self._started or self._stop)
            if not self._started:  # shut down before it was ever started
                return
        self._loop()

    def start(self) -> None:
        with self._lock:
            if self._started or self._stop:
                return
            self._started = True
            self._wake.notify_all()
        # Build the grammar backend's tokenizer table off the request path (0.2-1.3 s), so the
        # first structured request does not pay for it.
        threading.Thread(target=lambda: self.engine.structured_backend, name="grokd-grammar-warmup",
                         daemon=True).start()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Stop accepting, let in-flight requests finish for up to ``timeout``, abort the rest."""
        with self._lock:
            self._accepting = False
            self._wake.wait_for(lambda: not self._streams or not self._started, timeout=timeout)
            self._aborts.extend(self._streams)
            self._stop = True
            self._wake.notify_all()
        self._thread.join(timeout=max(1.0, timeout))

    @property
    def is_ready(self) -> bool:
        return self._accepting and self._started and self._fatal is None and self._thread.is_alive()

    def fail(self, exc: BaseException) -> None:
        """Stop for good from any thread (a rank of the engine is gone): refuse new requests and end
        every in-flight one with a fatal error now, even while the loop thread is stuck in a step."""
        with self._lock:
            self._fatal = self._fatal or exc
            self._accepting = False
            self._stop = True
            left = list(self._streams)
            self._wake.notify_all()
        self._deliver([_final(rid, [], "error", f"engine stopped: {exc}", fatal=True) for rid in left])

    # ---- requests ----------------------------------------------------------------------------
    async def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[RequestOutput, None]:
        """Stream ``RequestOutput`` deltas; the last has ``finished=True``. Validation, context length
        and queue capacity are checked before anything is yielded. Closing the iterator aborts."""
        request_id = request_id or f"req-{uuid.uuid4().hex}"
        self.engine.validate(prompt_token_ids, params)
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue())
        with self._lock:
            if not self.is_ready:
                raise EngineDeadError("engine is not running")
            if request_id in self._streams:
                raise ValueError(f"request_id: {request_id!r} is already in flight")
            queued = self.engine.scheduler.num_waiting_requests() + len(self._adds)
            if queued >= self.config.scheduler.max_queued_requests:
                raise QueueFullError(
                    f"waiting queue is full ({self.config.scheduler.max_queued_requests} requests)"
                )
            self._streams[request_id] = stream
            self._adds.append((request_id, list(prompt_token_ids), params, int(priority)))
            self._wake.notify_all()
        finished = False
        try:
            while True:
                out = await stream.queue.get()
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        with self._lock:
            if request_id in self._streams:
                self._aborts.append(request_id)
                self._wake.notify_all()

    def stats(self) -> EngineStats:
        return self._stats

    # ---- the loop thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        died: BaseException | None = None
        try:
            self._serve()
        except BaseException as exc:
            log.exception("engine loop died")
            died = exc
            raise
        finally:  # whatever is still streaming will never be served now: end it with an error
            with self._lock:
                self._accepting = False
                self._fatal = self._fatal or died
                left = list(self._streams)
            self._deliver([_final(rid, [], "error", "engine stopped", fatal=True) for rid in left])
            if died is not None and self._on_fatal is not None:
                self._on_fatal(died)

    def _serve(self) -> None:
        eng = self.engine
        idle_wake = keepalive_interval(self.config.parallel.timeout_s) if eng.runner.channel is not None else None
        inject = eng.faults.active
        while True:
            with self._lock:
                busy = self._wake.wait_for(lambda: self._stop or self._adds or self._aborts or eng.has_unfinished(),
                                           timeout=idle_wake)
                adds, self._adds = self._adds, []
                aborts, self._aborts = self._aborts, []
                stop = self._stop
            outputs: list[RequestOutput] = []
            for rid in aborts:
                out = eng.abort(rid)
                if out is None:  # aborted before the loop saw it
                    adds = [a for a in adds if a[0] != rid]
                    out = _final(rid, [], "abort")
                outputs.append(out)
            for rid, prompt, params, priority in adds:
                try:
                    eng.add_request(rid, prompt, params, priority)
                except Exception as exc:  # validated already; any late failure ends that request only
                    outputs.append(_final(rid, prompt, "error", f"{type(exc).__name__}: {exc}"))
            if inject and adds:  # outside the per-step guard: this kills the loop (engine.faults)
                eng.faults.in_loop(a[2].seed for a in adds)
            if stop:
                outputs.extend(eng.abort_all())
                self._deliver(outputs)
                if self._fatal is None:
                    eng.close()  # the other ranks of a tensor-parallel engine exit
                return
            try:
                if not busy:
                    eng.keepalive()
                if eng.has_unfinished():
                    outputs.extend(eng.step())
                if eng.consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                    outputs.extend(eng.abort_all(error="engine failed repeatedly; all requests aborted"))
                    eng.consecutive_failures = 0
            except EngineDeadError as exc:  # a rank is gone: nothing can run any more
                failed = eng.abort_all(error=f"engine stopped: {exc}")
                for out in failed:
                    out.fatal = True
                self._deliver(outputs + failed)
                raise
            except Exception as exc:  # scheduler/bookkeeping failure: fail everything, keep serving
                log.exception("engine loop error")
                outputs.extend(eng.abort_all(error=f"engine error: {type(exc).__name__}: {exc}"))
            self._stats = eng.stats()
            self._deliver(outputs)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        """Hand a step's outputs to their event loops: one wake-up per loop per step, not one per
        request (each ``call_soon_threadsafe`` writes the loop's self-pipe and wakes it)."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Stream, RequestOutput]]] = {}
        with self._lock:
            for out in outputs:
                stream = self._streams.get(out.request_id)
                if stream is None:
                    continue
                if out.finished:
                    del self._streams[out.request_id]
                by_loop.setdefault(stream.loop, []).append((stream, out))
            self._wake.notify_all()
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._put_all, items)
            except RuntimeError:  # the caller's event loop is closed: nobody is listening
                pass

    def _put_all(self, items: list[tuple[_Stream, RequestOutput]]) -> None:
        """On the consumer's event loop: queue each output, or abort a request whose consumer left
        ``max_pending_outputs`` unread (one final error is queued past the bound to end it)."""
        limit = self.config.scheduler.max_pending_outputs
        for stream, out in items:
            if stream.overflowed:
                continue
            if stream.queue.qsize() >= limit and not out.finished:
                stream.overflowed = True
                log.warning("request %s: %d outputs unread; aborted", out.request_id, limit)
                self.abort(out.request_id)
                out = _final(out.request_id, out.prompt_token_ids, "error",
                             f"aborted: the consumer left {limit} outputs unread")
            stream.queue.put_nowait(out)


def _final(request_id: str, prompt: list[int], reason: str, error: str | None = None,
           fatal: bool = False) -> RequestOutput:
    return RequestOutput(
        request_id=request_id,
        prompt_token_ids=prompt,
        outputs=[CompletionOutput(index=0, finish_reason=reason)],
        finished=True,
        error=error,
        fatal=fatal,
    )
