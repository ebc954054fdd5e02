"""``xai_api.Chat``: completions (whole or streamed), deferred completions and stored
completions, as a front end over the same chat pipeline as ``/v1/chat/completions``
(``routes.chat.prepare_chat`` / ``start_chat`` / ``completion_body``).

A stream whose client cancels (or whose deadline passes) is cancelled by grpc.aio inside the
handler: the ``finally`` closes the engine call, which aborts the request and frees its KV
blocks at once, as a dropped SSE connection does.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grokd.server.errors import APIError, not_supported
from grokd.server.generation import service
from grokd.server.generation.context import CallContext
from grokd.server.grpc import stored
from grokd.server.grpc.calls import CallGuard
from grokd.server.grpc.proto import chat_pb2, chat_pb2_grpc, deferred_pb2
from grokd.server.grpc.requests import chat_request, to_chat_request
from grokd.server.grpc.responses import ChunkWriter, completion_response
from grokd.server.protocol import ChatCompletionRequest, ChatCompletionResponse, now
from grokd.server.routes.chat import completion_body, prepare_chat, start_chat
from grokd.server.streaming import StreamFailure, merge


class ChatService(chat_pb2_grpc.ChatServicer):
    def __init__(self, guard: CallGuard) -> None:
        self.guard = guard

    def _request(self, ctx: CallContext, request: Any) -> tuple[dict[str, Any], ChatCompletionRequest]:
        body, req = to_chat_request(request)
        if request.HasField("previous_response_id") and request.previous_response_id:
            body["messages"] = [*stored.history(ctx.state, request.previous_response_id, ctx.tenant.owner),
                                *body["messages"]]
            req = chat_request(body)
        return body, req

    async def GetCompletion(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Chat/GetCompletion") as ctx:
            body, req = self._request(ctx, request)
            model, prepared = await prepare_chat(ctx, req)
            plan, call = await start_chat(ctx, prepared, req, model)
            result = await service.run(ctx, plan, call)
            answer = completion_body(result, model, now())
            if request.store_messages:
                stored.keep(ctx.state, ctx.tenant.owner, answer, body["messages"])
            return completion_response(answer)

    async def GetCompletionChunk(self, request: Any, context: Any) -> AsyncIterator[Any]:
        async with self.guard(context, "/xai_api.Chat/GetCompletionChunk") as ctx:
            body, req = self._request(ctx, request)
            model, prepared = await prepare_chat(ctx, req)
            plan, call = await start_chat(ctx, prepared, req, model)
            created = now()
            writer = ChunkWriter(plan.request_id, model.id, model.system_fingerprint, created, plan.citations)
            record = stored.StreamRecord(plan) if request.store_messages else None
            try:
                async for step in service.steps(ctx, plan, call, merge([call])):
                    if record is not None:
                        record.add(step)
                        result = record.result()
                        if result is not None:  # before the last chunk: a client may fetch it at once
                            stored.keep(ctx.state, ctx.tenant.owner, completion_body(result, model, created),
                                        body["messages"])
                    for chunk in writer.step(step):
                        yield chunk
            except StreamFailure as exc:
                raise APIError(500, exc.message, type=exc.type, code=exc.code) from None
            finally:
                await call.close()

    async def StartDeferredCompletion(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Chat/StartDeferredCompletion") as ctx:
            jobs = ctx.state.jobs
            if jobs is None:
                raise not_supported("deferred", "deferred completions (the job store is disabled)")
            body, req = self._request(ctx, request)
            await prepare_chat(ctx, req)  # refuse now what the background run would refuse
            request_id = jobs.deferred.submit(body, ctx.tenant.owner)
            return deferred_pb2.StartDeferredResponse(request_id=request_id)

    async def GetDeferredCompletion(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Chat/GetDeferredCompletion") as ctx:
            jobs = ctx.state.jobs
            if jobs is None:
                raise not_supported("deferred", "deferred completions (the job store is disabled)")
            answer = jobs.deferred.take(request.request_id, ctx.tenant.scope)
            if answer is None:
                return chat_pb2.GetDeferredCompletionResponse(status=deferred_pb2.DeferredStatus.PENDING)
            status, body = answer
            if status >= 400:
                err = body.get("error") or {}
                raise APIError(status, str(err.get("message", "The deferred completion failed.")),
                               type=str(err.get("type") or "server_error"), code=err.get("code"),
                               param=err.get("param"))
            return chat_pb2.GetDeferredCompletionResponse(
                status=deferred_pb2.DeferredStatus.DONE,
                response=completion_response(ChatCompletionResponse.model_validate(body)))

    async def GetStoredCompletion(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Chat/GetStoredCompletion") as ctx:
            return stored.stored_completion(ctx.state, request.response_id, ctx.tenant.owner)

    async def DeleteStoredCompletion(self, request: Any, context: Any) -> Any:
        async with self.guard(context, "/xai_api.Chat/DeleteStoredCompletion") as ctx:
            stored.delete(ctx.state, request.response_id, ctx.tenant.owner)
            return chat_pb2.DeleteStoredCompletionResponse(response_id=request.response_id)

