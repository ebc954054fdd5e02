"""``server.routes.generation.collect``: aborting the gathered engine calls leaves no
'exception was never retrieved' behind (the batch runner cancels lines it aborts)."""

from __future__ import annotations

import asyncio
import gc

import pytest

from grokd.server.errors import APIError
from grokd.server.routes.generation import collect


class _Request:
    def __init__(self) -> None:
        self.gone = False

    async def is_disconnected(self) -> bool:
        return self.gone


class _Call:
    """Streams forever; on cancellation either re-raises or fails like an aborted engine stream."""

    def __init__(self, fail_on_cancel: bool) -> None:
        self.fail_on_cancel = fail_on_cancel
        self.closed = False

    def __aiter__(self):
        return self._stream()

    async def _stream(self):
        try:
            while True:
                await asyncio.sleep(3600)
                yield None
        except asyncio.CancelledError:
            if self.fail_on_cancel:
                raise RuntimeError("stream aborted") from None
            raise

    async def close(self) -> None:
        self.closed = True


def _run_and_capture(scenario) -> list[dict]:
    seen: list[dict] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: seen.append(ctx))
        await scenario()
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()
        await asyncio.sleep(0)

    asyncio.run(main())
    gc.collect()
    return seen


@pytest.mark.parametrize("fail_on_cancel", [False, True])
def test_cancelled_collect_leaves_no_unretrieved_exception(fail_on_cancel) -> None:
    calls = [_Call(fail_on_cancel), _Call(False)]

    async def scenario() -> None:
        task = asyncio.ensure_future(collect(_Request(), calls))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        task.cancel()  # what the batch runner does to a line it aborts
        with pytest.raises(asyncio.CancelledError):
            await task

    seen = _run_and_capture(scenario)
    assert not [c for c in seen if "never retrieved" in str(c.get("message", ""))], seen
    assert all(c.closed for c in calls)


@pytest.mark.parametrize("fail_on_cancel", [False, True])
def test_client_disconnect_gives_499_and_no_unretrieved_exception(monkeypatch, fail_on_cancel) -> None:
    import grokd.server.routes.generation as generation

    monkeypatch.setattr(generation, "DISCONNECT_POLL_S", 0.01)
    calls = [_Call(fail_on_cancel), _Call(False)]
    request = _Request()

    async def scenario() -> None:
        task = asyncio.ensure_future(collect(request, calls))  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        request.gone = True
        with pytest.raises(APIError) as err:
            await task
        assert err.value.status == 499

    seen = _run_and_capture(scenario)
    assert not [c for c in seen if "never retrieved" in str(c.get("message", ""))], seen
