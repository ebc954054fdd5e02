"""Responses streaming: the generation service's neutral events as Responses SSE events.

Every event is ``event: <type>`` + ``data: {..., "type": <type>, "sequence_number": n}``; there
is no ``[DONE]``. The order is ``response.created``, ``response.in_progress``, then per output
item ``response.output_item.added`` … ``response.output_item.done`` (a message wraps
``response.content_part.added``, ``response.output_text.delta``*, ``response.output_text.done``,
``response.content_part.done``; a function call wraps ``response.function_call_arguments.delta``
/ ``.done``), and last ``response.completed`` or ``response.incomplete`` with the whole
response. A failure after the stream started sends ``error`` and then ``response.failed``.
``output_index``, ``content_index`` and ``item_id`` are what openai-python's stream helper
rebuilds its snapshot from.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from grokd.engine.outputs import RequestOutput
from grokd.server.generation import service
from grokd.server.generation.context import CallContext
from grokd.server.generation.types import (
    ChoiceFinished,
    GenerationPlan,
    StreamFinished,
    TextDelta,
    ToolCallDelta,
    ToolCallOutput,
)
from grokd.server.responses.output import (
    ResponseEnvelope,
    citation_annotations,
    function_call_item,
    logprobs_out,
    message_id,
    search_items,
    usage_out,
)
from grokd.server.responses.protocol import (
    FunctionCallItem,
    LogprobOut,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseErrorInfo,
    ResponseObject,
)
from grokd.server.routes.generation import EngineCall
from grokd.server.streaming import Renderer, StreamFailure


def encode(event_type: str, sequence_number: int, payload: dict[str, Any]) -> bytes:
    data = {"type": event_type, "sequence_number": sequence_number, **payload}
    return f"event: {event_type}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@dataclass
class _OpenMessage:
    index: int
    id: str
    text: str = ""
    logprobs: list[LogprobOut] = field(default_factory=list)


@dataclass
class ResponseEventWriter:
    """Numbers the events and keeps the output items built so far (for failure snapshots)."""

    envelope: ResponseEnvelope
    plan: GenerationPlan
    sequence: int = 0
    items: list[OutputItem] = field(default_factory=list)
    message: _OpenMessage | None = None
    finish_reason: str | None = None

    def event(self, event_type: str, **payload: Any) -> bytes:
        out = encode(event_type, self.sequence, payload)
        self.sequence += 1
        return out

    def response(self, response: ResponseObject) -> dict[str, Any]:
        return {"response": response.model_dump(mode="json")}

    def start(self) -> list[bytes]:
        shell = self.envelope.build("in_progress")
        out = [self.event("response.created", **self.response(shell)),
               self.event("response.in_progress", **self.response(shell))]
        for item in search_items(self.plan):
            out.append(self.event("response.output_item.added", output_index=len(self.items),
                                  item=item.model_dump(mode="json")))
            out.append(self.event("response.output_item.done", output_index=len(self.items),
                                  item=item.model_dump(mode="json")))
            self.items.append(item)
        return out

    def open_message(self) -> list[bytes]:
        if self.message is not None:
            return []
        self.message = _OpenMessage(len(self.items), message_id())
        item = OutputMessage(id=self.message.id, status="in_progress", content=[])
        self.items.append(item)
        return [self.event("response.output_item.added", output_index=self.message.index,
                           item=item.model_dump(mode="json")),
                self.event("response.content_part.added", output_index=self.message.index,
                           item_id=self.message.id, content_index=0,
                           part=OutputText(text="").model_dump(mode="json"))]

    def text(self, delta: TextDelta) -> list[bytes]:
        if not delta.text:
            return []  # tokens of a tool call being held back: no text to show
        out = self.open_message()
        assert self.message is not None
        lps = logprobs_out(delta.logprobs)
        self.message.text += delta.text
        self.message.logprobs += lps
        out.append(self.event("response.output_text.delta", output_index=self.message.index,
                              item_id=self.message.id, content_index=0, delta=delta.text,
                              logprobs=[lp.model_dump(mode="json") for lp in lps]))
        return out

    def close_message(self, status: Any) -> list[bytes]:
        m = self.message
        if m is None:
            return []
        self.message = None
        part = OutputText(text=m.text, annotations=citation_annotations(self.plan, m.text), logprobs=m.logprobs)
        item = OutputMessage(id=m.id, status=status, content=[part])
        self.items[m.index] = item
        return [
            self.event("response.output_text.done", output_index=m.index, item_id=m.id, content_index=0,
                       text=m.text, logprobs=[lp.model_dump(mode="json") for lp in m.logprobs]),
            self.event("response.content_part.done", output_index=m.index, item_id=m.id, content_index=0,
                       part=part.model_dump(mode="json")),
            self.event("response.output_item.done", output_index=m.index, item=item.model_dump(mode="json")),
        ]

    def calls(self, calls: list[ToolCallOutput]) -> list[bytes]:
        out = self.close_message("completed")
        for call in calls:
            index = len(self.items)
            pending = function_call_item(call, status="in_progress")
            item = pending.model_copy(update={"status": "completed"})
            self.items.append(item)
            out.append(self.event("response.output_item.added", output_index=index,
                                  item=pending.model_copy(update={"arguments": ""}).model_dump(mode="json")))
            out.append(self.event("response.function_call_arguments.delta", output_index=index, item_id=item.id,
                                  delta=call.arguments))
            out.append(self.event("response.function_call_arguments.done", output_index=index, item_id=item.id,
                                  arguments=call.arguments, name=call.name))
            out.append(self.event("response.output_item.done", output_index=index, item=item.model_dump(mode="json")))
        return out

    def finished(self, reason: str) -> list[bytes]:
        self.finish_reason = reason
        status = "incomplete" if reason == "length" else "completed"
        out: list[bytes] = []
        if self.message is None and not any(isinstance(i, FunctionCallItem) for i in self.items):
            out = self.open_message()  # an empty reply is one empty message, as when not streamed
        return out + self.close_message(status)

    def failure(self, exc: StreamFailure) -> bytes:
        failed = self.envelope.build("failed", self.items)
        failed.error = ResponseErrorInfo(code=exc.code or "server_error", message=exc.message)
        return (self.event("error", code=exc.code, message=exc.message, param=None)
                + self.event("response.failed", **self.response(failed)))


def renderer(ctx: CallContext, call: EngineCall, writer: ResponseEventWriter,
             on_done: Callable[[ResponseObject], None]) -> Renderer:
    """SSE bytes for one streamed response; ``on_done`` gets the final response (to store it)."""

    async def render(outputs: AsyncIterator[tuple[int, RequestOutput]]) -> AsyncIterator[bytes]:
        for chunk in writer.start():
            yield chunk
        async for step in service.steps(ctx, writer.plan, call, outputs):
            for e in step.events:
                if isinstance(e, TextDelta):
                    chunks = writer.text(e)
                elif isinstance(e, ToolCallDelta):
                    chunks = writer.calls(e.calls)
                elif isinstance(e, ChoiceFinished):
                    chunks = writer.finished(e.finish_reason)
                elif isinstance(e, StreamFinished):
                    status = "incomplete" if writer.finish_reason == "length" else "completed"
                    final = writer.envelope.build(status, writer.items, usage_out(e.usage, writer.plan),
                                                  writer.plan.citations)
                    on_done(final)
                    chunks = [writer.event(f"response.{status}", **writer.response(final))]
                for chunk in chunks:
                    yield chunk

    return render
