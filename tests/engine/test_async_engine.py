"""AsyncEngine: the step loop thread, streaming deltas, cancellation, errors, admission."""

import asyncio
import threading
import time

import pytest
from engine_helpers import assert_idle

from grokd.engine.async_engine import AsyncEngine
from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig
from grokd.engine.errors import ContextLengthError, EngineDeadError, QueueFullError
from grokd.engine.faults import FaultPlan, InjectedFault
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.logits_processors import LogitsProcessor, sampler
from grokd.engine.sampling_params import SamplingParams


@pytest.fixture
def make_async(make_engine):
    engines = []

    def build(**kw) -> AsyncEngine:
        eng = make_engine(**kw)
        ae = AsyncEngine(eng.config, engine=eng)
        ae.start()
        engines.append(ae)
        return ae

    yield build
    for ae in engines:
        ae.shutdown(timeout=5)


async def collect(ae, prompt, params, **kw):
    outs = []
    async for out in ae.generate(prompt, params, **kw):
        outs.append(out)
    return outs


def wait_idle(ae: AsyncEngine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = ae.stats()
        if st.kv_blocks_used == 0 and st.num_running == 0 and st.num_waiting == 0:
            return
        time.sleep(0.01)
    raise AssertionError(f"engine not idle: {ae.stats()}")


def test_streams_deltas_and_matches_reference(make_async, grok1_tiny_reference, tiny_tokenizer):
    ae = make_async(tokenizer=tiny_tokenizer)
    assert ae.is_ready and ae.model_info.max_model_len == 256 and ae.model_info.vocab_size == 1024
    assert ae.model_info.architecture == "grok-1" and ae.model_info.dtype == "float32"
    cases = grok1_tiny_reference["fp32"]["single"]
    params = SamplingParams(temperature=0, max_tokens=8, logprobs=1)

    async def main():
        return await asyncio.gather(
            *(collect(ae, c["prompt"], params, request_id=f"r{i}") for i, c in enumerate(cases))
        )

    results = asyncio.run(main())
    for case, outs in zip(cases, results, strict=True):
        final = outs[-1]
        assert final.finished and all(not o.finished for o in outs[:-1])
        comp = final.outputs[0]
        assert comp.token_ids == case["greedy"]
        assert sum((o.outputs[0].delta_token_ids for o in outs), []) == case["greedy"]
        assert "".join(o.outputs[0].delta_text for o in outs) == comp.text
        assert len(comp.logprobs) == 8
    wait_idle(ae)
    assert ae.stats().generation_tokens_total == 24


def test_consumer_closing_aborts_and_frees_blocks(make_async):
    ae = make_async()

    async def main():
        gen = ae.generate([5, 6, 7, 8, 9], SamplingParams(temperature=0, max_tokens=200, ignore_eos=True))
        first = await gen.__anext__()
        await gen.aclose()  # client disconnect
        return first

    first = asyncio.run(main())
    assert not first.finished
    wait_idle(ae)
    assert_idle(ae.engine)


def test_cancelled_task_aborts(make_async):
    ae = make_async()

    async def main():
        task = asyncio.create_task(collect(ae, [5, 6, 7], SamplingParams(max_tokens=200, ignore_eos=True)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    wait_idle(ae)


def test_abort_by_id_gives_final_abort_output(make_async):
    ae = make_async()

    async def main():
        outs = []
        async for out in ae.generate(
            [5, 6, 7], SamplingParams(max_tokens=200, ignore_eos=True), request_id="x"
        ):
            outs.append(out)
            if len(outs) == 2:
                ae.abort("x")
        return outs

    outs = asyncio.run(main())
    assert outs[-1].finished and outs[-1].outputs[0].finish_reason == "abort"
    wait_idle(ae)


def test_validation_and_queue_full_raise_before_yielding(make_async):
    ae = make_async(max_seqs=1, max_queued=1)

    async def first_item(prompt, params):
        gen = ae.generate(prompt, params)
        try:
            return await gen.__anext__()
        finally:
            await gen.aclose()

    async def main():
        with pytest.raises(ContextLengthError, match="limit 256"):
            await first_item([5] * 250, SamplingParams(max_tokens=100))
        with pytest.raises(ValueError, match="top_p"):
            await first_item([5], SamplingParams(top_p=0))
        long = asyncio.create_task(collect(ae, [5, 6], SamplingParams(max_tokens=250, ignore_eos=True)))
        while ae.stats().num_running < 1:  # admitted and running (max_num_seqs=1)
            await asyncio.sleep(0.005)
        queued = asyncio.create_task(collect(ae, [5, 6], SamplingParams(max_tokens=2)))
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError):
            await first_item([7, 8], SamplingParams(max_tokens=2))
        long.cancel()
        out = await queued
        assert out[-1].finished

    asyncio.run(main())
    wait_idle(ae)


@sampler("explode")
class Explode(LogitsProcessor):
    def apply(self, logits, rows):
        raise RuntimeError("kaboom")


def test_step_failure_fails_request_but_loop_survives(make_async):
    ae = make_async(extra_samplers=[Explode])

    async def main():
        bad = await collect(ae, [5, 6], SamplingParams(extra={"explode": {}}))
        good = await collect(ae, [5, 6], SamplingParams(temperature=0, max_tokens=3))
        return bad, good

    bad, good = asyncio.run(main())
    assert bad[-1].finished and bad[-1].error and "kaboom" in bad[-1].error
    assert bad[-1].outputs[0].finish_reason == "error"
    assert good[-1].outputs[0].finish_reason == "length" and ae.is_ready


def test_shutdown_stops_accepting(make_engine):
    eng = make_engine()
    ae = AsyncEngine(eng.config, engine=eng)
    assert not ae.is_ready  # loop not started yet
    ae.start()
    assert ae.is_ready
    ae.shutdown(timeout=5)
    assert not ae.is_ready

    async def main():
        await ae.generate([5], SamplingParams()).__anext__()

    with pytest.raises(EngineDeadError):
        asyncio.run(main())


def _loop_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "grokd-engine"}


def test_builds_its_engine_and_serves(grok1_tiny_dir):
    cfg = EngineConfig(
        model=ModelLoadConfig(model=str(grok1_tiny_dir), dtype="float32", weights_dtype="float32"),
        cache=CacheConfig(block_size=4, num_blocks=64),
    )
    ae = AsyncEngine(cfg)
    try:
        assert not ae.is_ready and ae.model_info.vocab_size == 1024
        ae.start()
        outs = asyncio.run(collect(ae, [5, 6, 7], SamplingParams(temperature=0, max_tokens=3)))
        assert outs[-1].finished and len(outs[-1].outputs[0].token_ids) == 3
    finally:
        ae.shutdown(timeout=5)


@pytest.mark.timeout(120)
def test_load_error_raises_from_the_constructor(tmp_path):
    cfg = EngineConfig(model=ModelLoadConfig(model=str(tmp_path / "missing"), dtype="float32"))
    with pytest.raises(Exception) as direct:
        LLMEngine.from_config(cfg)
    before = _loop_threads()
    with pytest.raises(type(direct.value)):
        AsyncEngine(cfg)
    assert _loop_threads() == before  # the loop thread ended with the failed load


def test_shutdown_before_start_ends_the_loop_thread(make_engine):
    before = _loop_threads()
    ae = AsyncEngine(make_engine().config, engine=make_engine())
    assert _loop_threads() - before  # the loop thread waits for start
    ae.shutdown(timeout=5)
    assert _loop_threads() == before and not ae.is_ready


def test_streams_to_callers_on_different_event_loops(make_async):
    """One step's outputs are handed to each caller's own loop (two loops, two threads)."""
    ae = make_async()
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    results: dict[int, list] = {}

    def caller(i: int) -> None:
        results[i] = asyncio.run(collect(ae, [5 + i, 6, 7], params, request_id=f"loop{i}"))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    expected = [asyncio.run(collect(ae, [5 + i, 6, 7], params))[-1].outputs[0].token_ids for i in range(2)]
    for i in range(2):
        outs = results[i]
        assert outs[-1].finished and outs[-1].outputs[0].token_ids == expected[i]
        assert [t for o in outs for t in o.outputs[0].delta_token_ids] == expected[i]


LONG = SamplingParams(temperature=0, max_tokens=200, ignore_eos=True)


def test_unread_outputs_abort_the_request_and_free_its_blocks(make_async):
    ae = make_async(max_pending=4)

    async def main():
        gen = ae.generate([5, 6, 7, 8, 9], LONG)
        first = await gen.__anext__()
        deadline = time.monotonic() + 10
        while ae.stats().kv_blocks_used and time.monotonic() < deadline:  # not reading: the queue fills
            await asyncio.sleep(0.01)
        freed = ae.stats().kv_blocks_used == 0
        return first, freed, [out async for out in gen]

    first, freed, rest = asyncio.run(main())
    assert not first.finished and freed
    assert len(rest) == 5 and rest[-1].finished and "4 outputs unread" in (rest[-1].error or "")
    assert sum(len(o.outputs[0].delta_token_ids) for o in [first, *rest]) < 200
    wait_idle(ae)
    assert_idle(ae.engine)


def test_a_failing_model_step_fails_its_requests_and_the_engine_serves_on(make_async):
    ae = make_async(faults=FaultPlan(step_seed=7))

    async def main():
        bad = await collect(ae, [5, 6, 7], SamplingParams(temperature=0, max_tokens=4, seed=7))
        good = await collect(ae, [5, 6, 7], SamplingParams(temperature=0, max_tokens=4, seed=1))
        return bad, good

    bad, good = asyncio.run(main())
    assert bad[-1].outputs[0].finish_reason == "error" and "engine step failed" in bad[-1].error
    assert "injected fault" in bad[-1].error and not bad[-1].fatal
    assert good[-1].outputs[0].finish_reason == "length" and len(good[-1].outputs[0].token_ids) == 4
    wait_idle(ae)
    assert_idle(ae.engine) and ae.is_ready


def test_a_broken_processor_or_nan_logits_fail_one_request_of_the_batch(make_async):
    ae = make_async(faults=FaultPlan(sampler_seed=8, nan_seed=9))
    prompt = [5, 6, 7, 8]

    async def batch():
        return await asyncio.gather(
            collect(ae, prompt, SamplingParams(temperature=0, max_tokens=6, seed=8), request_id="proc"),
            collect(ae, prompt, SamplingParams(temperature=0, max_tokens=6, seed=9), request_id="nan"),
            collect(ae, prompt, SamplingParams(temperature=0, max_tokens=6, seed=1), request_id="ok"),
        )

    (proc, nan, ok) = asyncio.run(batch())
    alone = asyncio.run(collect(ae, prompt, SamplingParams(temperature=0, max_tokens=6)))
    assert "logits processor" in proc[-1].error and proc[-1].outputs[0].token_ids == []
    assert "non-finite logits" in nan[-1].error and nan[-1].outputs[0].token_ids == []
    assert ok[-1].error is None and ok[-1].outputs[0].finish_reason == "length"
    assert ok[-1].outputs[0].token_ids == alone[-1].outputs[0].token_ids
    wait_idle(ae)
    assert_idle(ae.engine)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the loop re-raises
def test_the_loop_dying_ends_requests_with_a_fatal_error_and_refuses_new_ones(make_engine):
    eng = make_engine(faults=FaultPlan(loop_seed=10))
    died: list[BaseException] = []
    ae = AsyncEngine(eng.config, engine=eng, on_fatal=died.append)
    ae.start()
    try:
        outs = asyncio.run(collect(ae, [5, 6], SamplingParams(max_tokens=4, seed=10)))
        assert outs[-1].finished and outs[-1].fatal and outs[-1].error == "engine stopped"
        ae._thread.join(5)
        assert isinstance(died[0], InjectedFault) and not ae.is_ready
        with pytest.raises(EngineDeadError):
            asyncio.run(collect(ae, [5, 6], SamplingParams(max_tokens=2)))
    finally:
        ae.shutdown(timeout=1)
