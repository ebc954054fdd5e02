"""The response object of one Responses request: its echoed settings, output items built from
the generation service's result, usage, and the conversation to store for the next turn.

Streaming and non-streaming answers build their items with the same functions, so a streamed
response's final snapshot equals the non-streamed one for the same seed (ids aside).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grokd.server.generation.types import (
    ChoiceResult,
    GenerationPlan,
    GenerationUsage,
    TokenLogprobOutput,
    ToolCallOutput,
)
from grokd.server.protocol import new_id
from grokd.server.responses.protocol import (
    FunctionCallItem,
    IncompleteDetails,
    InputTokensDetails,
    LogprobOut,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    SearchAction,
    SearchCallItem,
    TopLogprobOut,
    URLCitation,
)


def message_id() -> str:
    return new_id("msg_")


def function_call_id() -> str:
    return new_id("fc_")


def logprobs_out(lps: list[TokenLogprobOutput] | None) -> list[LogprobOut]:
    return [LogprobOut(token=lp.token, logprob=lp.logprob, bytes=lp.bytes,
                       top_logprobs=[TopLogprobOut(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in lp.top])
            for lp in lps or []]


def citation_annotations(plan: GenerationPlan, text: str) -> list[URLCitation]:
    """One ``url_citation`` per live-search source the prompt carried (spanning the answer)."""
    citations = plan.citations or []
    titles = {d.url: d.title for d in plan.live.documents} if plan.live is not None else {}
    return [URLCitation(url=url, title=titles.get(url, "") or url, start_index=0, end_index=len(text))
            for url in citations]


def search_items(plan: GenerationPlan) -> list[SearchCallItem]:
    """The server-side searches behind the answer (before the message, as xAI orders them):
    one ``x_search_call`` when X posts were found, one ``web_search_call`` for everything else
    (or when nothing was found)."""
    live = plan.live
    if live is None or not live.searched:
        return []
    kinds: set[Any] = {"x_search_call" if d.source == "x" else "web_search_call" for d in live.documents}
    status: Any = "failed" if live.degraded else "completed"
    return [SearchCallItem(id=new_id("ws_"), type=kind, status=status, action=SearchAction(query=live.query))
            for kind in sorted(kinds or {"web_search_call"})]


def function_call_item(call: ToolCallOutput, status: Any = "completed") -> FunctionCallItem:
    return FunctionCallItem(id=function_call_id(), call_id=call.id, name=call.name, arguments=call.arguments,
                            status=status)


def output_items(plan: GenerationPlan, choice: ChoiceResult) -> list[OutputItem]:
    """Search calls, then the message (when there is text, or nothing else), then function calls."""
    items: list[OutputItem] = [*search_items(plan)]
    text = choice.content or ""
    status: Any = "incomplete" if choice.finish_reason == "length" else "completed"
    if text or not choice.tool_calls:
        items.append(OutputMessage(id=message_id(), status=status, content=[
            OutputText(text=text, annotations=citation_annotations(plan, text), logprobs=logprobs_out(choice.logprobs))]))
    items.extend(function_call_item(c) for c in choice.tool_calls)
    return items


def usage_out(u: GenerationUsage, plan: GenerationPlan) -> ResponseUsage:
    return ResponseUsage(
        input_tokens=u.prompt_tokens,
        input_tokens_details=InputTokensDetails(cached_tokens=u.cached_tokens),
        output_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        num_sources_used=u.sources_used or 0,
        num_server_side_tools_used=len(search_items(plan)),
    )


def reply_messages(items: list[OutputItem]) -> list[dict[str, Any]]:
    """The assistant turn of ``items`` as template messages (what the next turn continues)."""
    text = "".join(part.text for item in items if isinstance(item, OutputMessage) for part in item.content)
    calls = [{"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
             for item in items if isinstance(item, FunctionCallItem)]
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return [message]


@dataclass
class ResponseEnvelope:
    """The settings a response echoes, fixed when the request arrives."""

    id: str
    created_at: int
    model: str
    req: ResponsesRequest
    tools: list[dict[str, Any]] = field(default_factory=list)

    def build(self, status: Any, output: list[OutputItem] | None = None,
              usage: ResponseUsage | None = None, citations: list[str] | None = None) -> ResponseObject:
        req = self.req
        text = req.text.model_dump(by_alias=True, exclude_none=True) if req.text is not None else {}
        text.setdefault("format", {"type": "text"})
        return ResponseObject(
            id=self.id,
            created_at=self.created_at,
            model=self.model,
            status=status,
            incomplete_details=IncompleteDetails(reason="max_output_tokens") if status == "incomplete" else None,
            instructions=req.instructions,
            output=list(output or []),
            usage=usage,
            previous_response_id=req.previous_response_id,
            store=req.store,
            tools=self.tools,
            tool_choice=req.tool_choice if req.tool_choice is not None else "auto",
            text=text,
            temperature=req.temperature if req.temperature is not None else 1.0,
            top_p=req.top_p if req.top_p is not None else 1.0,
            top_logprobs=req.top_logprobs or 0,
            max_output_tokens=req.max_output_tokens,
            metadata=dict(req.metadata or {}),
            parallel_tool_calls=req.parallel_tool_calls is not False,
            reasoning=req.reasoning.model_dump(exclude_none=True) if req.reasoning is not None else None,
            user=req.user,
            service_tier=req.service_tier,
            citations=citations,
        )
